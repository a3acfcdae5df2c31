"""The contract outside Python: a Node.js client (@grpc/grpc-js, protos
loaded at run time from proto/) calls the health check, Embed and
CheckDuplicates on a real server, with a bearer token."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from imagesieve import Client
from imagesieve.local_server import LocalServer

NODE_DIR = Path(__file__).resolve().parent.parent / "interop" / "node"


@pytest.fixture(scope="module")
def node_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed (node >= 18)"
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "client.js"


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "IMAGESIEVE_TOKEN"}


def test_node_client_embeds_and_checks_duplicates(node_client, manifest_path, photos, tmp_path):
    token = secrets.token_hex(20)
    files = []
    for data, _, name in photos[:3]:
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    (tmp_path / "copy-of-first.jpg").write_bytes(photos[0][0])           # byte-identical copy
    (tmp_path / "broken.jpg").write_bytes(photos[1][0][:300])           # truncated
    files += [tmp_path / "copy-of-first.jpg", tmp_path / "broken.jpg"]

    with LocalServer([], model=str(manifest_path), env={"IMAGESIEVE_TOKENS": f"{token} rw node"}) as srv:
        run = subprocess.run([shutil.which("node"), str(node_client), "--address", srv.address, "--collection", "from-node",
                              *map(str, files)], capture_output=True, text=True, timeout=120,
                             env={**_env(), "IMAGESIEVE_TOKEN": token})
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout.strip().splitlines()[-1])
        # Without the token, the Node client is turned away.
        denied = subprocess.run([shutil.which("node"), str(node_client), "--address", srv.address, str(files[0])],
                                capture_output=True, text=True, timeout=60, env=_env())
        with Client(srv.address, token=token, timeout=30) as c:
            py = c.embed([f.read_bytes() for f in files[:3]])
            assert c.collection_stats("from-node").num_images == 3

    assert out["health"] == "SERVING"
    assert out["model"] == "mobilenet_v1" and out["dim"] == 1024
    emb = out["embeddings"]
    assert [e["key"] for e in emb] == [f.name for f in files]
    for i, e in enumerate(emb[:4]):
        assert e["error"] is None and e["dim"] == 1024 and abs(e["norm"] - 1) < 1e-4
        assert e["top_class"] and e["width"] > 0 and e["height"] > 0
    # Same numbers as the Python client.
    for i in range(3):
        np.testing.assert_allclose(emb[i]["head"], py.vectors[i][:8], atol=1e-6)
    np.testing.assert_allclose(emb[3]["head"], emb[0]["head"], atol=1e-7)
    assert emb[4]["error"]["code"] == 3 and emb[4]["dim"] == 0                  # INVALID_ARGUMENT

    first = {r["key"]: r for r in out["first_pass"]}
    for f in files[:3]:
        assert first[f.name]["verdict"] == "VERDICT_UNIQUE" and first[f.name]["added"], first[f.name]
    copy = first["copy-of-first.jpg"]
    assert copy["verdict"] == "VERDICT_EXACT_DUPLICATE" and not copy["added"]
    assert copy["nearest"]["key"] == files[0].name and copy["nearest"]["cosine"] > 0.999
    assert first["broken.jpg"]["verdict"] == "VERDICT_ERROR" and first["broken.jpg"]["error"]
    second = {r["key"]: r for r in out["second_pass"]}
    assert all(second[f.name]["verdict"] == "VERDICT_EXACT_DUPLICATE" for f in files[:4])
    assert out["collection_size"] == 3

    assert denied.returncode == 1 and "16 " in denied.stderr and "token" in denied.stderr   # 16 = UNAUTHENTICATED
