"""The command line, run as users run it."""
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
from PIL import Image

from imagesieve import Client

from conftest import encode, photo_image


def run_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "imagesieve.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_embed_folder_to_npy_with_a_corrupt_file(server, photos, tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, (data, _, name) in enumerate(photos[:5]):
        (folder / ("sub" if i % 2 else ".") / name).write_bytes(data)
    photo_image(photos[5][0]).convert("L").save(folder / "gray.png")
    (folder / "broken.jpg").write_bytes(photos[6][0][:300])
    (folder / "notes.txt").write_text("not an image, not picked up")
    out = tmp_path / "emb.npy"
    r = run_cli("embed", str(folder), "--server", server.address, "--out", str(out))
    assert r.returncode == 0, r.stderr
    keys = (tmp_path / "emb.keys.txt").read_text().splitlines()
    vectors = np.load(out)
    assert vectors.shape == (7, 1024) and len(keys) == 7
    broken = keys.index(str(folder / "broken.jpg"))
    assert not vectors[broken].any()
    ok = np.delete(vectors, broken, axis=0)
    assert np.allclose(np.linalg.norm(ok, axis=1), 1, atol=1e-5)
    assert "broken.jpg: INVALID_ARGUMENT" in r.stderr
    assert "embedding 7/7" in r.stderr                               # progress line
    assert "6 embedded, 1 failed" in r.stdout
    assert run_cli("embed", str(folder), "--server", server.address, "--out", str(out),
                   "--strict").returncode == 1


