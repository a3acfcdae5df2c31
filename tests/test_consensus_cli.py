"""``imagesieve consensus`` (the in-process command) on a tiny CSV manifest of
real images: scikit-learn digits 0, 1 and 7 saved as PNG, 3 annotators: two
careful ones (one skips some images), one unreliable who calls most 1s a 7
and makes other mistakes."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from imagesieve_server.analysis.consensus import krippendorff_alpha
from imagesieve_server.commands import consensus as consensus_cmd
from conftest import digit_image

DIGITS = (0, 1, 7)
PER_CLASS = 14


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(3)
    rows, truth = [], {}
    for d in DIGITS:
        for n, i in enumerate(np.flatnonzero(y == d)[:PER_CLASS]):
            img = digit_image(X[i], 64, Image.Resampling.BILINEAR)
            name = f"img/d{d}_{n:02d}.png"
            (root / "img").mkdir(exist_ok=True)
            img.save(root / name)
            truth[name] = str(d)
            rows.append((name, "alice", str(d)))                  # careful, labels everything
            if n % 4 != 0:                                        # careful, skips a quarter
                rows.append((name, "bob", str(d) if n != 5 else str(DIGITS[(DIGITS.index(d) + 1) % 3])))
            if d == 1 and rng.random() < 0.7:                     # unreliable: 1 looks like 7 to him
                lab = "7"
            elif rng.random() < 0.25:
                lab = str(rng.choice([c for c in DIGITS if c != d]))
            else:
                lab = str(d)
            rows.append((name, "carl", lab))
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "annotator", "label"])
        w.writerows(rows)
    return path, rows, truth


def test_cli_writes_consensus_json_and_sheets(manifest, tmp_path, capsys):
    path, rows, truth = manifest
    out = tmp_path / "report"
    rc = consensus_cmd.main([str(path), "--out", str(out), "--folds", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "consensus.json").read_text())
    n = len(DIGITS) * PER_CLASS
    assert doc["num_images"] == n and doc["num_annotators"] == 3 and doc["classes"] == ["0", "1", "7"]
    assert doc["method"] == "dawid_skene" and "out-of-fold" in doc["model"]
    # every annotator's label is reported, exactly as the manifest gave it
    given: dict[str, dict[str, str]] = {}
    for name, ann, lab in rows:
        given.setdefault(str(path.parent / name), {})[ann] = lab
    images = {d["path"]: d for d in doc["images"]}
    assert set(images) == set(given)
    for p, d in images.items():
        assert d["labels"] == given[p]
        assert d["num_labels"] == len(given[p])
        assert 0.0 <= d["quality"] <= 1.0
        assert d["agreement"] == pytest.approx(sum(v == d["consensus"] for v in given[p].values()) / len(given[p]),
                                               abs=1e-4)
    # the consensus recovers the true digit (careful annotators + model outvote carl)
    correct = sum(images[str(path.parent / name)]["consensus"] == t for name, t in truth.items())
    assert correct >= n - 1
    # the unreliable annotator is found
    ann = {a["annotator"]: a for a in doc["annotators"]}
    assert ann["alice"]["num_labels"] == n and ann["bob"]["num_labels"] == n - 3 * 4
    assert ann["carl"]["estimated_accuracy"] < min(ann["alice"]["estimated_accuracy"], ann["bob"]["estimated_accuracy"])
    assert ann["carl"]["agreement_with_consensus"] < 0.8 < ann["bob"]["agreement_with_consensus"]
    assert ann["alice"]["agreement_with_consensus"] == pytest.approx(1.0)
    # dataset agreement is Krippendorff's alpha of the manifest's label matrix
    ims, anns, cls = sorted(given), ["alice", "bob", "carl"], ["0", "1", "7"]
    mat = np.array([[cls.index(given[p][a]) if a in given[p] else -1 for a in anns] for p in ims])
    assert doc["dataset"]["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(mat), abs=1e-4)
    assert 0.0 < doc["dataset"]["krippendorff_alpha"] < 1.0
    # review queue: every image where labels differ, worst (lowest (quality + agreement) / 2) first
    queue = doc["review_queue"]
    disagree = {p for p, g in given.items() if len(set(g.values())) > 1}
    assert disagree <= {d["path"] for d in queue}
    assert [d["rank"] for d in queue] == list(range(1, len(queue) + 1))
    qs = [d["review_score"] for d in queue]
    assert qs == sorted(qs)
    # the confused pair is 1 / 7, with a plain suggestion
    top = doc["ambiguous_pairs"][0]
    assert {top["class_a"], top["class_b"]} == {"1", "7"}
    assert "guideline" in top["suggestion"] or "merge" in top["suggestion"]
    assert top["examples"] and all(e in images for e in top["examples"])
    assert "Krippendorff's alpha" in printed and "carl" in printed and queue[0]["path"] in printed
    for png in ("review_queue.png", "ambiguous_pairs.png"):
        sheet = Image.open(out / png)
        sheet.load()
        assert sheet.format == "PNG" and sheet.mode == "RGB"
        assert sheet.width >= 3 * 128 and sheet.height >= 128
        assert np.asarray(sheet).std() > 10        # thumbnails are drawn


def test_cli_votes_only_and_bad_input(manifest, tmp_path, capsys):
    path, rows, truth = manifest
    out = tmp_path / "votes"
    assert consensus_cmd.main([str(path), "--out", str(out), "--no-model", "--method", "majority"]) == 0
    doc = json.loads((out / "consensus.json").read_text())
    assert doc["method"] == "majority" and doc["model"].startswith("not used")
    assert all("model_label" not in d for d in doc["images"])
    # bad inputs exit 2 with a message
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,cat\n")
    assert consensus_cmd.main([str(bad), "--out", str(tmp_path / "x")]) == 2
    twice = tmp_path / "twice.csv"
    twice.write_text("path,annotator,label\na.png,ann,cat\na.png,ann,dog\n")
    assert consensus_cmd.main([str(twice), "--out", str(tmp_path / "y")]) == 2
    assert consensus_cmd.main([str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert "path,annotator,label" in err and "two labels" in err


def test_crowdlab_without_the_model_is_refused_as_the_job_refuses_it(tmp_path, capsys):
    """One answer per question: the Consensus job raises for crowdlab with
    no model; the command says the same instead of switching method."""
    from imagesieve_server.commands import consensus as consensus_cmd
    path = tmp_path / "annotations.csv"
    path.write_text("path,annotator,label\na.png,ann1,cat\na.png,ann2,dog\n")
    assert consensus_cmd.main([str(path), "--out", str(tmp_path / "out"), "--no-model", "--method", "crowdlab"]) == 2
    assert "crowdlab needs the model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
