"""A hostile or careless client against a real server (issue 14): files that
block, files that amplify memory, malformed paths, oversize requests, bad
configuration. Each test reproduces an attack that stalled, exhausted or
confused the server before."""
from __future__ import annotations

import asyncio
import collections
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image

from conftest import encode, photo_image
from h2_raw import zero_window_calls
from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve.v1 import (collections_pb2, common_pb2, duplicates_pb2, duplicates_pb2_grpc, embedding_pb2,
                           embedding_pb2_grpc)

CODE = {c.value[0]: c for c in grpc.StatusCode}


def big_message_channel(address: str) -> grpc.Channel:
    """A connection of its own that may send messages up to 64 MB."""
    return grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20),
                                                   ("grpc.use_local_subchannel_pool", 1)])


def count_outcome(counter: collections.Counter, call, *args, **kwargs) -> None:
    """``call(*args, **kwargs)``, counted in ``counter`` as "OK" or by its status code's name."""
    try:
        call(*args, **kwargs)
        counter["OK"] += 1
    except grpc.RpcError as e:
        counter[e.code().name] += 1


def embed_stub(address: str):
    channel = grpc.insecure_channel(address)
    return channel, embedding_pb2_grpc.EmbeddingServiceStub(channel)


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident memory (VmHWM), MiB."""
    return _status_mb(pid, "VmHWM")


def _rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS), MiB."""
    return _status_mb(pid, "VmRSS")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("abuse-root")


@pytest.fixture(scope="module")
def abuse_server(manifest_path, root):
    with LocalServer(["--allow-root", str(root), "--max-inflight-mb", "96", "--decode-workers", "2",
                      "--max-images-per-request", "256"], model=str(manifest_path)) as srv:
        yield srv


def test_fifo_in_an_allowed_root_fails_alone_and_stalls_nothing(abuse_server, root, photos):
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    channel, stub = embed_stub(abuse_server.address)
    with channel, ThreadPoolExecutor(4) as pool:
        # More FIFO requests than the server has decode threads: before, two
        # of them blocked every image RPC until its deadline.
        named = [pool.submit(stub.Embed, embedding_pb2.EmbedRequest(
            images=[common_pb2.Image(key=f"fifo{i}", server_path=str(fifo))]), timeout=30) for i in range(3)]
        t = time.perf_counter()
        inline = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="ok", data=photos[0][0])]),
                            timeout=10)
        assert time.perf_counter() - t < 5
        assert not inline.embeddings[0].HasField("error") and len(inline.embeddings[0].vector) > 0
        for f in named:
            e = f.result().embeddings[0]
            assert CODE[e.error.code] == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a regular file" in e.error.message
    # A directory and a device are refused the same way.
    channel, stub = embed_stub(abuse_server.address)
    with channel:
        r = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="dir", server_path=str(root))]),
                       timeout=10)
        assert CODE[r.embeddings[0].error.code] == grpc.StatusCode.INVALID_ARGUMENT


def _large_pngs(root, count: int) -> list:
    """``count`` different 5.6 MB PNGs of noise in ``root``."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        path = root / f"big{i}.png"
        if not path.exists():
            noise = rng.integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
            path.write_bytes(encode(Image.fromarray(noise), "PNG", compress_level=0))
        out.append(path)
    assert out[0].stat().st_size > 5 << 20
    return out


def test_large_files_named_many_times_stay_within_the_budget(abuse_server, root, photos):
    """Before: a 9 KB request naming one large file 256 times raised the
    server's memory by gigabytes (every copy read before any limit). Here
    16 different large files, each named 16 times, by 4 requests at once."""
    big = _large_pngs(root, 16)
    before = peak_rss_mb(abuse_server.proc.pid)
    channel, stub = embed_stub(abuse_server.address)
    with channel, ThreadPoolExecutor(4) as pool:
        request = embedding_pb2.EmbedRequest(
            images=[common_pb2.Image(key=f"b{i}", server_path=str(big[i % 16])) for i in range(256)])
        assert request.ByteSize() < 20_000
        answers = list(pool.map(lambda _: stub.Embed(request, timeout=120), range(4)))
    codes = [CODE[e.error.code] if e.HasField("error") else grpc.StatusCode.OK
             for a in answers for e in a.embeddings]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) >= 4          # the budget admits work, it does not stop it
    refused = [e.error.message for a in answers for e in a.embeddings if e.HasField("error")]
    assert all("budget" in m and "retry" in m for m in refused)
    growth = peak_rss_mb(abuse_server.proc.pid) - before
    # 1,024 reads of a 5.6 MB file were 5.7 GB; the budget is 96 MiB (plus
    # decoded rasters and allocator slack).
    assert growth < 700, f"peak memory grew {growth:.0f} MiB"
    with embed_stub(abuse_server.address)[0] as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        ok = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="x", server_path=str(big[0]))]),
                        timeout=30)
        assert not ok.embeddings[0].HasField("error")      # nothing stays reserved


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the server's CPU time from /proc")
def test_one_file_named_many_times_is_read_and_decoded_once(abuse_server, root):
    """Items naming one file (under any spelling of its path) share one read
    and decode: the request costs the server about what one item does, not
    128 times that, and every item gets the same embedding."""
    warm, single, big = _large_pngs(root, 3)
    spellings = [str(big), str(big.parent / "." / big.name), str(big.parent / ".." / big.parent.name / big.name)]
    with embed_stub(abuse_server.address)[0] as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        one = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="one", server_path=str(single))])
        many = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"m{i}", server_path=spellings[i % 3])
                                                  for i in range(128)])
        stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="w", server_path=str(warm))]),
                   timeout=60)                             # first-call costs out of the way
        cpu0 = _cpu_s(abuse_server.proc.pid)
        stub.Embed(one, timeout=60)
        cpu1 = _cpu_s(abuse_server.proc.pid)
        answer = stub.Embed(many, timeout=120)
        cpu2 = _cpu_s(abuse_server.proc.pid)
        again = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="a", server_path=str(big))]),
                           timeout=60)
    assert not any(e.HasField("error") for e in answer.embeddings)
    vectors = np.array([e.vector for e in answer.embeddings])
    assert np.allclose(vectors, vectors[0]) and np.allclose(vectors[0], again.embeddings[0].vector, atol=1e-5)
    one_cost, many_cost = cpu1 - cpu0, cpu2 - cpu1
    assert many_cost < max(4 * one_cost, 0.5), (one_cost, many_cost)


def test_malformed_paths_fail_their_item_only(abuse_server, root, photos):
    good = root / "good.jpg"
    good.write_bytes(photos[1][0])
    channel, stub = embed_stub(abuse_server.address)
    with channel:
        r = stub.Embed(embedding_pb2.EmbedRequest(images=[
            common_pb2.Image(key="nul", server_path=str(root) + "/a\x00b.jpg"),
            common_pb2.Image(key="good", server_path=str(good)),
            common_pb2.Image(key="outside", server_path="/etc/hostname"),
            common_pb2.Image(key="missing", server_path=str(root / "nope.jpg")),
            common_pb2.Image(key="long", server_path=str(root / ("a" * 200_000 + ".png"))),
            common_pb2.Image(key="long-outside", server_path="/" + "b" * 200_000)]), timeout=30)
    codes = [CODE[e.error.code] if e.HasField("error") else grpc.StatusCode.OK for e in r.embeddings]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED,
                     grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT]
    assert "PATH_MAX" in r.embeddings[4].error.message
    # A 200 KB path is not echoed back whole: 40 of them made an 8 MB answer.
    assert max(len(e.error.message) for e in r.embeddings) < 400


def test_a_file_named_as_a_folder_a_socket_and_an_overlong_name_fail_as_bad_paths(abuse_server, root, photos,
                                                                                 tmp_path):
    """A twelfth probe: a file's name with a trailing slash was embedded (the
    OS refuses it: ENOTDIR), a UNIX socket answered NOT_FOUND "No such device
    or address", a name over 255 bytes NOT_FOUND. Each is the client's bad
    path: INVALID_ARGUMENT saying what is wrong, and the good item is served."""
    import socket as sockets
    good = root / "good2.jpg"
    good.write_bytes(photos[1][0])
    sock_path = root / "s.sock"
    server = sockets.socket(sockets.AF_UNIX)
    server.bind(str(sock_path))
    try:
        channel, stub = embed_stub(abuse_server.address)
        with channel:
            r = stub.Embed(embedding_pb2.EmbedRequest(images=[
                common_pb2.Image(key="slash", server_path=str(good) + "/"),
                common_pb2.Image(key="socket", server_path=str(sock_path)),
                common_pb2.Image(key="long-name", server_path=str(root / ("n" * 300 + ".jpg"))),
                common_pb2.Image(key="good", server_path=str(good))]), timeout=30)
    finally:
        server.close()
    codes = [CODE[e.error.code] if e.HasField("error") else grpc.StatusCode.OK for e in r.embeddings]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 3 + [grpc.StatusCode.OK], [e.error for e in r.embeddings]
    assert "names a folder" in r.embeddings[0].error.message
    assert "not a regular file" in r.embeddings[1].error.message
    assert "longer than the file system allows" in r.embeddings[2].error.message


def test_paths_of_millions_of_parts_do_not_hold_the_file_threads(abuse_server, root, photos):
    """Path.resolve walks a path part by part in Python (~7.5 us a part):
    a 48 MB Embed of 8 paths of 3,000,000 parts held every file thread for
    93 s, and every server_path item of every client failed meanwhile.
    Paths longer than PATH_MAX are refused before resolving."""
    good = root / "good-after-long.jpg"
    good.write_bytes(photos[3][0])
    deep = str(root / "nonexistent") + "/x" * 1_000_000
    channel, stub = embed_stub(abuse_server.address)
    with channel:
        r = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"deep{i}", server_path=deep)
                                                          for i in range(8)]), timeout=10)
        assert all(CODE[e.error.code] == grpc.StatusCode.INVALID_ARGUMENT and "PATH_MAX" in e.error.message
                   for e in r.embeddings)
        ok = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="good", server_path=str(good))]),
                        timeout=10)
    assert not ok.embeddings[0].HasField("error")


def test_a_symlink_loop_fails_its_item_alone(abuse_server, root, photos):
    """Before: Path.resolve raised RuntimeError on a loop and the whole call
    (every item of it) failed INTERNAL, inside a root or outside."""
    good = root / "good-loop.jpg"
    good.write_bytes(photos[2][0])
    os.symlink(root / "loop-b", root / "loop-a")
    os.symlink(root / "loop-a", root / "loop-b")
    channel, stub = embed_stub(abuse_server.address)
    with channel:
        r = stub.Embed(embedding_pb2.EmbedRequest(images=[
            common_pb2.Image(key="loop", server_path=str(root / "loop-a")),
            common_pb2.Image(key="good", server_path=str(good)),
            common_pb2.Image(key="loop-below", server_path=str(root / "loop-a" / "x.jpg"))]), timeout=30)
    codes = [CODE[e.error.code] if e.HasField("error") else grpc.StatusCode.OK for e in r.embeddings]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT]
    assert "symlink loop" in r.embeddings[0].error.message


def _outside_and_inside(tmp_path, photos):
    """A root holding ``d/img.jpg`` (a real photo) and, outside it, a
    folder whose ``img.jpg`` is another picture of a telltale size."""
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "img.jpg").write_bytes(photos[0][0])
    (outside / "img.jpg").write_bytes(encode(photo_image(photos[1][0]).resize((123, 77)), "JPEG"))
    return root, outside


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path, photos, monkeypatch):
    """The race, placed where an attacker who can write inside a root wins
    it: the path is checked, then its folder becomes a link out of the root
    before the open. Before, the file outside was opened and embedded."""
    from imagesieve_server.paths import PathPolicy
    root, outside = _outside_and_inside(tmp_path, photos)
    policy = PathPolicy([root])
    checked = policy.resolve

    def check_then_swap(path):
        real = checked(path)
        os.rename(root / "d", root / "d-moved")
        os.symlink(outside, root / "d")
        return real

    monkeypatch.setattr(policy, "resolve", check_then_swap)
    with pytest.raises(PermissionError, match="outside the server's allowed roots"):
        policy.open_regular(str(root / "d" / "img.jpg"))
    monkeypatch.undo()
    fd, st = policy.open_regular(str(root / "d-moved" / "img.jpg"))      # inside: still served
    os.close(fd)
    assert st.st_size == len(photos[0][0])


def test_racing_symlink_swaps_never_reach_a_file_outside_the_roots(manifest_path, tmp_path, photos):
    """The same race run for real against a server: a thread swaps the
    folder and a link out of the root (renameat2 RENAME_EXCHANGE) while
    calls name the file inside. The helper that found it saw 8 of 1,280
    answers embed the outside picture."""
    import ctypes
    root, outside = _outside_and_inside(tmp_path, photos)
    os.symlink(outside, root / "link")
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()

    def swap():
        d, link = str(root / "d").encode(), str(root / "link").encode()
        while not stop.is_set():
            libc.renameat2(-100, d, -100, link, 2)      # AT_FDCWD, RENAME_EXCHANGE

    with LocalServer(["--allow-root", str(root)], model=str(manifest_path)) as srv:
        channel, stub = embed_stub(srv.address)
        swapper = threading.Thread(target=swap, daemon=True)
        swapper.start()
        sizes = collections.Counter()
        try:
            with channel:
                for _ in range(25):
                    r = stub.Embed(embedding_pb2.EmbedRequest(images=[
                        common_pb2.Image(key=str(i), server_path=str(root / "d" / "img.jpg")) for i in range(64)]),
                        timeout=60)
                    sizes.update((e.width, e.height) if not e.HasField("error") else CODE[e.error.code]
                                 for e in r.embeddings)
        finally:
            stop.set()
            swapper.join()
    assert (123, 77) not in sizes, sizes
    assert sum(n for k, n in sizes.items() if isinstance(k, tuple)) > 0      # the inside file was served


def test_calls_whose_deadline_passes_at_once_are_cancelled_not_faults(manifest_path, photos):
    """Deadlines of a few ms: a call admitted after its client left could not
    take its initial metadata, and the server logged an ERROR traceback and
    an UNKNOWN call for it (~0.4% of 6,000 such calls): any client could
    flood the error log. Now they are CANCELLED calls like the others."""
    import grpc.aio

    async def flood(address):
        codes = collections.Counter()
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        images = [common_pb2.Image(key=str(j), data=photos[j % len(photos)][0]) for j in range(8)]
        gate = asyncio.Semaphore(100)

        async def one(i):
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channels[i % 4])
            timeout = (0.001, 0.002, 0.005, 0.01, 0.02)[i % 5]
            async with gate:
                try:
                    if i % 2:
                        await stub.Embed(embedding_pb2.EmbedRequest(images=images), timeout=timeout)
                    else:
                        async for _ in stub.EmbedStream(iter([embedding_pb2.EmbedRequest(images=images)] * 2),
                                                        timeout=timeout):
                            pass
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as e:
                    codes[e.code().name] += 1
        await asyncio.gather(*(one(i) for i in range(3000)))
        for c in channels:
            await c.close()
        return codes

    with LocalServer(["--max-concurrent-rpcs", "512", "--max-calls-per-client", "512"],
                     model=str(manifest_path)) as srv:
        codes = asyncio.run(flood(srv.address))
        channel, stub = embed_stub(srv.address)
        with channel:                       # nothing leaked: a full request is served after
            r = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])]),
                           timeout=30)
            assert not r.embeddings[0].HasField("error")
        time.sleep(0.5)
        log = "\n".join(srv.log)
    assert codes["DEADLINE_EXCEEDED"] > 1000, codes
    assert "ExecuteBatchError" not in log and "Traceback" not in log
    assert not [line for line in srv.log if " UNKNOWN " in line], [line for line in srv.log if " UNKNOWN " in line][:3]


def test_refusals_that_come_after_the_deadline_are_no_faults_of_the_server(manifest_path, photos):
    """ScoreLabels on a collection with an unlabelled image is refused
    INVALID_ARGUMENT once the job has read the collection. With a deadline
    of a few ms the call may have ended by then: the refusal could not be
    sent, and the server logged it as a fault of its own (an ERROR with a
    traceback, then a second one from gRPC, "Abort already called!", for the
    INTERNAL answer it tried next): 4-22 such calls in 300 (a probe), from a client
    with a read-only token. Now one INFO line."""
    import grpc.aio

    from imagesieve.v1 import analysis_pb2, analysis_pb2_grpc

    async def flood(address):
        codes = collections.Counter()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = analysis_pb2_grpc.AnalysisServiceStub(channel)
            gate = asyncio.Semaphore(2)         # within --max-jobs: refused by the job, not by the limit

            async def one(i):
                # Deadlines from 0.2 to 17 ms: some end before the refusal, some after it, some
                # during it, on a fast or a loaded machine (0.5-5 ms gave 43 of 600 expired once).
                timeout = 0.0002 * 1.5 ** (i % 12)
                async with gate:
                    try:
                        async for _ in stub.ScoreLabels(analysis_pb2.ScoreLabelsRequest(
                                source=analysis_pb2.LabelledSource(collection="c")), timeout=timeout):
                            pass
                        codes["OK"] += 1
                    except grpc.aio.AioRpcError as e:
                        codes[e.code().name] += 1
            await asyncio.gather(*(one(i) for i in range(600)))
        return codes

    with LocalServer(["--max-jobs", "4"], model=str(manifest_path)) as srv:
        with Client(srv.address) as c:
            c.create_collection("c")
            assert list(c.add("c", [photos[0][0]], keys=["unlabelled"]))[0].added
        codes = asyncio.run(flood(srv.address))
        time.sleep(0.5)
        log = list(srv.log)
    assert codes["INVALID_ARGUMENT"] > 100 and codes["DEADLINE_EXCEEDED"] > 50, codes
    errors = [line for line in log if " ERROR " in line or "Traceback" in line]
    assert not errors, errors[:3]
    assert any("before its status could be sent" in line for line in log)     # the race was run (33-47 here)


FLOOD = """
import asyncio, sys, grpc
from imagesieve.v1 import embedding_pb2, embedding_pb2_grpc
async def main():
    async with grpc.aio.insecure_channel(sys.argv[1]) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        async def one():
            try:
                await stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=60)
            except grpc.aio.AioRpcError:
                pass
        print("flooding", flush=True)
        await asyncio.gather(*(one() for _ in range(int(sys.argv[2]))))
