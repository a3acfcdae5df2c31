"""Collections under faults, against a real server on loopback: damaged files
on disk, a full disk, create/drop races, paging and per-request limits.
Every answer must carry a deliberate status code, never UNKNOWN."""
from __future__ import annotations

import base64
import concurrent.futures
import errno
import json
import os
import shutil
import struct
import subprocess
import threading
import time

import grpc
import pytest

from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve.v1 import collections_pb2, collections_pb2_grpc, common_pb2

from test_collections_grpc import altered
from test_observability import scrape, value

METRICS = ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]


def snapshot_header(path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def logged(srv: LocalServer, *parts: str, timeout: float = 5.0) -> bool:
    """Whether a server log line holds every part (the log is read by a thread: wait a little)."""
    deadline = time.time() + timeout
    while True:
        if any(all(p in line for p in parts) for line in list(srv.log)):
            return True
        if time.time() > deadline:
            return False
        time.sleep(0.05)


def codes_of(call) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


# -- damaged files ------------------------------------------------------------

def test_damaged_snapshot_is_rebuilt_and_a_broken_store_is_reported(manifest_path, photos, tmp_path):
    data, names = [d for d, _, _ in photos], [n for _, _, n in photos]
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, Client(srv.address) as c:
        for name in ("good", "truncated", "garbage", "broken"):
            c.create_collection(name)
            assert all(r.added for r in c.add(name, data[:10], keys=names[:10]))
            c.snapshot_collection(name)
        assert all(r.added for r in c.add("truncated", data[10:12], keys=names[10:12]))   # in the log only
    col = tmp_path / "collections"
    snap = col / "truncated" / "index.snapshot"
    snap.write_bytes(snap.read_bytes()[:snap.stat().st_size // 2])
    (col / "garbage" / "index.snapshot").write_bytes(os.urandom(5000))
    for extra in ("store.sqlite-wal", "store.sqlite-shm"):
        (col / "broken" / extra).unlink(missing_ok=True)
    (col / "broken" / "store.sqlite").write_bytes(b"this is not a database " * 500)

    with LocalServer(METRICS, model=str(manifest_path), data_dir=str(tmp_path)) as srv, \
            Client(srv.address) as c:
        listed = {i.name: i for i in c.list_collections()}
        assert set(listed) == {"good", "truncated", "garbage", "broken"}
        assert "not a database" in listed["broken"].load_error
        assert not any(listed[n].load_error for n in ("good", "truncated", "garbage"))
        assert (listed["good"].num_images, listed["truncated"].num_images, listed["garbage"].num_images) == (10, 12, 10)
        # The rebuilt indexes answer, rows past the damaged snapshot included.
        for name, i in (("truncated", 3), ("truncated", 11), ("garbage", 5), ("good", 4)):
            (r,) = c.check(name, [altered(data[i])], k=1)
            assert r.verdict == "NEAR_DUPLICATE" and r.neighbors[0][0] == names[i], (name, i, r)
        assert logged(srv, "'truncated'", "rebuilding the index from the store")
        assert logged(srv, "'garbage'", "rebuilding the index from the store")
        # Every call naming the broken one says why it cannot serve.
        calls = {"stats": lambda: c.collection_stats("broken"),
                 "add": lambda: list(c.add("broken", data[:1], keys=["x"])),
                 "check": lambda: list(c.check("broken", data[:1])),
                 "snapshot": lambda: c.snapshot_collection("broken"),
                 "remove": lambda: c.remove("broken", ["x"]),
                 "create exist_ok": lambda: c.create_collection("broken", exist_ok=True)}
        for what, call in calls.items():
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, what
            assert "could not be loaded" in e.value.details() and "not a database" in e.value.details(), what
        with pytest.raises(grpc.RpcError) as e:
            c.create_collection("broken")
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert value(scrape(srv), "imagesieve_collections_failed") == 1
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        with grpc.insecure_channel(srv.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            status = {n: health.Check(health_pb2.HealthCheckRequest(service=n), timeout=10).status
                      for n in ("", "imagesieve.v1.collection/broken")}
        assert status == {"": health_pb2.HealthCheckResponse.SERVING,          # the others serve
                          "imagesieve.v1.collection/broken": health_pb2.HealthCheckResponse.NOT_SERVING}
        # Dropping it clears the way, and its health entry stops saying NOT_SERVING.
        assert c.drop_collection("broken")
        assert value(scrape(srv), "imagesieve_collections_failed") == 0
        with grpc.insecure_channel(srv.address) as ch:
            after = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="imagesieve.v1.collection/broken"), timeout=10).status
        assert after == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        c.create_collection("broken")
        assert all(r.added for r in c.add("broken", data[:2], keys=names[:2]))
    # The damaged snapshots were replaced: the next start has nothing to rebuild.
    assert snapshot_header(snap)["ntotal"] == 12
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, Client(srv.address) as c:
        assert not any("damaged" in line or "cannot be loaded" in line for line in srv.log)
        assert [i.num_images for i in c.list_collections()] == [2, 10, 10, 12]


# -- snapshots that cannot be written ----------------------------------------

def test_failed_snapshot_after_commit_keeps_adds_acknowledged(manifest_path, photos, tmp_path):
    data, names = [d for d, _, _ in photos], [n for _, _, n in photos]
    folder = tmp_path / "collections" / "snap"
    with LocalServer(["--snapshot-every", "1"], model=str(manifest_path), data_dir=str(tmp_path)) as srv, \
            Client(srv.address) as c:
        c.create_collection("snap")
        (folder / "index.snapshot.tmp").mkdir()             # every snapshot write now fails
        added = list(c.add("snap", data[:6], keys=names[:6], chunk_size=2))
        assert all(r.added and r.error is None for r in added), added
        assert c.collection_stats("snap").num_images == 6
        assert logged(srv, "snapshot of snap failed", "will be retried")
        with pytest.raises(grpc.RpcError) as e:             # asked for explicitly, the failure is reported
            c.snapshot_collection("snap")
        assert e.value.code() == grpc.StatusCode.INTERNAL and "previous snapshot kept" in e.value.details()
        (folder / "index.snapshot.tmp").rmdir()
        assert all(r.added for r in c.add("snap", data[6:8], keys=names[6:8]))
    # Closing the collection retried the snapshot: it covers every row.
    assert snapshot_header(folder / "index.snapshot")["ntotal"] == 8
    with LocalServer([], model=str(manifest_path), data_dir=str(tmp_path)) as srv, Client(srv.address) as c:
        assert c.collection_stats("snap").num_images == 8
        (r,) = c.check("snap", [altered(data[7])], k=1)
        assert r.verdict == "NEAR_DUPLICATE" and r.neighbors[0][0] == names[7]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: a disk that really fills up (needs root to mount)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path, leave: int = 0) -> None:
    """Write path/filler until only ``leave`` bytes are free (0: until the disk is full)."""
    with open(path / "filler", "ab", buffering=0) as f:
        while True:
            st = os.statvfs(path)
            want = st.f_bavail * st.f_frsize - leave
            if want <= 0:
                return
            try:
                f.write(b"\1" * min(want, 1 << 20))
            except OSError as e:
                assert e.errno == errno.ENOSPC and leave == 0, e
                return


def test_full_disk_keeps_commits_and_refuses_clearly(manifest_path, photos, small_disk):
    data = [d for d, _, _ in photos]
    many = [data[i % 20] for i in range(60)]
    snap = small_disk / "collections" / "full" / "index.snapshot"
    with LocalServer(["--snapshot-every", "1"], model=str(manifest_path), data_dir=str(small_disk)) as srv, \
            Client(srv.address) as c:
        c.create_collection("full")
        assert all(r.added for r in c.add("full", many, keys=[f"k{i}" for i in range(60)], chunk_size=20))
        assert snap.stat().st_size > 200_000                 # 60 x 4 KB vectors
        # Room for one more row in the log, not for the snapshot after it.
        fill(small_disk, leave=snap.stat().st_size // 2)
        (r,) = c.add("full", [data[0]], keys=["after-fill"])
        assert r.added and r.error is None, r
        assert snapshot_header(snap)["ntotal"] == 60               # the snapshot after it failed
        assert logged(srv, "snapshot of full failed", "No space left")
        fill(small_disk)                                    # now nothing fits
        rs = list(c.add("full", data[1:4], keys=["a", "b", "c"]))
        assert all(not r.added and r.error.code == "RESOURCE_EXHAUSTED" for r in rs), rs
        assert "disk is full" in rs[0].error.message and "rollback" not in rs[0].error.message
        with pytest.raises(grpc.RpcError) as e:
            c.snapshot_collection("full")
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.create_collection("another")
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
        assert [i.name for i in c.list_collections()] == ["full"]
        (small_disk / "filler").unlink()                    # space again: everything works
        assert all(r.added for r in c.add("full", data[1:4], keys=["a", "b", "c"]))
        assert c.snapshot_collection("full").num_images == 64
        c.create_collection("another")
    with LocalServer([], model=str(manifest_path), data_dir=str(small_disk)) as srv, Client(srv.address) as c:
        assert c.collection_stats("full").num_images == 64


# -- races --------------------------------------------------------------------

def test_concurrent_create_drop_and_calls_get_deliberate_codes(server, photos):
    data = [d for d, _, _ in photos]
    seen: dict[str, set[str]] = {}
    lock = threading.Lock()
    stop = time.time() + 4.0

    def work(worker: int):
        with Client(server.address, timeout=30) as c:
            calls = {"create": lambda: c.create_collection("contested"),
                     "drop": lambda: c.drop_collection("contested"),
                     "add": lambda: list(c.add("contested", [data[worker]], keys=[f"{worker}-{time.time()}"])),
                     "stats": lambda: c.collection_stats("contested"),
                     "check": lambda: list(c.check("contested", [data[worker]], add_if_unique=True,
                                                   keys=[f"c{worker}-{time.time()}"])),
                     "remove": lambda: c.remove("contested", [f"{worker}"]),
                     "snapshot": lambda: c.snapshot_collection("contested"),
                     "list": lambda: c.list_collections()}
            order = list(calls)
            i = worker
            while time.time() < stop:
                what = order[(i // 2) % len(order)] if i % 2 else ("create", "drop")[(i // 2) % 2]
                code = codes_of(calls[what])
                with lock:
                    seen.setdefault(what, set()).add(code)
                i += 1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    allowed = {"OK", "ALREADY_EXISTS", "NOT_FOUND", "ABORTED"}
    assert all(codes <= allowed for codes in seen.values()), seen
    assert set(seen) == {"create", "drop", "add", "stats", "check", "remove", "snapshot", "list"}, seen
    assert "OK" in seen["create"] and "OK" in seen["drop"], seen
    with Client(server.address) as c:
        c.drop_collection("contested")
        info = c.create_collection("contested")
        assert info.num_images == 0 and c.drop_collection("contested")


# -- paging and limits --------------------------------------------------------

def test_list_collections_pages(manifest_path):
    names = [f"p{i:03d}" for i in range(105)]
    with LocalServer([], model=str(manifest_path)) as srv, Client(srv.address) as c, \
            grpc.insecure_channel(srv.address) as ch:
        for n in names:
            c.create_collection(n)
        stub = collections_pb2_grpc.CollectionServiceStub(ch)

        def page(size=0, token=""):
            return stub.ListCollections(collections_pb2.ListCollectionsRequest(page_size=size, page_token=token),
                                        timeout=30)

        first = page()
        assert [i.name for i in first.collections] == names[:100] and first.next_page_token
        last = page(token=first.next_page_token)
        assert [i.name for i in last.collections] == names[100:] and not last.next_page_token
        assert len(page(5000).collections) == 105                   # above the maximum: the maximum
        # Small pages; drops and creates between pages skip or repeat nothing that stays.
        got, token = [], ""
        while True:
            p = page(7, token)
            assert len(p.collections) <= 7
            got += [i.name for i in p.collections]
            token = p.next_page_token
            if len(got) == 14:
                c.drop_collection("p003")                           # already listed
                c.drop_collection("p050")                           # not yet listed
                c.create_collection("p0500")                        # sorts after p050
            if not token:
                break
        assert got == names[:50] + ["p0500"] + names[51:]
        for bad in ({"size": -1}, {"token": "garbage!"}, {"token": base64.urlsafe_b64encode(b"p001").decode()}):
            with pytest.raises(grpc.RpcError) as e:
                page(**bad)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        # A token longer than any this server gives is refused before it is decoded (a probe's
        # 48 MB tokens held the event loop); one of the right form was decoded and answered.
        with pytest.raises(grpc.RpcError) as e:
            page(token=base64.urlsafe_b64encode(b"after:" + b"p" * 300).decode())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "characters" in e.value.details()
        # The client follows the pages.
        assert len(c.list_collections()) == 104
        assert [i.name for i in c.list_collections(page_size=10)] == sorted(set(names) - {"p003", "p050"} | {"p0500"})


def test_add_images_request_and_text_limits(server, photos):
    data = [d for d, _, _ in photos]
    with Client(server.address) as c, grpc.insecure_channel(server.address) as ch:
        c.create_collection("limits")
        stub = collections_pb2_grpc.CollectionServiceStub(ch)
        flood = collections_pb2.AddImagesRequest(
            collection="limits", images=[common_pb2.Image(key=f"f{i}", data=b"x") for i in range(300)])
        with pytest.raises(grpc.RpcError) as e:
            list(stub.AddImages(iter([flood]), timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--max-images-per-request" in e.value.details()
        images = [common_pb2.Image(key="ok-1", data=data[0]),
                  common_pb2.Image(key="k" * 2000, data=data[1]),
                  common_pb2.Image(key="long-label", label="l" * 300, data=data[2]),
                  common_pb2.Image(key="long-split", split="s" * 100, data=data[3]),
                  common_pb2.Image(key="ok-2", label="cat", split="train", data=data[4])]
        (resp,) = stub.AddImages(iter([collections_pb2.AddImagesRequest(collection="limits", images=images)]),
                                 timeout=60)
        assert [r.added for r in resp.results] == [True, False, False, False, True]
        for r, field in zip(resp.results[1:4], ("key", "label", "split")):
            assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert r.error.message.startswith(field) and "above the limit" in r.error.message
        assert c.collection_stats("limits").num_images == 2
        assert c.drop_collection("limits")


def test_a_store_out_of_descriptors_is_resource_exhausted(tmp_path):
    """Out of file descriptors is a condition to retry, not a fault of ours:
    EMFILE, and SQLite's "unable to open database file" while the process
    holds all it may, are RESOURCE_EXHAUSTED (they were INTERNAL). In a
    process of its own: in the test run's, a thread an earlier test left
    (a channel closing) freed a descriptor between the two steps, and the
    store opened (a full run, 2026-12-07)."""
    import subprocess
    import sys

    from imagesieve_server.collections.store import storage_error
    assert storage_error(OSError(errno.EMFILE, "Too many open files"), "x").code == "RESOURCE_EXHAUSTED"
    script = f"""
import errno, os, resource
from imagesieve_server.collections.store import CollectionError, Store
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
held = []
try:
    while True:
        held.append(open(os.devnull))
except OSError as e:
    assert e.errno == errno.EMFILE, e
try:
    Store({str(tmp_path / "store.sqlite")!r})
    print("opened")
except CollectionError as e:
    print(e.code, e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("RESOURCE_EXHAUSTED") and "file descriptor" in r.stdout, r.stdout
