"""The light client installs alone (distribution ``imagesieve``, client/)
and works against a live server: no onnxruntime, faiss, OpenCV,
scikit-learn or torch in its environment, and its CLI loads only what a
command needs."""
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from imagesieve import Client
from imagesieve.channel import RETRY_POLICY, service_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("client-only") / "venv"
    subprocess.run(["bash", str(ROOT / "scripts" / "client_venv.sh"), str(venv)], check=True, timeout=600)
    return venv


def _run(venv: Path, *args, timeout=120):
    return subprocess.run([str(venv / "bin" / "imagesieve"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def test_the_client_installs_without_the_server_stack(client_venv):
    probe = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
             "['onnxruntime', 'faiss', 'cv2', 'sklearn', 'torch', 'scipy', 'imagesieve_server', 'imagesieve', 'grpc']}))")
    r = subprocess.run([str(client_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                       check=True, cwd="/")
    present = json.loads(r.stdout)
    assert present.pop("imagesieve") and present.pop("grpc")
    assert not any(present.values()), present
    # Its files are its own copy, not this checkout's (a user's install).
    r = subprocess.run([str(client_venv / "bin" / "python"), "-c", "import imagesieve; print(imagesieve.__file__)"],
                       capture_output=True, text=True, check=True, cwd="/")
    assert str(client_venv) in r.stdout


def test_the_client_cli_works_against_a_live_server(client_venv, server, photos, tmp_path):
    r = _run(client_venv, "health", "--server", server.address)
    assert r.returncode == 0 and r.stdout.strip() == "SERVING", r.stderr
    folder = tmp_path / "imgs"
    folder.mkdir()
    for data, _, name in photos[:4]:
        (folder / name).write_bytes(data)
    (folder / "broken.jpg").write_bytes(photos[4][0][:200])
    out = tmp_path / "e.npy"
    r = _run(client_venv, "embed", str(folder), "--server", server.address, "--out", str(out))
    assert r.returncode == 0, r.stderr
    vectors = np.load(out)
    keys = (tmp_path / "e.keys.txt").read_text().splitlines()
    assert vectors.shape == (5, 1024)
    ok = np.array([k != str(folder / "broken.jpg") for k in keys])
    assert np.allclose(np.linalg.norm(vectors[ok], axis=1), 1.0, atol=1e-4) and not vectors[~ok].any()
    r = _run(client_venv, "info", "--server", server.address)
    assert r.returncode == 0 and json.loads(r.stdout)["dim"] == 1024


def test_server_commands_say_what_to_install(client_venv):
    for args in (["serve"], ["audit", "x", "--out", "y"], ["labels", "x"]):
        r = _run(client_venv, *args)
        assert r.returncode == 2 and "pip install imagesieve-server (from a checkout: pip install ./client .)" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    r = _run(client_venv, "--help")
    assert r.returncode == 0 and "audit" in r.stdout and "health" in r.stdout


def test_health_loads_neither_numpy_nor_the_service_stubs():
    code = ("import sys; from imagesieve import cli; cli.main(['health', '--server', '127.0.0.1:1', "
            "'--connect-timeout', '0.2']); print(sorted(m for m in sys.modules if m == 'numpy' or "
            "m.startswith('imagesieve.v1') or m.startswith('imagesieve_server') or m == 'imagesieve.client'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_read_only_calls_refused_for_now_are_retried_with_backoff(manifest_path, photos):
    """A server at its limit of calls answers RESOURCE_EXHAUSTED at admission;
    the client's retry policy tries again with backoff, so an Embed sent
    while another client holds the only slot succeeds once the slot frees.
    A channel without retries gets the refusal."""
    import threading
    import time

    from imagesieve.local_server import LocalServer
    from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

    policy = json.loads(service_config())["methodConfig"][0]["retryPolicy"]
    assert policy == RETRY_POLICY and json.loads(service_config(retries=False)) == {}
    with LocalServer(["--max-concurrent-rpcs", "1"], model=str(manifest_path)) as srv:
        hold = threading.Event()

        def idle():                   # a stream that holds the server's only slot
            hold.wait(30)
            return
            yield  # noqa: unreachable - makes this a generator

        holder_channel = grpc.insecure_channel(srv.address)
        held = embedding_pb2_grpc.EmbeddingServiceStub(holder_channel).EmbedStream(idle(), timeout=30)
        time.sleep(0.5)
        from imagesieve.channel import make_channel
        with make_channel(srv.address, retries=False) as no_retry:
            with pytest.raises(grpc.RpcError) as e:
                embedding_pb2_grpc.EmbeddingServiceStub(no_retry).Embed(
                    embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])]), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        threading.Timer(0.7, hold.set).start()        # the slot frees while the client backs off
        with Client(srv.address, timeout=20) as c:
            t0 = time.monotonic()
            res = c.embed_batch([photos[0][0]])
            waited = time.monotonic() - t0
        assert res.ok.all() and waited >= 0.5, waited
        held.cancel()
        holder_channel.close()
