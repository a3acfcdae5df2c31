"""wire.count_fields: a request's fields counted on its wire bytes, before
the parse that would allocate ~100 bytes for each (the interceptor refuses
requests over wire.MAX_FIELDS unparsed)."""
import time

from imagesieve.v1 import analysis_pb2, collections_pb2, common_pb2, consensus_pb2, embedding_pb2
from imagesieve_server.wire import MAX_FIELDS, count_fields


def parsed_fields(message) -> int:
    """The same count, taken from the parsed message (the reference)."""
    n = 0
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        for v in values:
            n += 1
            if field.message_type is not None:
                n += parsed_fields(v)
    return n


def test_counts_agree_with_the_parsed_message():
    cases = [
        embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"k{i}", data=b"\xff" * (i * 37), label="cat")
                                           for i in range(300)], top_k_classes=5),
        collections_pb2.RemoveImagesRequest(collection="c", keys=[f"key{i}" for i in range(1000)]),
        consensus_pb2.AddAnnotationsRequest(collection="c", annotations=[
            consensus_pb2.Annotation(key=f"img{i}", annotator=f"a{i % 7}", label=str(i % 3)) for i in range(2000)]),
        embedding_pb2.EmbedRequest(),
    ]
    for message in cases:
        raw = message.SerializeToString()
        assert count_fields(message.DESCRIPTOR, raw) == parsed_fields(message), type(message).__name__


def test_empty_entries_and_packed_values_count_one_each():
    # Two bytes an entry on the wire, a parsed Image each: the attack's shape.
    assert count_fields(embedding_pb2.EmbedRequest.DESCRIPTOR, b"\x0a\x00" * 1000) == 1000
    # Packed repeated scalars: each value is a parsed element, however many fit one field.
    message = analysis_pb2.SampleSizeRequest(at_sizes=[1, 300, 70000, 2 ** 40] * 100, fractions=[0.1, 0.2] * 25)
    assert count_fields(message.DESCRIPTOR, message.SerializeToString()) == parsed_fields(message) == 450


def test_counting_stops_past_the_limit_and_malformed_bytes_end_it():
    raw = b"\x0a\x00" * 5_000_000               # 10 MB, 5 million parsed Images
    t = time.perf_counter()
    n = count_fields(embedding_pb2.EmbedRequest.DESCRIPTOR, raw)
    assert MAX_FIELDS < n <= MAX_FIELDS + 1 and time.perf_counter() - t < 5
    # Malformed bytes end the count where they start (the parser then says what is wrong).
    assert count_fields(embedding_pb2.EmbedRequest.DESCRIPTOR, b"\x0a\x00\x0a\xff\xff") == 2   # a length past the end
    assert count_fields(embedding_pb2.EmbedRequest.DESCRIPTOR, b"\x0a\x00" + b"\xff" * 12) == 1  # a tag that never ends
    # Unknown fields count too: stepping through millions of them took seconds
    # (a review: 8 MiB of them, 2 s to count, and never refused).
    assert count_fields(embedding_pb2.EmbedRequest.DESCRIPTOR, b"\xfa\x3e\x00" * 100) == 100
    t = time.perf_counter()
    assert count_fields(embedding_pb2.EmbedRequest.DESCRIPTOR, b"\x78\x00" * (4 << 20)) == MAX_FIELDS + 1
    assert time.perf_counter() - t < 5
