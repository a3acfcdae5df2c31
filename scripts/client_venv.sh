#!/usr/bin/env bash
# A virtual environment with the light client alone (distribution `imagesieve`,
# client/): grpcio, protobuf, numpy, pillow, grpcio-health-checking; no
# onnxruntime, faiss, OpenCV, scikit-learn or torch. Used by the light-client
# test and bench/cli_start.py; reused when it already holds this version of the client.
#   bash scripts/client_venv.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: client_venv.sh DIR}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x "$DIR/bin/python" ] || "$PYTHON" -m venv "$DIR"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' client/pyproject.toml)
"$DIR/bin/python" -c "import sys, imagesieve.cli; sys.exit(imagesieve.__version__ != '$VERSION')" 2>/dev/null && exit 0
# Not editable: the venv must see the client's files only, as a user's install would.
"$DIR/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt ./client
