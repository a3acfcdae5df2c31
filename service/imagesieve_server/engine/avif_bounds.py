"""The largest picture an AVIF file can make its decoder allocate, read
from its boxes before Pillow opens it.

An AVIF picture costs its pixels whatever its bytes, and AV1 codes a flat
one in almost nothing: 2,181 bytes of 10000x10000 took 0.74 s and ~900 MB to
decode (a ninth probe). ``preflight`` bounds that canvas by the file's coded
bytes; this walk finds the canvas. libavif reports the ``ispe`` size but
decodes what the data says, so every size counts: ``ispe``, a sequence's AV1
sample entry and track header, every AV1 sequence header in each AV1 item's
data and in a sequence's first frame (and ``av1C``), and the output size of
grid and overlay items (their tiles may all be one coded tile: 1.5 KB of
16384x16384 decoded with 2-4 GB while its size read 64x64).

The walk itself is bounded (boxes, item extents, OBUs, frames), so no file
makes the check costly, and a file it cannot read as libavif would (AV1 data
without a sequence header, too many OBUs, extents or frames) is refused
rather than guessed at.
"""
from __future__ import annotations

MAX_AVIF_EXTENTS = 4096        # item extents in all (a grid of 1,000 tiles lists 1,000)
MAX_AV1_OBUS = 4096            # OBUs read in all, each AV1 item and each track's first frame (a still: a few; ~3 a grid tile)
MAX_AVIF_SAMPLES = 100_000     # frames a sequence may list (libavif makes an entry for each while opening)
MAX_AVIF_EXIF_BYTES = 256 << 10  # an EXIF item (a camera's: tens of KB; Pillow parses it whole while opening)
# ISOBMFF boxes holding the boxes that say an AVIF's size, with the bytes of
# their own fields before their children (FullBox flags; stsd's entry count).
_ISO_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0, b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0,
                   b"stbl": 0, b"stsd": 8}


class AvifRefused(Exception):
    """Why an AVIF is refused from its boxes."""


class AvifUnreadable(Exception):
    """AV1 data or item locations read differently from how libavif would: refused."""


# preflight's reader, repeated: preflight imports this module, which imports nothing
# from it (the box limit comes in as avif_canvas's max_boxes).
def _u(data: bytes, at: int, size: int, order: str) -> int:
    return int.from_bytes(data[at:at + size], order)


