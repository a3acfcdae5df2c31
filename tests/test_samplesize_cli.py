"""``imagesieve samplesize`` in-process on a tiny folder of real images
(scikit-learn digits saved as PNG files under train/ and test/)."""
from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from imagesieve_server.commands import samplesize
from conftest import digit_image

CLASSES = (0, 1, 7, 8)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    d = load_digits()
    for c in CLASSES:
        idx = np.flatnonzero(d.target == c)[:25]
        for j, i in enumerate(idx):
            split = "test" if j < 5 else "train"
            folder = root / split / f"digit_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            im = digit_image(d.images[i], 32)
            im.save(folder / f"{i}.png")
    return root


def parse(argv):
    parser = argparse.ArgumentParser()
    samplesize.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_json_and_plots(digit_folder, tmp_path, capsys, manifest_path):
    out = tmp_path / "report"
    rc = samplesize.run(parse([str(digit_folder), "--target", "99%", "--out", str(out),
                               "--fractions", "20%", "35%", "50%", "75%", "1.0", "--repeats", "2",
                               "--bootstrap", "40", "--model", str(manifest_path)]))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "embedding (in-process) 100/100" in captured.err
    assert "given test split (20 images)" in captured.out
    assert "<- chosen" in captured.out
    assert "per-class accuracy at 80 images, weakest first: digit_" in captured.out
    for frac, n in (("20%", 16), ("100%", 80)):
        assert any(line.split()[:2] == [frac, str(n)] for line in captured.out.splitlines())

    report = json.loads((out / "samplesize.json").read_text())
    assert [p["num_images"] for p in report["points"]] == [16, 28, 40, 60, 80]
    assert report["target_accuracy"] == pytest.approx(0.99)
    assert report["chosen_fit"] in {f["name"] for f in report["fits"]}
    assert report["answer"] in captured.out
    assert set(report["points"][-1]["per_class_accuracy"]) == {f"digit_{c}" for c in CLASSES}
    assert report["points"][-1]["mean_accuracy"] > 0.5
    png = Image.open(io.BytesIO((out / "learning_curve.png").read_bytes()))
    png.load()
    assert png.format == "PNG"
    assert "<svg" in (out / "learning_curve.svg").read_text()


def test_cli_answers_accuracy_at_sizes_without_a_target(digit_folder, tmp_path, capsys, manifest_path):
    out = tmp_path / "at"
    rc = samplesize.run(parse([str(digit_folder), "--at", "50", "2k", "--out", str(out), "--fractions", "25%", "50%",
                               "75%", "1.0", "--repeats", "2", "--bootstrap", "40", "--model", str(manifest_path)]))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads((out / "samplesize.json").read_text())
    assert report["target_accuracy"] is None and report["images_needed"] is None
    at = report["accuracy_at"]
    assert [a["num_images"] for a in at] == [50, 2000]
    assert all(0 <= a["low"] <= a["accuracy"] <= a["high"] <= 1 for a in at)
    assert "2,000 images:" in captured.out and "25.0x extrapolation" in captured.out


def test_cli_parses_sizes():
    assert samplesize.parse_size("20k") == 20_000 and samplesize.parse_size("1.5M") == 1_500_000
    assert samplesize.parse_size("12,000") == 12_000
    for bad in ("0", "2.5", "lots", "-3k", "inf", "nan", "1e400"):
        with pytest.raises(argparse.ArgumentTypeError):
            samplesize.parse_size(bad)


def test_cli_reports_a_bad_source(tmp_path, capsys):
    rc = samplesize.run(parse([str(tmp_path / "missing"), "--target", "0.9"]))
    assert rc == 2
    assert "expected a folder" in capsys.readouterr().err


def test_cli_rejects_a_bad_target():
    with pytest.raises(SystemExit):
        parse(["somewhere", "--target", "150%"])
