"""One embedding store per dataset: after an audit, ``labels`` and
``samplesize`` read its vectors instead of embedding again, give the
audit's answers, and embed only what changed."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from conftest import digit_image

CLASSES = (0, 1, 4, 7)
PER_CLASS = 30


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    X, y = load_digits(return_X_y=True)
    for d in CLASSES:
        for n, i in enumerate(np.flatnonzero(y == d)[:PER_CLASS]):
            folder = root / f"digit{1 if (d, n) == (7, 2) else d}"    # one misfiled 7
            folder.mkdir(exist_ok=True)
            digit_image(X[i], 64, Image.Resampling.BILINEAR).save(folder / f"d{d}_{n}.png")
    out = tmp_path_factory.mktemp("audit") / "out"
    r = cli("audit", root, "--out", out, "--top", "5%")
    assert r.returncode == 0, r.stderr
    return root, out


def cli(*args, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-m", "imagesieve.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def test_labels_after_an_audit_reuse_its_embeddings_and_give_its_answer(audited, tmp_path):
    root, audit_out = audited
    r = cli("labels", root, "--embeddings", audit_out, "--top", "5%", "--out", tmp_path / "labels")
    assert r.returncode == 0, r.stderr
    n = len(CLASSES) * PER_CLASS
    assert f"embeddings: all {n} reused from {audit_out / 'embeddings'}" in r.stderr
    assert "embedding (in-process)" not in r.stderr                  # no model was loaded
    mine = json.loads((tmp_path / "labels" / "label_suspects.json").read_text())
    theirs = json.loads((audit_out / "report.json").read_text())["label_suspects"]
    assert [s["path"] for s in mine["suspects"]] == [s["path"] for s in theirs]
    assert np.allclose([s["score"] for s in mine["suspects"]], [s["score"] for s in theirs], atol=1e-5)
    assert any(s["path"].endswith("d7_2.png") for s in mine["suspects"])
    assert "the audit's duplicate pairs" in r.stdout


def test_samplesize_reuses_them_and_a_changed_file_alone_is_embedded_again(audited, tmp_path):
    import shutil
    root = tmp_path / "data"                  # a copy: this test changes a file
    shutil.copytree(audited[0], root)
    store = tmp_path / "store"
    r = cli("samplesize", root, "--embeddings", store, "--classifier", "lda", "--repeats", "2",
            "--bootstrap", "20", "--out", tmp_path / "s1")
    assert r.returncode == 0, r.stderr
    n = len(CLASSES) * PER_CLASS
    assert f"embeddings: {n} embedded now, 0 reused from {store}" in r.stderr
    changed = next(root.rglob("d0_0.png"))
    Image.open(changed).rotate(90).save(changed)
    r2 = cli("samplesize", root, "--embeddings", store, "--classifier", "lda", "--repeats", "2",
             "--bootstrap", "20", "--out", tmp_path / "s2")
    assert r2.returncode == 0, r2.stderr
    assert f"embeddings: 1 embedded now, {n - 1} reused from {store}" in r2.stderr
    # Without --embeddings the command keeps its own store under --out, and a rerun reuses it.
    answers = []
    for first in (True, False):
        r3 = cli("samplesize", root, "--classifier", "lda", "--repeats", "2", "--bootstrap", "20",
                 "--out", tmp_path / "s3")
        assert r3.returncode == 0, r3.stderr
        own = tmp_path / "s3" / "embeddings"
        assert (f"embeddings: {n} embedded now, 0 reused from {own}" if first
                else f"embeddings: all {n} reused from {own}") in r3.stderr
        answers.append(json.loads((tmp_path / "s3" / "samplesize.json").read_text()))
    assert answers[0]["points"] == answers[1]["points"] and answers[0]["answer"] == answers[1]["answer"]


def test_a_store_of_another_model_or_a_damaged_one_is_refused_in_one_line(audited, tmp_path):
    root, _ = audited
    from imagesieve_server.audit.store import EmbeddingStore
    EmbeddingStore(tmp_path / "other", "some_other_model", 512).close()
    r = cli("labels", root, "--embeddings", tmp_path / "other", "--out", tmp_path / "x")
    assert r.returncode == 2 and "holds some_other_model embeddings" in r.stderr and "Traceback" not in r.stderr
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "index.sqlite").write_text("not a database")
    (tmp_path / "a_file").write_text("")
    for bad in (damaged, tmp_path / "a_file"):
        r = cli("samplesize", root, "--embeddings", bad, "--out", tmp_path / "y")
        assert r.returncode == 2 and "cannot use" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_another_spelling_of_the_paths_reuses_them_and_a_busy_store_is_refused(audited, tmp_path):
    """The audit was given an absolute folder; a command run from its parent
    with a relative one finds the same images (keys are absolute paths).
    A store another process has open is refused in one line: two writers
    would number their shards alike and overwrite each other's vectors."""
    root, audit_out = audited
    n = len(CLASSES) * PER_CLASS
    r = cli("labels", root.name, "--embeddings", audit_out, "--top", "5%", "--out", tmp_path / "rel", cwd=root.parent)
    assert r.returncode == 0 and f"embeddings: all {n} reused" in r.stderr, r.stderr
    from imagesieve_server.audit.store import EmbeddingStore, StoreInUse
    held = EmbeddingStore(audit_out / "embeddings", "mobilenet_v1", 1024)
    try:
        r = cli("labels", root, "--embeddings", audit_out, "--out", tmp_path / "busy")
        assert r.returncode == 2 and "in use by another imagesieve process" in r.stderr, r.stderr
        with pytest.raises(StoreInUse):
            EmbeddingStore(audit_out / "embeddings", "mobilenet_v1", 1024)
    finally:
        held.close()
    assert cli("labels", root, "--embeddings", audit_out, "--out", tmp_path / "free").returncode == 0


def test_a_file_changed_since_the_audit_is_not_judged_by_its_pairs(audited, tmp_path):
    """The audit's duplicate pairs stand for the content it saw: a file
    overwritten since (here with an exact copy of an image of another class)
    makes ``labels`` run the duplicates check again and find that pair."""
    root, audit_out = audited
    target, source = next(root.glob("digit4/d4_3.png")), next(root.glob("digit0/d0_5.png"))
    before = target.read_bytes()
    try:
        target.write_bytes(source.read_bytes())
        r = cli("labels", root, "--embeddings", audit_out, "--top", "5%", "--out", tmp_path / "labels")
        assert r.returncode == 0, r.stderr
        assert "the duplicates check on these images" in r.stdout and "the audit's duplicate pairs" not in r.stdout
        conflicts = json.loads((tmp_path / "labels" / "label_suspects.json").read_text())["conflicting_duplicates"]
        assert sorted([str(target), str(source)]) in [sorted(pair) for pair in conflicts]
    finally:
        target.write_bytes(before)
