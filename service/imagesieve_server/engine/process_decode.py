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
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
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

    def _batches(self, images: Iterable[bytes], with_signatures: bool) -> Iterator[DecodedBatch]:
        it = iter(images)
        free = collections.deque(range(SLOTS))
        order: collections.deque[_Batch] = collections.deque()
        by_slot: dict[int, _Batch] = {}
        unsent: collections.deque = collections.deque()      # (slot, row, images, retry)
        exhausted = False
        while True:
            while free and not exhausted:            # fill the free buffers from the input
                chunk_images = []
                slot = free[0]
                for data in it:
                    chunk_images.append(data)
                    if len(chunk_images) == self.batch_size:
                        break
                else:
                    exhausted = True
                if not chunk_images:
                    break
                free.popleft()
                batch = _Batch(slot, [None] * len(chunk_images), len(chunk_images))
                order.append(batch)
                by_slot[slot] = batch
                for row in range(0, len(chunk_images), CHUNK):
                    unsent.append((slot, row, chunk_images[row:row + CHUNK], False))
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
                return
            self._dispatch(unsent, with_signatures)
            self._collect(by_slot, unsent)

    def batches(self, images: Iterable[bytes], with_signatures: bool = False) -> Iterator[DecodedBatch]:
        """Decode ``images`` (encoded bytes) into batches of ``batch_size``
        (the last one shorter), in order. Each yielded batch's ``tensors``
        is valid until the next one is asked for. ``with_signatures``: also
        take each image's layout signature and properties (as
        ``Embedder.prepare``)."""
        if self._busy:
            raise RuntimeError("this ProcessDecoder is already decoding for another call (one call at a time: "
                               "finish or close the other, or use one Embedder a thread)")
        self._busy = True
        try:
            self._start()
            yield from self._batches(images, with_signatures)
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

    def _dispatch(self, unsent: collections.deque, with_signatures: bool) -> None:
        """Send chunks to the least busy workers. An image being decoded
        again after a worker died goes to an idle worker and is its only
        work: if that worker dies too, nothing else was lost with it."""
        while unsent:
            retry = unsent[0][3]
            ready = [w for w in self._pool if not w.held or (not retry and not w.held[0][3]
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

    def _collect(self, by_slot: dict, unsent: collections.deque) -> None:
        """Wait for answers (or a worker's death) and record them."""
        waitables = {}
        for w in self._pool:
            if w.held:
                waitables[w.conn] = w
                waitables[w.process.sentinel] = w
        for ready in connection.wait(list(waitables)):
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
