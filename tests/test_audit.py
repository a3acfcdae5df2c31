"""imagesieve audit end to end on real photos: report contents, resumability,
sources, and the Ray backend against the in-process one."""
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from imagesieve.alterations import ALTERATIONS, jpeg
from imagesieve.samples import imagenet_photos, natural_photos

CLASSES = ("animal", "object")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Real photos in train/test class folders, with planted problems: near
    copies, an exact copy across splits (leakage), a copy filed under the
    other class (label conflict), a corrupt file, and 120 images in all so
    the sample-size sweep runs."""
    root = tmp_path_factory.mktemp("ds")
    photos = [Image.open(p).convert("RGB") for p, _ in imagenet_photos()]
    photos += [Image.open(p).convert("RGB") for p in natural_photos() if Image.open(p).mode == "RGB"]
    kinds = list(ALTERATIONS)
    planted = {}
    n = 0
    for i, im in enumerate(photos):
        cls = CLASSES[i % 2]
        base = im.resize((320, 240))
        for v in range(4):       # four views of each photo: crops of different regions (distinct images)
            box = (v * 40, (v % 2) * 30, v * 40 + 200, (v % 2) * 30 + 180)
            d = root / "train" / cls
            d.mkdir(parents=True, exist_ok=True)
            (d / f"p{i}_v{v}.jpg").write_bytes(jpeg(base.crop(box).resize((240, 216)), 90))
            n += 1
    first = root / "train" / CLASSES[0] / "p0_v0.jpg"
    (root / "test" / CLASSES[0]).mkdir(parents=True)
    (root / "test" / CLASSES[0] / "leaked.jpg").write_bytes(first.read_bytes())
    planted["leak"] = ("p0_v0.jpg", "leaked.jpg")
    src = Image.open(root / "train" / CLASSES[1] / "p1_v0.jpg")
    (root / "train" / CLASSES[0] / "relabelled_copy.jpg").write_bytes(jpeg(ALTERATIONS[kinds[0]](src), 90))
    planted["conflict"] = ("p1_v0.jpg", "relabelled_copy.jpg")
    (root / "train" / CLASSES[1] / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    # Image-property problems, each made from another photo (no duplicate of a planted pair).
    view = lambda i: photos[i].resize((240, 216))  # noqa: E731
    d = root / "train" / CLASSES[0]
    (d / "dark.jpg").write_bytes(jpeg(ImageEnhance.Brightness(view(3)).enhance(0.08), 90))
    (d / "blurred.jpg").write_bytes(jpeg(view(5).filter(ImageFilter.GaussianBlur(6)), 90))
    (d / "blank.jpg").write_bytes(jpeg(Image.new("RGB", (240, 216), (128, 124, 120)), 90))
    (d / "gray.jpg").write_bytes(jpeg(view(7).convert("L").convert("RGB"), 90))
    planted["properties"] = {"dark": "dark.jpg", "blurry": "blurred.jpg", "low_information": "blank.jpg",
                             "grayscale": "gray.jpg"}
    return root, planted


def audit(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "imagesieve.cli", "audit", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def audited(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "out"
    r = audit(dataset[0], "--out", out, "--target", "0.99")
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r


def test_audit_report_finds_the_planted_problems(dataset, audited):
    root, planted = dataset
    out, r = audited
    doc = json.loads((out / "report.json").read_text())
    s = doc["summary"]
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert s["images"] == n_files and s["failed"] == 1 and s["embedded"] == n_files - 1
    names = lambda pair: {Path(pair["a"]).name, Path(pair["b"]).name}  # noqa: E731
    leaks = doc["checks"]["leakage"]["issues"]["cross_split"]["pairs"]
    assert names(leaks[0]) == set(planted["leak"]) and leaks[0]["exact"]      # identical bytes lead
    pairs = pq.read_table(out / "duplicate_pairs.parquet").to_pylist()
    assert {(Path(p["path_a"]).name, Path(p["path_b"]).name) for p in pairs if p["cross_split"]} == \
        {(Path(p["a"]).name, Path(p["b"]).name) for p in leaks}
    groups = pq.read_table(out / "duplicate_groups.parquet").to_pylist()
    assert {Path(g["path"]).name for g in groups} >= set(planted["leak"])
    paired = {p["path_a"] for p in pairs} | {p["path_b"] for p in pairs}
    assert s["images_paired_outside_groups"] == len(paired - {g["path"] for g in groups})
    exact = [p for p in pairs if p["exact"]]
    assert {Path(exact[0]["path_a"]).name, Path(exact[0]["path_b"]).name} == set(planted["leak"])
    conflict = [p for p in pairs if {Path(p["path_a"]).name, Path(p["path_b"]).name} == set(planted["conflict"])]
    assert conflict and conflict[0]["labels_disagree"]
    # The candidates stage 2 rejected that came closest: none of them a reported pair,
    # closest first, with their evidence, in a table, the summary and a list of the report's.
    near_misses = pq.read_table(out / "near_misses.parquet").to_pylist()
    assert s["near_misses"] == len(near_misses) > 0 and "near misses: " in r.stdout
    assert not {(p["path_a"], p["path_b"]) for p in near_misses} & {(p["path_a"], p["path_b"]) for p in pairs}
    rel = [p["relative_disagreement"] for p in near_misses if p["relative_disagreement"] == p["relative_disagreement"]]
    assert rel == sorted(rel) and {"agreement", "keypoint_inliers", "cosine"} <= set(near_misses[0])
    assert (out / "report_data" / "near_misses" / "0.js").exists()
    images = pq.read_table(out / "images.parquet").to_pylist()
    assert len(images) == n_files
    assert [x["error"] for x in images if x["path"].endswith("corrupt.jpg")][0].startswith("INVALID_ARGUMENT")
    # Named where a person looks, not only in images.parquet: the console, and a list of the report's.
    failed_line = [x for x in r.stdout.splitlines() if x.startswith("failed: ")]
    assert len(failed_line) == 1 and "corrupt.jpg: INVALID_ARGUMENT" in failed_line[0], r.stdout
    page = (out / "report_data" / "failed" / "0.js").read_text()
    assert "corrupt.jpg" in page and "INVALID_ARGUMENT" in page
    probs = np.load(out / "pred_probs.npy")
    labels = np.load(out / "labels.npy")
    assert probs.shape == (n_files - 1, 2) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert set(labels.tolist()) == {0, 1}
    assert doc["sample_size"]["points"] and s["sample_size_answer"]
    # One default per parameter: the sweep's classifier is samplesize's and the SampleSizeSweep job's.
    assert s["sample_size_classifier"] == "logreg" and "(Classifier: logreg on the embeddings.)" in s["sample_size_answer"]
    assert "duplicate groups (verified):" in r.stdout and "duplicate threshold:" in r.stdout and "report:" in r.stdout
    assert s["duplicate_method"] == "verified" and {"agreement", "matched_blur_px", "warp_gain"} <= set(pairs[0])
    assert "embedding (in-process)" in r.stderr                      # progress line
    # Image properties: each planted problem flagged under its kind, with why.
    issues = doc["checks"]["image_properties"]["issues"]
    flagged = {k: [Path(x["path"]).name for x in v["images"]] for k, v in issues.items()}
    for kind, name in planted["properties"].items():
        assert name in flagged[kind], (kind, flagged[kind], issues[kind]["reason"])
        assert issues[kind]["reason"]
    # Views of ordinary ImageNet photos (p0-p19) are flagged for nothing; scikit-image's are
    # (the Hubble deep field and the phantom are dark, the colour chart has no fine detail).
    ordinary = [n for k in ("dark", "bright", "blurry", "low_information") for n in flagged[k]
                if n.startswith("p") and int(n[1:].split("_")[0]) < 20]
    assert ordinary == [], flagged
    assert s["checks"]["image_properties"]["measured"] == n_files - 1
    assert "image properties: " in r.stdout


def test_audit_pixels_on_too_few_images_says_so_and_scores_embeddings(dataset, audited, tmp_path):
    """--pixels on ~120 images: too few for the pixel CNN (it added noise on
    400 digits); the audit says so and scores as without the flag."""
    out = tmp_path / "pixels"
    r = audit(dataset[0], "--out", out, "--no-sweep", "--pixels")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--pixels: the pixel CNN needs at least 1,000 labelled images" in r.stderr
    probs, plain = np.load(out / "pred_probs.npy"), np.load(audited[0] / "pred_probs.npy")
    assert np.allclose(probs, plain, atol=1e-6)


def test_audit_resumes_and_detects_changed_files(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "audit"
    first = audit(root, "--out", out, "--no-sweep")
    assert first.returncode == 0
    first_pairs = pq.read_table(out / "duplicate_pairs.parquet")
    # A rerun embeds only the file that failed (corrupt.jpg: tried again, it fails again).
    rerun = audit(root, "--out", out, "--no-sweep").stdout
    assert "embedding: 0 embedded now, 1 failed," in rerun     # a failure is not counted as embedded
    # ... and aligns no candidate pair again (stage 2's evidence is kept beside the embeddings),
    read = re.search(r"stage 2: ([\d,]+) of ([\d,]+) candidate pairs read from an earlier run's evidence .*, "
                     r"0 aligned now", rerun)
    assert read and read.group(1) == read.group(2)
    # with the same pairs and evidence as the first run's.
    assert pq.read_table(out / "duplicate_pairs.parquet").equals(first_pairs)
    target = root / "train" / CLASSES[1] / "p1_v1.jpg"
    os.utime(target, None)                                  # touched, same bytes: not re-embedded
    assert "embedding: 0 embedded now, 1 failed," in audit(root, "--out", out, "--no-sweep").stdout
    original = target.read_bytes()
    Image.open(target).rotate(90).save(target)              # new content: embedded again
    try:
        changed = audit(root, "--out", out, "--no-sweep").stdout
        assert "embedding: 1 embedded now, 1 failed," in changed
        # Only the changed image's candidate pairs are aligned again.
        read = re.search(r"stage 2: ([\d,]+) of ([\d,]+) candidate pairs read .*, ([\d,]+) aligned now", changed)
        fresh, asked = int(read.group(3).replace(",", "")), int(read.group(2).replace(",", ""))
        assert 0 < fresh < asked // 4
    finally:
        target.write_bytes(original)


def test_failed_images_take_no_row_in_the_shards(tmp_path):
    """A failed image was stored as a zero vector and a zero signature, ~12
    KB each: a folder of a million broken files would have written 12 GB
    of zeros. Failed images now take no row; loading still answers every
    path in order, a failure as a zero vector with its error, and a rerun
    tries them again."""
    from imagesieve_server.audit.store import FAILED_SHARD, Embedded, EmbeddingStore
    from imagesieve_server.engine.signature import SIGNATURE_BYTES
    store = EmbeddingStore(tmp_path / "emb", "m", 4, shard_size=10)
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]))
        paths.append(str(p))
        bad = i % 3 == 1
        store.put(Embedded(str(p), "" if bad else f"{i:064x}", 1, 1, None if bad else np.full(4, i + 1, np.float32),
                           width=i, height=i, error="INVALID_ARGUMENT: broken" if bad else "",
                           signature=None if bad else np.full(SIGNATURE_BYTES, i, np.uint8)))
    store.put(Embedded(str(tmp_path / "gone"), "", 0, 0, None, error="cannot read: gone"))
    store.flush()
    shard = np.load(tmp_path / "emb" / "shard-00000.npy")
    assert shard.shape == (5, 4) and shard[:, 0].tolist() == [1, 3, 4, 6, 7]
    assert np.load(tmp_path / "emb" / "layout-00000.npy").shape == (5, SIGNATURE_BYTES)
    rows = dict(store.db.execute("SELECT path, shard FROM items").fetchall())
    assert sum(v == FAILED_SHARD for v in rows.values()) == 3
    loaded = store.load(paths)
    assert loaded.vectors[:, 0].tolist() == [1, 0, 3, 4, 0, 6, 7]
    assert [bool(e) for e in loaded.errors] == [False, True, False, False, True, False, False]
    assert loaded.signatures[2, 100] == 2 and not loaded.signatures[1].any() and loaded.sizes[4].tolist() == [4, 4]
    assert store.is_current(paths[1]) is None          # tried again by the next run
    # a flush of failures alone writes no shard, and the next shard keeps its number
    store.put(Embedded(str(tmp_path / "gone2"), "", 0, 0, None, error="cannot read: gone"))
    store.flush()
    assert sorted(f.name for f in (tmp_path / "emb").glob("shard-*.npy")) == ["shard-00000.npy"]
    store.put(Embedded(paths[1], "9" * 64, 1, 1, np.full(4, 9, np.float32), signature=np.zeros(SIGNATURE_BYTES, np.uint8)))
    store.flush()
    assert store.load(paths).vectors[1, 0] == 9 and (tmp_path / "emb" / "shard-00001.npy").exists()
    store.close()


def test_new_bytes_behind_an_old_modification_time_are_embedded_again(tmp_path):
    """`cp other.bmp img.bmp; touch -d OLD img.bmp` (same size): a resumed
    audit trusted size and mtime and reused the old embedding. The stored
    stamp is the later of mtime and ctime, which no one can set back."""
    from imagesieve_server.audit.embed import plan, read_image_file
    from imagesieve_server.audit.store import Embedded, EmbeddingStore
    target, other = tmp_path / "img.bmp", tmp_path / "other.bmp"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(target)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(other)
    store = EmbeddingStore(tmp_path / "emb", "m", 4)
    _, sha, size, stamp, _ = read_image_file(str(target))
    store.put(Embedded(str(target), sha, size, stamp, np.ones(4, np.float32)))
    store.flush()
    assert store.is_current(str(target)) and len(plan(store, [str(target)])) == 0
    old = target.stat()
    time.sleep(0.01)
    target.write_bytes(other.read_bytes())                       # same size, new bytes
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))     # the old mtime put back
    assert target.stat().st_size == old.st_size and target.stat().st_mtime_ns == old.st_mtime_ns
    assert store.is_current(str(target)) is False
    assert plan(store, [str(target)]).tolist() == [0]           # embedded again
    # The first bytes back (a copy, a restore): hashed once, not embedded; then current again.
    Image.new("RGB", (8, 8), (10, 20, 30)).save(target)
    assert store.is_current(str(target)) is False
    assert len(plan(store, [str(target)])) == 0 and store.is_current(str(target))
    store.close()


def test_a_flush_interrupted_inside_its_transaction_can_be_flushed_again(tmp_path):
    """Ctrl-C landing inside a flush's insert left its transaction open, and
    the flush the audit makes on its way out failed ("cannot start a
    transaction within a transaction"): the audit exited 1 instead of 130,
    its last shard unindexed. A failed insert is rolled back; flushed again,
    every row is stored."""
    from imagesieve_server.audit.store import Embedded, EmbeddingStore
    store = EmbeddingStore(tmp_path / "emb", "m", 4)
    good = Embedded(str(tmp_path / "a.png"), "a" * 64, 10, 1, np.ones(4, np.float32))
    bad = Embedded(str(tmp_path / "b.png"), "b" * 64, 10, 1, np.ones(4, np.float32), width=object())
    store.put(good)
    store.put(bad)
    with pytest.raises(Exception):           # the second row cannot be bound: the insert fails inside
        store.flush()
    bad.width = 8
    store.flush()
    loaded = store.load([good.path, bad.path])
    assert loaded.vectors.shape == (2, 4) and np.allclose(loaded.vectors, 1)
    store.close()


def test_the_audits_pixel_limit_can_be_raised_and_lowered(manifest_path, tmp_path):
    """`serve` had --max-pixels, the audit not: a 108 MP scan failed with no way
    to let it in. The raster limit follows (4 bytes a pixel)."""
    from imagesieve_server.audit.embed import InProcessBackend
    Image.new("RGB", (120, 100), (90, 30, 200)).save(tmp_path / "a.png")
    small = InProcessBackend(str(manifest_path), max_pixels=10_000, decode_processes=0)
    try:
        [item] = list(small.embed([str(tmp_path / "a.png")]))
        assert item.vector is None and "12000 pixels, above the limit of 10000" in item.error
    finally:
        small.close()
    big = InProcessBackend(str(manifest_path), max_pixels=300_000_000, decode_processes=0)
    try:
        assert big.embedder.limits.max_pixels == 300_000_000
        assert big.embedder.limits.max_raster_bytes == 1_200_000_000
        [item] = list(big.embed([str(tmp_path / "a.png")]))
        assert item.vector is not None and not item.error
    finally:
        big.close()
    with pytest.raises(ValueError, match="max_pixels"):
        InProcessBackend(str(manifest_path), max_pixels=0)


def test_strict_audit_exits_1_when_an_image_failed(dataset, audited, tmp_path):
    """A pipeline gate: the same audit (resumed from a copy of its
    embeddings) with --strict exits 1, as ``check --strict`` does, and still
    writes its report."""
    first_out, first = audited
    out = tmp_path / "out"
    shutil.copytree(first_out / "embeddings", out / "embeddings")
    r = audit(dataset[0], "--out", out, "--target", "0.99", "--no-sweep", "--strict")
    assert first.returncode == 0 and r.returncode == 1, r.stdout + r.stderr
    assert "0 embedded now" in r.stdout or "reused" in r.stdout, r.stdout
    # The closing line counts images with an embedding, and says how many were made now
    # (it said "N embedded" of a rerun that embedded none: a stranger's try).
    closing = next(x for x in r.stdout.splitlines() if x.startswith("== imagesieve audit:"))
    assert " with an embedding (0 embedded now, " in closing and " reused)" in closing, closing
    assert any(x.startswith("failed: ") and "corrupt.jpg" in x for x in r.stdout.splitlines())
    assert json.loads((out / "report.json").read_text())["summary"]["failed"] == 1


def test_a_url_or_an_empty_path_in_a_manifest_fails_alone_saying_so(tmp_path):
    """A URL row became "http:/example.com/x.jpg: No such file" and an empty
    path the manifest's own folder ("not a regular file")."""
    from imagesieve_server.audit.embed import read_image_file
    from imagesieve_server.audit.sources import load_audit_table
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nok.png,a\nhttp://example.com/x.jpg,b\n,c\n")
    table = load_audit_table(str(manifest))
    errors = {p: read_image_file(p)[4] for p in table.paths}
    assert errors[str(tmp_path / "ok.png")] == ""
    assert errors["http://example.com/x.jpg"].startswith("INVALID_ARGUMENT: a URL, not a file")
    assert errors[""] == "INVALID_ARGUMENT: an empty path"


def test_a_file_swapped_for_a_fifo_after_it_was_looked_at_fails_alone(tmp_path, monkeypatch):
    """The audit looked at a name (a regular file), then opened it by name:
    a file swapped for a FIFO in between blocked the open for ever (a probe
    hung the audit in 2 of 6 runs). Here the name is a FIFO that looked like
    a regular file a moment before: it fails alone, at once; and a file
    larger than the limit is refused unread."""
    import os
    import threading
    from imagesieve_server.audit import embed as audit_embed
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    looked_at = os.stat(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "swapped.png")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: looked_at if str(p).endswith("swapped.png")
                        else real_stat(p, *a, **k))
    answer = []
    reader = threading.Thread(target=lambda: answer.append(audit_embed.read_image_file(str(tmp_path / "swapped.png"))),
                              daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():                       # let the blocked open go before failing
        with open(tmp_path / "swapped.png", "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert answer[0][4] == "INVALID_ARGUMENT: not a regular file"
    (tmp_path / "big.png").write_bytes(b"\0" * 2048)
    data, _, size, _, error = audit_embed.read_image_file(str(tmp_path / "big.png"), max_bytes=1024)
    assert data == b"" and size == 2048 and error.startswith("RESOURCE_EXHAUSTED: file is 2048 bytes")
    assert audit_embed.read_image_file(str(tmp_path / "ok.png"))[4] == ""


def test_labels_and_paths_that_look_like_formulas_stay_text_in_written_csv(tmp_path):
    """A class folder named like a spreadsheet formula became a live formula
    in `imagesieve fix`'s manifest (a ninth probe): such cells are written
    with a leading apostrophe, which every manifest reader takes off again,
    so the labels read back whole; numbers such as -1 are left as they are."""
    from imagesieve_server.audit.sources import load_audit_source
    evil = '=HYPERLINK("http:__evil.example","click")'
    for name in (evil, "-1", "@home"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (len(name), 0, 0)).save(tmp_path / "data" / name / "x.png")
    (tmp_path / "data" / "-1" / "+y.png").write_bytes((tmp_path / "data" / "-1" / "x.png").read_bytes())
    relabelled = str(tmp_path / "data" / "@home" / "x.png")
    (tmp_path / "fixes.csv").write_text(f"source,path,action,new_label,reason\n{tmp_path / 'data'},{relabelled},"
                                        "relabel,'+cmd|' /C calc'!A0,\n")
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "fixes.csv"),
                        "--out", str(tmp_path / "clean.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cells = [c for row in csv.reader(open(tmp_path / "clean.csv", newline="")) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@")], cells     # nothing a spreadsheet runs
    assert "'" + evil in cells and "-1" in cells
    labels = {Path(x.path).name + "@" + Path(x.path).parent.name: x.label
              for x in load_audit_source(str(tmp_path / "clean.csv"))}
    assert labels == {f"x.png@{evil}": evil, "x.png@-1": "-1", "+y.png@-1": "-1",
                      "x.png@@home": "+cmd|' /C calc'!A0"}