asyncio.run(main())
"""


def test_a_flood_of_calls_on_one_channel_does_not_cancel_other_clients(manifest_path):
    """8,000 calls opened at once on one channel: gRPC queued the calls it had
    not yet handed to the server's code and, past 3,000, cancelled new ones,
    other clients' included (CANCELLED, never seen by the call limiter).
    HTTP/2's stream limit per connection (twice --max-concurrent-rpcs) now
    keeps the flood waiting on its own side."""
    with LocalServer([], model=str(manifest_path)) as srv:
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, srv.address, "8000"], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert flood.stdout.readline().strip() == "flooding"
            channel, stub = embed_stub(srv.address)
            codes = collections.Counter()
            with channel:
                while flood.poll() is None:
                    try:
                        stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=10)
                        codes["OK"] += 1
                    except grpc.RpcError as e:
                        codes[e.code().name] += 1
                    time.sleep(0.05)
        finally:
            flood.kill()
            flood.wait()
    assert codes["OK"] >= 5 and set(codes) == {"OK"}, codes


def test_compressed_requests_are_refused_before_they_inflate(abuse_server, photos):
    """A 60 MB request of zeros (an unknown field beside one image) gzips to
    ~60 KB: the server inflated each such call on its event loop, one after
    another, and stalled every other client (0.03 s -> 8.4 s for 20 calls).
    Images are compressed already, so requests are accepted uncompressed
    only: a compressed one is UNIMPLEMENTED at once, and costs nothing."""
    from google.protobuf.internal.encoder import _VarintBytes
    image = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])]).SerializeToString()
    pad = b"\0" * (60 << 20)
    inflating = image + bytes([0x9a, 0x06]) + _VarintBytes(len(pad)) + pad      # field 99, unknown
    channel = grpc.insecure_channel(abuse_server.address)
    with channel:
        embed = channel.unary_unary("/imagesieve.v1.EmbeddingService/Embed",
                                    response_deserializer=embedding_pb2.EmbedResponse.FromString)
        t = time.perf_counter()
        with pytest.raises(grpc.RpcError) as e:
            embed(inflating, timeout=30, compression=grpc.Compression.Gzip)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "gzip" in e.value.details()
        assert time.perf_counter() - t < 5
        plain = embed(image, timeout=30)            # the same image uncompressed is served
        assert not plain.embeddings[0].HasField("error") and len(plain.embeddings[0].vector) > 0


def _serve_with_descriptors(manifest_path, data_dir, limit: int, *args):
    """A server whose open-file limit (soft and hard) is ``limit``: (process, address)."""
    import re
    import resource

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    proc = subprocess.Popen([sys.executable, "-m", "imagesieve.cli", "serve", "--address", "127.0.0.1:0",
                             "--data-dir", str(data_dir), "--model", str(manifest_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=lower)
    log = []
    for line in proc.stdout:
        log.append(line)
        found = re.search(r"imagesieve: serving \S+ on (\S+)", line)
        if found:
            threading.Thread(target=lambda: [log.append(x) for x in proc.stdout], daemon=True).start()
            return proc, found.group(1), log
    proc.wait()
    raise AssertionError("".join(log))


def test_idle_connections_cannot_use_up_the_descriptors(manifest_path, tmp_path, photos):
    """20,000 idle HTTP/2 connections (no calls: no call limit applies) used
    up every file descriptor of the server: collections and files could not
    be opened (INTERNAL, and NOT_FOUND for a file that exists). Connections
    now take at most half of the descriptors."""
    import socket

    from imagesieve.v1 import collections_pb2, collections_pb2_grpc
    root = tmp_path / "root"
    root.mkdir()
    (root / "photo.jpg").write_bytes(photos[0][0])
    proc, address, log = _serve_with_descriptors(manifest_path, tmp_path / "data", 256, "--allow-root", str(root))
    held = []
    try:
        channel = grpc.insecure_channel(address)        # connected before the flood
        colls = collections_pb2_grpc.CollectionServiceStub(channel)
        embed = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        colls.ListCollections(collections_pb2.ListCollectionsRequest(), timeout=30)
        host, port = address.rsplit(":", 1)
        for _ in range(300):
            try:
                s = socket.create_connection((host, int(port)), timeout=5)
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
                held.append(s)
            except OSError:
                break
        time.sleep(1)
        for i in range(3):
            info = colls.CreateCollection(collections_pb2.CreateCollectionRequest(name=f"c{i}"), timeout=30)
            assert info.name == f"c{i}"
        r = embed.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="p", server_path=str(root / "photo.jpg"))]),
                        timeout=30)
        assert not r.embeddings[0].HasField("error"), r.embeddings[0].error.message
        channel.close()
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(30)
    assert any("128 connections (of 256 file descriptors)" in line for line in log), "".join(log[-20:])
    # 1,000 collections of 3 descriptors do not fit in the rest: the cap says so and follows.
    assert any("--max-collections 1000 lowered to 32" in line for line in log), "".join(log[-20:])


def test_collections_are_capped_and_a_create_cut_short_does_not_block_its_name(manifest_path, tmp_path):
    """Each collection holds 3 descriptors while the server runs: ~6,400
    creates used up the server's descriptors, and every create that failed
    then left a folder that loaded as a broken collection after a restart.
    Now --max-collections refuses more (RESOURCE_EXHAUSTED), and a store
    with no settings and no rows is removed at start."""
    from imagesieve.v1 import collections_pb2, collections_pb2_grpc
    data = tmp_path / "data"
    (data / "collections" / "half").mkdir(parents=True)
    (data / "collections" / "half" / "store.sqlite").write_bytes(b"")     # a create cut short
    with LocalServer(["--max-collections", "2"], model=str(manifest_path), data_dir=str(data)) as srv:
        channel = grpc.insecure_channel(srv.address)
        stub = collections_pb2_grpc.CollectionServiceStub(channel)
        listed = stub.ListCollections(collections_pb2.ListCollectionsRequest(), timeout=30)
        assert [c.name for c in listed.collections] == []
        for name in ("half", "b"):
            stub.CreateCollection(collections_pb2.CreateCollectionRequest(name=name), timeout=30)
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateCollection(collections_pb2.CreateCollectionRequest(name="c"), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-collections" in e.value.details()
        stub.DropCollection(collections_pb2.DropCollectionRequest(name="b"), timeout=30)
        stub.CreateCollection(collections_pb2.CreateCollectionRequest(name="c"), timeout=30)
        channel.close()


def test_check_duplicates_enforces_the_request_limits(manifest_path, photos):
    with LocalServer(["--max-images-per-request", "4"], model=str(manifest_path)) as srv:
        from imagesieve import Client
        with Client(srv.address) as c:
            c.create_collection("lim")
        channel = grpc.insecure_channel(srv.address)
        stub = duplicates_pb2_grpc.DuplicateServiceStub(channel)
        with channel:
            too_many = duplicates_pb2.CheckDuplicatesRequest(
                collection="lim", images=[common_pb2.Image(key=str(i), data=photos[i][0]) for i in range(5)])
            with pytest.raises(grpc.RpcError) as e:
                list(stub.CheckDuplicates(iter([too_many]), timeout=30))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 4" in e.value.details()
            long_label = duplicates_pb2.CheckDuplicatesRequest(collection="lim", add_if_unique=True, images=[
                common_pb2.Image(key="a", data=photos[0][0], label="x" * 300_000),
                common_pb2.Image(key="b", data=photos[1][0], label="dog")])
            (r,) = list(stub.CheckDuplicates(iter([long_label]), timeout=30))
            assert r.results[0].verdict == duplicates_pb2.VERDICT_ERROR
            assert CODE[r.results[0].error.code] == grpc.StatusCode.INVALID_ARGUMENT
            assert "label" in r.results[0].error.message
            assert r.results[1].added


def test_a_check_asks_for_a_bounded_number_of_neighbours(manifest_path, photos):
    """256 images x k=100, one small file named 256 times (9 KB sent), asked
    for 25,600 neighbours with their 1 KB keys: a 35 MB answer, and 48 such
    streams left unread took a server to 5.3 GB (a twenty-second probe).
    images x k is now bounded; within the bound a check is answered."""
    from imagesieve_server.servicers.duplicates import MAX_NEIGHBORS_PER_REQUEST
    with LocalServer([], model=str(manifest_path)) as srv:
        from imagesieve import Client
        with Client(srv.address) as c:
            c.create_collection("k")
            list(c.add("k", [photos[0][0]], keys=["stored"]))
        channel = grpc.insecure_channel(srv.address)
        stub = duplicates_pb2_grpc.DuplicateServiceStub(channel)
        with channel:
            n = MAX_NEIGHBORS_PER_REQUEST // 100
            ask = lambda count: duplicates_pb2.CheckDuplicatesRequest(     # noqa: E731
                collection="k", k=100, images=[common_pb2.Image(key=str(i), data=photos[0][0]) for i in range(count)])
            with pytest.raises(grpc.RpcError) as e:
                list(stub.CheckDuplicates(iter([ask(n + 1)]), timeout=30))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"at most {MAX_NEIGHBORS_PER_REQUEST} neighbours a request" in e.value.details()
            (r,) = list(stub.CheckDuplicates(iter([ask(n)]), timeout=60))
            assert len(r.results) == n
            assert {x.verdict for x in r.results} == {duplicates_pb2.VERDICT_EXACT_DUPLICATE}
        # The client keeps its messages within the bound whatever chunk_size it is given.
        from imagesieve.client import MAX_CHECK_NEIGHBORS
        assert MAX_CHECK_NEIGHBORS == MAX_NEIGHBORS_PER_REQUEST
        with Client(srv.address) as c:
            results = list(c.check("k", [photos[0][0]] * (n + 5), k=100, chunk_size=64))
        assert [x.verdict for x in results] == ["EXACT_DUPLICATE"] * (n + 5)


def _serve(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "imagesieve.cli", "serve", "--data-dir", "/tmp/imagesieve-abuse",
                           *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args,env", [
    (["--allow-root", ""], None),
    ([], {"IMAGESIEVE_ALLOW_ROOT": "/tmp" + os.pathsep}),
    (["--allow-root", "/no/such/folder"], None),
    (["--address", "bogus"], None),
    (["--verify-workers", "-3"], None),
])
def test_bad_configuration_is_refused_in_one_line(args, env):
    r = _serve(*args, env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr


def test_a_port_in_use_is_refused_not_shared(manifest_path, tmp_path):
    with LocalServer(model=str(manifest_path)) as first:
        r = _serve("--model", str(manifest_path), "--address", first.address, "--data-dir", str(tmp_path))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and "in use" in r.stderr


def test_a_data_folder_in_use_is_refused_not_shared(manifest_path, tmp_path):
    """Two servers on one data folder would each index only their own adds:
    a check on one passes an image the other holds. The second is refused
    in one line naming the first's pid; once the first is gone (kill -9
    too: the lock dies with its process), the folder serves again."""
    data = tmp_path / "data"
    with LocalServer(model=str(manifest_path), data_dir=str(data)) as first, Client(first.address) as c:
        c.create_collection("held")
        r = _serve("--model", str(manifest_path), "--address", "127.0.0.1:0", "--data-dir", str(data))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and "in use by another imagesieve server" in r.stderr, r.stderr
        assert f"pid {first.proc.pid}" in r.stderr, r.stderr
        assert c.list_collections()[0].name == "held"        # the first serves on, untouched
        first.proc.kill()
        first.proc.wait(10)
    with LocalServer(model=str(manifest_path), data_dir=str(data)) as second, Client(second.address) as c:
        assert [x.name for x in c.list_collections()] == ["held"]


def test_start_up_names_the_roots_and_warns_of_plaintext_tokens(manifest_path, root):
    token = "a-long-enough-secret-token"
    with LocalServer(["--allow-root", str(root), "--metrics-port", "0"], model=str(manifest_path),
                     env={"IMAGESIEVE_TOKENS": f"{token} rw ci"}) as srv:
        log = "\n".join(srv.log)
    assert str(root.resolve()) in log
    assert "plaintext" in log and "tokens" in log
    assert "metrics on http://127.0.0.1:" in log          # /metrics stays on loopback unless asked
    workers = min(os.cpu_count() or 1, 8)
    assert (f"{workers} alignment processes" if workers > 1 else "alignment in the request's thread") in log


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the worker processes")
def test_alignment_workers_exit_when_the_server_is_killed(manifest_path, tmp_path):
    """kill -9 of a server cannot stop its alignment processes: they must
    notice their parent is gone and exit, not wait for work forever."""
    with LocalServer(["--verify-workers", "2", "--data-dir", str(tmp_path)], model=str(manifest_path)) as srv:
        deadline = time.monotonic() + 60
        while len(_children(srv.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _children(srv.proc.pid)
        assert len(workers) >= 2, workers
        srv.proc.kill()
        srv.proc.wait(10)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"
              for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"]
    assert not alive, f"alignment workers {alive} outlived their server"


def test_analysis_jobs_beyond_the_limit_wait_for_a_slot_then_are_refused(monkeypatch):
    from imagesieve_server.jobs import runner

    release = threading.Event()
    monkeypatch.setattr(runner.SLOTS, "limit", 1)
    monkeypatch.setattr(runner.SLOTS, "wait_s", 0.3)

    async def main():
        first = asyncio.ensure_future(runner.run_job(lambda rep: release.wait(10) and "done").__anext__())
        await asyncio.sleep(0.2)                       # the first job holds the only slot
        started = time.monotonic()
        with pytest.raises(runner.JobsBusy, match="waited 0.3 s in line without a slot"):
            await runner.run_job(lambda rep: 1).__anext__()
        assert time.monotonic() - started >= 0.25      # it waited for one
        second = asyncio.ensure_future(runner.run_job(lambda rep: 2).__anext__())
        await asyncio.sleep(0.1)
        release.set()                                  # the first ends: the waiting job gets its slot
        assert await first == ("result", "done")
        assert await second == ("result", 2)
        await asyncio.sleep(0.1)
        assert runner.SLOTS.running == 0

    asyncio.run(main())


def test_decoded_rasters_are_charged_to_the_budget(manifest_path, photos):
    """A 190 KB file can decode to hundreds of MB: the decoder's peak
    (estimated from the header) is charged before any pixel is decoded."""
    # A palette PNG decodes whole: a 36 MB raster and a 144 MB RGB image.
    flat = encode(Image.new("L", (6000, 6000), 128).convert("P"), "PNG")
    assert len(flat) < 1 << 20
    # A gray one of the same size decodes a band at a time (engine/png_bands.py),
    # charged ~20 MB: it fits the budget its raster would not have.
    gray = encode(Image.radial_gradient("L").resize((6000, 6000)), "PNG")
    from test_observability import scrape, value
    with LocalServer(["--max-inflight-mb", "64", "--metrics-port", "0"], model=str(manifest_path)) as srv:
        channel, stub = embed_stub(srv.address)
        with channel:
            r = stub.Embed(embedding_pb2.EmbedRequest(images=[
                common_pb2.Image(key="wide", data=flat), common_pb2.Image(key="photo", data=photos[0][0])]),
                timeout=60)
            banded = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="gray", data=gray)]),
                                timeout=60)
        samples = scrape(srv)
    assert not banded.embeddings[0].HasField("error") and banded.embeddings[0].width == 6000
    # The budget as operators see it: its limit, nothing left in use, the refusal counted.
    assert value(samples, "imagesieve_memory_budget_bytes", kind="limit") == 64 << 20
    assert value(samples, "imagesieve_memory_budget_bytes", kind="used") == 0
    assert 0 < value(samples, "imagesieve_memory_budget_bytes", kind="peak") <= 64 << 20
    assert value(samples, "imagesieve_memory_budget_refusals_total") >= 1
    wide, photo = r.embeddings
    assert CODE[wide.error.code] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "whole memory budget" in wide.error.message
    assert not photo.HasField("error") and len(photo.vector) > 0


def _exif_of_rationals(total_bytes: int, orientation: int = 6, tags: int = 1000) -> bytes:
    """An EXIF block: IFD0 with ``orientation`` and ``tags`` tags of RATIONAL
    values (1/1) filling about ``total_bytes``, each tag its own slice."""
    import struct
    head = 8 + 2 + 12 * (tags + 1) + 4
    per_tag = max(8, (total_bytes - head) // tags // 8 * 8)
    entries = [struct.pack("<HHLL", 0x0112, 3, 1, orientation)]
    entries += [struct.pack("<HHLL", 0x9000 + i, 5, per_tag // 8, head + i * per_tag) for i in range(tags)]
    entries.sort(key=lambda e: struct.unpack("<H", e[:2])[0])
    return (b"Exif\x00\x00II*\x00" + struct.pack("<LH", 8, tags + 1) + b"".join(entries) + bytes(4)
            + struct.pack("<LL", 1, 1) * (per_tag * tags // 8))


def test_a_large_exif_block_on_a_turned_image_costs_no_decode_time(abuse_server, photos):
    """Before: an image turned by its EXIF orientation went through
    ImageOps.exif_transpose, which re-serialises every EXIF tag into Python
    objects (~1 s of a decode thread and ~20 MB per MB of rationals, none of
    it charged): four Embed calls of a 64x64 WebP with 24 MB of EXIF held
    both decoders past another client's 30 s deadlines and took the server
    from 216 MB to 1.5 GB. Now turned as such images always were, for the
    cost of reading the orientation: the same pixels as the picture saved
    upright."""
    photo = photo_image(photos[0][0]).resize((192, 128))
    upright = encode(photo.transpose(Image.Transpose.ROTATE_270), "PNG")
    exif = _exif_of_rationals(6 << 20)
    turned = [encode(photo, "WEBP", exif=exif, lossless=True, exact=True), encode(photo, "PNG", exif=exif)]
    channel = big_message_channel(abuse_server.address)
    with channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        reference = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="u", data=upright)]),
                               timeout=60).embeddings[0]
        start = time.monotonic()
        answer = stub.Embed(embedding_pb2.EmbedRequest(
            images=[common_pb2.Image(key=f"t{i}", data=d) for i, d in enumerate(turned)]), timeout=120)
        took = time.monotonic() - start
    for e in answer.embeddings:
        assert not e.HasField("error"), e.error.message
        assert np.allclose(e.vector, reference.vector, atol=1e-5)
    assert took < 5.0, f"two 6 MB EXIF blocks took {took:.1f} s"      # before: 30 s, both decoders held


def test_a_fault_of_ours_is_internal_with_the_request_id_never_unknown():
    """The outermost interceptor turns an exception escaping a handler into
    INTERNAL naming the request id (grpc.aio would answer UNKNOWN with the
    Python exception's text), on a real server on loopback."""
    from imagesieve_server.observability import ObservabilityInterceptor

    async def boom_unary(request, context):
        raise RuntimeError("secret internals")

    async def boom_stream(request, context):
        yield b"first"
        raise KeyError("secret internals")

    async def main():
        server = grpc.aio.server(interceptors=[ObservabilityInterceptor(None)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Boom", {
            "Unary": grpc.unary_unary_rpc_method_handler(boom_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(boom_stream)})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                for call in (ch.unary_unary("/test.Boom/Unary")(b"x", metadata=(("x-request-id", "rid-42"),)),):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call
                    assert e.value.code() == grpc.StatusCode.INTERNAL
                    assert "rid-42" in e.value.details() and "secret" not in e.value.details()
                got = []
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    async for m in ch.unary_stream("/test.Boom/Stream")(b"x"):
                        got.append(m)
                assert got == [b"first"] and e.value.code() == grpc.StatusCode.INTERNAL
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_idle_streams_of_one_client_lock_out_neither_others_nor_probes(manifest_path, photos):
    """Before: 256 idle streams from one read-only token made every other
    call, the health check included, RESOURCE_EXHAUSTED. Now one client (a
    token, else an address) holds at most --max-calls-per-client calls, and
    probes are never refused."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("a", "b", "c")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} ro {n}" for n, t in tokens.items())}
    with LocalServer(["--max-concurrent-rpcs", "6", "--max-calls-per-client", "3"], model=str(manifest_path),
                     env=env) as srv:
        channel = grpc.insecure_channel(srv.address)
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)

        def md(name):
            return (("authorization", f"Bearer {tokens[name]}"),)

        hold = threading.Event()

        def idle():                     # a stream that never sends
            hold.wait(60)
            return
            yield  # noqa: unreachable - makes this a generator

        def embed(name):
            return stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])]),
                              metadata=md(name), timeout=10)

        calls = []
        try:
            for _ in range(3):
                calls.append(stub.EmbedStream(idle(), metadata=md("a"), timeout=60))
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as e:
                embed("a")
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "this client" in e.value.details()
            assert not embed("b").embeddings[0].HasField("error")       # another client is served
            for _ in range(3):
                calls.append(stub.EmbedStream(idle(), metadata=md("b"), timeout=60))
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as e:                    # the server's own limit
                embed("c")
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrent calls" in e.value.details()
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            for c in calls:
                c.cancel()
            hold.set()
        time.sleep(0.5)
        assert not embed("c").embeddings[0].HasField("error")           # slots come back
        channel.close()


def test_idle_streams_give_their_slots_to_new_calls_when_the_server_is_full(manifest_path, photos):
    """Before: idle streams from two addresses held every slot of a server,
    and every other client got RESOURCE_EXHAUSTED for as long as they
    stayed open. Now a stream that waits for its client, with its requests
    answered, for --evict-idle-s is closed when a call would be refused; a
    stream that was just used keeps its slot."""
    import queue
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])])
    with LocalServer(["--max-concurrent-rpcs", "4", "--max-calls-per-client", "4", "--evict-idle-s", "1"],
                     model=str(manifest_path)) as srv:
        channel, stub = embed_stub(srv.address)
        feeds = [queue.Queue() for _ in range(4)]

        def requests(feed):
            while (item := feed.get()) is not None:
                yield item

        streams = []
        for feed in feeds:
            streams.append(stub.EmbedStream(requests(feed), timeout=60))
            time.sleep(0.05)            # opened in order: the first is the longest idle
        try:
            time.sleep(0.6)
            feeds[3].put(request)       # the last stream is used: not idle
            assert not next(streams[3]).embeddings[0].HasField("error")
            time.sleep(0.6)             # the first three idle > 1 s, the last 0.6 s
            for _ in range(2):          # the server is full: each call takes an idle stream's slot
                assert not stub.Embed(request, timeout=10).embeddings[0].HasField("error")
            for closed in streams[:2]:
                with pytest.raises(grpc.RpcError) as e:
                    next(closed)
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "sent nothing" in e.value.details()
            for kept, feed in ((streams[2], feeds[2]), (streams[3], feeds[3])):
                feed.put(request)       # still open and served
                assert not next(kept).embeddings[0].HasField("error")
        finally:
            for feed in feeds:
                feed.put(None)
            for st in streams:
                st.cancel()
            channel.close()


def test_requests_read_ahead_on_streams_are_charged(manifest_path, photos):
    """Before: streams whose requests (tens of MB each) were read ahead, 16
    a stream, held gigabytes outside any budget. Now a stream reads its next
    request only once the budget holds it: memory stays near the budget,
    and every answer is an embedding or a documented refusal."""
    blob = encode(photo_image(photos[0][0]).resize((1600, 1200)), "PNG", compress_level=0)   # ~6 MB
    assert len(blob) > 5 << 20
    with LocalServer(["--max-inflight-mb", "96", "--max-message-mb", "32"], model=str(manifest_path)) as srv:
        before = peak_rss_mb(srv.proc.pid)
        outcomes = []

        def stream(i):
            channel = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", 40 << 20)])
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            requests = (embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"{i}-{j}", data=blob)])
                        for j in range(16))
            try:
                for r in stub.EmbedStream(requests, timeout=120):
                    outcomes.append("ok" if not r.embeddings[0].HasField("error") else
                                    CODE[r.embeddings[0].error.code].name)
            except grpc.RpcError as e:
                outcomes.append(e.code().name)
            finally:
                channel.close()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(stream, range(8)))
        growth = peak_rss_mb(srv.proc.pid) - before
    assert set(outcomes) <= {"ok", "RESOURCE_EXHAUSTED"} and outcomes.count("ok") >= 8
    # 128 requests of 6 MB, each with raw and parsed copies, are 1.5 GB if all
    # are held. Process memory also holds decoded rasters, gRPC's own buffers
    # and allocator slack, and varies run to run: 0.54-1.29 GB measured with
    # the stream's charge (so this bound is for runaway growth only; the
    # charge itself is pinned by test_a_stream_reads_ahead_only_what_the_budget_holds).
    assert growth < 1800, f"peak memory grew {growth:.0f} MiB"


def test_a_stream_reads_ahead_only_what_the_budget_holds():
    """ordered_concurrent pulls the next request off a stream only once the
    budget holds it: with 100 bytes of budget and 40-byte requests whose work
    holds their bytes, at most 3 requests are read while the work waits,
    not the whole window of 16."""
    from imagesieve_server.engine.budget import MemoryBudget
    from imagesieve_server.servicers.common import ordered_concurrent

    class Request:
        def ByteSize(self):
            return 40

    async def run(budget):
        pulled, go = 0, asyncio.Event()

        async def stream():
            nonlocal pulled
            for _ in range(20):
                pulled += 1
                yield Request()

        handled = 0

        async def handle(request):          # like decoding: the work holds the bytes
            nonlocal handled
            handled += 1
            if handled == 1:                # the first answer at once: its size paces the stream
                return Answer()
            n = await budget.reserve(request.ByteSize(), "work", wait_s=30) if budget else 0
            await go.wait()
            if budget:
                budget.release(n, held=True)
            return Answer()

        answers = ordered_concurrent(stream(), handle, window=16, budget=budget)
        first = await answers.__anext__()
        await asyncio.sleep(0.3)             # the stream reads as far as it may
        read_while_waiting = pulled - 1
        go.set()
        rest = [first] + [a async for a in answers]
        return read_while_waiting, rest

    read, answers = asyncio.run(run(MemoryBudget(100)))
    assert len(answers) == 20 and all(isinstance(a, Answer) for a in answers)
    assert read <= 3, f"{read} requests read ahead within a 100-byte budget"
    unbounded, _ = asyncio.run(run(None))    # the same stream without a budget: the window alone
    assert unbounded >= 16


class Answer:
    def ByteSize(self):
        return 60


def test_a_stream_whose_answers_are_not_read_stops_reading():
    """A stream's answers in work or waiting to be sent are bounded in bytes
    (STREAM_ANSWER_BYTES; in work at the caller's estimate from the request,
    then at their real size): a client that never read its answers (8.6 KB
    requests for 3.7 MB answers, 30 streams) made a server with a 256 MiB
    budget hold 3.6 GB, 16 answers a stream. A review then primed the
    stream with a tiny first answer: counted at the largest answer so far,
    the next 16 big ones were built anyway. Here the first answer is 50
    bytes and the others 3.7 MB, never read: at most two big answers are
    built (8 MiB), not the window of 16; once the answers are read, every
    request is answered."""
    from imagesieve_server.engine.budget import MemoryBudget
    from imagesieve_server.servicers.common import STREAM_ANSWER_BYTES, ordered_concurrent

    class Sized:
        def __init__(self, n):
            self.n = n

        def ByteSize(self):
            return self.n

    big = 3_700_000

    async def run():
        built = 0

        async def stream():
            yield Sized(50)
            for _ in range(19):
                yield Sized(big)

        async def handle(request):
            nonlocal built
            built += request.n == big
            return Sized(request.n)

        answers = ordered_concurrent(stream(), handle, window=16, budget=MemoryBudget(1 << 30),
                                     answer_bytes=lambda r: r.n)
        first = await answers.__anext__()            # taken, not yet sent: the client reads no further
        await asyncio.sleep(0.3)
        built_while_unsent = built
        rest = [first] + [a async for a in answers]
        return built_while_unsent, rest

    built, answers = asyncio.run(run())
    assert built <= STREAM_ANSWER_BYTES // big, f"{built} big answers built while none was read"
    assert len(answers) == 20


def test_decoders_are_shared_between_connections_by_time_without_idling():
    """Alone, a connection uses every decoder; among others, each gets its
    share of the decode time, so a connection whose images cost 10x a
    photo's decode does not take most of the decoders while others wait."""
    from imagesieve_server.engine.fair_pool import FairPool

    pool = FairPool(workers=2)
    lock = threading.Lock()
    running, peak, finished = collections.Counter(), collections.Counter(), []

    def decode(key, seconds):
        with lock:
            running[key] += 1
            running["all"] += 1
            peak[key] = max(peak[key], running[key])
            peak["all"] = max(peak["all"], running["all"])
        time.sleep(seconds)
        with lock:
            running[key] -= 1
            running["all"] -= 1
            finished.append(key)
        return key

    try:
        assert [f.result() for f in [pool.submit("a", decode, "a", 0.02) for _ in range(4)]] == ["a"] * 4
        assert peak["a"] == 2                              # alone: both decoders
        finished.clear()
        costly = [pool.submit("a", decode, "a", 0.05) for _ in range(20)]
        cheap = [pool.submit(k, decode, k, 0.005) for _ in range(30) for k in "bc"]
        for f in cheap:
            f.result(10)
        with lock:
            costly_done = finished.count("a")
        for f in costly:
            f.result(10)
        assert peak["all"] == 2                            # never more decodes than decoders
        # While b and c had 60 cheap images (0.3 s of decoding) waiting, a's
        # costly ones got about a third of the time (~0.15 s: 3 or 4);
        # shared by count (one decoder each), a had one throughout (7+).
        assert costly_done <= 5, finished
    finally:
        pool.shutdown()


def test_a_decode_whose_caller_left_is_skipped_and_time_used_alone_is_no_debt():
    """Tasks cancelled while they wait (a client gone) are not run; an
    exception reaches its caller; an owner that used the threads while no
    one else wanted them is not behind later; records of idle owners do
    not pile up; shut down, the threads end."""
    from imagesieve_server.engine.fair_pool import FairPool

    pool = FairPool(workers=1)
    ran, hold = [], threading.Event()

    def work(key, seconds=0.0):
        if key == "hold":
            hold.wait(10)
        time.sleep(seconds)
        ran.append(key)
        if key == "bad":
            raise ValueError("corrupt")
        return key

    first = pool.submit("a", work, "hold")                 # keeps the only thread until released
    gone = [pool.submit("b", work, "b") for _ in range(5)]
    bad = pool.submit("c", work, "bad")
    rest = pool.submit("c", work, "c")
    assert all(g.cancel() for g in gone)
    hold.set()
    assert first.result(5) == "hold" and rest.result(5) == "c"
    with pytest.raises(ValueError, match="corrupt"):
        bad.result(5)
    assert ran == ["hold", "bad", "c"]

    pool.submit("x", work, "x", 0.3).result(5)             # x alone for 0.3 s, then idle
    hold.clear()
    ran.clear()
    blocker = pool.submit("y", work, "hold")
    later = [pool.submit("y", work, "y") for _ in range(20)]
    back = pool.submit("x", work, "x")
    hold.set()
    back.result(5)
    for f in [blocker, *later]:
        f.result(5)
    assert ran.index("x") <= 2, ran                         # not behind all of y's 20
    for i in range(300):                                    # short-lived connections, one after another
        pool.submit(f"peer:{i}", work, "p").result(5)
    assert len(pool._connections[""].used) < 100 and len(pool._typical) < 100
    for i in range(300):                                    # short-lived clients, one after another
        pool.submit((f"client:{i}", "peer"), work, "p").result(5)
    assert len(pool._clients.used) < 100 and len(pool._connections) < 100 and len(pool._typical) < 100
    pool.shutdown()
    assert not any(t.is_alive() for t in pool._threads)
    with pytest.raises(RuntimeError):
        pool.submit("a", work, "a")


def test_streams_ended_by_a_request_error_log_no_traceback(manifest_path):
    """A sixth probe: ~95% of streaming calls that ended with a request error
    (an unknown collection, k=-1) left the stream's pending read to fail with
    the call's AbortError, unretrieved, and asyncio logged ~3 KB of ERROR
    traceback each: one client looping wrote 0.5 MB/s into the server's log.
    A review: a stream generator left suspended by its handler's error is
    closed by the garbage collector after its call, and released its
    message a second time (ValueError, an ERROR traceback each); a refused
    40 MB call at the end makes the server run that collection now."""
    with LocalServer(["--max-inflight-mb", "256"], model=str(manifest_path)) as srv:
        channel = big_message_channel(srv.address)
        dup = duplicates_pb2_grpc.DuplicateServiceStub(channel)
        emb = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        add = channel.stream_stream("/imagesieve.v1.CollectionService/AddImages",
                                    request_serializer=collections_pb2.AddImagesRequest.SerializeToString,
                                    response_deserializer=collections_pb2.AddImagesResponse.FromString)
        calls = [lambda: list(dup.CheckDuplicates(iter([duplicates_pb2.CheckDuplicatesRequest(
                     collection="nope", images=[common_pb2.Image(key="q", data=b"x")])]), timeout=10)),
                 lambda: list(dup.CheckDuplicates(iter([duplicates_pb2.CheckDuplicatesRequest(k=-1)]), timeout=10)),
                 lambda: list(emb.EmbedStream(iter([embedding_pb2.EmbedRequest(top_k_classes=-1)]), timeout=10)),
                 lambda: list(add(iter([collections_pb2.AddImagesRequest(
                     collection="nope", images=[common_pb2.Image(key="q", data=b"x")])]), timeout=10))]
        codes = collections.Counter()
        with channel:
            for i in range(200):
                with pytest.raises(grpc.RpcError) as e:
                    calls[i % 4]()
                codes[e.value.code()] += 1
            with pytest.raises(grpc.RpcError) as e:     # refused, 40 MB: the cycles are collected
                emb.Embed(embedding_pb2.EmbedRequest(top_k_classes=-1, images=[
                    common_pb2.Image(key="big", data=bytes(40 << 20))]), timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        time.sleep(1.0)
        log = "\n".join(srv.log)
    assert codes == {grpc.StatusCode.NOT_FOUND: 100, grpc.StatusCode.INVALID_ARGUMENT: 100}
    assert "never retrieved" not in log and "Traceback" not in log, log[-3000:]


def _rings(seed: int, side: int = 64) -> bytes:
    """A ring pattern under fine noise, alternate half-rows transparent: many
    of them are each other's candidates, and every alignment search runs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] - side / 2
    g = 128 + 80 * np.cos(np.hypot(yy, xx) / (5.3 + rng.random())) + rng.standard_normal((side, side)) * 40
    g = np.clip(g, 0, 255).astype(np.uint8)
    alpha = np.full((side, side), 255, np.uint8)
    alpha[::2, side // 2:] = 0
    return encode(Image.fromarray(np.dstack([g, np.roll(g, 3, 0), np.roll(g, 5, 1), alpha]), "RGBA"), "PNG")


def test_one_check_stream_stalls_no_other_collection_and_stops_when_cancelled(manifest_path, photos):
    """A sixth probe: one read-only CheckDuplicates stream of 16 requests of
    64 costly images took every thread of the event loop's default executor,
    which every collection call shares: GetCollectionStats on another
    collection waited 27-85 s, and went on waiting up to 72 s after the
    stream was cancelled, while the cancelled stream's threads checked (and,
    with add_if_unique, added) the rest of its requests: 312 images added
    after a cancel at 6. Checks now run on a pool of their own, one image a
    task, shared between connections by time, and a cancelled call stops
    after the image in progress."""
    with LocalServer([], model=str(manifest_path)) as srv, Client(srv.address, timeout=60) as c:
        c.create_collection("mine")
        c.create_collection("other")
        assert all(r.added for r in c.add("mine", [_rings(i) for i in range(60)], keys=[f"r{i}" for i in range(60)]))
        assert all(r.added for r in c.add("other", [photos[0][0]], keys=["p"]))
        requests = [duplicates_pb2.CheckDuplicatesRequest(collection="mine", add_if_unique=True, images=[
            common_pb2.Image(key=f"x{r}-{i}", data=_rings(1000 + 48 * r + i)) for i in range(48)]) for r in range(8)]
        channel = grpc.insecure_channel(srv.address)
        stream = duplicates_pb2_grpc.DuplicateServiceStub(channel).CheckDuplicates(iter(requests), timeout=300)
        ended = []

        def read():
            try:
                for _ in stream:
                    pass
            except grpc.RpcError as e:
                ended.append(e.code())
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        waits = []
        t = time.perf_counter()
        # Until the stream has added some (on a loaded host its first add came 3.5-6 s in), 90 s at most.
        while c.collection_stats("mine").num_images < 80 and time.perf_counter() - t < 90:
            t0 = time.perf_counter()
            assert c.collection_stats("other").num_images == 1
            waits.append(time.perf_counter() - t0)
            time.sleep(0.1)
        at_cancel = c.collection_stats("mine").num_images
        stream.cancel()
        time.sleep(4)
        later = c.collection_stats("mine").num_images
        reader.join(10)
        channel.close()
        assert c.collection_stats("other").num_images == 1
    assert at_cancel >= 80, "the stream added too little: the attack did not run"
    assert ended == [grpc.StatusCode.CANCELLED]
    assert len(waits) >= 10 and max(waits) < 2.0, waits
    assert later - at_cancel <= 8, (at_cancel, later)


class _StallingProxy:
    """A TCP proxy to ``target`` that forwards each connection's first
    ``forward_bytes`` from the client (None: all) and its first
    ``answer_bytes`` from the server (None: all), then stops reading that
    side (kernel buffers and HTTP/2 flow control hold the rest): a call sent
    to all but its last bytes, or a client that reads no answers."""

    def __init__(self, target: str, forward_bytes: int | None, answer_bytes: int | None = None):
        self.target, self.forward_bytes, self.answer_bytes = target, forward_bytes, answer_bytes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, self.forward_bytes), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.answer_bytes), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, limit):
        sent = 0
        try:
            while limit is None or sent < limit:
                data = src.recv(min(1 << 16, limit - sent) if limit is not None else 1 << 16)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
            if limit is not None:
                threading.Event().wait(3600)     # stalled: read nothing more
        except OSError:
            pass

    def close(self):
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


def test_requests_sent_to_all_but_their_last_bytes_hold_no_memory_and_stall_no_one(manifest_path, photos):
    """Before: gRPC read each unary request whole before any handler ran;
    96 Embed calls of 60 MB sent to all but their last byte held 6.1 GB of
    a 256 MiB server, with nothing in its log. Now unary requests are read
    through the request gate: a few at once (the budget's half over the
    message limit, half of them one client's), each within
    --receive-timeout-s, given up sooner when others wait; the rest wait
    on the client's side. Health checks are not gated."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("attacker", "victim")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} rw {n}" for n, t in tokens.items())}
    big = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="big", data=os.urandom(60 << 20))])
    with LocalServer(["--max-inflight-mb", "256", "--receive-timeout-s", "4"], model=str(manifest_path),
                     env=env) as srv:
        proxy = _StallingProxy(srv.address, 40 << 20)
        pid = srv.proc.pid
        before = _rss_mb(pid)
        channels, calls = [], []
        try:
            for _ in range(8):                  # 8 connections, 40 MB of each 60 MB request forwarded
                ch = big_message_channel(proxy.address)
                channels.append(ch)
                calls.append(embedding_pb2_grpc.EmbeddingServiceStub(ch).Embed.future(
                    big, metadata=(("authorization", f"Bearer {tokens['attacker']}"),), timeout=30))
            channel, stub = embed_stub(srv.address)
            health = health_pb2_grpc.HealthStub(channel)
            small = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])])
            victim = (("authorization", f"Bearer {tokens['victim']}"),)
            peak, waits = before, []
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                t = time.monotonic()
                assert not stub.Embed(small, metadata=victim, timeout=10).embeddings[0].HasField("error")
                waits.append(time.monotonic() - t)
                # Probes are not gated (a review: stalled reads once failed them).
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                    health_pb2.HealthCheckResponse.SERVING
                peak = max(peak, _rss_mb(pid))
                time.sleep(0.2)
            # Two reading slots (128 MiB / 64 MB), one the attacker's: ~40 MB of its bytes at a time.
            assert peak - before < 150, (before, peak)
            assert max(waits) < 2.0, waits
            # The stalled reads were given up after 4 s (the server's log; the
            # client may see it only once its stalled send ends), the waiting ones refused.
            done = [c for c in calls if c.done()]
            expected = {grpc.StatusCode.RESOURCE_EXHAUSTED: ("receiving as many", "still arriving after"),
                        grpc.StatusCode.DEADLINE_EXCEEDED: ("did not arrive within 4 s",)}
            assert done and all(any(m in c.details() for m in expected.get(c.code(), ())) for c in done), \
                [(c.code(), c.details()) for c in done]
            assert any("rpc Embed DEADLINE_EXCEEDED" in line for line in srv.log), srv.log[-20:]
            channel.close()
        finally:
            proxy.close()                       # first: a channel closes only when its sends can end
            for c in calls:
                c.cancel()
            for ch in channels:
                ch.close()


