"""Which files a listing takes for images: every format the decoder reads
(not only the common eight suffixes); files in image formats it does not
read, and files whose names are not valid UTF-8, are named, not dropped
silently; CSV manifests as spreadsheets write them."""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import digit_image, photo_image
from imagesieve.cli import IMAGE_SUFFIXES as CLIENT_SUFFIXES
from imagesieve.cli import UNREAD_IMAGE_SUFFIXES as CLIENT_UNREAD
from imagesieve.cli import iter_image_paths
from imagesieve_server.audit.sources import load_audit_table
from imagesieve_server.commands.common import labelled_records
from imagesieve_server.formats import IMAGE_SUFFIXES, UNREAD_IMAGE_SUFFIXES
from imagesieve_server.labelled_source import load_labelled_source

# Formats that datasets hold beyond JPEG/PNG/WebP/GIF/BMP/TIFF, each written by Pillow.
WRITTEN = {".avif": "AVIF", ".ppm": "PPM", ".tga": "TGA", ".jp2": "JPEG2000", ".jfif": "JPEG", ".pgm": "PPM"}


def test_the_light_client_walks_the_suffixes_the_server_decodes():
    assert CLIENT_SUFFIXES == IMAGE_SUFFIXES
    assert CLIENT_UNREAD == UNREAD_IMAGE_SUFFIXES
    assert not IMAGE_SUFFIXES & UNREAD_IMAGE_SUFFIXES
    assert {".jpg", ".png", ".webp", ".avif", ".ppm", ".jp2", ".tga", ".jfif"} <= IMAGE_SUFFIXES


@pytest.fixture()
def mixed_folder(tmp_path, photos):
    """Two class folders: the same 6 photos, each saved in one of WRITTEN's
    formats, plus files of image formats the decoder does not read."""
    for cls, picks in (("a", photos[:3]), ("b", photos[3:6])):
        d = tmp_path / cls
        d.mkdir()
        for (data, _, name), (suffix, fmt) in zip(picks, list(WRITTEN.items())[:3] if cls == "a"
                                                  else list(WRITTEN.items())[3:]):
            im = photo_image(data).resize((160, 160))
            im = im.convert("L") if suffix == ".pgm" else im
            im.save(d / (name.rsplit(".", 1)[0] + suffix), format=fmt)
    (tmp_path / "a" / "logo.jxl").write_bytes(b"\xff\x0a" + bytes(30))          # JPEG XL: not decoded
    (tmp_path / "b" / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "b" / "notes.txt").write_text("not an image, not worth a note")
    return tmp_path


def test_a_folder_walk_takes_every_decoded_format_and_names_the_rest(mixed_folder, embedder, photos):
    table = load_audit_table(str(mixed_folder))
    suffixes = sorted(p.rsplit(".", 1)[1] for p in table.paths)
    assert suffixes == sorted(s[1:] for s in WRITTEN)
    assert sorted(set(table.labels.values)) == ["a", "b"]
    assert len(table.notes) == 1
    assert "2 files left out" in table.notes[0] and ".jxl: 1" in table.notes[0] and ".heic: 1" in table.notes[0]
    assert ".txt" not in table.notes[0]

    # What was walked decodes to the same picture (the nearest of each
    # converted file among the 20 originals is its own original).
    originals = np.stack([e.vector for e in embedder.embed([d for d, _, _ in photos])])
    converted = list(embedder.embed([open(p, "rb").read() for p in table.paths]))
    assert all(e.error is None for e in converted), [e.error for e in converted]
    index = {name.rsplit(".", 1)[0]: i for i, (_, _, name) in enumerate(photos)}
    own = [index[Path(p).stem] for p in table.paths]
    nearest = (np.stack([e.vector for e in converted]) @ originals.T).argmax(axis=1)
    assert nearest.tolist() == own


def test_the_labelled_reader_and_the_client_walk_agree(mixed_folder, capsys):
    from collections import Counter
    skipped = Counter()
    records = load_labelled_source(mixed_folder, skipped)
    assert skipped == Counter({".jxl": 1, ".heic": 1})
    walked = iter_image_paths([str(mixed_folder)])
    assert sorted(map(str, walked)) == sorted(str(r.path) for r in records)
    err = capsys.readouterr().err
    assert "2 files left out" in err and ".jxl: 1" in err and ".heic: 1" in err
    # labels and samplesize read their source through this, and say the same
    assert [r.path for r in labelled_records(mixed_folder)] == [r.path for r in records]
    assert "2 files left out" in capsys.readouterr().err


