"""The PyTorch runtime: same vectors as ONNX Runtime from the same weights,
in-process and behind a real gRPC server started with --runtime torch."""
import dataclasses
import json

import numpy as np
import pytest

from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve_models.manifest import ModelManifest
from imagesieve_server.engine import Embedder
from imagesieve_server.engine.torch_executor import TorchExecutor


@pytest.fixture(scope="module")
def torch_embedder(manifest_path):
    e = Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", max_batch_size=8)
    yield e
    e.close()


def test_torch_runtime_matches_onnx_on_real_photos(embedder, torch_embedder, photos):
    data = [b for b, _, _ in photos] + [b"not an image"]
    onnx_out, torch_out = embedder.embed_all(data), torch_embedder.embed_all(data)
    assert torch_embedder.executor.providers == ["torch:cpu:float32"]
    assert not torch_out[-1].ok and onnx_out[-1].error.code == torch_out[-1].error.code
    a = np.stack([r.vector for r in onnx_out[:-1]])
    b = np.stack([r.vector for r in torch_out[:-1]])
    assert b.dtype == np.float32 and b.shape == (len(photos), 1024)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.99999
    la = np.stack([r.logits for r in onnx_out[:-1]])
    lb = np.stack([r.logits for r in torch_out[:-1]])
    assert (la.argmax(1) == lb.argmax(1)).all()
    assert np.abs(la - lb).max() < 1e-3


def test_torch_runtime_takes_pixels_and_normalized_floats_alike(embedder, torch_embedder, photos):
    data = [b for b, _, _ in photos[:5]]
    prepared = [torch_embedder.prepare(d).tensor for d in data]
    assert torch_embedder.executor.input_kind == "pixels"
    assert all(t.dtype == np.uint8 and t.shape == (224, 224, 3) for t in prepared)
    from_pixels, _ = torch_embedder.executor.run(np.stack(prepared))
    from_floats, _ = torch_embedder.executor.run(np.stack([embedder.prepare(d).tensor for d in data]))
    assert (from_pixels * from_floats).sum(1).min() > 0.999999
    with pytest.raises(ValueError, match=r"pixels must be \(N, S, S, 3\) uint8"):
        torch_embedder.executor.run(np.zeros((2, 3, 224, 224), np.uint8))


def test_torch_runtime_refuses_weights_other_than_the_manifests(manifest_path, tmp_path):
    m = ModelManifest.load(manifest_path)
    other = tmp_path / manifest_path.name
    other.write_text(json.dumps({**dataclasses.asdict(m), "source": "some other checkpoint"}))
    (tmp_path / m.class_names_file).write_text((manifest_path.parent / m.class_names_file).read_text())
    with pytest.raises(ValueError, match="manifest's is 'some other checkpoint'"):
        TorchExecutor(other, device="cpu")


def test_torch_runtime_validates_its_parameters(manifest_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        TorchExecutor(manifest_path, device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchExecutor(manifest_path, device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Embedder.from_model(str(manifest_path), runtime="tensorflow")


def test_server_with_torch_runtime_serves_the_same_vectors(manifest_path, embedder, photos):
    data = [b for b, _, _ in photos[:6]]
    want = np.stack([r.vector for r in embedder.embed_all(data)])
    with LocalServer(["--runtime", "torch", "--torch-device", "cpu"], model=str(manifest_path)) as srv:
        with Client(srv.address) as c:
            got = c.embed_batch(data).vectors
            assert list(c.model_info().providers) == ["torch:cpu:float32"]
    assert (want * got).sum(1).min() > 0.99999


def test_serve_refuses_an_unknown_runtime_or_dtype_at_the_command_line(capsys):
    from imagesieve_server.server import parse_config
    assert parse_config(["--runtime", "torch", "--torch-dtype", "float16"]).torch_dtype == "float16"
    for argv, message in ((["--runtime", "tf"], "--runtime must be one of onnx, torch"),
                          (["--torch-dtype", "int8"], "--torch-dtype must be one of float32, float16, bfloat16")):
        with pytest.raises(SystemExit):
            parse_config(argv)
        assert message in capsys.readouterr().err