def test_the_reports_fix_list_escapes_cells_by_the_manifest_readers_rule(tmp_path):
    """The report's page writes its fix list in JavaScript (csvCell in its
    template); `imagesieve fix` reads it back in Python. Both must take the
    same cells for formulas: Python's \\d also matched non-ASCII digits
    ("-１２" a number to Python, text to JavaScript), and the apostrophe the
    page added stayed on the label (a review)."""
    import io
    import re
    import shutil
    from imagesieve.manifest import read_csv_rows, spreadsheet_cell
    template = (Path(__file__).resolve().parents[1] / "service" / "imagesieve_server" / "audit" / "templates"
                / "report.html.j2").read_text()
    js = re.search(r"(  function csvCell\(v\) \{.*?\n  \})\n", template, re.S).group(1)
    values = ["=1+1", "-1", "+2.5", "-3e-4", "-1.", "-.5", "'", "''x", "'=x", "@a", "\tx", "-", "x",
              "-\uff11\uff12", "-\u0661\u0662", "+\u0663", "=a,b", "dog-cat"]
    script = js + "\nconst vals = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n" \
        "process.stdout.write(['new_label'].concat(vals.map(csvCell)).join('\\n') + '\\n');\n"
    run = subprocess.run([shutil.which("node"), "-e", script], input=json.dumps(values), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    written = [row[0] if row else "" for row in csv.reader(io.StringIO(run.stdout, newline=""))][1:]
    assert written == [spreadsheet_cell(v) for v in values]
    (tmp_path / "fixes.csv").write_text(run.stdout)
    assert [r["new_label"] for r in read_csv_rows(tmp_path / "fixes.csv")] == values


def test_interrupted_audit_continues_without_embedding_twice(tmp_path):
    """Ctrl-C in the middle of embedding; the rerun embeds only the rest."""
    folder = tmp_path / "many"
    folder.mkdir()
    photo = Image.open(imagenet_photos()[0][0]).convert("RGB")
    for i in range(600):
        photo.rotate(i * 0.6).resize((800, 600)).save(folder / f"img{i:04d}.jpg", quality=85)
    out = tmp_path / "audit"
    # SIGINT as a terminal delivers it: a test run started in the background
    # by a non-interactive shell inherits it ignored, and Python keeps that.
    p = subprocess.Popen([sys.executable, "-m", "imagesieve.cli", "audit", str(folder), "--out", str(out),
                          "--shard-size", "40"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "embeddings").glob("shard-*.npy"))) < 2 \
            and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=120)
    assert p.returncode == 130 and "rerun the same command" in log, log     # stopped while embedding
    done_before = len(np.concatenate([np.load(s) for s in (out / "embeddings").glob("shard-*.npy")]))
    assert 0 < done_before < 600
    rerun = audit(folder, "--out", out, "--no-sweep")
    assert rerun.returncode == 0
    assert f"{600 - done_before} embedded now, {done_before} reused" in rerun.stdout