def test_a_glob_of_only_unread_formats_says_why_nothing_was_found(tmp_path):
    for i in range(3):
        (tmp_path / f"art{i}.jxl").write_bytes(b"\xff\x0a" + bytes(30))
    with pytest.raises(ValueError, match=r"no images found.*3 files left out.*\.jxl: 3"):
        load_audit_table(str(tmp_path / "*.jxl"))
    with pytest.raises(ValueError, match=r"no images found.*3 files left out"):
        load_audit_table(str(tmp_path))


def test_an_avif_round_trip_is_the_same_picture(photos, embedder):
    im = photo_image(photos[0][0])
    buf = io.BytesIO()
    im.save(buf, format="AVIF", quality=60)
    assert Image.open(io.BytesIO(buf.getvalue())).format == "AVIF"
    a, b = embedder.embed([photos[0][0], buf.getvalue()])
    assert float(a.vector @ b.vector) > 0.9


def test_names_that_are_not_utf8_are_left_out_with_a_note_not_a_crash(tmp_path, photos, capsys):
    """File names are bytes: an old archive's Latin-1 'café.jpg' is not valid
    UTF-8, and paths travel as text (SQLite, Parquet, protobuf strings). Such
    a file once crashed the whole audit in its listing."""
    import os
    (tmp_path / "ok.jpg").write_bytes(photos[0][0])
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"), "wb") as f:
        f.write(photos[1][0])
    for source in (str(tmp_path), str(tmp_path / "*.jpg")):
        table = load_audit_table(source)
        assert [Path(p).name for p in table.paths] == ["ok.jpg"]
        assert len(table.notes) == 1 and "1 image file left out" in table.notes[0] and "UTF-8" in table.notes[0]
    assert [p.name for p in iter_image_paths([str(tmp_path)])] == ["ok.jpg"]
    assert "not valid UTF-8" in capsys.readouterr().err


def test_image_names_that_are_not_regular_files_are_left_out_with_a_note(tmp_path, photos, capsys):
    """A FIFO named like an image (opening it would block), a link to
    nothing and a link to a device are never opened; the note counts them,
    in the audit's listing and in the client's walk (`add`, `check`, which
    dropped them without a word)."""
    import os
    (tmp_path / "ok.jpg").write_bytes(photos[0][0])
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "gone.png").symlink_to(tmp_path / "no-such.png")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "folder.jpg").mkdir()                    # a folder named like an image: just a folder
    table = load_audit_table(str(tmp_path))
    assert [Path(p).name for p in table.paths] == ["ok.jpg"]
    assert len(table.notes) == 1 and "3 image names left out: not regular files" in table.notes[0], table.notes
    capsys.readouterr()
    assert [p.name for p in iter_image_paths([str(tmp_path)])] == ["ok.jpg"]
    assert "3 image name(s) left out: not regular files" in capsys.readouterr().err


def test_linked_folders_are_walked_once_and_loops_are_not_followed(tmp_path, photos, capsys):
    """A class folder that links to where its images live was left out
    without a word (``Path.rglob`` does not follow links to folders): the
    audit, the labelled listing and the client's walk now follow them, each
    real folder once, so a link back up (a loop) adds nothing."""
    import os
    from imagesieve_server.labelled_source import load_labelled_source
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.jpg").write_bytes(photos[2][0])
    data = tmp_path / "data"
    (data / "dogs").mkdir(parents=True)
    (data / "dogs" / "a.jpg").write_bytes(photos[0][0])
    (data / "dogs" / "b.jpg").write_bytes(photos[1][0])
    (data / "cats").mkdir()
    (data / "cats" / "d.jpg").write_bytes(photos[3][0])
    os.symlink(elsewhere, data / "dogs" / "more")           # a linked sub-folder
    os.symlink(data, data / "dogs" / "up")                  # a loop back to the top
    os.symlink("/proc", data / "dogs" / "proc")             # the kernel's: its links lead anywhere
    expected = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    table = load_audit_table(str(data))
    assert sorted(Path(p).name for p in table.paths) == expected, list(table.paths)
    labelled = load_labelled_source(data)                  # the loop does not bring cats in as dogs
    assert sorted((r.path.name, r.label) for r in labelled) == [("a.jpg", "dogs"), ("b.jpg", "dogs"),
                                                                 ("c.jpg", "dogs"), ("d.jpg", "cats")]
    assert sorted(p.name for p in iter_image_paths([str(data)])) == expected
    capsys.readouterr()


