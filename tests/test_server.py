"""Client and server over a real loopback connection."""
import asyncio
import concurrent.futures
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from imagesieve import AsyncClient, Client
from imagesieve.local_server import LocalServer
from imagesieve.v1 import common_pb2, embedding_pb2

from conftest import encode, photo_image


def test_default_model_is_pretrained_through_grpc(server, photos):
    with Client(server.address) as c:
        res = c.embed([d for d, _, _ in photos], keys=[n for _, _, n in photos], top_k_classes=1)
    top1 = [tc[0][0] for tc in res.top_classes]
    correct = sum(t == label for t, (_, label, _) in zip(top1, photos))
    assert correct >= 15, f"top-1 {correct}/20"
    assert res.keys == [n for _, _, n in photos]


def test_grpc_and_inprocess_give_identical_vectors(server, embedder, photos):
    data = [d for d, _, _ in photos[:8]]
    with Client(server.address) as c:
        remote = c.embed(data).vectors
    local = np.stack([o.vector for o in embedder.embed_all(data)])
    np.testing.assert_array_equal(remote, local)


def test_unary_batch_with_corrupt_image_among_good(server, photos):
    good = [d for d, _, _ in photos[:5]]
    images = good[:2] + [photos[0][0][:200]] + good[2:]
    with Client(server.address) as c:
        res = c.embed_batch(images)
    assert res.ok.tolist() == [True, True, False, True, True, True]
    (err,) = res.errors
    assert err.index == 2 and err.code == "INVALID_ARGUMENT" and "image" in err.message
    assert not res.vectors[2].any()
    assert np.allclose(np.linalg.norm(res.vectors[res.ok], axis=1), 1, atol=1e-5)


def test_stream_many_images_in_order_with_pil_and_paths(server, photos, tmp_path):
    p = tmp_path / "x.png"
    photo_image(photos[1][0]).save(p)
    inputs = [d for d, _, _ in photos] * 3 + [photo_image(photos[0][0]), str(p), str(tmp_path / "missing.jpg")]
    with Client(server.address) as c:
        results = list(c.embed_stream(inputs, chunk_size=7))
    assert [r.index for r in results] == list(range(len(inputs)))
    vec = {i: r.vector for i, r in enumerate(results)}
    np.testing.assert_allclose(vec[0], vec[20], atol=1e-6)          # same bytes, same vector
    assert float(vec[60] @ vec[0]) > 0.999                          # PIL image of photo 0
    assert float(vec[61] @ vec[1]) > 0.999                          # PNG file of photo 1
    assert results[62].error.code == "NOT_FOUND" and "missing.jpg" in results[62].error.message
    assert results[5].width == 512 and results[5].height == 512


def test_concurrent_clients_share_model_batches(server, photos):
    data = [d for d, _, _ in photos]

    def one(_):
        with Client(server.address) as c:
            return c.embed(data, chunk_size=4).vectors

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(8)))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-5)


def test_async_client(server, photos):
    async def main():
        async with AsyncClient(server.address) as c:
            info = await c.model_info()
            res = await c.embed([d for d, _, _ in photos[:4]] + [b"junk"])
            return info, res
    info, res = asyncio.run(main())
    assert info.dim == 1024 and info.name == "mobilenet_v1" and "CPUExecutionProvider" in info.providers
    assert res.ok.tolist() == [True] * 4 + [False]


def test_when_every_image_fails_the_vectors_still_have_the_models_width(server):
    junk = [b"junk", b"\xff\xd8\xff not a jpeg"]
    with Client(server.address) as c:
        results = [c.embed(junk), c.embed_batch(junk)]

    async def main():
        async with AsyncClient(server.address) as c:
            return await c.embed(junk)
    results.append(asyncio.run(main()))
    for res in results:
        assert res.vectors.shape == (2, 1024) and not res.vectors.any()
        assert res.ok.tolist() == [False, False] and len(res.errors) == 2


def test_server_paths_confined_to_allowed_roots(server, photos, tmp_path):
    inside = server.allowed_root / "inside.jpg"
    inside.write_bytes(photos[0][0])
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(photos[0][0])
    sneaky = f"{server.allowed_root}/../{outside.parent.name}/outside.jpg"
    with Client(server.address) as c:
        res = c.embed_batch([f"server_path:{inside}", f"server_path:{outside}", f"server_path:{sneaky}",
                             f"server_path:{server.allowed_root}/nope.jpg"])
    assert res.ok.tolist() == [True, False, False, False]
    codes = [e.code for e in res.errors]
    assert codes == ["PERMISSION_DENIED", "PERMISSION_DENIED", "NOT_FOUND"]