def test_manifest_and_glob_sources(dataset, tmp_path):
    root, _ = dataset
    files = [p for cls in CLASSES for p in sorted((root / "train" / cls).glob("*.jpg"))
             if "corrupt" not in p.name][:15] + sorted((root / "train" / CLASSES[1]).glob("p*.jpg"))[:15]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for p in files:
            w.writerow([str(p), p.parent.name, p.parent.parent.name])
    import pyarrow as pa
    pq.write_table(pa.table({"path": [str(p) for p in files]}), tmp_path / "m.parquet")
    for source, labelled in [(manifest, True), (tmp_path / "m.parquet", False), (f"{root}/train/animal/*.jpg", False)]:
        out = tmp_path / f"out-{Path(str(source)).suffix or 'glob'}"
        r = audit(source, "--out", out, "--no-sweep")
        assert r.returncode == 0, r.stderr
        s = json.loads((out / "report.json").read_text())["summary"]
        assert s["failed"] == 0 and s["images"] >= 20
        assert ("label_suspects" in s) == labelled


def test_ray_backend_gives_the_same_embeddings(dataset, tmp_path):
    root, _ = dataset
    files = sorted(p for p in root.rglob("*.jpg"))[:24]
    folder = tmp_path / "subset"
    folder.mkdir()
    for p in files:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    a, b = tmp_path / "inproc", tmp_path / "ray"
    assert audit(folder, "--out", a, "--no-sweep").returncode == 0
    r = audit(folder, "--out", b, "--no-sweep", "--ray", "local", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "embedding (ray)" in r.stderr
    from imagesieve_server.audit.store import EmbeddingStore
    paths = sorted(str(p) for p in folder.iterdir())
    va, sa, ea, *_ = EmbeddingStore(a / "embeddings", "mobilenet_v1", 1024).load(paths)
    vb, sb, eb, *_ = EmbeddingStore(b / "embeddings", "mobilenet_v1", 1024).load(paths)
    assert (sa == sb).all() and ea == eb
    assert np.abs(va - vb).max() < 1e-5


def chromium_dom(url: str, profile: Path) -> tuple[str, dict, list[str]]:
    """(dumped DOM, the body's data- attributes, console lines) of ``url``
    in Debian's headless chromium, scripts run."""
    import re
    import shutil
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install -y chromium; .ci/run installs it)"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=5000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", r.stdout).group(1)
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return r.stdout, dict(re.findall(r'data-([\w-]+)="([^"]*)"', body)), console