def test_a_folder_that_cannot_be_opened_is_named_not_dropped_unsaid(tmp_path, photos, capsys):
    """A folder the walk cannot open (no permission; here a path longer than
    the system allows, since root may read any folder) was passed over
    without a word: its images vanished from the audit and from 'check'.
    Both listings now say how many folders could not be opened, and why."""
    import os
    from imagesieve_server.formats import UNWALKED, images_under, skipped_note
    here = os.getcwd()
    (tmp_path / "top.jpg").write_bytes(photos[0][0])
    os.chdir(tmp_path)
    try:
        for _ in range(18):                    # 18 x 251 characters: beyond PATH_MAX (4,096)
            os.mkdir("d" * 250)
            os.chdir("d" * 250)
        Path("deep.jpg").write_bytes(photos[1][0])
    finally:
        os.chdir(here)
    skipped = Counter()
    assert [p.name for p in images_under(tmp_path, skipped)] == ["top.jpg"]
    assert skipped[UNWALKED] == 1
    note = skipped_note(skipped)
    assert "1 folder could not be opened, its images left out (first: " in note and "too long" in note, note
    assert [p.name for p in iter_image_paths([str(tmp_path)])] == ["top.jpg"]
    assert "1 folder(s) could not be opened" in capsys.readouterr().err


def test_a_folder_a_thousand_deep_is_walked(tmp_path, photos):
    """``os.walk`` recurses once a level (Python 3.11): a tree 1,200 folders
    deep raised RecursionError out of the audit's listing and the client's.
    The walker keeps its own stack; the image at the bottom is found."""
    import os
    here = os.getcwd()
    (tmp_path / "top.jpg").write_bytes(photos[0][0])
    os.chdir(tmp_path)
    try:                               # relative steps: the full path outgrows os.makedirs' recursion too
        for _ in range(1200):
            os.mkdir("d")
            os.chdir("d")
        Path("bottom.jpg").write_bytes(photos[1][0])
    finally:
        os.chdir(here)
    try:
        expected = ["bottom.jpg", "top.jpg"]
        assert sorted(Path(p).name for p in load_audit_table(str(tmp_path)).paths) == expected
        assert sorted(p.name for p in iter_image_paths([str(tmp_path)])) == expected
    finally:                           # shutil.rmtree (pytest's clean-up) recurses too: removed from the bottom up
        os.chdir(tmp_path)
        try:
            for _ in range(1200):
                os.chdir("d")
            os.unlink("bottom.jpg")
            for _ in range(1200):
                os.chdir("..")
                os.rmdir("d")
        finally:
            os.chdir(here)


def test_a_spreadsheet_manifest_with_a_byte_order_mark_reads_and_latin1_says_why_not(tmp_path, photos):
    (tmp_path / "a.jpg").write_bytes(photos[0][0])
    (tmp_path / "b.jpg").write_bytes(photos[1][0])
    # Excel's "CSV UTF-8" starts with a BOM, which used to hide the 'path' column's name
    (tmp_path / "bom.csv").write_bytes("\ufeffPath, Label\r\na.jpg,chat\r\nb.jpg,café\r\n".encode("utf-8"))
    table = load_audit_table(str(tmp_path / "bom.csv"))
    assert [Path(p).name for p in table.paths] == ["a.jpg", "b.jpg"]
    assert sorted(table.labels.values) == ["café", "chat"]
    assert [r.label for r in load_labelled_source(tmp_path / "bom.csv")] == ["chat", "café"]
    (tmp_path / "latin.csv").write_bytes("path,label\na.jpg,café\n".encode("latin-1"))
    for load in (load_audit_table, load_labelled_source):
        with pytest.raises(ValueError, match=r"latin\.csv: not UTF-8 text .* save the manifest as UTF-8"):
            load(str(tmp_path / "latin.csv"))


