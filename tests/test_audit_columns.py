"""The audit's compact per-image columns: they must read back exactly what
went in (odd file names included) and hand Arrow the same text."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from imagesieve_server.audit.columns import Categorical, PackedStrings
from imagesieve_server.audit.sources import AuditRecord, AuditTable

NAMES = ["/data/a.jpg", "/data/ünïcödé/b.png", "", "/data/bad-\udcff-bytes.jpg", "/x/" + "long" * 200]


def test_packed_strings_round_trip_and_index_like_a_list():
    p = PackedStrings(NAMES)
    assert len(p) == 5 and list(p) == NAMES and p[-1] == NAMES[-1] and p[1:3] == NAMES[1:3]
    assert list(p.take(np.array([3, 0]))) == [NAMES[3], NAMES[0]]
    with pytest.raises(IndexError):
        p[5]
    # text + 8 bytes of offset per string, far below a list of str
    assert p.nbytes == sum(len(s.encode("utf-8", "surrogateescape")) for s in NAMES) + 8 * 6


def test_packed_strings_to_arrow_slices_without_copying():
    p = PackedStrings(NAMES[:3])
    arr = p.to_arrow(1, 3)
    assert arr.type == pa.large_string() and arr.to_pylist() == NAMES[1:3]
    assert p.to_arrow().to_pylist() == NAMES[:3]


def test_categorical_shares_one_string_per_value():
    c = Categorical(["cat", "dog", "cat", ""])
    assert list(c) == ["cat", "dog", "cat", ""] and c.values == ["cat", "dog", ""]
    assert c[0] is c[2]
    assert c.to_arrow(1, 4).to_pylist() == ["dog", "cat", ""]
    t = AuditTable.from_records([AuditRecord("/a", "cat"), AuditRecord("/b", ""), AuditRecord("/c", "dog", "test")])
    assert len(t) == 3 and t.n_labelled == 2 and list(t.splits) == ["", "", "test"]