def list_box(dom: str, name: str) -> str:
    """The dumped DOM of one list of the report (up to the next list or section)."""
    part = dom.split(f'data-list="{name}"', 1)[1]
    return part.split("data-list=", 1)[0].split("<section", 1)[0]


def test_report_opens_in_headless_chromium_with_no_errors(dataset, audited, tmp_path):
    """A real browser runs report.html offline: every section, list and
    thumbnail present, no broken image, no script error, nothing fetched
    from outside the report's folder; lists page, filter by class and split
    and search by path, driven through the page's address."""
    import re
    root, planted = dataset
    out, _ = audited
    page = (out / "report.html").read_text()
    linked = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', page)
    local = [u for u in linked if not u.startswith(("data:", "#"))]
    assert all("://" not in u and not u.startswith("/") and (out / u).exists() for u in local), local
    dom, attrs, console = chromium_dom((out / "report.html").as_uri(), tmp_path / "profile")
    assert attrs["ready"] == "1", attrs
    assert int(attrs["images"]) >= 10 and attrs["broken-images"] == "0" and attrs["js-errors"] == "0", attrs
    assert console == []
    for section in ("summary", "balance", "duplicates", "duplicate-groups", "leakage", "label_issues", "outliers",
                    "image_properties", "learning-curve"):
        assert f'id="{section}"' in dom, section
    assert "<svg" in dom.split('id="learning-curve"')[1]          # the plot is inline
    doc = json.loads((out / "report.json").read_text())
    leaks = doc["checks"]["leakage"]["issues"]["cross_split"]
    box = list_box(dom, "leakage.cross_split")
    assert f"showing 1\u2013{min(leaks['count'], 50)} of {leaks['count']}" in box or \
        f"showing 1–{min(leaks['count'], 50)} of {leaks['count']}" in box
    assert all(name in box for name in planted["leak"])        # both images of the leak, side by side
    assert box.count("<img") == 2 * min(leaks["count"], 50) and "identical bytes" in box
    # Search by path and filter by class, from the address.
    leak_name = planted["leak"][0]
    dom, attrs, _ = chromium_dom((out / "report.html").as_uri() + f"#list=duplicates.exact&q={leak_name}",
                                 tmp_path / "profile2")
    box = list_box(dom, "duplicates.exact")
    assert re.search(r'data-total="(\d+)"', box).group(1) == "1" and leak_name in box
    suspects = doc["label_suspects"]
    label = suspects[0]["given"]
    want = sum(1 for x in suspects if x["given"] == label)
    dom, attrs, _ = chromium_dom((out / "report.html").as_uri() + f"#list=label_issues.suspects&label={label}",
                                 tmp_path / "profile3")
    box = list_box(dom, "label_issues.suspects")
    assert re.search(r'data-total="(\d+)"', box).group(1) == str(want) and attrs["js-errors"] == "0"
    assert box.count('<span class="badge">') == min(want, 50)


