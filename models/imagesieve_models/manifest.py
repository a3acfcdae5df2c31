"""The manifest written beside every exported ONNX model.

It is the single description of a model that the server trusts: input size,
layout, normalization and embedding dimension drive preprocessing; sha256
pins the file it describes. Standard library only, so the server and light
tools can read it without torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

DEFAULT_MODEL_NAME = "mobilenet_v1"
MANIFEST_SUFFIX = ".json"


@dataclasses.dataclass(frozen=True)
class ModelManifest:
    """What an ONNX embedding model expects and produces.

    The graph takes ``input`` float32 of shape (N, 3, input_size, input_size)
    (layout "NCHW", RGB) holding ``(pixel - mean) / std`` with pixels in
    0..255, and returns ``embedding`` (N, embedding_dim) float32, not yet
    normalized, and, when ``num_classes`` > 0, ``logits`` (N, num_classes).
    """

    name: str
    input_size: int
    layout: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    num_classes: int
    # Fraction of the shorter side kept by the centre crop (0.875 = the
    # ImageNet-standard 224 out of 256); 1.0 keeps the whole shorter side.
    crop_fraction: float
    source: str
    licence: str
    sha256: str
    onnx_file: str
    opset: int = 17
    class_names_file: str = ""
    verification: dict = dataclasses.field(default_factory=dict)

    @property
    def normalization(self) -> str:
        m, s = self.mean, self.std
        if len(set(m)) == 1 and len(set(s)) == 1:
            return f"(x-{m[0]:g})/{s[0]:g}"
        return f"(x-{list(m)})/{list(s)}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        _atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelManifest":
        data = json.loads(Path(path).read_text())
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def onnx_path(self, manifest_path: str | os.PathLike) -> Path:
        return Path(manifest_path).parent / self.onnx_file

    def class_names(self, manifest_path: str | os.PathLike) -> list[str]:
        if not self.class_names_file:
            return []
        path = Path(manifest_path).parent / self.class_names_file
        return read_class_names(path)


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class per line, ``synset<TAB>names``; '#' lines are comments."""
    names = []
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            names.append(line.split("\t")[-1].split(",")[0].strip())
    return names


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def default_model_dir() -> Path:
    """Where exported models live: $IMAGESIEVE_MODEL_DIR, else ``models/build``
    of a source checkout, else ``~/.cache/imagesieve/models``."""
    env = os.environ.get("IMAGESIEVE_MODEL_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and (checkout / "models").is_dir():
        return checkout / "models" / "build"
    return Path.home() / ".cache" / "imagesieve" / "models"


def find_model(name_or_path: str | os.PathLike | None = None) -> Path:
    """Resolve a model name (``mobilenet_v1``), an ONNX path or a manifest
    path to the manifest path. Raises FileNotFoundError with the fix."""
    target = str(name_or_path or DEFAULT_MODEL_NAME)
    candidates = []
    p = Path(target)
    if p.suffix == ".onnx":
        candidates.append(p.with_suffix(MANIFEST_SUFFIX))
    elif p.suffix == MANIFEST_SUFFIX:
        candidates.append(p)
    else:
        candidates.append(default_model_dir() / f"{target}{MANIFEST_SUFFIX}")
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(
        f"no exported model {target!r} (looked for {', '.join(map(str, candidates))}); "
        f"build it with: imagesieve-export {p.stem if p.suffix else target} "
        f"--out {default_model_dir()}"
    )