def test_large_unary_requests_are_read_a_few_at_a_time_and_not_kept(manifest_path):
    """32 Embed calls of 60 MB at once (valid messages, under the 64 MB
    limit) against a 256 MiB budget. Before the request gate the server
    peaked at +1.4 GB (the eighth probe, on more calls: 293 MB -> 5.2 GB);
    a first version of the gate left gRPC's receiver holding each request
    after its call (+2 GB at the end)."""
    big = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="big", data=os.urandom(60 << 20))])
    with LocalServer(["--max-inflight-mb", "256"], model=str(manifest_path)) as srv:
        pid = srv.proc.pid
        start = _rss_mb(pid)

        def call(_):
            ch = big_message_channel(srv.address)
            try:
                return embedding_pb2_grpc.EmbeddingServiceStub(ch).Embed(big, timeout=120).embeddings[0]
            finally:
                ch.close()

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(call, range(32)))
        assert all("above the limit" in a.error.message for a in answers), answers[0]   # --max-image-mb
        peak, end = peak_rss_mb(pid) - start, _rss_mb(pid) - start
        assert peak < 800, (start, peak)
        assert end < 600, (start, end)


def test_streams_of_large_messages_are_read_within_the_budget(manifest_path, photos):
    """24 EmbedStream calls sending 40 MB messages back to back (valid
    messages under the 64 MB limit, junk images) against a 256 MiB budget.
    Before, stream messages passed no gate and gRPC read ahead of the
    handler: a thirteenth probe's 32 streams of 60 MB took a 1 GiB server to
    10 GB. Now each message is read in a turn of the request gate and a
    stream holds room for gRPC's read-ahead: every stream ends OK or with a
    documented refusal, memory stays bounded, and another client's small
    stream opened meanwhile is answered."""
    junk = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="junk", data=b"\x89PNG" + bytes(40 << 20))])
    small = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="photo", data=photos[0][0])])
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("flood", "other")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} rw {n}" for n, t in tokens.items())}
    as_flood, as_other = ((("authorization", f"Bearer {tokens[n]}"),) for n in ("flood", "other"))
    with LocalServer(["--max-inflight-mb", "256", "--receive-timeout-s", "10"], model=str(manifest_path),
                     env=env) as srv:
        pid = srv.proc.pid
        start = _rss_mb(pid)
        outcomes, stop = collections.Counter(), time.monotonic() + 12

        def stream(stub, tiny_first: bool):
            # A tiny first message once left a stream's room tiny and exempted
            # every later message from the bytes held (a review: +925 MiB).
            first = [embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="t", data=b"\x89PNG")])] * tiny_first
            requests = itertools.chain(first, iter(lambda: junk if time.monotonic() < stop else None, None))
            for answer in stub.EmbedStream(requests, metadata=as_flood, timeout=60):
                assert answer.embeddings[0].HasField("error")

        def flood(i):
            with big_message_channel(srv.address) as ch:
                count_outcome(outcomes, stream, embedding_pb2_grpc.EmbeddingServiceStub(ch), i % 2 == 0)

        with ThreadPoolExecutor(24) as pool:
            floods = [pool.submit(flood, i) for i in range(24)]
            time.sleep(4)
            ch, stub = embed_stub(srv.address)
            answer = next(stub.EmbedStream(iter([small]), metadata=as_other, timeout=60))
            assert len(answer.embeddings[0].vector) > 0
            ch.close()
            for f in floods:
                f.result()
        peak = peak_rss_mb(pid) - start
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED"} and outcomes["OK"] >= 1, outcomes
    assert peak < 900, (start, peak)


