"""``imagesieve labels`` (the in-process command) on a tiny folder of real
images: scikit-learn digits saved as PNG in class folders, 2 misfiled."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from imagesieve_server.commands import labels as labels_cmd
from imagesieve.contact_sheet import SheetItem, render_contact_sheet
from conftest import digit_image

CLASSES = (0, 1, 4)
PER_CLASS = 14
MISFILED = {(0, 3): 1, (4, 5): 0}  # (digit, n-th image) -> folder it is put in


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    X, y = load_digits(return_X_y=True)
    misfiled = []
    for d in CLASSES:
        for n, i in enumerate(np.flatnonzero(y == d)[:PER_CLASS]):
            folder = root / f"digit{MISFILED.get((d, n), d)}"
            folder.mkdir(exist_ok=True)
            img = digit_image(X[i], 64, Image.Resampling.BILINEAR)
            path = folder / f"d{d}_{n}.png"
            img.save(path)
            if (d, n) in MISFILED:
                misfiled.append(path)
    return root, misfiled


def test_cli_writes_json_and_contact_sheet(digit_folder, tmp_path, capsys):
    root, misfiled = digit_folder
    out = tmp_path / "report"
    n = len(CLASSES) * PER_CLASS
    rc = labels_cmd.main([str(root), "--top", "10%", "--out", str(out), "--folds", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "label_suspects.json").read_text())
    assert doc["num_images"] == n and doc["classes"] == ["digit0", "digit1", "digit4"]
    assert len(doc["scores"]) == n and len(doc["suspects"]) == round(0.1 * n)
    assert [s["rank"] for s in doc["suspects"]] == list(range(1, len(doc["suspects"]) + 1))
    scores = [s["score"] for s in doc["suspects"]]
    assert scores == sorted(scores)
    suspect_paths = {s["path"] for s in doc["suspects"]}
    # precision bound: both misfiled images are among the 4 suspects (measured: ranks 1 and 2)
    assert {str(p) for p in misfiled} <= suspect_paths
    for s in doc["suspects"]:
        assert s["path"] in printed
    sheet = Image.open(out / "label_suspects.png")
    sheet.load()
    assert sheet.format == "PNG" and sheet.mode == "RGB"
    assert sheet.width >= 4 * 128 and sheet.height >= 128
    # the thumbnails are drawn: the sheet is not blank
    assert np.asarray(sheet).std() > 10


def test_cli_pixels_says_why_it_scores_on_embeddings_alone(digit_folder, tmp_path, capsys, monkeypatch):
    """--pixels on 42 images: too few for a CNN (it added noise on 400),
    so the embeddings alone, and the command says why; with torch
    unimportable it says that instead. (The CNN path itself runs over a real
    server on 1,000 digits: tests/test_analysis_grpc.py.)"""
    root, misfiled = digit_folder
    out = tmp_path / "pixels"
    assert labels_cmd.main([str(root), "--top", "10%", "--out", str(out), "--folds", "3", "--pixels"]) == 0
    assert "needs at least 1,000 labelled images (here 42)" in capsys.readouterr().err
    doc = json.loads((out / "label_suspects.json").read_text())
    assert doc["classifier"] == "lda" and {str(p) for p in misfiled} <= {s["path"] for s in doc["suspects"]}
    monkeypatch.setitem(sys.modules, "torch", None)       # what an install without the extra looks like
    assert labels_cmd.main([str(root), "--top", "10%", "--out", str(tmp_path / "no_torch"), "--folds", "3",
                            "--pixels"]) == 0
    assert "the pixel CNN needs torch" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert labels_cmd.main([str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        labels_cmd.main([str(tmp_path), "--top", "150%"])
    assert labels_cmd.parse_fraction("1%") == pytest.approx(0.01)
    assert labels_cmd.parse_fraction("0.2") == pytest.approx(0.2)


def test_contact_sheet_grid_layout():
    items = [SheetItem(Image.new("L", (28, 28), 40 * k), [f"given {k}", "suggest x 0.90"]) for k in range(5)]
    sheet = render_contact_sheet(items, columns=2, thumb=64, title="five")
    # 2 columns of (64 + 2*6) px; 3 rows of (64 + 2*6 + 2 lines * 12) px plus the title bar
    assert sheet.size == (2 * 76, 24 + 3 * 100)
    # first thumbnail is black (value 0), upscaled with nearest neighbour
    assert sheet.getpixel((6 + 32, 24 + 6 + 32)) == (0, 0, 0)
    with pytest.raises(ValueError):
        render_contact_sheet(items, columns=0)


def test_contact_sheet_captions_with_control_characters_stay_one_line():
    """A file name may hold a newline: `dedup` crashed drawing it (Pillow
    cannot measure multiline text) after writing its JSON and CSV."""
    items = [SheetItem(Image.new("L", (28, 28), 90), ["a\nb.png", "tab\there\r"]),
             SheetItem(Image.new("L", (28, 28), 200), ["plain.png"])]
    sheet = render_contact_sheet(items, columns=2, thumb=64, title="names\nwith breaks")
    assert sheet.size == (2 * 76, 24 + 100)
    caption = np.asarray(sheet.convert("L"))[24 + 6 + 64 + 1: 24 + 6 + 64 + 13, 6:70]
    assert (caption < 128).any()          # the escaped name is drawn, not dropped


def test_contact_sheet_turns_a_photo_as_its_exif_says(tmp_path):
    """A phone photo stored on its side with EXIF orientation 6 is shown
    upright (imagesieve.orientation, as the server's decoder turns it;
    ImageOps.exif_transpose re-serialised the whole EXIF block)."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).resize((160, 80), Image.NEAREST)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(tmp_path / "turned.png", exif=exif.tobytes())
    sheet = render_contact_sheet([SheetItem(tmp_path / "turned.png", ["turned"]),
                                  SheetItem(photo.transpose(Image.Transpose.ROTATE_270), ["upright"])],
                                 columns=2, thumb=64)
    a, b = (np.asarray(sheet.convert("L"), np.float32)[:, x:x + 76] for x in (0, 76))
    cap = 6 + 64                          # the thumbnails, above their captions
    assert np.abs(a[:cap] - b[:cap]).mean() < 1.0


def test_contact_sheet_captions_draw_accented_letters():
    """Class names and file names are not ASCII everywhere ("Ankle boöt",
    "animaux été"): Pillow's bitmap default font drew every such letter as
    a box. An "ö" is drawn as the "o" beside it plus its dots."""
    def ink(text):
        sheet = render_contact_sheet([SheetItem(Image.new("L", (28, 28), 255), [text])], columns=1, thumb=64)
        return np.asarray(sheet.convert("L"))[6 + 64: 6 + 64 + 13, 6:70] < 128
    o, umlaut = ink("o"), ink("ö")
    assert o.sum() > 5
    assert (o & umlaut).sum() >= 0.8 * o.sum()                  # the o itself
    top = np.flatnonzero(o.any(axis=1))[0]
    assert umlaut[:top].any()                                   # and something above it: the dots


def test_label_scores_too_small_for_three_decimals_keep_their_order():
    """A label's probability of 6e-258 printed as 0.000, as did 3e-12: every
    suspect of a confident model read 0.000 and the ranking was invisible."""
    from imagesieve_server.commands.labels import score_text
    assert score_text(0.5) == "0.500" and score_text(0.0) == "0.000"
    assert score_text(6e-258) == "6.0e-258" and score_text(3e-12) == "3.0e-12"