def test_audit_through_a_server_in_processes_or_on_torch_matches_in_process(dataset, server, tmp_path):
    root, _ = dataset
    folder = tmp_path / "few"
    folder.mkdir()
    picked = sorted(p for p in root.rglob("*.jpg") if p.name != "corrupt.jpg")[:11]
    for p in picked + [next(root.rglob("corrupt.jpg"))]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    a, b = tmp_path / "inproc", tmp_path / "server"
    assert audit(folder, "--out", a, "--no-sweep").returncode == 0
    r = audit(folder, "--out", b, "--no-sweep", "--server", server.address)
    assert r.returncode == 0, r.stderr
    assert "embedding (server)" in r.stderr
    from imagesieve_server.audit.store import EmbeddingStore
    paths = sorted(str(p) for p in folder.iterdir())
    la = EmbeddingStore(a / "embeddings", "mobilenet_v1", 1024).load(paths)
    lb = EmbeddingStore(b / "embeddings", "mobilenet_v1", 1024).load(paths)
    va, ea, vb, eb = la.vectors, la.errors, lb.vectors, lb.errors
    assert ea == eb and sum(bool(e) for e in ea) == 1        # the corrupt file fails alone, both ways
    np.testing.assert_array_equal(va, vb)
    # The server's layout signatures (from its own decode) are the in-process ones.
    ok = np.array([not e for e in ea])
    np.testing.assert_array_equal(la.signatures[ok], lb.signatures[ok])
    np.testing.assert_allclose(la.properties[ok], lb.properties[ok], rtol=1e-6)   # and so are the properties
    assert np.isnan(la.properties[~ok]).all() and np.isnan(lb.properties[~ok]).all()
    d = tmp_path / "processes"      # decoding in worker processes (the default from 256 images)
    r = audit(folder, "--out", d, "--no-sweep", "--decode-processes", "2")
    assert r.returncode == 0, r.stderr
    ld = EmbeddingStore(d / "embeddings", "mobilenet_v1", 1024).load(paths)
    assert ld.errors == ea
    np.testing.assert_allclose(ld.vectors[ok], va[ok], atol=1e-6)
    np.testing.assert_array_equal(ld.signatures[ok], la.signatures[ok])
    np.testing.assert_array_equal(ld.properties[ok], la.properties[ok])
    c = tmp_path / "torch"
    r = audit(folder, "--out", c, "--no-sweep", "--runtime", "torch")
    assert r.returncode == 0, r.stderr
    vc, _, ec, *_ = EmbeddingStore(c / "embeddings", "mobilenet_v1", 1024).load(paths)
    assert ec == ea
    ok = np.array([not e for e in ea])
    assert (va[ok] * vc[ok]).sum(1).min() > 0.99999        # same weights, another runtime


