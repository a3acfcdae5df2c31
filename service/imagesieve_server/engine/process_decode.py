"""Decoding in worker processes, straight into shared-memory batch buffers.

Why: decoding threads share one GIL with each other and with the model call;
on a 16-core GPU host they reached 4.7x one thread at best
(``bench/decode_scaling.py``). Worker processes scale with the cores, and
each writes its model input into a row of a batch buffer in shared memory:
no tensor is pickled, and the model reads the batch where the workers wrote
it (no stacking copy). Only the encoded bytes travel to a worker, and only
small answers (size, layout signature, properties) come back.

``ProcessDecoder.batches`` yields ``DecodedBatch`` in input order. A bad
image fails alone (its ``DecodeError`` in place of its row); a worker that
dies (a decoder crash) is replaced, and the images it held are decoded again
one at a time, so only the image that kills a worker again fails.

The server keeps its decoding threads (``fair_pool``): its decodes are
charged against the memory budget and shared fairly between connections.
This is for batch work in one process: the audit, ``Embedder.embed``.

``BatchFeed``: batches put one at a time from another thread (the GPU
pipeline's share for the workers, ``Embedder(gpu_decode_share=...)``), each
decoded as one batch; the decoder waits on the feed only when it has nothing
else in flight, so what it holds is collected while the next batch is routed.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import socket
import threading
import time
import weakref
from multiprocessing import connection, shared_memory
from typing import Iterable, Iterator

import numpy as np

from .decode import DecodeError, DecodeLimits

CHUNK = 8          # images a message to a worker: fewer messages, and a chunk's answers stay under a pipe's buffer
IN_FLIGHT = 2      # chunks a worker holds: one decoding, one waiting, so it never idles between messages
SLOTS = 3          # batch buffers: one with the model, two filling ahead (as the threads' lookahead)
WORKER_DIED = "the decoder process died on this image"
READY = "ready"
START_TIMEOUT_S = 120      # a worker's imports (numpy, Pillow, OpenCV) on a loaded host
# A fed batch is cut finer: over all the workers, at most this many bytes of
# files a chunk, and a chunk over AHEAD_BYTES goes only to an idle worker (a
# message larger than the socket's buffer would block the sender until a busy
# worker reads it: one 12 MP photo a chunk, sent when its worker is free).
CHUNK_BYTES = 1 << 20
AHEAD_BYTES = 128 << 10
# A batch of files cut short from this many bytes: the SLOTS batches in flight hold files
# of at most ~3 x this (two batches of 32 scans of 500 MB would be 32 GB).
BATCH_BYTES = 96 << 20
END = "end"                # what ``take`` gives when a source has no more batches (None: none yet)


@dataclasses.dataclass
class DecodedItem:
    """One image's decode: its original size and, when asked, its layout
    signature and properties; or ``error``."""
    width: int = 0
    height: int = 0
    signature: np.ndarray | None = None
    properties: np.ndarray | None = None
    error: DecodeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class DecodedBatch:
    """``items``: one per input image, in order. ``tensors``: the model
    inputs of the images that decoded, in order, (n_ok, *item_shape): a view
    of the shared buffer when every image decoded (no copy), valid until the
    next batch is asked for."""
    items: list[DecodedItem]
    tensors: np.ndarray


class BatchFeed:
    """Batches for ``ProcessDecoder.batches``, put from another thread: each
    ``put`` is one batch (at most the decoder's ``batch_size`` images),
    yielded in the order put; ``close`` ends the stream after them.
    ``taken_at``: when the decoder took each batch (``time.perf_counter``),
    in order, for a caller that measures the workers' rate."""

    def __init__(self):
        self._groups: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._recv, self._send = socket.socketpair()    # wakes the decoder's wait for answers
        self._recv.setblocking(False)
        self._send.setblocking(False)
        self.taken_at: collections.deque = collections.deque()

    def put(self, images: list[bytes]) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("this BatchFeed is closed")
            self._groups.append(list(images))
            self._cond.notify()
        self._wake()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._wake()

    def _wake(self) -> None:
        try:
            self._send.send(b"\0")
        except OSError:
            pass                  # a wake-up is already pending (buffer full), or the feed is released

    def take(self, block: bool):
        """The next batch; when none is put yet: wait for one (``block``) or
        None; END once closed and all taken."""
        with self._cond:
            while block and not self._groups and not self._closed:
                self._cond.wait()
            if self._groups:
                self.taken_at.append(time.perf_counter())
                return self._groups.popleft()
            return END if self._closed else None

    def fileno(self) -> int:      # for ``connection.wait``
        return self._recv.fileno()

    def drain(self) -> None:
        try:
            while self._recv.recv(4096):
                pass
        except OSError:
            pass

    def release(self) -> None:
        self._recv.close()
        self._send.close()


class _Cut:
    """An iterable of images as batches of ``size`` and at most ``max_bytes``
    (one image at least)."""

    def __init__(self, images: Iterable[bytes], size: int, max_bytes: int):
        self._it, self._size, self._max_bytes = iter(images), size, max_bytes

    def take(self, block: bool):
        group, held = [], 0
        for data in self._it:
            group.append(data)
            held += len(data)
            if len(group) == self._size or held >= self._max_bytes:
                break
        return group or END


@dataclasses.dataclass
class _Batch:
    slot: int
    items: list                  # DecodedItem, or None while its image is decoding
    waiting: int


def _worker_main(conn, shm_name: str, shape: tuple, dtype: str, manifest_path: str, limits: DecodeLimits) -> None:
    """A worker: decode chunks into rows of the shared buffer until told to stop."""
    import cv2

    from imagesieve_models.manifest import ModelManifest

    from .preprocess import Preprocessor
    from .properties import image_properties
    from .signature import layout_signature
    from .decode import decode_image

    cv2.setNumThreads(1)          # one process a core already
    shm = shared_memory.SharedMemory(name=shm_name)
    buffers = np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf)
    pre = Preprocessor(ModelManifest.load(manifest_path))
    pixels_only = buffers.dtype == np.uint8
    try:
        conn.send(READY)
        while True:
            msg = conn.recv()
            if msg is None:
                return
            slot, first_row, images, with_signatures = msg
            answers = []
            for j, data in enumerate(images):
                try:
                    img = decode_image(data, pre.decode_min_size, limits)
                    px = pre.pixels(img)
                    out = buffers[slot, first_row + j]
                    if pixels_only:
                        out[...] = px
                    else:
                        pre.normalize(px, out=out)
                    w, h = img.info["original_size"]
                    answers.append((w, h, layout_signature(img) if with_signatures else None,
                                    image_properties(img) if with_signatures else None, None))
                except DecodeError as e:
                    answers.append((0, 0, None, None, (str(e), e.code)))
                except Exception as e:  # noqa: BLE001 - a decoder bug fails this image, not the batch
                    answers.append((0, 0, None, None, (f"cannot decode: {type(e).__name__}: {e}", "INVALID_ARGUMENT")))
            conn.send((slot, first_row, answers))
    except (EOFError, OSError, KeyboardInterrupt):
        return                    # the parent is gone or interrupted: nothing left to answer
    finally:
        del buffers
        shm.close()


