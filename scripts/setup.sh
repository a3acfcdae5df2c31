#!/usr/bin/env bash
# Set up a fresh machine: .venv with the server, export, Ray and test extras
# (pinned by constraints.txt), the sample photos, and the default model built
# from package-shipped weights. Idempotent; safe to rerun.
#   bash scripts/setup.sh          what the demo and the server need
#   bash scripts/setup.sh --test   also what the tests need outside Python (Debian's chromium and its WebDriver)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--test" ] && ! { command -v chromium && command -v chromedriver \
                                    && [ -d /usr/share/icons/Adwaita/48x48/legacy ]; } >/dev/null; then
  # The audit report is tested in a real headless browser, driven through its WebDriver
  # (one Debian source: the driver always matches the browser); GNOME's icons are real
  # transparent artwork for the duplicate tests.
  apt-get install -y -q chromium chromium-driver adwaita-icon-theme >/dev/null \
    || { apt-get update -q && apt-get install -y -q chromium chromium-driver adwaita-icon-theme >/dev/null; }
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade "pip==26.3"
# torch is pinned to 2.13.0 (a CPU build); an unpinned torch can pull a multi-GB CUDA build.
# Two distributions: the light client (client/) and the server, which depends on it.
$PIP install -q -c constraints.txt -e ./client -e ".[export,ray,dev]"
# Real sample photos (20 labelled ImageNet photos). --no-deps: we only read its files.
$PIP install -q -c constraints.txt --no-deps "foolbox==3.3.4"
if [ "${1:-}" = "--test" ]; then
  # The Node.js interop client (pinned by its package-lock.json).
  npm ci --prefix interop/node --no-audit --no-fund --silent
fi
# The default model, exported to ONNX and verified against torch on real photos.
.venv/bin/imagesieve-export mobilenet_v1 --if-missing