def test_health_watches_naming_huge_services_are_refused_not_held_open(manifest_path):
    """Health needs no token, and a Watch keeps its request while it stays
    open: 24 Watches naming a 60 MB service held 6 GB (a twelfth probe). A
    name over MAX_PROBE_SERVICE characters is INVALID_ARGUMENT, for Check
    and Watch, and the stream ends at once; names up to it are answered."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from imagesieve_server.observability import MAX_PROBE_SERVICE
    huge = health_pb2.HealthCheckRequest(service="x" * (20 << 20))
    with LocalServer([], model=str(manifest_path)) as srv:
        ch = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", 64 << 20)])
        health = health_pb2_grpc.HealthStub(ch)
        # Held open by the client: before, each answered SERVICE_UNKNOWN and stayed open.
        watches = [health.Watch(huge, timeout=60) for _ in range(8)]
        for w in watches:
            with pytest.raises(grpc.RpcError) as e:
                next(w)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            health.Check(huge)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:       # a name of the longest length allowed, unknown
            health.Check(health_pb2.HealthCheckRequest(service="x" * MAX_PROBE_SERVICE))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        first = next(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        ch.close()


def test_a_clients_idle_streams_keep_neither_its_unary_calls_nor_its_other_streams_waiting(manifest_path, photos):
    """On a 256 MiB server the gates read two 64 MB messages at once, one a
    client. A stream waiting for its client's next message holds its turn
    (its message may come any time), so streams read on a gate of their
    own: the client's unary calls never wait for it, and its second stream
    gets the turn once the first has been idle --evict-idle-s."""
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="p", data=photos[0][0])])
    with LocalServer(["--max-inflight-mb", "256", "--evict-idle-s", "2"], model=str(manifest_path)) as srv:
        ch, stub = embed_stub(srv.address)
        pending = __import__("queue").Queue()
        first = stub.EmbedStream(iter(pending.get, None), timeout=60)
        pending.put(request)
        assert len(next(first).embeddings[0].vector) > 0          # answered, now idle and open
        begun = time.monotonic()
        for _ in range(3):
            assert len(stub.Embed(request, timeout=30).embeddings[0].vector) > 0
        assert time.monotonic() - begun < 2.0
        second = stub.EmbedStream(iter([request]), timeout=30)
        assert len(next(second).embeddings[0].vector) > 0          # after the first's idle time
        with pytest.raises(grpc.RpcError) as e:
            next(first)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "sent nothing" in e.value.details()
        pending.put(None)
        ch.close()


def test_streams_pausing_just_under_the_idle_time_give_their_turns_to_waiting_streams(manifest_path, photos):
    """The fourteenth probe: streams of two clients sending a request every
    8 s (under --evict-idle-s 10) held every turn of the stream gate, and a
    third client's one-message streams took 13-16 s each (each message and
    the end of the stream waited for a trickler's next request). Now a
    stream's idle time while others wait adds up over its life, and past
    --evict-idle-s in all, a pause of a second (a quarter of it, here)
    gives its turn up: the trickler is closed RESOURCE_EXHAUSTED and the
    waiting streams pass. The account is the client's: a trickler that
    reopens its stream gets no fresh credit. Here 256 MiB (two turns, one a
    client), --evict-idle-s 2, a request every 1.5 s."""
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("a", "b", "c")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} ro {n}" for n, t in tokens.items())}
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="p", data=photos[0][0])])
    with LocalServer(["--max-inflight-mb", "256", "--evict-idle-s", "2"], model=str(manifest_path), env=env) as srv:
        ch, stub = embed_stub(srv.address)
        stop = threading.Event()
        ended, reopened = {}, collections.Counter()

        def trickle(name):
            def requests():
                while not stop.is_set():
                    yield request
                    stop.wait(1.5)
            while not stop.is_set():              # reopened when closed, as a retrying client would
                try:
                    for _ in stub.EmbedStream(requests(), metadata=(("authorization", f"Bearer {tokens[name]}"),),
                                              timeout=60):
                        pass
                    ended.setdefault(name, "OK")
                except grpc.RpcError as e:
                    ended[name] = (e.code(), e.details())
                    reopened[name] += 1

        tricklers = [threading.Thread(target=trickle, args=(n,)) for n in "ab"]
        for t in tricklers:
            t.start()
        time.sleep(1.0)                           # both hold their turns, waiting for their next request
        took = []
        try:
            for _ in range(6):
                begun = time.monotonic()
                answers = list(stub.EmbedStream(iter([request]), timeout=30,
                                                metadata=(("authorization", f"Bearer {tokens['c']}"),)))
                took.append(time.monotonic() - begun)
                assert len(answers) == 1 and len(answers[0].embeddings[0].vector) > 0
        finally:
            stop.set()
            for t in tricklers:
                t.join(30)
            ch.close()
        given_up = [v for v in ended.values() if v != "OK"]
        assert given_up, (ended, took)
        assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "in pauses" in details for code, details in given_up)
        # Before: 1.5-3.0 s each while the tricklers kept on; with accounts a stream's own, 0.6 or 1.5 s
        # each (reopened streams got fresh credit); now 0.5 s (a quarter of --evict-idle-s) or less.
        assert max(took[3:]) < 1.0, took


def test_a_large_decode_leaves_no_resident_memory_behind(manifest_path, tmp_path):
    """A 6000x6000 16-bit PNG decodes through ~80 MB of Pillow blocks (16
    MB each). glibc's mmap threshold moves up to a freed block's size, so
    from the second such image on, the blocks came from the heap and stayed
    resident after use (here +141 MiB after three more decodes; the soak's
    abusive phase: +160 MiB at its peak). With the threshold fixed
    (--mmap-threshold-mb 4, the default) they are unmapped when freed."""
    deep = tmp_path / "deep.png"
    Image.fromarray(np.tile(np.arange(6000, dtype=np.uint16) * 10, (6000, 1))).save(deep)
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="d", server_path=str(deep))])
    with LocalServer(["--allow-root", str(tmp_path)], model=str(manifest_path)) as srv:
        ch, stub = embed_stub(srv.address)
        first = stub.Embed(request, timeout=60).embeddings[0]
        assert not first.HasField("error") and first.width == 6000
        time.sleep(2.5)                            # past the 2 s in which one file's answer is shared
        before = _rss_mb(srv.proc.pid)
        for _ in range(3):
            assert not stub.Embed(request, timeout=60).embeddings[0].HasField("error")
            time.sleep(2.5)
        after = _rss_mb(srv.proc.pid)
        ch.close()
    assert after - before < 40, (before, after)


def test_health_checks_naming_huge_services_at_once_hold_little_memory(manifest_path):
    """Health needs no token and was read whole by gRPC before any check:
    48 checks naming 60 MB services at once took a server to 2-4.9 GB (a
    thirteenth probe; refused calls also left their request in reference
    cycles until Python's next full collection). Now health requests pass
    a gate of their own, two read at once, and refused calls' bytes are
    collected: peak memory stays a few messages high."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    huge = health_pb2.HealthCheckRequest(service="x" * (40 << 20))
    with LocalServer([], model=str(manifest_path)) as srv:
        pid = srv.proc.pid
        start, stop = _rss_mb(pid), time.monotonic() + 8
        codes = collections.Counter()

        def checks(_):
            with big_message_channel(srv.address) as ch:
                while time.monotonic() < stop:
                    count_outcome(codes, health_pb2_grpc.HealthStub(ch).Check, huge, timeout=60)

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(checks, range(24)))
        ch = grpc.insecure_channel(srv.address)
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        ch.close()
        peak = peak_rss_mb(pid) - start
    assert set(codes) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"} and codes["INVALID_ARGUMENT"] >= 24, codes
    assert peak < 700, (start, peak)


