"""Server-side paths: an image may name a file on the server only inside the
configured roots. Resolved before checking, so ``..`` and symlinks cannot
escape."""
from __future__ import annotations

import os
from pathlib import Path


class PathPolicy:
    def __init__(self, roots: list[str | os.PathLike] | None = None):
        self.roots = [Path(r).resolve() for r in (roots or [])]

    def resolve(self, path: str) -> Path:
        """Return the real path if it lies inside a root; PermissionError otherwise."""
        if not self.roots:
            raise PermissionError("server paths are disabled (start the server with --allow-root DIR)")
        real = Path(path).resolve()
        if not any(real.is_relative_to(root) for root in self.roots):
            raise PermissionError(f"{path!r} is outside the server's allowed roots")
        return real

    def read(self, path: str, max_bytes: int) -> bytes:
        real = self.resolve(path)
        with open(real, "rb") as f:
            data = f.read(max_bytes + 1)
        return data  # the decoder reports oversize data (len > max_bytes)
