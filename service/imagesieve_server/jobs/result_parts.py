"""A job's result as one or more messages, each well within any send limit.

A result lists every image (ScoreLabels' scores, Consensus' items) or every
pair (FindDuplicates): a million images make a 60-70 MB answer, more than the
server's own message limit (``--max-message-mb``, 64 by default), and it
would fail after all the work. So a result over the limit is sent as parts:
the first holds every singular field (``parts``: how many) and the first
items of each list, the next ones only further items. Merging the parts in
order (protobuf's ``MergeFrom``, which appends lists) gives the whole result
back; the Python client does, and checks it got ``parts`` of them.
"""
from __future__ import annotations

import asyncio

from google.protobuf.descriptor import FieldDescriptor

#: The server's send limit (``--max-message-mb``), set once at start-up.
SEND_LIMIT_BYTES = 64 << 20


def set_send_limit(limit_bytes: int) -> None:
    """Results up to this size go whole; larger ones in parts below it."""
    global SEND_LIMIT_BYTES
    if limit_bytes < 1 << 16:
        raise ValueError(f"a send limit of {limit_bytes} bytes is too small to carry a result")
    SEND_LIMIT_BYTES = int(limit_bytes)


def _splittable(field: FieldDescriptor) -> bool:
    """A repeated field that is not a map (maps stay whole in the first part)."""
    repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == FieldDescriptor.LABEL_REPEATED
    if not repeated:        # (protobuf 7 dropped ``label``; older ones lack ``is_repeated``)
        return False
    return not (field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


def _item_bytes(field: FieldDescriptor, item) -> int:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return item.ByteSize() + 6          # tag and length prefix
    if isinstance(item, (str, bytes)):
        return len(item.encode() if isinstance(item, str) else item) + 6
    return 11                               # a varint or fixed number at most


def _part_bytes(limit: int) -> int:
    """What one part may hold under a send limit: room for the event around it."""
    return limit - min(64 << 10, limit // 8)


def _runs(head_bytes: int, item_bytes: list[list[int]], limit: int) -> list[list[list[int]]]:
    """Part boundaries: for each part, its runs [list index, start, stop) of
    items, filled in order until the next item would pass ``limit`` (an item
    larger than that goes alone). ``item_bytes``: per list, each item's size."""
    parts, size = [[]], head_bytes
    for f, lens in enumerate(item_bytes):
        for i, n in enumerate(lens):
            if size + n > limit and size > 0:
                parts.append([])
                size = 0
            run = parts[-1]
            if run and run[-1][0] == f:
                run[-1][2] = i + 1
            else:
                run.append([f, i, i + 1])
            size += n
    return parts


def result_parts(result, limit_bytes: int | None = None) -> list:
    """``result`` (a protobuf message with an int32 ``parts`` field) as a
    list of messages of its type: itself when it fits ``limit_bytes``
    (default: the server's send limit); else parts that each fit under it
    with room for the event around them (one item larger than that still
    goes alone and fails), the first with ``parts`` = how many. Clients
    that took the first result event as the whole answer were sent nothing
    larger than the limit before (it failed), so they see no change below it."""
    part_bytes = _part_bytes(limit_bytes or SEND_LIMIT_BYTES)
    if result.ByteSize() <= part_bytes:
        return [result]
    fields = [f for f in result.DESCRIPTOR.fields if _splittable(f)]
    head = type(result)()
    head.CopyFrom(result)
    for f in fields:
        head.ClearField(f.name)
    items = [getattr(result, f.name) for f in fields]
    runs = _runs(head.ByteSize(), [[_item_bytes(f, x) for x in xs] for f, xs in zip(fields, items)], part_bytes)
    parts = [head] + [type(result)() for _ in runs[1:]]
    for part, part_runs in zip(parts, runs):
        for f, start, stop in part_runs:
            target = getattr(part, fields[f].name)
            if fields[f].type == FieldDescriptor.TYPE_MESSAGE:
                for item in items[f][start:stop]:
                    target.add().CopyFrom(item)
            else:
                target.extend(items[f][start:stop])
    parts[0].parts = len(parts)
    return parts


#: Parts of answers built one at a time (``lazy_parts``): what one unread answer
#: pins, and under gRPC's default receive limit (4 MiB) with the event around it.
LAZY_PART_BYTES = 4 << 20


async def lazy_parts(head, lists, part_bytes: int = LAZY_PART_BYTES):
    """Yield ``head``'s type of message as :func:`result_parts` would split
    it, with the items of ``lists`` built only for the part being sent, on a
    thread. ``head``: the result's singular fields (and short lists);
    ``lists``: [(repeated field name, item count, make(i) -> its item: a
    message or a value)].
    A FindDuplicates answer of 500,000 pairs with 1,000-byte keys was built
    whole on the event loop (9 s during which no other call was served),
    copied into parts, and each unread answer pinned ~2.3 GB (a probe); now
    one part of at most ``part_bytes`` (and the send limit) at a time."""
    fields = [head.DESCRIPTOR.fields_by_name[name] for name, _, _ in lists]

    def runs():
        # Each item is made once to be sized and again for its part: a list of
        # 500,000 pairs is never held whole (about 1.5 s of a thread there).
        sizes = [[_item_bytes(f, make(i)) for i in range(n)] for f, (_, n, make) in zip(fields, lists)]
        return _runs(head.ByteSize(), sizes, _part_bytes(min(part_bytes, SEND_LIMIT_BYTES)))

    parts = await asyncio.to_thread(runs)

    def build(k: int):
        message = type(head)()
        if k == 0:
            message.CopyFrom(head)
            if len(parts) > 1:
                message.parts = len(parts)
        for f, start, stop in parts[k]:
            name, _, make = lists[f]
            getattr(message, name).extend([make(i) for i in range(start, stop)])   # a message's or a value's
        return message

    for k in range(len(parts)):
        yield await asyncio.to_thread(build, k)