def test_health_watches_carrying_unknown_fields_are_refused_not_held(manifest_path):
    """A review: the length check saw the service name only, and a Watch
    kept its request's bytes on the health gate while open, so three
    Watches from one address, each naming no service but carrying a 60 MB
    unknown field, kept every probe of that address waiting past its 1 s
    timeout. A health request over MAX_PROBE_REQUEST bytes is refused, and
    one within it is not held while its Watch stays open."""
    from grpc_health.v1 import health_pb2
    from imagesieve_server.observability import MAX_PROBE_REQUEST
    payload = os.urandom(60 << 20)
    padded = health_pb2.HealthCheckRequest().SerializeToString() + b"\x12" + _varint(len(payload)) + payload
    small_pad = b"\x12" + _varint(1000) + bytes(1000)                 # within the limit: answered
    assert len(small_pad) <= MAX_PROBE_REQUEST
    with LocalServer([], model=str(manifest_path)) as srv:
        watch = "/grpc.health.v1.Health/Watch"
        with big_message_channel(srv.address) as ch:
            raw = ch.unary_stream(watch, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as e:
                    next(raw(padded, timeout=30))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            held_open = [raw(small_pad, timeout=30) for _ in range(3)]
            for w in held_open:
                assert health_pb2.HealthCheckResponse.FromString(next(w)).status == \
                    health_pb2.HealthCheckResponse.SERVING
            with grpc.insecure_channel(srv.address) as probe_ch:
                probe = probe_ch.unary_unary("/grpc.health.v1.Health/Check",
                                             request_serializer=lambda b: b, response_deserializer=lambda b: b)
                for _ in range(3):
                    probe(b"", timeout=1.0)
            for w in held_open:
                w.cancel()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_stalled_health_checks_delay_other_probes_by_half_a_second_at_most(manifest_path):
    """Health checks now pass a gate of their own, and need no token: 8
    connections each sending 40 MB of a 60 MB check and stalling hold its
    four turns, yet a probe with a 1 s timeout is answered each time (a
    stalled read gives way after PROBE_SLOW_READ_S when others wait), and
    memory holds the turns' bytes, not the eight requests'."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from imagesieve_server.request_gate import PROBE_SLOW_READ_S
    huge = health_pb2.HealthCheckRequest(service="x" * (60 << 20))
    with LocalServer([], model=str(manifest_path)) as srv:
        proxy = _StallingProxy(srv.address, 40 << 20)
        pid = srv.proc.pid
        before, channels = _rss_mb(pid), []
        try:
            for _ in range(8):
                ch = big_message_channel(proxy.address)
                channels.append(ch)
                health_pb2_grpc.HealthStub(ch).Check.future(huge, timeout=30)
            time.sleep(1.0)
            ch = grpc.insecure_channel(srv.address)
            probe, waits = health_pb2_grpc.HealthStub(ch), []
            for _ in range(10):
                t = time.monotonic()
                assert probe.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == \
                    health_pb2.HealthCheckResponse.SERVING
                waits.append(time.monotonic() - t)
            ch.close()
            assert max(waits) < PROBE_SLOW_READ_S + 0.4, waits
            assert _rss_mb(pid) - before < 400
        finally:
            for c in channels:
                c.close()
            proxy.close()


def test_streams_whose_answers_are_never_read_give_their_slots_to_new_calls(manifest_path, photos):
    """Before: a stream whose client never read its answers was never idle
    (its answer waited on HTTP/2 flow control, its requests unanswered), so
    such streams from two addresses held every slot for good. Now an answer
    that has waited --evict-idle-s to be sent makes its call evictable when
    another would be refused."""
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"k{i}", data=photos[i % 8][0])
                                                 for i in range(8)], with_layout_signature=True)
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("reader", "other")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} rw {n}" for n, t in tokens.items())}
    with LocalServer(["--max-concurrent-rpcs", "3", "--max-calls-per-client", "3", "--evict-idle-s", "1",
                      "--stream-window", "2"], model=str(manifest_path), env=env) as srv:
        def md(name):
            return (("authorization", f"Bearer {tokens[name]}"),)

        # A client that reads nothing; its receive window stays at HTTP/2's 64 KB (no BDP growth).
        channel = grpc.insecure_channel(srv.address, options=[("grpc.http2.bdp_probe", 0)])
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        # ~100 KB answers, 10 requests a stream, none read: past the receive window at once.
        streams = [stub.EmbedStream(iter([request] * 10), metadata=md("reader"), timeout=120) for _ in range(3)]
        try:
            time.sleep(6)        # every stream's first answer is stuck in flow control for > 1 s
            small = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])])
            # Its own client may not evict them (it would pile up unsent answers in gRPC) ...
            with pytest.raises(grpc.RpcError) as e:
                stub.Embed(small, metadata=md("reader"), timeout=20)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for _ in range(2):   # ... another may: each call takes a blocked stream's slot
                assert not stub.Embed(small, metadata=md("other"), timeout=20).embeddings[0].HasField("error")
            # A client that reads on gets its answers so far, then why the call ended.
            codes = []
            for st in streams:
                try:
                    codes.append(("read", sum(1 for _ in st)))
                except grpc.RpcError as e:
                    codes.append((e.code(), e.details()))
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        st.cancel()
            closed = [c for c in codes if c[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert closed and all("waited 1 s or more for the client to read" in d for _, d in closed), codes
        finally:
            for st in streams:
                st.cancel()
            channel.close()


def test_unary_answers_nobody_reads_hold_their_calls_slots(manifest_path, photos, tmp_path):
    """Before: a unary call left its slot when its handler returned, and
    gRPC then held the answer until the client read it: a client reading
    none could pile up answers without limit (an eighth probe: +2 GB). Now
    the answer is sent inside the call: unread, it keeps the call's slot, so
    a client has at most --max-calls-per-client such answers, and another
    client may take the slot of one that waited --evict-idle-s."""
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("reader", "other")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} rw {n}" for n, t in tokens.items())}
    (tmp_path / "photo.jpg").write_bytes(photos[0][0])
    # One file named 96 times (decoded once): ~1.5 MB answers at little cost, past windows and buffers.
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"k{i}", server_path=str(tmp_path / "photo.jpg"))
                                                 for i in range(96)], with_layout_signature=True, top_k_classes=100)
    with LocalServer(["--max-concurrent-rpcs", "4", "--max-calls-per-client", "4", "--evict-idle-s", "1",
                      "--allow-root", str(tmp_path)], model=str(manifest_path), env=env) as srv:
        proxy = _StallingProxy(srv.address, None, answer_bytes=32 << 10)     # the reader's answers stop at 32 KB
        reader = grpc.insecure_channel(proxy.address, options=[("grpc.http2.bdp_probe", 0)])
        stub = embedding_pb2_grpc.EmbeddingServiceStub(reader)
        md = {name: (("authorization", f"Bearer {t}"),) for name, t in tokens.items()}
        calls = []
        try:
            calls = [stub.Embed.future(request, metadata=md["reader"], timeout=60) for _ in range(4)]
            time.sleep(4)
            channel, direct = embed_stub(srv.address)        # the same token on a connection that reads
            small = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])])
            with pytest.raises(grpc.RpcError) as e:          # its 4 unread answers hold its 4 calls
                direct.Embed(small, metadata=md["reader"], timeout=5)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Another client takes the slot of an answer unread for --evict-idle-s.
            assert not direct.Embed(small, metadata=md["other"], timeout=20).embeddings[0].HasField("error")
            channel.close()
        finally:
            proxy.close()
            for c in calls:
                c.cancel()
            reader.close()


def test_requests_of_millions_of_tiny_fields_are_refused_before_they_are_parsed(manifest_path, photos):
    """16 MB of empty Image entries (two bytes each on the wire, ~100 bytes
    each parsed): a probe's three such calls of 20 MB took a 1 GiB server to
    6.4 GB and stalled every other call for 14 s, as the parse ran on the
    event loop before any limit on images applied. Now the fields are
    counted first, off the loop, and such a request is refused unparsed; an
    AddImages stream message likewise."""
    tiny = b"\x0a\x00" * (8 << 20)                     # 16 MB, 8 million Images
    with LocalServer(["--max-inflight-mb", "256"], model=str(manifest_path)) as srv:
        pid = srv.proc.pid
        small = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="p", data=photos[0][0])])
        ch, stub = embed_stub(srv.address)
        stub.Embed(small, timeout=60)
        start = _rss_mb(pid)
        waits, stop = [], threading.Event()

        def victim():
            while not stop.is_set():
                t = time.perf_counter()
                stub.Embed(small, timeout=60)
                waits.append(time.perf_counter() - t)
                time.sleep(0.1)

        def flood(_):
            raw = big_message_channel(srv.address)
            try:
                call = raw.unary_unary("/imagesieve.v1.EmbeddingService/Embed", request_serializer=None,
                                       response_deserializer=embedding_pb2.EmbedResponse.FromString)
                call(tiny, timeout=60)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name, e.details()
            finally:
                raw.close()

        watcher = threading.Thread(target=victim)
        watcher.start()
        try:
            with ThreadPoolExecutor(3) as pool:
                outcomes = list(pool.map(flood, range(3)))
            Client(srv.address).create_collection("tiny")
            raw = big_message_channel(srv.address)
            adds = raw.stream_stream("/imagesieve.v1.CollectionService/AddImages", request_serializer=None,
                                     response_deserializer=collections_pb2.AddImagesResponse.FromString)
            header = collections_pb2.AddImagesRequest(collection="tiny").SerializeToString()
            with pytest.raises(grpc.RpcError) as streamed:
                list(adds(iter([header + b"\x12\x00" * (8 << 20)]), timeout=60))
            raw.close()
        finally:
            stop.set()
            watcher.join()
            ch.close()
        for outcome in outcomes:
            assert outcome[0] == "INVALID_ARGUMENT" and "fields" in outcome[1], outcome
        assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fields" in streamed.value.details()
        assert peak_rss_mb(pid) - start < 400, (start, peak_rss_mb(pid))
        assert max(waits) < 3, sorted(waits)[-3:]


def test_large_duplicate_answers_are_built_a_part_at_a_time_and_unread_ones_pin_little(manifest_path):
    """400 identical images with 1,000-byte keys: 79,800 pairs, a 160 MB
    answer. It was built whole on the event loop and copied into parts
    (+567 MB, other calls stalled 1.4 s), and two answers left unread kept
    +1 GB after the call that was read had ended (a probe: +5 GB at 500,000
    pairs). Now parts of a few MB are built one at a time on a thread."""
    import io
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    keys = [f"{i:04d}" + "k" * 996 for i in range(400)]
    with LocalServer(["--max-inflight-mb", "512", "--max-jobs", "4"], model=str(manifest_path)) as srv:
        with Client(srv.address) as client:
            client.create_collection("long-keys")
            assert all(r.added for r in client.add("long-keys", [buf.getvalue()] * len(keys), keys=keys))
            pid = srv.proc.pid
            start = _rss_mb(pid)
            ch = grpc.insecure_channel(srv.address)
            stub = duplicates_pb2_grpc.DuplicateServiceStub(ch)
            request = duplicates_pb2.FindDuplicatesRequest(collection="long-keys", raw_cosine=True, threshold=0.5)
            unread = [stub.FindDuplicates(request, timeout=120) for _ in range(2)]
            time.sleep(4)                                   # their jobs done, their answers waiting
            small = np.zeros((32, 32, 3), np.uint8)
            t = time.perf_counter()
            client.embed([encode(Image.fromarray(small), "PNG")])
            other_call_s = time.perf_counter() - t
            parts = [e.result for e in stub.FindDuplicates(request, timeout=120) if e.HasField("result")]
            result = client.find_duplicates("long-keys", raw_cosine=True, threshold=0.5)
            peak, end = peak_rss_mb(pid) - start, _rss_mb(pid) - start
            for call in unread:
                call.cancel()
            ch.close()
    assert len(result.pairs) == 400 * 399 // 2 and {p.key_a for p in result.pairs} <= set(keys)
    assert len(parts) > 10 and parts[0].parts == len(parts) and all(p.ByteSize() < 4 << 20 for p in parts)
    assert sum(len(p.pairs) for p in parts) == len(result.pairs) and len(result.groups) == 1
    assert peak < 250 and end < 150, (start, peak, end)
    assert other_call_s < 2, other_call_s


def test_calls_that_send_headers_and_no_message_hold_neither_every_slot_nor_every_turn(manifest_path, photos):
    """A twenty-third probe: two clients' unary calls that sent their headers
    and never their message held every call slot and every read turn until
    the receive timeout, and another client's calls were refused or waited
    as long as the attack lasted. A call still waiting for its turn to be
    read is now as idle as a stream waiting for its next message (closed for
    another client's call at the server's limit after --evict-idle-s), and a
    read turn given up as slow goes to the client reading least."""
    tokens = {name: f"{name}-token-long-enough-0123" for name in ("a", "b", "c")}
    env = {"IMAGESIEVE_TOKENS": ";".join(f"{t} ro {n}" for n, t in tokens.items())}
    request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])])
    with LocalServer(["--max-concurrent-rpcs", "6", "--max-calls-per-client", "3", "--evict-idle-s", "1",
                      "--max-inflight-mb", "256"], model=str(manifest_path), env=env) as srv:
        channel = grpc.insecure_channel(srv.address)
        # The unary method called as a client stream that never sends: HTTP/2 headers and nothing more.
        headers_only = channel.stream_unary("/imagesieve.v1.EmbeddingService/Embed",
                                            request_serializer=embedding_pb2.EmbedRequest.SerializeToString,
                                            response_deserializer=embedding_pb2.EmbedResponse.FromString)
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        hold = threading.Event()

        def nothing():
            hold.wait(60)
            return
            yield  # noqa: unreachable - makes this a generator

        stalled = []
        try:
            for name in ("a", "b"):
                for _ in range(3):
                    stalled.append(headers_only.future(nothing(), timeout=60,
                                                       metadata=(("authorization", f"Bearer {tokens[name]}"),)))
            time.sleep(1.5)             # every slot taken, each call waiting > --evict-idle-s for its message
            answer = stub.Embed(request, timeout=20, metadata=(("authorization", f"Bearer {tokens['c']}"),))
            assert not answer.embeddings[0].HasField("error")
            closed = [f for f in stalled if f.done()]
            assert closed, "no stalled call gave its slot up"
            assert all(f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for f in closed)
            assert any("for its turn to be read" in f.details() for f in closed)
        finally:
            hold.set()
            for f in stalled:
                f.cancel()
        channel.close()


def _filled_with_vectors(data_dir, name: str, n: int) -> None:
    """Collection ``name`` under ``data_dir`` (made by a server, now stopped)
    given ``n`` random unit vectors with keys v0.. (no embedding: fast)."""
    import hashlib

    from imagesieve_server.collections import Collection, NewImage
    c = Collection.open(data_dir / "collections" / name)
    rng = np.random.default_rng(0)
    for start in range(0, n, 1000):
        v = rng.standard_normal((min(1000, n - start), c.dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        assert all(o.added for o in c.add([NewImage(f"v{start + i}", hashlib.sha256(b"v%d" % (start + i)).hexdigest(),
                                                     row) for i, row in enumerate(v)]))
    c.close()


def test_one_collections_snapshots_and_removals_stall_no_other_collection(manifest_path, photos, tmp_path):
    """A twenty-fourth probe: one client looping RemoveImages (one key) and
    SnapshotCollection on a large collection, so that every snapshot had a
    change and rewrote the index under the collection's lock, from 32
    threads: the calls waiting for that lock took every thread of the pool
    the whole server shares, and another client's GetCollectionStats and
    one-image checks on a collection of its own went from 2 and 45 ms to
    p50 0.9 s. Now such calls take one thread a collection at a time, stats
    take no collection lock, and a check aligns its candidates without it."""
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, Client(srv.address) as c:
        c.create_collection("big")
        c.create_collection("mine")
        assert all(r.added for r in c.add("mine", [photos[0][0], photos[1][0]], keys=["p0", "p1"]))
    _filled_with_vectors(tmp_path, "big", 8000)           # 32 MB of index
    stop, snapshots, errors = threading.Event(), [], []
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, \
            Client(srv.address, timeout=60) as victim:
        assert victim.collection_stats("big").num_images == 8000

        def churn(t: int):
            with Client(srv.address, timeout=120) as c:
                i = t
                while not stop.is_set():
                    try:
                        c.remove("big", [f"v{i}"])
                        t0 = time.perf_counter()
                        c.snapshot_collection("big")
                        snapshots.append(time.perf_counter() - t0)
                    except grpc.RpcError as e:
                        errors.append(e.code())
                    i += 32
        attackers = [threading.Thread(target=churn, args=(t,), daemon=True) for t in range(32)]
        for a in attackers:
            a.start()
        time.sleep(2)
        stats, checks = [], []
        t_end = time.perf_counter() + 15
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            assert victim.collection_stats("mine").num_images == 2
            stats.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert list(victim.check("mine", [photos[2][0]], keys=["q"]))[0].verdict
            checks.append(time.perf_counter() - t0)
            time.sleep(0.1)
        stop.set()
        for a in attackers:
            a.join(60)
    assert not errors, collections.Counter(errors)
    assert len(snapshots) >= 10, "the attack did not run"
    # (Each snapshot rewrote the index, 0.2 s or more a call, when this test was written;
    # since, the file is written without the collection's lock, and a write that a newer
    # one has already covered is skipped.)
    assert np.median(stats) < 0.1 and max(stats) < 1.0, sorted(stats)[-5:]
    assert np.median(checks) < 0.5 and max(checks) < 2.0, sorted(checks)[-5:]


def test_pages_of_many_collections_do_not_hold_up_another_clients_stats(manifest_path, tmp_path):
    """A twenty-fifth probe: with 1,000 collections (the default limit), one
    client looping ListCollections pages of 1,000 from 32 threads put
    another client's GetCollectionStats from 2.5 ms to p50 0.9 s: each page
    holds the GIL 26-40 ms, and pages and stats shared the event loop's
    default threads. Pages now take two threads of their own, shared
    between connections by the time each has used."""
    from imagesieve_server.collections import CollectionManager
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, Client(srv.address) as c:
        mine = c.create_collection("mine")
    m = CollectionManager(tmp_path, mine.model, mine.dim)
    for i in range(999):
        m.create(f"c{i:04d}")
    m.close()
    stop, pages = threading.Event(), []
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, \
            Client(srv.address, timeout=60) as victim:
        def lister():
            with Client(srv.address, timeout=120) as c:
                while not stop.is_set():
                    assert len(c.list_collections(page_size=1000)) == 1000
                    pages.append(1)
        attackers = [threading.Thread(target=lister, daemon=True) for _ in range(32)]
        for a in attackers:
            a.start()
        time.sleep(2)
        stats = []
        t_end = time.perf_counter() + 10
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            assert victim.collection_stats("mine").num_images == 0
            stats.append(time.perf_counter() - t0)
            time.sleep(0.05)
        stop.set()
        for a in attackers:
            a.join(60)
    assert len(pages) >= 32, "the attack did not run"
    assert np.median(stats) < 0.1, (np.median(stats), sorted(stats)[-3:])


def test_a_link_that_cannot_be_resolved_names_nothing_outside_the_roots(tmp_path, monkeypatch):
    """A link inside a root to /proc/1/fd/0 was answered "[Errno 13]
    Permission denied: '/proc/1/fd/0'": the target outside the roots, and
    "there but denied" told from "outside" (a twenty-sixth probe). Whatever
    error resolving raises, the answer names only the path asked for."""
    from pathlib import Path

    from imagesieve_server.paths import PathPolicy
    (tmp_path / "root").mkdir()
    link = tmp_path / "root" / "in"
    os.symlink("/proc/1/fd/0", link)
    real_resolve = Path.resolve

    def resolve(self, strict=False):
        if str(self) == str(link):
            raise PermissionError(13, "Permission denied", "/proc/1/fd/0")
        return real_resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", resolve)
    with pytest.raises(PermissionError) as e:
        PathPolicy([tmp_path / "root"]).resolve(str(link))
    assert "/proc" not in str(e.value) and "cannot be resolved inside the server's allowed roots" in str(e.value)


def _zero_window_calls(address: str, method: str = "Watch", calls: int = 1):
    return zero_window_calls(address, method, calls)[0]


def test_a_health_watcher_that_never_reads_does_not_stall_a_stop(manifest_path, tmp_path):
    """grpc_health's Watch wrote each status under the service's lock: a
    watcher with an HTTP/2 window of 0 (no token needed) held it for ever,
    so a SIGTERM never stopped the server (it still answered SERVING 40 s
    later; dropping a collection whose health entry was watched timed out
    alike, though the drop was done: a twenty-seventh probe). Writes now
    happen outside the lock."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    srv = LocalServer(["--grace-s", "2"], model=str(manifest_path), data_dir=str(tmp_path / "data"))
    srv.start()
    watchers = []
    try:
        watchers = [_zero_window_calls(srv.address) for _ in range(2)]
        time.sleep(0.5)
        seen = []
        ch = grpc.insecure_channel(srv.address)
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING

        def watch():         # a watcher that reads sees every change, as before
            try:
                for answer in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30):
                    seen.append(answer.status)
            except grpc.RpcError:
                pass
        reader = threading.Thread(target=watch)
        reader.start()
        time.sleep(0.5)
        started = time.monotonic()
        code = srv.stop(timeout=30)
        took = time.monotonic() - started
        reader.join(10)
        ch.close()
        assert code == 0 and took < 15, (code, took)
        assert seen[:2] == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING], seen
    finally:
        for w in watchers:
            w.close()
        srv.stop(timeout=5)