class _Bits:
    """Big-endian bit reader over ``data[at:end]``; reading past the end
    gives zeros (a cut header then declares nothing large)."""

    def __init__(self, data: bytes, at: int, end: int):
        self.data, self.pos, self.end = data, at * 8, end * 8

    def f(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            bit = (self.data[byte] >> (7 - (self.pos & 7))) & 1 if self.pos < self.end else 0
            v, self.pos = (v << 1) | bit, self.pos + 1
        return v

    def uvlc(self) -> int:
        zeros = 0
        while zeros < 32 and self.pos < self.end and not self.f(1):
            zeros += 1
        return 0 if zeros >= 32 else self.f(zeros)


def _leb128(data: bytes, at: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if at + i >= end:
            break
        value |= (data[at + i] & 0x7F) << (7 * i)
        if not data[at + i] & 0x80:
            return value, at + i + 1
    return -1, end


def _larger(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) of more pixels."""
    return a if a[0] * a[1] >= b[0] * b[1] else b


def _av1_frame_limit(data: bytes, at: int, end: int, budget: list[int]) -> tuple[int, int]:
    """The largest frame (max_frame_width, max_frame_height) that any AV1
    sequence header among the OBUs of ``data[at:end]`` allows (AV1 spec 5.3
    and 5.5). Every OBU is read, padding and temporal delimiters too (the
    decoder skips any number of them; an eleventh probe hid a 16384x16384
    header behind 8), each taken from ``budget`` ([OBUs left] for the whole
    file); AvifUnreadable when it runs out, when a size runs past the data,
    or when no sequence header is found."""
    widest = (0, 0)
    while at < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise AvifUnreadable(f"AV1 data of over {MAX_AV1_OBUS} OBUs")
        header = data[at]
        kind, has_size = (header >> 3) & 15, header & 2
        at += 2 if header & 4 else 1                    # the extension byte
        size, at = _leb128(data, at, end) if has_size else (end - at, at)
        if size < 0 or at + size > end:
            raise AvifUnreadable("AV1 data whose OBU sizes run past it")
        if kind == 1:                                   # OBU_SEQUENCE_HEADER
            widest = _larger(widest, _sequence_header_frame(data, at, at + size))
        at += size
    if widest == (0, 0):
        raise AvifUnreadable("AV1 data without a sequence header")
    return widest


def _sequence_header_frame(data: bytes, at: int, end: int) -> tuple[int, int]:
    """(max_frame_width, max_frame_height) of a sequence header OBU's payload."""
    r = _Bits(data, at, end)
    r.f(3)                                      # seq_profile
    r.f(1)                                      # still_picture
    if r.f(1):                                  # reduced_still_picture_header
        r.f(5)
    else:
        timing = r.f(1)
        model = buffer_delay = 0
        if timing:
            r.f(64)                             # num_units_in_display_tick, time_scale
            if r.f(1):                          # equal_picture_interval
                r.uvlc()
            model = r.f(1)
            if model:
                buffer_delay = r.f(5) + 1
                r.f(32 + 5 + 5)
        display_delay = r.f(1)
        for _ in range(r.f(5) + 1):             # operating points
            r.f(12)
            if r.f(5) > 7:
                r.f(1)
            if model and r.f(1):
                r.f(2 * buffer_delay + 1)
            if display_delay and r.f(1):
                r.f(4)
    wbits, hbits = r.f(4) + 1, r.f(4) + 1
    return r.f(wbits) + 1, r.f(hbits) + 1


def _iloc_items(data: bytes, body: int, stop: int, extents_left: int) -> list[tuple[int, int, list]]:
    """(item ID, construction method, [(offset, length), ...]) of each item
    an ``iloc`` box at ``body`` lists (ISO/IEC 14496-12 8.11.3): method 0 =
    offsets in the file, 1 = in the ``idat`` box; a length of 0 runs to the
    end. AvifUnreadable beyond ``extents_left`` extents, or when the entries
    run past the box (each is read field by field: an entry of zero-byte
    fields costs a loop, so the count is bounded, not the bytes)."""
    version = data[body] if body < stop else 0
    p = body + 4
    if p + 2 > stop:
        return []
    sizes, other = data[p], data[p + 1]
    offset_size, length_size, base_size = sizes >> 4, sizes & 15, other >> 4
    index_size = other & 15 if version in (1, 2) else 0
    id_size = 4 if version == 2 else 2
    count, p = _u(data, p + 2, id_size, "big"), p + 2 + id_size
    if count > extents_left:
        raise AvifUnreadable(f"AVIF items of over {MAX_AVIF_EXTENTS} extents")
    items = []
    for _ in range(count):
        item, p = _u(data, p, id_size, "big"), p + id_size
        method = _u(data, p, 2, "big") & 15 if version in (1, 2) else 0
        p += (2 if version in (1, 2) else 0) + 2                 # construction method, data reference
        base, p = _u(data, p, base_size, "big"), p + base_size
        n, p = _u(data, p, 2, "big"), p + 2
        extents_left -= n
        if extents_left < 0:
            raise AvifUnreadable(f"AVIF items of over {MAX_AVIF_EXTENTS} extents")
        extents = []
        for _ in range(n):
            p += index_size
            extents.append((base + _u(data, p, offset_size, "big"), _u(data, p + offset_size, length_size, "big")))
            p += offset_size + length_size
        if p > stop:
            raise AvifUnreadable("an AVIF item location list running past its box")
        items.append((item, method, extents))
    return items


def _item_data(data: bytes, idat, method: int, extents: list) -> tuple[bytes, int, int]:
    """(buffer, start, end) of an item's data as libavif reads it: its
    extents joined (a grid's descriptor split over two extents read as a
    decoy in the first; an eleventh probe), in the file or in ``idat``."""
    if method == 1 and idat is None or method not in (0, 1):
        raise AvifUnreadable("an AVIF item stored where it cannot be read")
    base, limit = (0, len(data)) if method == 0 else idat
    parts = []
    for offset, length in extents:
        begin = base + offset
        stop = limit if length == 0 else begin + length
        if begin > limit or stop > limit:
            raise AvifUnreadable("an AVIF item extent past its data")
        parts.append((begin, stop))
    if len(parts) == 1:
        return data, parts[0][0], parts[0][1]
    joined = b"".join(data[b:e] for b, e in parts)
    return joined, 0, len(joined)


def _derived_output(kind: bytes, buf: bytes, at: int, end: int) -> tuple[int, int]:
    """The output size of a derived item's descriptor (ISO/IEC 23008-12
    6.6.2.3 grid: version, flags, rows and columns less one; 6.6.2.2
    overlay: version, flags, a fill colour of 4 x 16 bits), then width and
    height of 16 or 32 bits by flags bit 0."""
    wide = 4 if at + 1 < end and buf[at + 1] & 1 else 2
    at += 4 if kind == b"grid" else 10
    if at + 2 * wide > end:
        raise AvifUnreadable("an AVIF derived image whose descriptor is cut short")
    return _u(buf, at, wide, "big"), _u(buf, at + wide, wide, "big")


def avif_canvas(data: bytes, max_boxes: int) -> tuple[tuple[int, int], int]:
    """((width, height) of the largest picture, coded bytes) of an AVIF.
    Coded bytes are the ``mdat`` and ``idat`` payloads, as far as the file
    holds them. Boxes are walked into the containers that hold the sizes,
    at most ``max_boxes`` of them (preflight's MAX_HEADER_SEGMENTS);
    AvifRefused beyond them or beyond MAX_AVIF_SAMPLES frames,
    AvifUnreadable when the file cannot be read as libavif would."""
    canvas, coded, boxes = (0, 0), 0, 0
    items, idat, types = [], None, {}         # iloc entries, the idat payload, item ID -> type (infe)
    first_frames = []                         # (offset, size) of each track's first frame
    obus = [MAX_AV1_OBUS]                     # OBUs left to read in the whole file
    spans = [(0, len(data))]
    while spans:
        at, end = spans.pop()
        table = {}                            # a track's sample table (stbl): first frame's size and offset
        while at + 8 <= end:
            size, kind, head = _u(data, at, 4, "big"), data[at + 4:at + 8], 8
            if size == 1:                               # a 64-bit length follows
                size, head = (_u(data, at + 8, 8, "big"), 16) if at + 16 <= end else (0, 16)
            elif size == 0:                             # the last box: to the end
                size = end - at
            if size < head:
                break                                   # malformed: libavif says so
            size = min(size, end - at)                  # a box cut short counts what it holds
            boxes += 1
            if boxes > max_boxes:
                raise AvifRefused(f"AVIF file with over {max_boxes} boxes")
            body, stop = at + head, at + size
            if kind in _ISO_CONTAINERS:
                spans.append((body + _ISO_CONTAINERS[kind], stop))
            elif kind == b"iinf" and stop - body >= 4:     # flags, an entry count of 16 or 32 bits, infe boxes
                spans.append((body + (6 if data[body] == 0 else 8), stop))
            elif kind == b"infe" and stop - body >= 8 and data[body] >= 2:   # item ID, protection index, type
                wide = 4 if data[body] >= 3 else 2
                types[_u(data, body + 4, wide, "big")] = data[body + 6 + wide:body + 10 + wide]
            elif kind == b"ispe" and stop - body >= 12:      # flags, width, height
                canvas = _larger(canvas, (_u(data, body + 4, 4, "big"), _u(data, body + 8, 4, "big")))
            elif kind == b"av01" and stop - body >= 28:      # a visual sample entry: width, height at 24
                canvas = _larger(canvas, (_u(data, body + 24, 2, "big"), _u(data, body + 26, 2, "big")))
                spans.append((body + 78, stop))                # its boxes (av1C) after its 78 bytes of fields
            elif kind == b"tkhd" and stop - body >= 84:      # ends with width, height (16.16 fixed point)
                canvas = _larger(canvas, (_u(data, stop - 8, 4, "big") >> 16, _u(data, stop - 4, 4, "big") >> 16))
            elif kind in (b"mdat", b"idat"):
                coded += stop - body
                if kind == b"idat":
                    idat = (body, stop)
            elif kind == b"iloc":
                items += _iloc_items(data, body, stop, MAX_AVIF_EXTENTS - sum(len(x[2]) for x in items))
            elif kind == b"stsz" and stop - body >= 12:      # flags, a size for all (or 0), the count, sizes
                samples = _u(data, body + 8, 4, "big")
                if samples > MAX_AVIF_SAMPLES:
                    raise AvifRefused(f"AVIF sequence of {samples} frames (at most {MAX_AVIF_SAMPLES})")
                table["size"] = _u(data, body + 4, 4, "big") or _u(data, body + 12, 4, "big")
            elif kind in (b"stco", b"co64") and stop - body >= 8 and _u(data, body + 4, 4, "big"):
                table["offset"] = _u(data, body + 8, 4 if kind == b"stco" else 8, "big")
            elif kind == b"av1C" and stop - body > 4:        # config OBUs: optional, and not what is decoded
                try:
                    canvas = _larger(canvas, _av1_frame_limit(data, body + 4, stop, obus))
                except AvifUnreadable:
                    pass
            at = stop
        if len(table) == 2:
            first_frames.append((table["offset"], table["size"]))
    for item, method, extents in items:
        if types.get(item) == b"Exif":
            # Pillow parses the EXIF item while opening, every value of every tag of its
            # first directory (an Orientation of a million fractions: 2.1 s and 236 MB).
            base, limit = (0, len(data)) if method == 0 or idat is None else idat
            size = sum((limit - base - offset if length == 0 else length) for offset, length in extents)
            if size > MAX_AVIF_EXIF_BYTES:
                raise AvifRefused(f"AVIF whose EXIF is {size} bytes, above the limit of {MAX_AVIF_EXIF_BYTES} "
                                  "(it is parsed whole while opening)")
    read = set()                              # items of one location (a grid's shared tile) are read once
    for item, method, extents in items:
        kind = types.get(item)
        if kind in (b"av01", b"grid", b"iovl") and extents and (kind, method, tuple(extents)) not in read:
            read.add((kind, method, tuple(extents)))
            buf, begin, end = _item_data(data, idat, method, extents)
            canvas = _larger(canvas, _av1_frame_limit(buf, begin, end, obus) if kind == b"av01"
                             else _derived_output(kind, buf, begin, end))
    for offset, size in first_frames[:max_boxes]:      # a track's first frame each: at most a box each
        if offset + size > len(data):
            raise AvifUnreadable("an AVIF sequence whose first frame runs past the file")
        canvas = _larger(canvas, _av1_frame_limit(data, offset, offset + size, obus))
    return canvas, coded
