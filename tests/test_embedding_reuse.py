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


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "imagesieve.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


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


def test_samplesize_reuses_them_and_a_changed_file_alone_is_embedded_again(audited, tmp_path):
    root, audit_out = audited
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