def test_hidden_files_and_macos_metadata_are_left_out_with_a_note(tmp_path, photos, capsys):
    """A thumbnail cache (.thumbnails/) would pair with every picture, and the
    "._name.jpg" files macOS writes into archives are not images at all."""
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / f"{cls}.jpg").write_bytes(photos[0 if cls == "cat" else 1][0])
        (tmp_path / cls / f"._{cls}.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (tmp_path / ".thumbnails").mkdir()
    (tmp_path / ".thumbnails" / "cat.jpg").write_bytes(photos[0][0])
    (tmp_path / "__MACOSX" / "cat").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "cat" / "._cat.jpg").write_bytes(b"\x00\x05\x16\x07")
    table = load_audit_table(str(tmp_path))
    assert sorted(Path(p).name for p in table.paths) == ["cat.jpg", "dog.jpg"]
    assert sorted(table.labels.values) == ["cat", "dog"]                 # no ".thumbnails" class
    assert len(table.notes) == 1 and "4 hidden image files left out" in table.notes[0]
    walked = iter_image_paths([str(tmp_path)])
    assert sorted(p.name for p in walked) == ["cat.jpg", "dog.jpg"]
    assert "4 hidden image file(s) left out" in capsys.readouterr().err


def test_a_missing_source_says_so_rather_than_no_images(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_audit_table(str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(ValueError, match="no images found"):           # a glob that matches nothing
        load_audit_table(str(tmp_path / "*.jpg"))


def test_every_picture_format_pillow_opens_but_the_server_does_not_is_named(tmp_path, photos):
    """Debian's /usr/share/pixmaps holds XPM icons: Pillow opens them, the
    decoder's allowlist does not, and a walk dropped them without a word.
    Such suffixes are now derived from Pillow's registry, not listed by hand."""
    photo_image(photos[0][0]).resize((64, 64)).save(tmp_path / "a.png")
    photo_image(photos[1][0]).resize((64, 64)).convert("1").save(tmp_path / "b.xbm")
    (tmp_path / "c.xpm").write_text('/* XPM */\nstatic char *c[] = {"1 1 1 1", "a c #ffffff", "a"};\n')
    table = load_audit_table(str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in table.paths] == ["a.png"]
    assert "2 files left out" in table.notes[0] and ".xbm: 1" in table.notes[0] and ".xpm: 1" in table.notes[0]
    assert {".xpm", ".xbm", ".icns", ".pcd"} <= UNREAD_IMAGE_SUFFIXES and ".mpg" not in UNREAD_IMAGE_SUFFIXES


def test_a_parquet_manifest_keeps_integer_label_zero(tmp_path):
    """Labels written as integers (0..9) are classes "0".."9": only a missing
    cell (None, or pandas' NaN) is unlabelled, never the class 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from imagesieve_server.audit.sources import load_audit_source
    paths = [str(tmp_path / f"d{i}.png") for i in range(4)]
    pq.write_table(pa.table({"path": paths, "label": [0, 1, None, 0],
                             "split": ["train", None, "test", "Test"]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"path": paths, "label": [0.0, float("nan"), 2.0, None]}), tmp_path / "floats.parquet")
    ints = {r.path: (r.label, r.split) for r in load_audit_source(str(tmp_path / "ints.parquet"))}
    assert [ints[p] for p in paths] == [("0", "train"), ("1", ""), ("", "test"), ("0", "test")]
    floats = {r.path: r.label for r in load_audit_source(str(tmp_path / "floats.parquet"))}
    assert [floats[p] for p in paths] == ["0.0", "", "2.0", ""]


def test_a_labelled_source_that_is_missing_or_unlabelled_says_what_to_do(tmp_path, photos):
    """What a stranger tries first: a wrong path, and a flat folder of images
    (no class folders) given to a command that needs labels."""
    with pytest.raises(ValueError, match=r"/no/such/folder: no such file or folder \(expected a folder"):
        load_labelled_source("/no/such/folder")
    (tmp_path / "a.jpg").write_bytes(photos[0][0])
    with pytest.raises(ValueError, match="its images lie loose in the folder; put each class's images in a "
                                         "sub-folder named after the class"):
        load_labelled_source(tmp_path)


def test_an_earlier_runs_output_reached_through_a_linked_folder_is_left_out(tmp_path, photos):
    """--out compared by the real path too: a source folder that links to
    where the audits are written must not audit an earlier run's thumbnails
    (a review: they were listed through the link)."""
    import os
    src, outs = tmp_path / "src", tmp_path / "outs"
    (src / "imgs").mkdir(parents=True)
    (src / "imgs" / "x.jpg").write_bytes(photos[0][0])
    (outs / "run1" / "thumbs").mkdir(parents=True)
    (outs / "run1" / "thumbs" / "t.jpg").write_bytes(photos[1][0])
    os.symlink(outs, src / "results")
    table = load_audit_table(str(src), exclude=outs / "run1")
    assert [Path(p).name for p in table.paths] == ["x.jpg"]


def test_folders_named_as_image_sizes_are_renditions_not_classes(tmp_path):
    """An icon theme keeps one icon drawn at several sizes in ``16x16/``,
    ``48x48/``...: read as classes, Adwaita's icons made 9,295 label
    conflicts. Such folders are read as unlabelled, saying so, their splits
    kept; digit classes (MNIST's 0-9), and one size-named folder among real
    classes, stay classes."""
    def tree(root, folders, images=True):
        for folder in folders:
            (root / folder / "apps").mkdir(parents=True)
            if images:
                Image.new("RGB", (16, 16), (40 * len(folder), 90, 30)).save(root / folder / "apps" / "edit.png")
        return root

    theme = tree(tmp_path / "theme", ["16x16", "24x24@2x", "48x48", "scalable", "drawable-xhdpi"])
    table = load_audit_table(str(theme))
    assert len(table) == 5 and table.n_labelled == 0
    assert any("named as image sizes (16x16, 24x24@2x, 48x48, ...)" in n and "unlabelled" in n
               for n in table.notes), table.notes
    # Android's res/: densities with their qualifiers, beside folders of XML only.
    res = tree(tmp_path / "res", ["drawable-hdpi-v4", "mipmap-xxxhdpi-v4", "drawable-nodpi"])
    tree(res, ["values", "values-fr", "layout"], images=False)
    assert load_audit_table(str(res)).n_labelled == 0
    # Under a train/test level: unlabelled, each image in its split.
    for split in ("train", "test"):
        tree(tmp_path / "split" / split, ["16x16", "32x32"])
    split = load_audit_table(str(tmp_path / "split"))
    assert split.n_labelled == 0 and sorted(split.splits[i] for i in range(len(split))) == ["test"] * 2 + ["train"] * 2
    assert any("splits kept" in n and "(16x16, 32x32)" in n for n in split.notes), split.notes

    digits = load_audit_table(str(tree(tmp_path / "digits", ["0", "1", "2"])))
    assert digits.n_labelled == 3 and sorted(digits.labels.values) == ["0", "1", "2"]
    assert not any("sizes" in n for n in digits.notes)
    for classes in (["cat", "dog", "64x64"], ["4x4", "sedan"]):
        table = load_audit_table(str(tree(tmp_path / "-".join(classes), classes)))
        assert table.n_labelled == len(classes) and classes[0] in table.labels.values


def test_class_folders_that_hold_one_set_of_images_under_the_same_names_get_a_caveat(tmp_path, photos, digits,
                                                                                     monkeypatch):
    """A manual's screenshots in one folder per language (marble's: en/marble/
    search-1.png beside de/marble/search-1.png) read as classes made "42.9% of
    the labels look wrong". When most images share their path with an image
    of another class folder, a caveat says the label findings judge versions,
    not labels: seen when the same-named images are each other's nearest
    pictures, else, for names that say what a picture is, only where the
    label check finds the labels widely wrong (letters named by their font in
    each letter's folder are real classes). Counter names over different
    pictures (Caltech-101's image_0001.jpg in every class), views named alike
    in many folders and a few shared names get none."""
    from imagesieve_server.audit.sources import MIRRORED_NOISE

    def save(root, folder, name, img):
        (root / folder / Path(name).parent).mkdir(parents=True, exist_ok=True)
        img.save(root / folder / name)

    def caveats(root):
        table = load_audit_table(str(root))
        assert table.n_labelled == len(table), "the folders stay labels"
        assert not any("share their path" in n for n in table.notes), "said only when it applies"
        return table.label_caveats

    pictures = [photo_image(data) for data, _, _ in photos]
    # Descriptive names in two language folders, each a different picture: the names say it.
    manual = tmp_path / "manual"
    for lang, offset in (("en", 0), ("de", 10)):
        for i, topic in enumerate(["setup", "search-1", "search-2", "routing", "measure", "view"]):
            save(manual, lang, f"guide/{topic}.png", pictures[(i + offset) % 20].resize((64, 48)))
    [caveat] = caveats(manual)
    assert "12 of the 12 images" in caveat.text and "de/guide/measure.png and en/guide/measure.png" in caveat.text
    assert "manifest" in caveat.text and not caveat.seen
    assert caveat.applies(0.6) and not caveat.applies(MIRRORED_NOISE - 0.01) and not caveat.applies(None)
    monkeypatch.chdir(manual)                      # `imagesieve audit .`
    assert len(load_audit_table(".").label_caveats) == 1
    monkeypatch.undo()

    # Counter names: only when the same-named images are one picture; then seen.
    x, y = digits
    originals, caltech = tmp_path / "originals", tmp_path / "caltech"
    for i in range(10):
        save(originals, "full", f"{i:04d}.jpg", pictures[i])
        save(originals, "small", f"{i:04d}.jpg", pictures[i].resize((pictures[i].width // 4, pictures[i].height // 4)))
    [caveat] = caveats(originals)
    assert caveat.seen and caveat.applies(None)
    for c in range(3):
        for i in range(10):
            save(caltech, f"class{c}", f"image_{i:04d}.png", digit_image(x[y == c][i]))
    assert caveats(caltech) == []

    # Views named alike in each of many product folders; a few shared names among classes.
    views = tmp_path / "views"
    for product in range(6):
        for j, view in enumerate(["front", "back"]):
            save(views, f"product{product}", f"{view}.png", pictures[(2 * product + j) % 20].resize((32, 32)))
    assert caveats(views) == []
    few = tmp_path / "few"
    for i in range(10):
        save(few, "cat" if i < 5 else "dog", f"pet{i}.png" if i not in (0, 5) else "cover.png", pictures[i])
    assert caveats(few) == []


def test_images_loose_beside_class_folders_say_why_nothing_is_labelled(tmp_path, photos):
    """A game's icon folder (FreeOrion: 27 icons loose beside building/,
    buttons/, flags/ ... of 888) was audited all unlabelled without a word,
    and the label check said only "915 of 915 images have no label"."""
    for i, folder in enumerate(["building", "flags", "ships", "tech"]):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{i}.jpg").write_bytes(photos[i][0])
    (tmp_path / "empty").mkdir()
    (tmp_path / "logo.jpg").write_bytes(photos[5][0])
    table = load_audit_table(str(tmp_path))
    assert len(table) == 5 and table.n_labelled == 0
    assert [n for n in table.notes if "loose" in n] == [
        f"1 image lies loose in {tmp_path} beside 4 folders of images (building, flags, ships, ...): the folders "
        "are not read as classes and every image is audited unlabelled; for labels, move the loose images into a "
        "folder of their own or give a CSV manifest path,label[,split]"]
    (tmp_path / "logo.jpg").unlink()
    assert load_audit_table(str(tmp_path)).n_labelled == 4


def test_lossy_formats_are_told_by_the_files_own_bytes(photos):
    """What the report's keep rule weighs (a lossless copy before a lossy
    one): JPEG, lossy WebP (plain, with transparency, after an ICC profile,
    whose image chunk lies past the first bytes), AVIF and GIF (at most 256
    colours) are lossy; PNG, BMP, TIFF and lossless WebP are not, whatever
    the file is called."""
    from PIL import ImageCms
    from imagesieve_server.engine import preflight

    def lossy_format(f):
        return preflight.lossy(f.read(preflight.LOSSY_HEAD))
    im = photo_image(photos[0][0]).resize((96, 64))
    faded = im.convert("RGBA")
    faded.putalpha(128)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    def lossy(img, fmt, **kw):
        out = io.BytesIO()
        img.save(out, fmt, **kw)
        out.seek(0)
        return lossy_format(out)
    assert lossy(im, "JPEG") and lossy(im, "GIF") and lossy(im, "AVIF")
    assert lossy(im, "WEBP", quality=50) and lossy(faded, "WEBP", quality=50)
    assert lossy(im, "WEBP", quality=50, icc_profile=icc) and lossy(faded, "WEBP", quality=50, icc_profile=icc)
    assert not any([lossy(im, "PNG"), lossy(im, "BMP"), lossy(im, "TIFF"), lossy(im, "WEBP", lossless=True),
                    lossy(faded, "WEBP", lossless=True, icc_profile=icc)])
    assert not lossy_format(io.BytesIO(b"")) and not lossy_format(io.BytesIO(b"RIFF\0\0\0\0WEBP"))
