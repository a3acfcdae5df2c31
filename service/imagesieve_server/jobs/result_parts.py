"""A job's result as one or more messages, each well within any send limit.

A result lists every image (ScoreLabels' scores, Consensus' items) or every
pair (FindDuplicates): a million images make a 60-70 MB answer, more than the
server's own message limit (``--max-message-mb``, 64 by default), and it
would fail after all the work. So a result is sent as parts: the first holds
every singular field and the first items of each list, the next ones only
further items. Merging the parts in order (protobuf's ``MergeFrom``, which
appends lists) gives the whole result back; the Python client does.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

#: Bytes of list items a part carries (the smallest --max-message-mb is 1 MiB).
PART_BYTES = 768 << 10


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


def result_parts(result, part_bytes: int = PART_BYTES) -> list:
    """``result`` (a protobuf message) as a list of messages of its type,
    each about ``part_bytes`` or less (a single item larger than that gets a
    part of its own); one message when it fits already."""
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
    return parts
