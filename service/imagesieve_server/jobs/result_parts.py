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


def result_parts(result, limit_bytes: int | None = None) -> list:
    """``result`` (a protobuf message with an int32 ``parts`` field) as a
    list of messages of its type: itself when it fits ``limit_bytes``
    (default: the server's send limit); else parts that each fit under it
    with room for the event around them (one item larger than that still
    goes alone and fails), the first with ``parts`` = how many. Clients
    that took the first result event as the whole answer were sent nothing
    larger than the limit before (it failed), so they see no change below it."""
    limit = limit_bytes or SEND_LIMIT_BYTES
    part_bytes = limit - min(64 << 10, limit // 8)
    if result.ByteSize() <= part_bytes:
        return [result]
    fields = [f for f in result.DESCRIPTOR.fields if _splittable(f)]
    head = type(result)()
    head.CopyFrom(result)
    for f in fields:
        head.ClearField(f.name)
    parts, size = [head], head.ByteSize()
    for f in fields:
        for item in getattr(result, f.name):
            n = _item_bytes(f, item)
            if size + n > part_bytes and size > 0:
                parts.append(type(result)())
                size = 0
            target = getattr(parts[-1], f.name)
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                target.add().CopyFrom(item)
            else:
                target.append(item)
            size += n
    parts[0].parts = len(parts)
    return parts
