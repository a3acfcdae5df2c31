"""imagesieve calibrate on real photos, in-process and through a server."""
import json
import subprocess
import sys


def test_calibrate_reports_table_and_suggestion(server, photos, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for data, _, name in photos[:10]:
        (folder / name).write_bytes(data)
    out = tmp_path / "cal.json"
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "calibrate", str(folder), "--server",
                        server.address, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "suggested threshold" in r.stdout and "altered copies 12/12" in r.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 10 and result["copies"] == 120 and result["distinct_pairs"] == 45
    table = {row["threshold"]: row for row in result["table"]}
    recalls = [table[t]["recall"] for t in sorted(table)]
    assert recalls == sorted(recalls, reverse=True)            # recall falls as the threshold rises
    assert table[0.6]["recall"] >= 0.95 and table[0.95]["recall"] < table[0.6]["recall"]
    s = result["suggested"]
    # The default bound is per image: 0.5 false pairs per 1,000 of these 10
    # images is a rate of 1/9,000 a pair, below what 45 pairs can show.
    assert result["collection_size"] == 10 and not result["bound_resolvable"]
    assert s["false_pair_rate"] == 0 and s["false_pairs_per_1k"] == 0
    assert "false pairs per 1,000 images in a collection of 10" in r.stdout and "cannot measure" in r.stdout
    assert set(result["recall_by_kind_at_suggested"]) >= {"jpeg_q20", "flip", "grayscale", "screenshot"}
    for row in result["table"]:           # per 1k = rate x (N - 1) / 2 x 1000
        assert abs(row["false_pairs_per_1k"] - row["false_pair_rate"] * 9 / 2 * 1000) < 1e-6
    # A collection 100x larger at the same per-image bound needs a stricter threshold
    # (or the same one, when it is already above every distinct pair).
    r2 = subprocess.run([sys.executable, "-m", "imagesieve.cli", "calibrate", str(folder), "--server",
                         server.address, "--out", str(out), "--max-false-pair-rate", "0.05"],
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr
    per_pair = json.loads(out.read_text())
    assert per_pair["suggested"]["false_pair_rate"] <= 0.05 and per_pair["bound_resolvable"]
    assert per_pair["suggested"]["threshold"] <= s["threshold"]
    assert result["sample_pairs_at_copy_cosine"] == 0 and result["unreadable"] == 0 and "note: 0" not in r.stdout
    # A sample holding a copy and an unreadable file: both said, not passed off as false pairs silently.
    (folder / "copy.png").write_bytes(_png_of(photos[0][0]))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    r3 = subprocess.run([sys.executable, "-m", "imagesieve.cli", "calibrate", str(folder), "--server",
                         server.address, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stderr
    third = json.loads(out.read_text())
    assert third["images"] == 11 and third["unreadable"] == 1 and third["sample_pairs_at_copy_cosine"] >= 1
    assert "most likely copies of each other" in r3.stdout and "1 of the sampled images could not be read" in r3.stdout


def _png_of(jpeg: bytes) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, format="PNG")
    return buf.getvalue()


def test_calibrate_refuses_too_few_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "calibrate", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "at least 3" in r.stderr