def test_a_large_local_image_is_audited_and_the_limit_is_the_users(tmp_path, photos):
    """An 8K wallpaper or a scan can be 50-100 MB as PNG: the audit reads
    local files up to --max-image-mb (512 by default, not the server's
    inline-bytes limit); above it the file fails alone, unread."""
    folder = tmp_path / "big"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (5200, 5200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "scan.png", compress_level=1)
    assert (folder / "scan.png").stat().st_size > 64 << 20          # above the decoder's old 64 MiB
    (folder / "photo.jpg").write_bytes(photos[0][0])

    def errors(out):
        return {Path(x["path"]).name: x["error"] for x in pq.read_table(out / "images.parquet").to_pylist()}

    r = audit(folder, "--out", tmp_path / "out", "--no-sweep")
    assert r.returncode == 0, r.stderr
    assert errors(tmp_path / "out") == {"scan.png": "", "photo.jpg": ""}
    r = audit(folder, "--out", tmp_path / "out16", "--no-sweep", "--max-image-mb", "16")
    assert r.returncode == 0, r.stderr
    found = errors(tmp_path / "out16")
    assert found["photo.jpg"] == ""
    assert found["scan.png"].startswith("RESOURCE_EXHAUSTED: file is") and "--max-image-mb" in found["scan.png"]


def test_in_process_commands_keep_why_a_file_could_not_be_read(tmp_path, photos, manifest_path):
    from imagesieve_server.commands.common import embed_paths
    good = tmp_path / "photo.jpg"
    good.write_bytes(photos[0][0])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    vectors, errors, _ = embed_paths([good, tmp_path / "gone.jpg", broken], str(manifest_path))
    assert errors[0] == "" and abs(float(np.linalg.norm(vectors[0])) - 1) < 1e-3
    assert errors[1].startswith("cannot read") and not vectors[1].any()
    assert errors[2] and "cannot read" not in errors[2] and not vectors[2].any()


def test_a_manifest_naming_a_fifo_or_a_device_fails_those_items_alone(tmp_path, photos):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photos[0][0])
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{photo}\n{fifo}\n/dev/zero\n")
    r = audit(manifest, "--out", tmp_path / "out", "--no-sweep", timeout=120)   # a FIFO read would hang
    assert r.returncode == 0, r.stderr
    errors = {x["path"]: x["error"] for x in pq.read_table(tmp_path / "out" / "images.parquet").to_pylist()}
    assert errors[str(photo)] == ""
    assert errors[str(fifo)] == errors["/dev/zero"] == "INVALID_ARGUMENT: not a regular file"


def test_a_large_sweep_falls_back_to_lda_and_says_so(monkeypatch):
    """Above LARGE_SWEEP training images the sample-size check sweeps with
    LDA (logistic regression would copy the vectors to float64) and the
    audit notes it; asked for by name, the classifier is used whatever the
    size."""
    from imagesieve_server.audit import analyse
    from imagesieve_server.checks import sample_size
    rng = np.random.default_rng(0)
    n = 400
    y = np.arange(n) % 4
    x = (rng.normal(size=(4, 64))[y] + rng.normal(size=(n, 64)) * 0.8).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    args = ([f"/x/{i}.png" for i in range(n)], [f"c{v}" for v in y], ["train"] * n,
            [f"{i:064x}" for i in range(n)], [""] * n, x)
    monkeypatch.setattr(sample_size, "LARGE_SWEEP", 300)
    r = analyse.run_analyses(*args, threshold=0.0, target=0.9)
    assert r.sample_size.sweep.classifier == "lda"
    assert any("lda instead of logreg (320 training images, above 300)" in note for note in r.notes), r.notes
    # One check, whoever asks: the samplesize command and the job get the same answer from it.
    alone = sample_size.run(x, args[1], args[2], sample_size.Params(target=0.9))
    assert alone.details.sweep.classifier == "lda" and alone.details.analysis.answer == r.sample_size.analysis.answer
    r = analyse.run_analyses(*args, threshold=0.0, target=0.9, sweep_classifier="logreg")
    assert r.sample_size.sweep.classifier == "logreg" and not any("instead of" in note for note in r.notes)


