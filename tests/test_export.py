"""Model export: real weights, verified against the source framework."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from imagesieve_models.export import (ExportVerificationError, check_agreement, compare_outputs,
                                      export_model, verification_images)
from imagesieve_models.manifest import ModelManifest, sha256_file
from imagesieve_server.engine.decode import decode_image
from imagesieve_server.engine.preprocess import Preprocessor


def test_export_mobilenet_v1_writes_verified_model_and_manifest(tmp_path):
    path = export_model("mobilenet_v1", tmp_path)
    m = ModelManifest.load(path)
    data = json.loads(path.read_text())
    for field in ("name", "input_size", "layout", "mean", "std", "embedding_dim", "source", "licence", "sha256"):
        assert field in data
    assert (m.name, m.input_size, m.layout, m.embedding_dim, m.num_classes, m.licence) == \
        ("mobilenet_v1", 224, "NCHW", 1024, 1000, "MIT")
    assert m.sha256 == sha256_file(m.onnx_path(path))
    assert m.verification["min_cosine"] > 0.9999 and m.verification["top1_agreement"] == 1.0
    assert len(m.class_names(path)) == 1000 and m.class_names(path)[243] == "bull mastiff"
    assert not list(tmp_path.glob("tmp*")), "temporary export folder left behind"


def _batch(manifest):
    pre = Preprocessor(manifest)
    return np.stack([pre(decode_image(b, pre.decode_min_size)) for b in verification_images(8)])


def test_verification_refuses_a_model_that_does_not_match(manifest_path, tmp_path):
    manifest = ModelManifest.load(manifest_path)
    good = ort.InferenceSession(str(manifest.onnx_path(manifest_path)))
    model = onnx.load(str(manifest.onnx_path(manifest_path)))
    # Corrupt one real conv weight, as a wrong layout or a bad conversion would.
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w *= -1.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad_path = tmp_path / "bad.onnx"
    onnx.save(model, str(bad_path))
    bad = ort.InferenceSession(str(bad_path))
    x = _batch(manifest)
    ref = good.run(["embedding", "logits"], {"input": x})
    got = bad.run(["embedding", "logits"], {"input": x})
    report = compare_outputs(*ref, *got)
    with pytest.raises(ExportVerificationError, match="does not match"):
        check_agreement(report)
    check_agreement(compare_outputs(*ref, *ref))  # identical outputs pass


def test_server_refuses_onnx_file_that_differs_from_manifest(manifest_path, tmp_path):
    from imagesieve_server.engine.onnx_executor import OnnxExecutor
    manifest = ModelManifest.load(manifest_path)
    (tmp_path / manifest.onnx_file).write_bytes(manifest.onnx_path(manifest_path).read_bytes()[:-10] + b"x" * 10)
    (tmp_path / manifest_path.name).write_text(manifest.to_json())
    with pytest.raises(ValueError, match="sha256"):
        OnnxExecutor(tmp_path / manifest_path.name)
