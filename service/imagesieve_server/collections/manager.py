"""Named collections under one data folder."""
from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

from .collection import Collection, CollectionError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class CollectionManager:
    """Opens every collection under ``data_dir/collections`` at start (each
    replays its log), creates and drops them. Thread-safe."""

    def __init__(self, data_dir: str | Path, model: str, dim: int, snapshot_every: int = 10_000):
        self.root = Path(data_dir) / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self.model, self.dim, self.snapshot_every = model, dim, snapshot_every
        self._lock = threading.Lock()
        self._open: dict[str, Collection] = {}
        for path in sorted(self.root.iterdir()):
            if (path / "store.sqlite").exists():
                self._open[path.name] = Collection.open(path, snapshot_every=snapshot_every)

    @staticmethod
    def validate_name(name: str) -> str:
        if not NAME_RE.fullmatch(name or ""):
            raise CollectionError(f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-', '.' "
                                  "starting with a letter or digit", "INVALID_ARGUMENT")
        return name

    def create(self, name: str, index_kind: str = "auto", threshold: float = 0.0,
               exist_ok: bool = False) -> Collection:
        self.validate_name(name)
        with self._lock:
            if name in self._open:
                if exist_ok:
                    return self._open[name]
                raise CollectionError(f"collection {name!r} exists", "ALREADY_EXISTS")
            c = Collection.create(self.root / name, name, self.dim, self.model, index_kind, threshold,
                                  snapshot_every=self.snapshot_every)
            self._open[name] = c
            return c

    def get(self, name: str) -> Collection:
        with self._lock:
            c = self._open.get(name)
        if c is None:
            raise CollectionError(f"no collection named {name!r}", "NOT_FOUND")
        if c.model != self.model or c.dim != self.dim:
            raise CollectionError(f"collection {name!r} holds {c.model} ({c.dim}-d) vectors but the server "
                                  f"runs {self.model} ({self.dim}-d)")
        return c

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    def drop(self, name: str) -> bool:
        with self._lock:
            c = self._open.pop(name, None)
        if c is None:
            return False
        c.close(snapshot=False)
        shutil.rmtree(c.path)
        return True

    def close(self) -> None:
        with self._lock:
            for c in self._open.values():
                c.close()
            self._open.clear()
