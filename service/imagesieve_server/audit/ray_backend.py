"""The embedding stage on a Ray cluster: Ray Data ``map_batches`` with a
class whose constructor loads the ONNX model once per worker. Results come
back in input order and land in the same shards as the other backends.

Workers must import imagesieve_server and read the model file and the
images at the same paths (a shared filesystem, or a Ray runtime_env)."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .embed import read_image_file
from .store import Embedded

from ..engine import properties as image_props
from ..engine.signature import SIGNATURE_BYTES


class EmbedBatch:
    """Ray Data UDF: {"path": (B,)} -> vectors and per-image metadata."""

    def __init__(self, model: str):
        from ..engine import DecodeLimits, Embedder
        from .embed import MAX_FILE_MB
        self.embedder = Embedder.from_model(model, decode_workers=1, limits=DecodeLimits(max_bytes=MAX_FILE_MB << 20))

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        files = [read_image_file(p) for p in paths]
        results = self.embedder.embed_all([f[0] for f in files], with_signatures=True)
        dim = self.embedder.dim
        vectors = np.zeros((len(paths), dim), dtype=np.float32)
        signatures = np.zeros((len(paths), SIGNATURE_BYTES), dtype=np.uint8)
        properties = np.zeros((len(paths), image_props.COUNT), dtype=np.float32)
        errors = []
        for i, (r, f) in enumerate(zip(results, files)):
            if f[4] or not r.ok:
                errors.append(f[4] or f"{r.error.code}: {r.error}")
            else:
                vectors[i] = r.vector
                signatures[i] = r.signature
                properties[i] = r.properties
                errors.append("")
        return {"path": np.array(paths, dtype=object), "vector": vectors, "signature": signatures,
                "properties": properties,
                "sha256": np.array([f[1] for f in files], dtype=object),
                "size": np.array([f[2] for f in files], dtype=np.int64),
                "mtime_ns": np.array([f[3] for f in files], dtype=np.int64),
                "width": np.array([r.width for r in results], dtype=np.int64),
                "height": np.array([r.height for r in results], dtype=np.int64),
                "error": np.array(errors, dtype=object)}


class RayBackend:
    name = "ray"

    def __init__(self, address: str, model: str | None = None, batch_size: int = 32,
                 concurrency: int | None = None):
        import ray
        from imagesieve_models.manifest import ModelManifest, find_model

        self.manifest_path = str(find_model(model).resolve())
        m = ModelManifest.load(self.manifest_path)
        self.model, self.dim = m.name, m.embedding_dim
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False)
        self.batch_size = batch_size
        self.concurrency = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)

    def embed(self, paths: Iterable[str], count: int | None = None) -> Iterator[Embedded]:
        import ray
        paths = list(paths)
        if not paths:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_items([{"path": p} for p in paths]).map_batches(
            EmbedBatch, fn_constructor_kwargs={"model": self.manifest_path}, batch_size=self.batch_size,
            concurrency=self.concurrency, batch_format="numpy")
        for b in ds.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            for i in range(len(b["path"])):
                err = str(b["error"][i])
                yield Embedded(str(b["path"][i]), str(b["sha256"][i]), int(b["size"][i]), int(b["mtime_ns"][i]),
                               None if err else b["vector"][i], int(b["width"][i]), int(b["height"][i]), err,
                               None if err else b["signature"][i], None if err else b["properties"][i])

    def close(self) -> None:
        pass