def test_a_connection_holds_at_most_its_share_of_health_checks_whose_answers_cannot_be_sent(manifest_path, tmp_path):
    """A health check whose answer can never be sent (an HTTP/2 window of
    0) stays open until its connection ends, and gRPC core keeps it whatever
    the handler does: 20 connections x 500 of them from one address took
    ~12 KB each, counted by no limit (a twenty-seventh probe). A connection
    now has at most --max-probes-per-connection open at once; beyond, its
    checks are refused at once, saying why. Another connection of the same
    address is answered: bounded by address, a client that answers pings
    with its window at 0 locked every health checker behind it out (a
    review)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with LocalServer(["--max-probes-per-connection", "3"], model=str(manifest_path),
                     data_dir=str(tmp_path / "data")) as srv:
        sock, conn = zero_window_calls(srv.address, "Check", calls=5)
        ch = grpc.insecure_channel(srv.address)
        try:
            refused, ended = {}, set()
            sock.settimeout(10)
            while len(ended) < 2:       # the two checks beyond the three: refused, with the reason
                data = sock.recv(1 << 16)
                assert data, "the server closed the connection"
                for event in conn.receive_data(data):
                    headers = dict(getattr(event, "headers", None) or ())
                    if "grpc-status" in headers:
                        refused[event.stream_id] = (headers["grpc-status"], headers.get("grpc-message", ""))
                    if type(event).__name__ == "StreamEnded":
                        ended.add(event.stream_id)
            assert sorted(ended) == [7, 9] and sorted(refused) == [7, 9], (ended, refused)
            assert all(code == "8" and "3 health checks are open on this connection" in message.replace("%20", " ")
                       for code, message in refused.values()), refused
            health = health_pb2_grpc.HealthStub(ch)
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING        # another connection of that address
        finally:
            sock.close()
            ch.close()


def test_a_connection_that_reads_nothing_is_closed_and_its_calls_freed(manifest_path, tmp_path):
    """A client that never reads its socket acknowledges no HTTP/2 ping: its
    connection held its stuck calls (and whatever was written to it) until
    the client left, gRPC's keepalive being 2 hours. Pinged every
    --keepalive-s, it is now closed once a ping waits as long (which ends
    its calls): the socket, still open on the client's side, reads the
    server's PING, GOAWAY and end of stream."""
    with LocalServer(["--keepalive-s", "1"], model=str(manifest_path),
                     data_dir=str(tmp_path / "data")) as srv:
        sock, conn = zero_window_calls(srv.address, "Check", calls=3)
        try:
            time.sleep(4 * 1 + 2)          # a ping, its wait, and slack for a loaded machine
            sock.settimeout(10)
            received = b""
            while chunk := sock.recv(1 << 16):
                received += chunk
            frames, i = [], 0
            while i + 9 <= len(received):
                frames.append(received[i + 3])
                i += 9 + int.from_bytes(received[i:i + 3], "big")
            assert 6 in frames and 7 in frames, frames      # a PING it never answered, then GOAWAY
        finally:
            sock.close()


