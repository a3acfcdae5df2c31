"""How many fields a request holds, counted on its wire bytes before it is parsed.

A parsed protobuf field costs ~100 bytes however little it carries on the
wire: 60 MB of empty ``Image`` entries (two bytes each) parsed to 2.9 GB in
7.5 s, on the event loop, before any limit on images a request could apply
(a probe: three such 20 MB Embed calls took a 1 GiB server to 6.4 GB and
stalled every other call for 14 s). The request gates charge wire bytes, so
the interceptor counts fields first (``count_fields``): a request over
``MAX_FIELDS`` is refused unparsed, and the gate holds the rest at
``FIELD_BYTES`` each on top of the wire bytes.
"""
from __future__ import annotations

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

#: Fields a request may hold, nested ones included: AddAnnotations' 100,000
#: annotations of up to four fields each fit, parsed to ~50 MB at most.
MAX_FIELDS = 500_000
#: What the gate charges for each parsed field (measured: ~97 bytes an empty Image).
FIELD_BYTES = 128
#: Requests smaller than this are parsed without counting (at most ~3 MB parsed).
COUNT_FROM_BYTES = 64 << 10

_VARINT_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
                 FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
                 FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM}
_FIXED_SIZES = {FieldDescriptor.TYPE_FIXED32: 4, FieldDescriptor.TYPE_SFIXED32: 4, FieldDescriptor.TYPE_FLOAT: 4,
                FieldDescriptor.TYPE_FIXED64: 8, FieldDescriptor.TYPE_SFIXED64: 8, FieldDescriptor.TYPE_DOUBLE: 8}
_layouts: dict = {}


def _layout(descriptor) -> dict:
    """field number -> ("message", its descriptor) | ("varint", None) | ("fixed", size) | ("bytes", None)."""
    out = _layouts.get(descriptor.full_name)
    if out is None:
        out = {}
        for f in descriptor.fields:
            if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
                out[f.number] = ("message", f.message_type)
            elif f.type in _VARINT_TYPES:
                out[f.number] = ("varint", None)
            elif f.type in _FIXED_SIZES:
                out[f.number] = ("fixed", _FIXED_SIZES[f.type])
            else:
                out[f.number] = ("bytes", None)
        _layouts[descriptor.full_name] = out
    return out


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("malformed varint")


def count_fields(descriptor, data: bytes, limit: int = MAX_FIELDS) -> int:
    """Fields of ``descriptor``'s message that ``data`` (its wire bytes)
    holds: every field occurrence (unknown ones and group markers too), in
    nested messages too, and each value of a packed repeated field.
    Counting stops past ``limit`` (the result is then ``limit + 1`` or a
    little more), so a request of millions of fields costs ``limit`` steps.
    Malformed bytes end the count where they start: the parser then says
    what is wrong."""
    count = 0
    stack = [(descriptor, 0, len(data))]
    try:
        while stack:
            desc, pos, end = stack.pop()
            layout = _layout(desc)
            while pos < end:
                tag, pos = _varint(data, pos, end)
                number, wire_type = tag >> 3, tag & 7
                kind = layout.get(number)
                # Every tag counts, known or not: unknown ones cost the parser
                # less, but stepping through millions of them here took seconds.
                count += 1
                if count > limit:
                    return count
                if wire_type == 0:
                    _, pos = _varint(data, pos, end)
                elif wire_type == 1:
                    pos += 8
                elif wire_type == 5:
                    pos += 4
                elif wire_type == 2:
                    length, pos = _varint(data, pos, end)
                    stop = pos + length
                    if stop > end:
                        return count
                    if kind is not None:
                        if kind[0] == "message":
                            stack.append((kind[1], pos, stop))
                        elif kind[0] == "varint":      # packed: one value a byte below 0x80
                            count += int(np.count_nonzero(np.frombuffer(data, np.uint8, length, pos) < 0x80)) - 1
                        elif kind[0] == "fixed":
                            count += length // kind[1] - 1
                        if count > limit:
                            return count
                    pos = stop
                elif wire_type in (3, 4):             # group markers: their fields are counted as met
                    continue
                else:
                    return count
    except ValueError:
        return count
    return count