def test_request_limits_are_invalid_argument(server, photos):
    with Client(server.address) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.embed_batch([photos[0][0]] * 65)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 64" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.embed_batch([photos[0][0]], top_k_classes=1000)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        empty = c.embedding.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k")]))
        assert empty.embeddings[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_health_is_open_and_reflection_is_off_by_default(server):
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="imagesieve.v1.EmbeddingService")).status == \
        health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel.close()


def test_reflection_when_asked_for_needs_a_token(manifest_path, tmp_path):
    """Reflection (--reflection 1) is a call like any other: open to all, its
    streams of 60 MB messages took a server to 7.7 GB (a twelfth probe)."""
    tokens = tmp_path / "tokens"
    tokens.write_text("reflection-test-token-rw rw admin\n")
    with LocalServer(["--reflection", "1", "--tokens-file", str(tokens)], model=str(manifest_path)) as srv:
        channel = grpc.insecure_channel(srv.address)
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
        with pytest.raises(grpc.RpcError) as e:
            list(refl.ServerReflectionInfo(iter(ask)))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (resp,) = list(refl.ServerReflectionInfo(iter(ask), metadata=[("authorization", "Bearer reflection-test-token-rw")]))
        names = {s.name for s in resp.list_services_response.service}
        assert {"imagesieve.v1.EmbeddingService", "imagesieve.v1.CollectionService",
                "imagesieve.v1.DuplicateService", "imagesieve.v1.AnalysisService", "grpc.health.v1.Health"} <= names
        health = health_pb2_grpc.HealthStub(channel)       # probes still need no token
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        channel.close()


def test_graceful_shutdown_drains_in_flight_work(manifest_path, photos):
    big = encode(photo_image(photos[0][0]).resize((4000, 3000)), "JPEG", quality=90)
    srv = LocalServer(["--max-batch-size", "4"], model=str(manifest_path))
    srv.start()
    try:
        with Client(srv.address) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(lambda: c.embed([big] * 24, chunk_size=24))
            time.sleep(0.3)                                  # the call is in flight
            srv.proc.send_signal(signal.SIGTERM)
            res = fut.result(timeout=60)
        assert res.ok.all() and len(res.keys) == 24
        assert srv.proc.wait(60) == 0
        assert any("draining" in line for line in srv.log)
    finally:
        srv.stop()


def test_light_client_needs_no_server_packages(server, photos, tmp_path):
    """The client imports and works with onnxruntime, faiss, torch and
    scikit-learn made unimportable."""
    img = tmp_path / "p.jpg"
    img.write_bytes(photos[0][0])
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {{'onnxruntime', 'faiss', 'torch', 'sklearn', 'imagesieve_server'}}:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import imagesieve
res = imagesieve.Client({server.address!r}).embed([{str(img)!r}])
assert res.vectors.shape == (1, 1024) and res.ok.all()
print('light ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "light ok" in out.stdout, out.stderr


def test_running_service_never_imports_torch(manifest_path):
    code = f"""
import asyncio, sys
from imagesieve_server.server import ImageSieveServer, ServerConfig
async def main():
    s = ImageSieveServer(ServerConfig(address='127.0.0.1:0', model={str(manifest_path)!r}))
    await s.start(); await s.stop(0)
asyncio.run(main())
assert 'torch' not in sys.modules, 'torch imported'
print('no torch')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "no torch" in out.stdout, out.stderr


def test_port_flag_sets_the_port_of_the_address_and_is_checked():
    from imagesieve_server.server import parse_config
    assert parse_config(["--port", "50123"]).address == "127.0.0.1:50123"
    assert parse_config(["--address", "[::]:1", "--port", "7"]).address == "[::]:7"
    assert parse_config([]).address == "127.0.0.1:50051"
    assert parse_config(["--address", "[::1]", "--port", "5"]).address == "[::1]:5"      # a host without its port
    for bad in (["--port", "70000"], ["--address", "unix:/tmp/x.sock", "--port", "5"]):
        with pytest.raises(SystemExit) as e:
            parse_config(bad)
        assert e.value.code == 2


def test_job_wait_flag_is_checked(capsys):
    """--job-wait-s: how long a job waits for a slot (0: refused at once, the old way)."""
    from imagesieve_server.server import parse_config
    assert parse_config([]).job_wait_s == 20.0 and parse_config(["--job-wait-s", "0"]).job_wait_s == 0
    for bad in ("-1", "nan", "4000"):
        with pytest.raises(SystemExit) as e:
            parse_config(["--job-wait-s", bad])
        assert e.value.code == 2 and "--job-wait-s must be 0-3600" in capsys.readouterr().err