def test_a_connection_filling_the_in_flight_images_does_not_queue_another_behind_it(manifest_path, photos):
    """In-flight images were admitted first come first served, ahead of the
    fair decoders: one client's 120 calls of 8 large images held all 512
    places and queued 448 more, and another client's one image waited
    22-35 s (a twenty-seventh probe). A freed place now goes to the waiting
    connection holding the fewest: here, with 2 places, one connection's 24
    calls of 8 photos in flight and another's one photo sent after them,
    that photo is answered while most of the 24 still wait (first come,
    it waited for nearly all of them)."""
    blobs = [d for d, _, _ in photos[:8]]
    with LocalServer(["--max-inflight", "2"], model=str(manifest_path)) as srv:
        # Two connections: channels of one process share one by default.
        flood_channel, victim_channel = [grpc.insecure_channel(srv.address, options=[
            ("grpc.use_local_subchannel_pool", 1)]) for _ in range(2)]
        flood = embedding_pb2_grpc.EmbeddingServiceStub(flood_channel)
        request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=str(i), data=b) for i, b in enumerate(blobs)])
        calls = [flood.Embed.future(request, timeout=120) for _ in range(24)]
        time.sleep(0.5)
        answer = embedding_pb2_grpc.EmbeddingServiceStub(victim_channel).Embed(
            embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="v", data=photos[9][0])]), timeout=120)
        done_before = sum(c.done() for c in calls)
        assert not answer.embeddings[0].HasField("error")
        assert all(not c.result().embeddings[0].HasField("error") for c in calls)
        assert done_before <= 12, done_before
        flood_channel.close()
        victim_channel.close()