def test_the_reports_fix_list_cleans_the_manifest(dataset, audited, tmp_path):
    """Tick a list's suggested actions in the report (Chromium), export the
    fix list, and `imagesieve fix` writes the cleaned manifest: the leaked
    test copy dropped, the label suspects relabelled, nothing else changed,
    no file touched."""
    import csv
    import html
    import io
    import re
    root, planted = dataset
    out, _ = audited
    plan = []
    # Ticked on every list that holds the leak: one rule picks the copy kept, so one survives.
    for lst in ("leakage.cross_split", "duplicates.exact", "groups", "label_issues.suspects"):
        dom, attrs, _ = chromium_dom((out / "report.html").as_uri() + f"#list={lst}&select=page", tmp_path / lst)
        assert int(attrs["fixes"]) >= 1 and attrs["js-errors"] == "0", attrs
        text = html.unescape(re.search(r'<textarea id="fix-csv"[^>]*>(.*?)</textarea>', dom, re.S).group(1))
        plan += list(csv.DictReader(io.StringIO(text)))
    assert {r["source"] for r in plan} == {str(root)}
    drops = {r["path"] for r in plan if r["action"] == "drop"}
    assert all(Path(r["path"]).is_absolute() for r in plan)       # usable from any folder
    relabels = {r["path"]: r["new_label"] for r in plan if r["action"] == "relabel"}
    leak = [p for p in drops if Path(p).name in planted["leak"]]
    assert [p for p in leak if "/test/" in p] and all("/train/" in p for p in leak if "/test/" not in p)
    # The test copy goes, and something of every picture stays: each drop names the copy kept
    # in its list, and one order ranks every list's copies (split, pixels, bytes, path), so from
    # any dropped image the names lead to one no list drops (in this data a group joins the leak
    # to an overlapping crop of its photo, a larger file, which the group keeps over p0_v0).
    keeps: dict = {}
    for row in plan:
        if row["action"] == "drop":
            keeps.setdefault(Path(row["path"]).name, set()).add(row["reason"].removeprefix("a copy of ").split(" (")[0])
    for name in keeps:
        seen, todo = set(), [name]
        while todo and all(n in keeps for n in todo):
            seen |= set(todo)
            todo = [k for n in todo for k in keeps[n] if k not in seen]
            assert todo, f"every copy of {name} dropped"
    plan = list({(r["path"], r["action"]): r for r in plan}.values())
    with open(tmp_path / "fixes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["source", "path", "action", "new_label", "reason"])
        w.writeheader()
        w.writerows(plan)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "fixes.csv"),
                        "--out", str(tmp_path / "clean.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "clean.csv")))
    assert len(rows) == len(before) - len(drops) and not drops & {x["path"] for x in rows}
    changed = {x["path"]: x["label"] for x in rows if x["path"] in relabels}
    assert changed == relabels
    assert f"{len(drops)} dropped, {len(relabels)} relabelled" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    # A bad action is one line naming it, exit 2.
    (tmp_path / "bad.csv").write_text(f"source,path,action,new_label,reason\n{root},x.jpg,delete,,\n")
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "bad.csv"),
                        "--out", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'delete' is not one of drop, relabel, review" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # --out may not be one of the dataset's images, nor a folder; a path outside the source is exit 1.
    image = next(p for p in root.rglob("*.jpg"))
    for bad_out in (image, tmp_path, tmp_path / "clean.parquet"):
        r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "fixes.csv"),
                            "--out", str(bad_out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "must be a .csv file" in r.stderr, (bad_out, r.stderr)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    (tmp_path / "elsewhere.csv").write_text(f"source,path,action,new_label,reason\n{root},/nowhere/x.jpg,drop,,\n")
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "elsewhere.csv"),
                        "--out", str(tmp_path / "y.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "not in" in r.stderr
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "no-such.csv"),
                        "--out", str(tmp_path / "y.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().endswith("no such file (the fix list a report exported)")
    # A source named relatively and a manifest written elsewhere: its paths are absolute, so
    # the manifest reads back as the same images wherever it lies.
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "fix", str(tmp_path / "fixes.csv"),
                        "--source", os.path.relpath(root, tmp_path), "--out", "sub/clean.csv"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from imagesieve_server.audit.sources import load_audit_source
    again = load_audit_source(str(tmp_path / "sub" / "clean.csv"))
    assert len(again) == len(rows) and all(Path(x.path).is_file() for x in again)


def test_report_survives_odd_addresses(audited, tmp_path):
    """A bare "%" in a search, a page past the end, a list named like an
    object's property: the page still draws, with no script error."""
    out, _ = audited
    for k, h in enumerate(("q=100%", "list=leakage.cross_split&page=9", "list=duplicates.near&page=1.5&q=jpg",
                           "list=__proto__", "list=constructor&page=2")):
        dom, attrs, console = chromium_dom((out / "report.html").as_uri() + "#" + h, tmp_path / f"p{k}")
        assert attrs.get("ready") == "1" and attrs["js-errors"] == "0" and console == [], (h, attrs, console)


def test_audit_refuses_an_out_folder_inside_its_source(dataset, tmp_path):
    root, _ = dataset
    r = audit(root, "--out", root / "audit_here", "--no-sweep")
    assert r.returncode == 2 and "inside the source folder" in r.stderr and not (root / "audit_here").exists()


def test_a_glob_over_the_out_folder_leaves_the_audits_own_output_out(tmp_path):
    """The folder guard above cannot see a glob or a manifest: `audit 'data/**/*'
    --out data/out` run twice audited its own thumbnails as images the
    second time (29 -> 42 images, with fake exact pairs). They are left out,
    and said so, whatever the source names."""
    from imagesieve_server.audit.sources import load_audit_table
    data = tmp_path / "data"
    (data / "out" / "report_data" / "thumbs").mkdir(parents=True)
    for k in range(3):
        img = Image.fromarray(np.full((16, 16, 3), 60 * k, np.uint8))
        img.save(data / f"img{k}.png")
        img.save(data / "out" / "report_data" / "thumbs" / f"t{k}.png")
    table = load_audit_table(str(data / "**" / "*"), exclude=data / "out")
    assert sorted(Path(p).name for p in table.paths) == ["img0.png", "img1.png", "img2.png"]
    assert any("3 files left out: under --out" in n for n in table.notes), table.notes
    link = tmp_path / "alias"
    link.symlink_to(data)                           # the same folder by another name
    assert len(load_audit_table(str(link / "**" / "*"), exclude=data / "out")) == 3
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in sorted(data.rglob("*.png"))))
    assert len(load_audit_table(str(manifest), exclude=data / "out")) == 3
    assert len(load_audit_table(str(data / "**" / "*"))) == 6         # no exclude: everything


