"""What hostile SVG drawings cost, drawn as they are and through engine.vector.

    .venv/bin/python bench/drawing_bounds.py [--timeout 20]

Each case is a small SVG file that asks resvg for far more work than its
size suggests. Baseline: resvg-py drawing the file as it is (512 x 512, in a
subprocess killed after ``--timeout`` s: reported as that many seconds,
"timed out"; or resvg's own error). Project: ``engine.vector.rasterize``, which checks the
drawing first (refused, or drawn within its bounds). Also two drawings
within the bounds at their worst (canvas-sized shapes). One run each;
last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

HEADER = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
          'width="512" height="512">')
FULL = '<rect width="512" height="512"'


def cases() -> dict[str, str]:
    chain = ['<g id="l0"><rect width="1" height="1"/></g>'] + [
        f'<g id="l{k}">' + f'<use xlink:href="#l{k - 1}"/>' * 10 + "</g>" for k in range(1, 9)]
    return {
        "morphology radius 60": HEADER + '<filter id="f"><feMorphology operator="dilate" radius="60"/></filter>'
                                + FULL + ' filter="url(#f)"/></svg>',
        "300 blurred rectangles": HEADER + '<filter id="f"><feGaussianBlur stdDeviation="20"/></filter>'
                                  + (FULL + ' filter="url(#f)"/>') * 300 + "</svg>",
        "use chain 10^8": HEADER + "<defs>" + "".join(chain) + '</defs><use xlink:href="#l8"/></svg>',
        "15,000 translucent triangles": HEADER + "".join(
            f'<path d="M0 0 L512 {i % 512} L{i % 512} 512 Z" fill-opacity="0.5" fill="#{i % 4096:03x}"/>'
            for i in range(15000)) + "</svg>",
        # within the bounds, at their worst
        "32 blurred rectangles": HEADER + '<filter id="f"><feGaussianBlur stdDeviation="20"/></filter>'
                                 + (FULL + ' filter="url(#f)"/>') * 32 + "</svg>",
        "512 half-transparent rectangles": HEADER + (FULL + ' opacity="0.5"/>') * 512 + "</svg>",
    }


RAW = """
import sys, resvg_py
resvg_py.svg_to_bytes(svg_string=sys.stdin.read(), width=512, height=512, skip_system_fonts=True)
"""


def raw_seconds(svg: str, timeout: float) -> tuple[float, str]:
    """(seconds, "drawn" / "timed out" / resvg's error) of resvg drawing ``svg`` as it is."""
    t = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", RAW], input=svg, text=True, timeout=timeout,
                           capture_output=True)
    except subprocess.TimeoutExpired:
        return timeout, "timed out"
    took = time.perf_counter() - t
    return took, "drawn" if r.returncode == 0 else "error: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    from imagesieve_server.engine import vector
    rows = {}
    for name, svg in cases().items():
        raw, as_is = raw_seconds(svg, args.timeout)
        t = time.perf_counter()
        try:
            vector.rasterize(svg.encode(), 10 ** 8)
            outcome = "drawn"
        except vector.SvgRefused as e:
            outcome = f"refused: {e}"
        checked = time.perf_counter() - t
        rows[name] = {"file_bytes": len(svg), "as_is_s": round(raw, 2), "as_is": as_is,
                      "checked_s": round(checked, 3), "outcome": outcome}
        print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)
    refused = [r for r in rows.values() if r["outcome"] != "drawn"]
    print(json.dumps({"rows": rows, "refused": len(refused),
                      "max_checked_s": max(r["checked_s"] for r in rows.values()),
                      "max_as_is_s_of_refused": max(r["as_is_s"] for r in refused)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