def test_fair_admission_hands_a_freed_place_to_the_owner_holding_fewest_and_loses_none():
    """FairAdmission: the owner holding the fewest first, the first come
    among equals; a waiter cancelled while waiting leaves the line, and one
    cancelled in the tick its place came passes the place on."""
    from imagesieve_server.engine.async_embedder import FairAdmission

    async def main():
        admission, order = FairAdmission(2), []

        async def hold(owner, release):
            async with admission.place(owner):
                order.append(owner)
                await release.wait()
        releases = [asyncio.Event() for _ in range(6)]
        tasks = [asyncio.ensure_future(hold("flood", releases[k])) for k in range(4)]
        await asyncio.sleep(0)
        late = asyncio.ensure_future(hold("late", releases[4]))
        gone = asyncio.ensure_future(hold("gone", releases[5]))
        await asyncio.sleep(0)
        assert order == ["flood", "flood"] and admission.total == 2
        gone.cancel()                                     # leaves the line
        await asyncio.gather(gone, return_exceptions=True)
        releases[0].set()
        await asyncio.sleep(0.01)
        assert order == ["flood", "flood", "late"]        # holds none: before the flood's third
        # Granted in the tick it was cancelled: the place goes on to the next, not lost.
        releases[1].set()
        await asyncio.sleep(0)
        tasks[2].cancel()
        await asyncio.sleep(0.01)
        for r in releases:
            r.set()
        await asyncio.gather(*tasks, late, return_exceptions=True)
        assert admission.total == 0 and not admission.held and not admission._waiting
        assert order.count("flood") == 3                  # the cancelled one never ran
    asyncio.run(main())


def test_a_file_rewritten_in_place_with_its_old_mtime_is_read_again(abuse_server, root, photos):
    """Answers by server path are shared for a moment by the file's
    identity: a file rewritten in place with another picture of the same
    size and its modification time put back (cp -p, tar, rsync --inplace)
    was answered with the old picture's vector for 2 s (a twenty-seventh
    probe). Its change time, which nobody can set back, is in the key."""
    import io as _io

    def bmp(k):
        out = _io.BytesIO()
        photo_image(photos[k][0]).resize((96, 64)).save(out, "BMP")
        return out.getvalue()
    a, b = bmp(0), bmp(1)
    assert len(a) == len(b)
    path = root / "rewritten.bmp"
    path.write_bytes(a)
    st = os.stat(path)
    channel, stub = embed_stub(abuse_server.address)

    def by_path():
        r = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="p", server_path=str(path))]))
        return np.array(r.embeddings[0].vector)

    def by_bytes(data):
        return np.array(stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="d", data=data)]))
                        .embeddings[0].vector)
    va, vb = by_bytes(a), by_bytes(b)
    assert by_path() @ va > 0.999
    with open(path, "r+b") as f:
        f.write(b)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = by_path()
    channel.close()
    assert again @ vb > 0.999 and again @ va < 0.99

