"""Per-image columns of an audit, stored compactly: an audit of millions of
images holds every path, label and hash for the whole run, and a Python
``str`` in a list costs ~60 bytes plus its text, more than the budget an
image has next to its 4 KiB embedding.

- :class:`PackedStrings`: N strings in one UTF-8 buffer plus int64 offsets
  (its text plus 8 bytes each); also an Arrow string array without a copy.
- :class:`Categorical`: int32 codes plus the distinct values (labels, splits);
  ``[i]`` returns the one shared ``str`` of its value.
"""
from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Iterable

import numpy as np


class PackedStrings(Sequence):
    """Read-only sequence of ``str``; ``[i]`` decodes one. Text that is not
    valid UTF-8 (odd file names) round-trips through ``surrogateescape``."""

    def __init__(self, items: Iterable[str] = ()):
        buf = bytearray()
        offsets = array("q", [0])
        for s in items:
            buf += s.encode("utf-8", "surrogateescape")
            offsets.append(len(buf))
        self._buf = bytes(buf)
        self._offsets = np.frombuffer(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} strings")
        i %= n
        return self._buf[self._offsets[i]:self._offsets[i + 1]].decode("utf-8", "surrogateescape")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def take(self, positions) -> "PackedStrings":
        """A new PackedStrings of the strings at ``positions`` (int array)."""
        return PackedStrings(self[int(i)] for i in positions)

    def to_arrow(self, start: int = 0, stop: int | None = None):
        """Rows [start, stop) as a ``pyarrow.large_string`` array over the same
        buffer (no copy of the text)."""
        import pyarrow as pa

        stop = len(self) if stop is None else stop
        offsets = self._offsets[start:stop + 1]
        return pa.LargeStringArray.from_buffers(stop - start, pa.py_buffer(offsets), pa.py_buffer(self._buf))

    @property
    def nbytes(self) -> int:
        return len(self._buf) + self._offsets.nbytes


class Categorical(Sequence):
    """A column of few distinct strings: ``codes`` (N,) int32 into ``values``."""

    def __init__(self, items: Iterable[str] = ()):
        index: dict[str, int] = {}
        codes = array("i")
        for s in items:
            code = index.get(s)
            if code is None:
                code = index[s] = len(index)
            codes.append(code)
        self.values: list[str] = list(index)
        self.codes = np.frombuffer(codes, dtype=np.int32) if len(codes) else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.values[c] for c in self.codes[i]]
        return self.values[self.codes[i]]

    def __iter__(self):
        values = self.values
        for c in self.codes.tolist():
            yield values[c]

    def to_arrow(self, start: int = 0, stop: int | None = None):
        """Rows [start, stop) as a dictionary-encoded Arrow string array."""
        import pyarrow as pa

        return pa.DictionaryArray.from_arrays(pa.array(self.codes[start:stop]), pa.array(self.values, pa.string()))