class _Worker:
    def __init__(self, ctx, args):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, *args), daemon=True,
                                   name="imagesieve-decode-proc")
        self.process.start()
        child.close()
        self.held: collections.deque = collections.deque()   # chunks sent, not answered: (slot, row, images, retry)

    def wait_ready(self) -> None:
        """A worker that cannot start is this host's problem, not an
        image's: say so once, rather than blame every image it would decode."""
        try:
            ready = self.conn.poll(START_TIMEOUT_S) and self.conn.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise RuntimeError("a decoding worker process could not start (see its error above; a script that "
                               "decodes in processes needs an `if __name__ == \"__main__\":` guard, as Python's "
                               "multiprocessing requires); decode on threads instead (in_processes=False, "
                               "--decode-processes 0)")

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class ProcessDecoder:
    """Decode and preprocess images in ``workers`` processes into a ring of
    shared batch buffers.

    Parameters
    ----------
    manifest_path : the model's manifest (preprocessing: input size, crop, mean, std).
    input_kind : "normalized" -> (3, S, S) float32 rows; "pixels" -> (S, S, 3) uint8.
    batch_size : images a batch (rows of a buffer).
    workers : processes; 0 = one per core.
    limits : byte and pixel limits, applied in the workers before decoding.
    """

    def __init__(self, manifest_path, input_kind: str, batch_size: int, workers: int = 0,
                 limits: DecodeLimits = DecodeLimits()):
        from imagesieve_models.manifest import ModelManifest
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        size = int(ModelManifest.load(manifest_path).input_size)
        if input_kind == "normalized":
            item_shape, dtype = (3, size, size), np.float32
        elif input_kind == "pixels":
            item_shape, dtype = (size, size, 3), np.uint8
        else:
            raise ValueError(f"input_kind must be 'normalized' or 'pixels', got {input_kind!r}")
        self.batch_size = batch_size
        self.workers = workers or (os.cpu_count() or 1)
        shape = (SLOTS, batch_size, *item_shape)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self._shm = shared_memory.SharedMemory(create=True, size=nbytes)
        # Unlinked however this object ends (a name left in /dev/shm outlives the process).
        self._unlink = weakref.finalize(self, _release, self._shm)
        self.buffers = np.ndarray(shape, dtype=dtype, buffer=self._shm.buf)
        self._args = (self._shm.name, shape, np.dtype(dtype).str, str(manifest_path), limits)
        # spawn: a fork would copy the parent's threads' locks (ONNX Runtime, gRPC) mid-use.
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []
        self._busy = False

    def _start(self) -> None:
        new = [_Worker(self._ctx, self._args) for _ in range(self.workers - len(self._pool))]
        self._pool += new                  # started together, then each waited for
        try:
            for w in new:
                w.wait_ready()
        except RuntimeError:
            self._stop_workers()
            raise

    def _batches(self, source, with_signatures: bool) -> Iterator[DecodedBatch]:
        fed = isinstance(source, BatchFeed)
        free = collections.deque(range(SLOTS))
        order: collections.deque[_Batch] = collections.deque()
        by_slot: dict[int, _Batch] = {}
        unsent: collections.deque = collections.deque()      # (slot, row, images, retry)
        exhausted = False
        while True:
            while free and not exhausted:            # fill the free buffers from the input
                chunk_images = source.take(block=not order)
                if chunk_images is END:
                    exhausted = True
                    break
                if chunk_images is None:
                    break                            # (a feed) none put yet: collect meanwhile
                if len(chunk_images) > self.batch_size:
                    raise ValueError(f"a fed batch of {len(chunk_images)} images, more than {self.batch_size}")
                slot = free.popleft()
                batch = _Batch(slot, [None] * len(chunk_images), len(chunk_images))
                order.append(batch)
                by_slot[slot] = batch
                for row, part in (self._spread(chunk_images) if fed else
                                  ((r, chunk_images[r:r + CHUNK]) for r in range(0, len(chunk_images), CHUNK))):
                    unsent.append((slot, row, part, False))
            if order and order[0].waiting == 0:
                batch = order.popleft()
                del by_slot[batch.slot]
                ok_rows = [i for i, item in enumerate(batch.items) if item.ok]
                view = self.buffers[batch.slot, :len(batch.items)]
                tensors = view if len(ok_rows) == len(batch.items) else view[ok_rows]
                yield DecodedBatch(batch.items, tensors)
                free.append(batch.slot)               # the consumer is done with it
                continue
            if not order:
                if exhausted:
                    return
                continue                             # (a feed) wait for the next batch
            self._dispatch(unsent, with_signatures, AHEAD_BYTES if fed else None)
            self._collect(by_slot, unsent, source if fed else None)

    def _spread(self, images: list[bytes]) -> list[tuple[int, list[bytes]]]:
        """A fed batch in chunks over all the workers: (first row, images)
        of at most CHUNK images and CHUNK_BYTES (one image at least)."""
        most = max(1, min(CHUNK, -(-len(images) // self.workers)))
        chunks, start, size = [], 0, 0
        for j, data in enumerate(images):
            if j > start and (j - start >= most or size + len(data) > CHUNK_BYTES):
                chunks.append((start, images[start:j]))
                start, size = j, 0
            size += len(data)
        if start < len(images):
            chunks.append((start, images[start:]))
        return chunks

    def batches(self, images: Iterable[bytes] | BatchFeed, with_signatures: bool = False
                ) -> Iterator[DecodedBatch]:
        """Decode ``images`` (encoded bytes) into batches of ``batch_size``
        (the last one shorter), in order; or, from a ``BatchFeed``, each
        batch put as one (until it is closed). Each yielded batch's
        ``tensors`` is valid until the next one is asked for.
        ``with_signatures``: also take each image's layout signature and
        properties (as ``Embedder.prepare``)."""
        if self._busy:
            raise RuntimeError("this ProcessDecoder is already decoding for another call (one call at a time: "
                               "finish or close the other, or use one Embedder a thread)")
        self._busy = True
        try:
            self._start()
            source = images if isinstance(images, BatchFeed) else _Cut(images, self.batch_size, BATCH_BYTES)
            yield from self._batches(source, with_signatures)
        except GeneratorExit:
            self._drain()             # the consumer stopped early: keep the workers, drop their late answers
            raise
        except BaseException:
            self._stop_workers()      # interrupted (Ctrl-C) or failed: a half-sent message may never be answered
            raise
        finally:
            self._busy = False

    def _drain(self) -> None:
        """Wait out the chunks still held (the consumer stopped early), so
        that no stale answer reaches the next call; a worker that does not
        answer within a minute is replaced."""
        for w in list(self._pool):
            while w.held:
                if not w.conn.poll(60) or not self._discard_answer(w):
                    w.kill()
                    self._pool.remove(w)
                    break

    @staticmethod
    def _discard_answer(w: _Worker) -> bool:
        try:
            w.conn.recv()
        except Exception:  # noqa: BLE001 - a cut-off message: the worker is replaced
            return False
        w.held.popleft()
        return True

    def _stop_workers(self) -> None:
        for w in self._pool:
            w.kill()
        self._pool = []

    def _dispatch(self, unsent: collections.deque, with_signatures: bool, ahead_bytes: int | None = None) -> None:
        """Send chunks to the least busy workers. An image being decoded
        again after a worker died goes to an idle worker and is its only
        work: if that worker dies too, nothing else was lost with it. With
        ``ahead_bytes``, a chunk of more bytes goes only to an idle worker."""
        while unsent:
            alone = unsent[0][3] or (ahead_bytes is not None and sum(map(len, unsent[0][2])) > ahead_bytes)
            ready = [w for w in self._pool if not w.held or (not alone and not w.held[0][3]
                                                               and len(w.held) < IN_FLIGHT)]
            if not ready:
                return
            worker = min(ready, key=lambda w: len(w.held))
            chunk = unsent.popleft()
            worker.held.append(chunk)
            slot, row, images, _ = chunk
            try:
                worker.conn.send((slot, row, images, with_signatures))
            except (BrokenPipeError, ConnectionError):
                pass                                   # it died; _collect sees its sentinel

    def _collect(self, by_slot: dict, unsent: collections.deque, feed: BatchFeed | None = None) -> None:
        """Wait for answers (or a worker's death, or a batch put on ``feed``) and record them."""
        waitables = {}
        for w in self._pool:
            if w.held:
                waitables[w.conn] = w
                waitables[w.process.sentinel] = w
        if feed is not None:
            waitables[feed] = None
        for ready in connection.wait(list(waitables)):
            if ready is feed:
                feed.drain()                           # the loop takes what was put
                continue
            worker = waitables[ready]
            if worker not in self._pool:
                continue                               # replaced already (its sentinel came first)
            if ready is worker.conn:
                try:
                    slot, first_row, answers = worker.conn.recv()
                except (EOFError, OSError):
                    continue                           # died mid-answer; its sentinel follows
                worker.held.popleft()
                batch = by_slot[slot]
                for j, (w, h, sig, props, err) in enumerate(answers):
                    batch.items[first_row + j] = DecodedItem(w, h, sig, props,
                                                             DecodeError(*err) if err else None)
                batch.waiting -= len(answers)
            elif not worker.process.is_alive():
                self._replace(worker, by_slot, unsent)

    def _replace(self, dead: _Worker, by_slot: dict, unsent: collections.deque) -> None:
        """A worker died: start another; decode what it held again one image
        at a time, and fail an image that was already alone."""
        self._pool.remove(dead)
        dead.kill()
        for slot, row, images, retry in dead.held:
            if retry:
                batch = by_slot[slot]
                batch.items[row] = DecodedItem(error=DecodeError(WORKER_DIED))
                batch.waiting -= 1
            else:
                for j in reversed(range(len(images))):
                    unsent.appendleft((slot, row + j, [images[j]], True))
        worker = _Worker(self._ctx, self._args)
        self._pool.append(worker)
        worker.wait_ready()

    def close(self) -> None:
        """Stop the workers and free the shared buffers."""
        for w in self._pool:
            try:
                w.conn.send(None)
            except (BrokenPipeError, ConnectionError, OSError):
                pass
        for w in self._pool:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
            w.conn.close()
        self._pool = []
        self.buffers = None
        self._unlink()


def _release(shm: shared_memory.SharedMemory) -> None:
    try:
        shm.close()
    except BufferError:
        pass                      # a view still exported: the unlink below still frees the name
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