def test_embed_keys_stay_one_a_row_when_names_hold_line_breaks(server, photos, tmp_path):
    """OUT.keys.txt holds a key a line: a file named with a newline (or a
    U+2028, a line break to ``splitlines``) shifted every later key onto
    the wrong vector. Such names are left out with a note."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = ["a.jpg", "b\nc.jpg", "d\u2028e.jpg", "f.jpg"]
    for name, (data, _, _) in zip(names, photos):
        (folder / name).write_bytes(data)
    out = tmp_path / "emb.npy"
    r = run_cli("embed", str(folder), "--server", server.address, "--out", str(out))
    assert r.returncode == 0, r.stderr
    keys = (tmp_path / "emb.keys.txt").read_text(encoding="utf-8").splitlines()
    assert [Path(k).name for k in keys] == ["a.jpg", "f.jpg"] and np.load(out).shape == (2, 1024)
    assert "2 image file(s) left out: names with a line break" in r.stderr


def test_info_and_unreachable_server(server):
    r = run_cli("info", "--server", server.address)
    assert r.returncode == 0 and '"dim": 1024' in r.stdout
    r = run_cli("info", "--server", "127.0.0.1:1", "--connect-timeout", "1")
    assert r.returncode == 2 and "cannot reach the server at 127.0.0.1:1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_commands_fail_fast_and_in_one_line_when_no_server_listens(photos, tmp_path):
    """Before: embed waited its 30 s connect timeout, then printed a 16-line
    grpc.FutureTimeoutError traceback. A refused connection now ends at
    once, with one line naming the address and exit code 2."""
    import time
    (tmp_path / "a.jpg").write_bytes(photos[0][0])
    for args in (("embed", str(tmp_path), "--out", str(tmp_path / "e.npy")),
                 ("check", str(tmp_path), "--collection", "x"),
                 ("dedup", "--collection", "x", "--out", str(tmp_path / "d"))):
        t = time.perf_counter()
        r = run_cli(*args, "--server", "127.0.0.1:1")
        assert time.perf_counter() - t < 15, args             # interpreter start included
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "cannot reach the server at 127.0.0.1:1" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "d").exists()                         # nothing written for a failed run


def test_a_path_that_does_not_exist_is_an_error_not_an_empty_run(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not checked: the typo fails first")
    for missing, args in (("/no/such/folder", ("embed", str(tmp_path), "/no/such/folder", "--out", str(tmp_path / "e.npy"))),
                          ("/no/such/file.jpg", ("check", "/no/such/file.jpg", "--collection", "x"))):
        r = run_cli(*args, "--server", "127.0.0.1:1")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip() == f"imagesieve {args[0]}: no such file or folder: {missing}"
    assert not (tmp_path / "e.npy").exists()
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("imagesieve ")


def test_demo_runs_the_main_job(tmp_path):
    r = run_cli("demo", "--out", str(tmp_path / "d.emb"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"embeddings: {tmp_path / 'd.emb'} (20 x 1024" in r.stdout
    assert not (tmp_path / "d.emb.npy").exists()              # the name it says it wrote, not d.emb.npy
    assert "top-1 through gRPC:" in r.stdout and "server stopped cleanly: True" in r.stdout
    correct = int(r.stdout.split("top-1 through gRPC: ")[1].split("/")[0])
    assert correct >= 15
    assert np.load(tmp_path / "d.emb").shape == (20, 1024)


def test_health_command(server):
    r = run_cli("health", "--server", server.address)
    assert r.returncode == 0 and r.stdout.strip() == "SERVING"
    r = run_cli("health", "--server", server.address, "--service", "no.such.Service")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    # A probe (Docker HEALTHCHECK, 5 s) loads none of the server's analyses.
    probe = ("import sys; from imagesieve.cli import main; code = main(['health', '--server', sys.argv[1]]); "
             "heavy = {m.split('.')[0] for m in sys.modules} & {'onnxruntime', 'faiss', 'cv2', 'sklearn', 'torch'}; "
             "print(code, sorted(heavy))")
    r = subprocess.run([sys.executable, "-c", probe, server.address], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_check_command_ingests_unique_and_flags_copies(server, photos, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    for data, _, name in photos[:4]:
        (first / name).write_bytes(data)
    r = run_cli("check", str(first), "--collection", "cli", "--create", "--add-if-unique",
                "--server", server.address)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("UNIQUE") == 4 and r.stdout.count("[added]") == 4
    second = tmp_path / "second"
    second.mkdir()
    photo_image(photos[0][0]).resize((300, 300)).save(second / "small_copy.jpg", quality=50)
    (second / "same.jpg").write_bytes(photos[1][0])
    r = run_cli("check", str(second), "--collection", "cli", "--server", server.address)
    lines = {line.split()[1].rsplit("/", 1)[-1]: line for line in r.stdout.splitlines()}
    assert lines["small_copy.jpg"].startswith("NEAR_DUPLICATE") and photos[0][2] in lines["small_copy.jpg"]
    assert lines["same.jpg"].startswith("EXACT_DUPLICATE") and photos[1][2] in lines["same.jpg"]
    # -k shows that many neighbours, the next ones on indented lines (it changed nothing before).
    r = run_cli("check", str(second / "small_copy.jpg"), "--collection", "cli", "-k", "3", "--server", server.address)
    out = r.stdout.splitlines()
    assert r.returncode == 0 and len(out) == 3 and out[0].startswith("NEAR_DUPLICATE"), r.stdout
    assert all(line.split()[0] == "then" and "(cosine " in line for line in out[1:]), r.stdout
    assert len({line.split("(cosine")[0].split()[-1] for line in out}) == 3          # three different images
    for command in ("check", "add"):      # both take --create, and both say so
        r = run_cli(command, str(second), "--collection", "missing", "--server", server.address)
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr and r.stderr.strip().endswith("(--create makes it)")
    # A failed image: its own line, kept on one line whatever its name; --strict makes it the exit code.
    third = tmp_path / "third"
    third.mkdir()
    (third / "broken\nname.jpg").write_bytes(b"\xff\xd8 not a picture")
    (third / "fine.jpg").write_bytes(photos[2][0])
    for strict, code in (([], 0), (["--strict"], 1)):
        r = run_cli("check", str(third), "--collection", "cli", "--server", server.address, *strict)
        assert r.returncode == code, (strict, r.stderr)
        assert len(r.stdout.splitlines()) == 2 and "broken\\nname.jpg  INVALID_ARGUMENT" in r.stdout, r.stdout


def test_check_warns_when_it_turns_away_an_implausible_share(server, photos, tmp_path):
    """A gate that refused 156 of 342 distinct playing cards (one deck's cards
    pass verification as each other's copies) printed no warning; the audit
    warned on the same images. Here 40 of 60 images are real copies: the
    verdicts stand and the warning says how many were turned away."""
    from imagesieve.plausible import COVERAGE_MIN_IMAGES, implausible
    folder = tmp_path / "many_copies"
    folder.mkdir()
    for data, _, name in photos:
        img = photo_image(data)
        (folder / f"a_{name}").write_bytes(data)
        img.resize((img.width * 2 // 3, img.height * 2 // 3)).save(folder / f"b_{name}", quality=60)
        img.transpose(0).save(folder / f"c_{name}", quality=80)          # mirrored
    assert len(photos) * 3 >= COVERAGE_MIN_IMAGES
    r = run_cli("check", str(folder), "--collection", "gate", "--create", "--add-if-unique",
                "--server", server.address)
    assert r.returncode == 0, r.stderr
    near = r.stdout.count("NEAR_DUPLICATE")
    assert near >= 30, r.stdout                      # the copies are found as before
    assert f"warning: {near} of {len(photos) * 3} images" in r.stderr, r.stderr
    assert "(those images were not added)" in r.stderr
    # The same share without --add-if-unique: warned, without the note on adding.
    r = run_cli("check", str(folder), "--collection", "gate", "--server", server.address)
    assert "warning:" in r.stderr and "not added" not in r.stderr, r.stderr
    # The rule itself: more than a tenth of at least COVERAGE_MIN_IMAGES.
    assert implausible(6, 50) and not implausible(5, 50) and not implausible(40, COVERAGE_MIN_IMAGES - 1)


def test_dedup_command_writes_json_csv_and_contact_sheet(server, photos, tmp_path):
    import json
    from PIL import Image
    folder = tmp_path / "ds"
    folder.mkdir()
    for data, _, name in photos[:6]:
        (folder / name).write_bytes(data)
    photo_image(photos[0][0]).resize((256, 256)).save(folder / "copy_a.jpg", quality=60)
    photo_image(photos[0][0]).resize((200, 200)).save(folder / "copy_b.jpg", quality=40)
    assert run_cli("check", str(folder), "--collection", "dd", "--create", "--add-if-unique", "--threshold",
                   "0.99", "--server", server.address).returncode == 0
    out = tmp_path / "report"
    r = run_cli("dedup", "--collection", "dd", "--out", str(out), "--server", server.address)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "duplicates.json").read_text())
    assert doc["num_images"] == 8 and len(doc["pairs"]) == 3
    (group,) = doc["groups"]
    assert {k.rsplit("/", 1)[-1] for k in group["keys"]} == {photos[0][2], "copy_a.jpg", "copy_b.jpg"}
    assert len((out / "pairs.csv").read_text().splitlines()) == 4
    sheet = Image.open(out / "duplicate_groups.png")
    assert sheet.width >= 3 * 128 and sheet.height >= 128
    # the thumbnails are real images, not blank tiles: the sheet has many colours
    assert len(sheet.convert("RGB").getcolors(1 << 20) or []) > 1000
    assert "3 duplicate pairs" in r.stdout and "in 1 group;" in r.stdout
    assert "in no group" not in r.stdout          # every paired image is in the group: no note


def test_add_command_stores_labels_and_splits_so_dedup_sees_leakage(server, photos, tmp_path):
    """Class folders under train/test (and a CSV manifest) go in with their
    labels and splits; a photo copied from train into test is then leakage,
    and a copy filed under another class a label conflict."""
    root = tmp_path / "ds"
    for i, (data, _, name) in enumerate(photos[:6]):
        d = root / "train" / ("cat" if i % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    (root / "test" / "dog").mkdir(parents=True)
    (root / "test" / "dog" / "leak.jpg").write_bytes(photos[0][0])                   # photos[0] is a train dog
    extra = tmp_path / "extra"
    extra.mkdir()
    photo_image(photos[2][0]).resize((300, 220)).save(extra / "refiled.jpg", quality=85)   # a dog, filed as cat
    (extra / "m.csv").write_text("path,label,split\nrefiled.jpg,cat,train\n")
    r = run_cli("add", str(root), str(extra / "m.csv"), "--folder-labels", "--collection", "lab", "--create",
                "--server", server.address)
    assert r.returncode == 0, r.stderr
    assert "lab: 8 added (8 of 8 labelled), 0 skipped as exact duplicates, 0 failed" in r.stdout
    out = tmp_path / "dd"
    r = run_cli("dedup", "--collection", "lab", "--out", str(out), "--server", server.address)
    assert r.returncode == 0, r.stderr
    import json
    pairs = json.loads((out / "duplicates.json").read_text())["pairs"]
    name = lambda key: key.rsplit("/", 1)[-1]  # noqa: E731
    by_names = {frozenset((name(p["key_a"]), name(p["key_b"]))): p for p in pairs}
    leak = by_names[frozenset({photos[0][2], "leak.jpg"})]
    assert leak["exact"] and leak["cross_split"] and not leak["labels_disagree"]
    conflict = by_names[frozenset({photos[2][2], "refiled.jpg"})]
    assert conflict["labels_disagree"] and not conflict["cross_split"]
    assert "1 pair across splits (leakage), 1 pair with different labels" in r.stdout
    # A missing path is an error, not an empty run; so is a manifest without a path column.
    assert run_cli("add", str(tmp_path / "nope"), "--collection", "lab", "--server", server.address).returncode == 2
    (extra / "bad.csv").write_text("file,label\nx.jpg,a\n")
    r = run_cli("add", str(extra / "bad.csv"), "--collection", "lab", "--server", server.address)
    assert r.returncode == 2 and "needs a 'path' column" in r.stderr


def test_a_url_or_a_host_without_port_is_refused_before_dialling():
    """`--server 127.0.0.1` dialled port 443 and `--server http://...` a
    name gRPC cannot resolve; both now say what a gRPC address looks like."""
    for bad, why in (("127.0.0.1", "has no port"), ("http://127.0.0.1:50051", "is a URL"), ("host:", "has no port")):
        for cmd in (["health"], ["info"], ["embed", "x", "--out", "y.npy"]):
            r = run_cli(*cmd, "--server", bad, timeout=60)
            assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, (cmd, bad, r.stderr)
    from imagesieve.cli import server_address
    for good in ("127.0.0.1:50051", "localhost:1", "[::1]:50051", "unix:/tmp/imagesieve.sock", "dns:///h:1"):
        assert server_address(good) == good


def test_add_takes_labels_and_splits_from_any_folder_layout_and_any_manifest_header(tmp_path):
    """Class/split and split/class layouts, a split folder given itself,
    files given one by one; a spreadsheet's manifest header (spaces, other
    case) and a row without a path."""
    import argparse
    from pathlib import Path

    import pytest
    from imagesieve.cli import labelled_inputs
    for rel in ("data/train/cat/a.png", "data/test/dog/b.png", "data2/cat/train/c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "m.csv").write_text("Path , Label, Split\ndata/train/cat/a.png, cat, Train\n\ndata2/cat/train/c.png,dog\n")

    def inputs(*paths, label="", split=""):
        ns = argparse.Namespace(paths=[str(tmp_path / p) for p in paths], folder_labels=True, label=label, split=split)
        return sorted((str(Path(p).relative_to(tmp_path)), lab, spl) for p, lab, spl in labelled_inputs(ns))
    expected = [("data/test/dog/b.png", "dog", "test"), ("data/train/cat/a.png", "cat", "train")]
    assert inputs("data/train", "data/test") == expected
    assert inputs("data") == expected
    assert inputs("data/train/cat/a.png", "data/test/dog/b.png") == expected
    assert inputs("data2") == [("data2/cat/train/c.png", "cat", "train")]
    assert inputs("m.csv", split="Val") == [("data/train/cat/a.png", "cat", "train"),
                                            ("data2/cat/train/c.png", "dog", "val")]
    (tmp_path / "bad.csv").write_text("label,path\ncat\n")
    with pytest.raises(ValueError, match="bad.csv:2: no path"):
        inputs("bad.csv")


def test_an_image_larger_than_a_message_fails_alone_and_messages_stay_under_the_limit(server, photos, tmp_path):
    """A 70 MB wallpaper stopped a whole embed, check or audit (gRPC refused
    the message: "Sent message larger than max"), and so did a 63.7 MB
    photo that followed 355 KB of small ones in one message. A file larger
    than a message may carry now fails alone, unread beyond that size, and
    a message closes early rather than go over. Here with 2 MB messages."""
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100, 3), np.uint8)
    big = encode(Image.fromarray(noise), "PNG")                           # ~3.6 MB
    near = encode(Image.fromarray(noise[:760, :760]), "PNG")              # just under 2 MB less headroom
    small = [p[0] for p in photos[:8]]
    (tmp_path / "big.png").write_bytes(big)
    with Client(server.address, max_message_mb=2) as c:
        assert len(big) > c.max_image_bytes >= len(near) and sum(map(len, small)) + len(near) > 2 << 20
        items = small + [str(tmp_path / "big.png"), near, big] + small[:2]
        results = list(c.embed_stream(items, chunk_size=16))
        failed = {r.index: r.error for r in results if not r.ok}
        assert sorted(failed) == [8, 10] and len(results) == len(items), failed
        assert all(e.code == "RESOURCE_EXHAUSTED" and "more than one message may carry" in e.message
                   for e in failed.values()), failed
        c.create_collection("sizes")
        added = list(c.add("sizes", small + [near, str(tmp_path / "big.png")], keys=[f"k{i}" for i in range(10)]))
        assert [r.added for r in added] == [True] * 9 + [False], added
        assert "more than one message may carry" in added[-1].error.message
        checked = list(c.check("sizes", [big, near], keys=["b", "n"]))
        assert checked[0].error is not None and checked[1].verdict == "EXACT_DUPLICATE", checked
        batch = c.embed_batch([big, small[0]])                 # one unary call: the large one fails alone
        assert list(batch.ok) == [False, True]
        with pytest.raises(ValueError, match="more than one message may carry .* use embed"):
            c.embed_batch([near, near])


def test_a_fifo_or_a_missing_file_named_as_an_image_fails_alone_with_its_reason(server, photos, tmp_path):
    """A FIFO named in a manifest (or on the command line) hung the client's
    read for ever; now it, and a missing file, fail alone with the local
    reason, and the other images go in."""
    import os
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "a.jpg").write_bytes(photos[0][0])
    (tmp_path / "m.csv").write_text("path,label\npipe.png,x\na.jpg,y\nmissing.jpg,z\n")
    r = run_cli("add", str(tmp_path / "m.csv"), "--collection", "fifo", "--create", "--server", server.address,
                timeout=60)
    assert r.returncode == 0 and "1 added" in r.stdout and "2 failed" in r.stdout, r.stdout + r.stderr
    assert "pipe.png: NOT_FOUND: cannot read" in r.stderr and "not a regular file" in r.stderr
    assert "missing.jpg: NOT_FOUND: cannot read" in r.stderr
    r = run_cli("embed", str(tmp_path / "pipe.png"), str(tmp_path / "a.jpg"), "--out", str(tmp_path / "e.npy"),
                "--server", server.address, timeout=60)
    assert r.returncode == 0 and "1 embedded, 1 failed" in r.stdout and "not a regular file" in r.stderr


def test_a_file_named_twice_is_embedded_once(server, photos, tmp_path):
    """A file given itself and inside a folder given was embedded twice and
    its key written twice; a link to it stays an entry of its own."""
    folder = tmp_path / "ds"
    folder.mkdir()
    for data, _, name in photos[:3]:
        (folder / name).write_bytes(data)
    (folder / "link.jpg").symlink_to(folder / photos[0][2])
    out = tmp_path / "e.npy"
    r = run_cli("embed", str(folder), str(folder / photos[1][2]), f"{folder}/./{photos[2][2]}", "--out", str(out),
                "--server", server.address)
    assert r.returncode == 0, r.stderr
    keys = (tmp_path / "e.keys.txt").read_text().splitlines()
    assert len(keys) == 4 and len(np.load(out)) == 4, keys
    assert "2 image file(s) named more than once" in r.stderr


def test_dedup_names_images_paired_but_in_no_group(server, photos, tmp_path):
    """Groups are complete (every two members paired): a photo's left and
    right 60% crops each pair with the photo but not with each other, so one
    crop joins the photo's group and the other is paired but in no group;
    dedup says how many such images there are, as the audit does."""
    import json
    folder = tmp_path / "ds"
    folder.mkdir()
    for data, _, name in photos[6:16]:
        (folder / name).write_bytes(data)
    whole = photo_image(photos[1][0]).resize((480, 320))
    whole.save(folder / "whole.jpg", quality=90)
    whole.crop((0, 0, 288, 320)).save(folder / "left.jpg", quality=90)
    whole.crop((192, 0, 480, 320)).save(folder / "right.jpg", quality=90)
    assert run_cli("add", str(folder), "--collection", "nog", "--create", "--server", server.address).returncode == 0
    out = tmp_path / "report"
    r = run_cli("dedup", "--collection", "nog", "--out", str(out), "--server", server.address)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "duplicates.json").read_text())
    name = {k: k.rsplit("/", 1)[-1] for p in doc["pairs"] for k in (p["key_a"], p["key_b"])}
    paired = {frozenset((name[p["key_a"]], name[p["key_b"]])) for p in doc["pairs"]}
    assert {frozenset(("whole.jpg", "left.jpg")), frozenset(("whole.jpg", "right.jpg"))} <= paired, paired
    assert frozenset(("left.jpg", "right.jpg")) not in paired, paired
    (group,) = doc["groups"]
    assert {k.rsplit("/", 1)[-1] for k in group["keys"]} in ({"whole.jpg", "left.jpg"}, {"whole.jpg", "right.jpg"})
    assert "(and 1 more image paired but in no group" in r.stdout, r.stdout
