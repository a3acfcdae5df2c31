"""Costly check results kept beside the embeddings they came from, so a
later command on the same images answers at once (after an audit,
``samplesize --embeddings AUDIT_OUT`` reads the audit's sweep instead of
fitting 25 classifiers again).

A result is keyed by a digest of every input that decides it (the
vectors' bytes, the labels, the parameters, the source of the code that
computes it, the package, numpy and scikit-learn versions): any change is a
new key, so a stale result is never read, only left behind; the newest
``KEEP`` of a kind are kept."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

KEEP = 4


def digest(*parts) -> str:
    """Hex SHA-256 of ``parts``: arrays by dtype, shape and bytes, strings
    and numbers by type and text, sequences element by element, each with
    its length (so no two different inputs share a serialization), after the
    package, numpy and scikit-learn versions."""
    from importlib.metadata import PackageNotFoundError, version

    import sklearn
    h = hashlib.sha256()
    try:
        ours = version("imagesieve-server")
    except PackageNotFoundError:
        ours = "source"
    _feed(h, (ours, np.__version__, sklearn.__version__, *parts))
    return h.hexdigest()


def code_version(*modules) -> str:
    """A digest of the modules' source files: a result computed by other code
    (an edited classifier, a changed sweep) gets another key, installed
    version or not."""
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


def _feed(h, part) -> None:
    if isinstance(part, np.ndarray):
        a = np.ascontiguousarray(part)
        if a.dtype == object:
            _feed(h, [x for x in a.ravel()])
            h.update(f"shape {a.shape}|".encode())
            return
        h.update(f"array {a.dtype.str} {a.shape}|".encode())
        h.update(a.data)
    elif isinstance(part, (list, tuple)):
        h.update(f"seq {len(part)}[".encode())
        for x in part:
            _feed(h, x)
        h.update(b"]")
    else:
        text = str(part).encode()
        h.update(f"{type(part).__name__} {len(text)}:".encode() + text)


def load(folder: Path | None, kind: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays saved under (kind, key) in ``folder``, or None (none kept,
    no folder, or a file that cannot be read: the result is computed again)."""
    if folder is None:
        return None
    path = Path(folder) / "results" / f"{kind}-{key[:32]}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception:        # missing, empty, truncated, not a zip: computed again
        return None
    return arrays if str(arrays.pop("_key", "")) == key else None


def save(folder: Path | None, kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Keep ``arrays`` under (kind, key) in ``folder``/results (written
    whole, then renamed: a reader never sees half a file); the oldest of
    the kind beyond KEEP are removed. A folder that cannot be written
    (read-only, full) only costs the reuse: nothing is raised."""
    if folder is None:
        return
    results = Path(folder) / "results"
    try:
        results.mkdir(exist_ok=True)     # not its folder: a collection dropped meanwhile stays gone
        fd, tmp = tempfile.mkstemp(dir=results, prefix=f".{kind}-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, _key=np.str_(key), **arrays)
            os.replace(tmp, results / f"{kind}-{key[:32]}.npz")
        except BaseException:
            os.unlink(tmp)
            raise
        kept = sorted(results.glob(f"{kind}-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
