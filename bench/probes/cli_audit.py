"""The real CLI as a probe's new user runs it, shared by the probes in this folder."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_audit(folder: Path, out: Path, *flags: str) -> dict:
    """`nice -n 10 imagesieve audit FOLDER --out OUT --no-sweep FLAGS` (the
    CLI beside this interpreter), ``out`` emptied first. Its console goes
    to OUT.stdout.txt and OUT.stderr.txt beside ``out``; returns what
    OUT.run.json holds: {"cmd", "rc", "wall_s"}."""
    if out.exists():
        shutil.rmtree(out)
    cmd = ["nice", "-n", "10", str(Path(sys.executable).parent / "imagesieve"), "audit", str(folder),
           "--out", str(out), "--no-sweep", *flags]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    result = {"cmd": cmd, "rc": run.returncode, "wall_s": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / (out.name + ".stdout.txt")).write_text(run.stdout)
    (out.parent / (out.name + ".stderr.txt")).write_text(run.stderr)
    (out.parent / (out.name + ".run.json")).write_text(json.dumps(result, indent=1))
    print(f"audit {' '.join(flags) or '(defaults)'}: rc {run.returncode}, {result['wall_s']:.1f} s -> {out}")
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
    return result
