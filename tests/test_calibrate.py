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
    assert s["false_pair_rate"] <= 0.01 and s["recall"] >= 0.95
    assert set(result["recall_by_kind_at_suggested"]) >= {"jpeg_q20", "flip", "grayscale", "screenshot"}


def test_calibrate_refuses_too_few_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "calibrate", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "at least 3" in r.stderr