@pytest.mark.parametrize("flags, message", [(("--memory-gb", "0"), "--memory-gb must be a positive number"),
                                            (("--decode-processes", "-2"), "decode_processes must be >= 0")])
def test_audit_refuses_bad_resource_settings_in_one_line(dataset, tmp_path, flags, message):
    r = audit(dataset[0], "--out", tmp_path / "out", *flags)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_label_check_that_cannot_run_leaves_a_note_not_a_crash(tmp_path):
    """Two classes, one of a single image: no fold can train on both; the
    audit still writes its report, with the reason in its notes."""
    photos = [p for p, _ in imagenet_photos()]
    for k, p in enumerate(photos[:6]):
        d = tmp_path / "data" / ("dog" if k == 5 else "cat")
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name).write_bytes(p.read_bytes())
    r = audit(tmp_path / "data", "--out", tmp_path / "out", "--no-sweep")
    assert r.returncode == 0, r.stderr
    notes = json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["notes"]
    assert any(n.startswith("Label issues:") for n in notes), notes


def test_the_audit_tests_partial_matches_against_the_files(tmp_path, photos):
    """`imagesieve audit` reads the pair's files again to test a match on
    part of a frame where it was found (analysis.duplicates.region): 60%
    corner crops of six photos among the 20 are each paired with their own
    photo and no other, and the console shows the region stage ran."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for data, _, name in photos:
        (folder / name).write_bytes(data)
    for data, _, name in photos[:6]:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        im.crop((0, 0, int(im.width * 0.6), int(im.height * 0.6))).save(folder / f"crop_{name}", quality=90)
    out = tmp_path / "out"
    r = audit(folder, "--out", out, "--no-sweep")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "duplicates: regions" in r.stdout + r.stderr
    pairs = pq.read_table(out / "duplicate_pairs.parquet").to_pydict()
    found = {tuple(sorted((Path(a).name, Path(b).name))) for a, b in zip(pairs["path_a"], pairs["path_b"])}
    assert found == {tuple(sorted((name, f"crop_{name}"))) for _, _, name in photos[:6]}, found


def test_the_fix_list_keeps_the_copy_most_likely_the_original(tmp_path, photos):
    """The report's suggested "drop" keeps, of a picture's copies, the one
    with the most pixels, then a lossless file before a lossy one, then of
    one lossy format the larger file, then the older file: a half-size copy
    and a JPEG q20 copy of the same size are dropped whatever their names
    (by path alone the copies named "a_..." were kept and the originals
    "z_..." dropped), and so are a JPEG copy of a PNG graphic larger than
    it, a translucent copy and a negative made after their originals (by
    file size, a stranger's screenshots lost their originals to such copies
    in half the pairs), in the pairs' list and the groups' alike."""
    import csv
    import html
    import re
    folder = tmp_path / "photos"
    folder.mkdir()
    copies = set()
    made = 1_700_000_000
    for k, (data, _, _) in enumerate(photos[:12]):
        im = Image.open(io.BytesIO(data)).convert("RGB").resize((480, 360))
        copy = folder / f"a_copy_{k}.{'jpg' if k < 8 else 'png'}"
        if k < 6:
            im.save(folder / f"z_original_{k}.jpg", quality=92)
            if k % 2:
                im.save(copy, quality=20)                                  # same pixels, smaller file
            else:
                im.resize((240, 180), Image.LANCZOS).save(copy, quality=95)  # fewer pixels
        elif k < 8:     # a flat graphic: its JPEG copy is the larger file, and even the older one
            flat = im.quantize(6).convert("RGB")
            flat.save(folder / f"z_original_{k}.png")
            flat.save(copy, quality=90)
            assert copy.stat().st_size > (folder / f"z_original_{k}.png").stat().st_size
            os.utime(copy, (made - 100, made - 100))
            os.utime(folder / f"z_original_{k}.png", (made, made))
        else:           # made later: a translucent copy (the larger file) and a negative
            im.save(folder / f"z_original_{k}.png")
            if k < 10:
                faded = im.convert("RGBA")
                faded.putalpha(128)
                faded.save(copy)
                assert copy.stat().st_size > (folder / f"z_original_{k}.png").stat().st_size
            else:
                ImageOps.invert(im).save(copy)
            os.utime(folder / f"z_original_{k}.png", (made, made))
            os.utime(copy, (made + 100, made + 100))
        copies.add(copy.name)
    out = tmp_path / "out"
    r = audit(folder, "--out", out, "--no-sweep")
    assert r.returncode == 0, r.stdout + r.stderr
    for lst in ("duplicates.near", "groups"):
        dom, attrs, _ = chromium_dom((out / "report.html").as_uri() + f"#list={lst}&select=page", tmp_path / lst)
        assert attrs["js-errors"] == "0", attrs
        text = html.unescape(re.search(r'<textarea id="fix-csv"[^>]*>(.*?)</textarea>', dom, re.S).group(1))
        drops = {Path(row["path"]).name for row in csv.DictReader(io.StringIO(text)) if row["action"] == "drop"}
        assert drops == copies, (lst, drops)
