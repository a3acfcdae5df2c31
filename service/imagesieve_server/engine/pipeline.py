"""The embedding pipeline: decode -> preprocess -> model -> normalize.

``Embedder`` is the whole pipeline in-process (no gRPC): a thread pool
decodes and preprocesses ahead while the model runs on full batches. The
server uses the same two halves (``prepare`` in its pool, the model behind a
``DynamicBatcher``), so both paths give identical vectors.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .budget import MemoryBudget
from .decode import DecodeError, DecodeLimits, decode_bytes, decode_image, output_pixels
from .executor import INPUT_KINDS, ModelExecutor
from .onnx_executor import OnnxExecutor
from .preprocess import Preprocessor
from .process_decode import BatchFeed, ProcessDecoder
from .properties import image_properties
from .signature import content_box, layout_signature


DECODE_BUDGET_WAIT_S = 2.0   # a decode waits this long for memory before it is refused
# gpu_decode_share="auto": the GPU's share of the routed JPEGs before both
# sides have been measured, its bounds (each side keeps some images, so that
# its rate stays measured) and the weight of a new rate in each side's EWMA.
AUTO_SHARE_START = 0.5
AUTO_SHARE_BOUNDS = (0.05, 0.95)
AUTO_RATE_WEIGHT = 0.5


# The layout signature's and the image properties' working copies of a
# decoded image (a grayscale copy, an RGB one, their arrays), bytes a pixel:
# measured +286 and +111 MiB at 100 MP beyond the decode's own peak (an
# attack: two threads embedding 100 MP TIFFs with signatures passed a
# 512 MiB budget by 300 MiB).
ANALYSIS_BYTES_PER_PIXEL = 4
# Files read ahead of the model at most (beyond one): two batches of 500 MB scans, 64 files
# read ahead, held 32 GB (a probe: 16 sparse 500 MB files, 8 GB). The decoding processes
# cut their batches by bytes likewise (process_decode.BATCH_BYTES).
READ_AHEAD_BYTES = 256 << 20


@dataclasses.dataclass
class PreparedImage:
    tensor: np.ndarray     # model input: (3, S, S) float32, or (S, S, 3) uint8 pixels (executor.input_kind)
    width: int             # original size, before any scaling
    height: int
    signature: np.ndarray | None = None   # (SIGNATURE_BYTES,) uint8 layout signature (engine.signature)
    properties: np.ndarray | None = None  # (properties.COUNT,) float32 (engine.properties), with the signature
    charged: int = 0       # budget bytes still charged for ``tensor``: the holder releases them after the model


@dataclasses.dataclass
class ImageEmbedding:
    """One image's answer: ``vector`` (D,) unit float32, or ``error`` set."""
    vector: np.ndarray | None = None
    logits: np.ndarray | None = None
    width: int = 0
    height: int = 0
    error: DecodeError | None = None
    signature: np.ndarray | None = None    # layout signature for duplicate verification
    properties: np.ndarray | None = None   # brightness, contrast, ... (engine.properties), with the signature

    @property
    def ok(self) -> bool:
        return self.error is None


RUNTIMES = ("onnx", "torch")


class Embedder:
    """Images (encoded bytes) -> L2-normalized embeddings, in-process.

    Parameters
    ----------
    executor : the model runtime (``OnnxExecutor`` or ``TorchExecutor``).
    max_batch_size : images per model call.
    decode_workers : threads decoding ahead of the model; 0 = one per core.
    limits : byte and pixel limits applied before decoding.
    budget : the server's memory budget; each decode charges its estimated
        peak (``decode.decode_bytes``, from the header) while it runs, and is
        refused (RESOURCE_EXHAUSTED) when the budget cannot hold it.
    decode_processes : worker processes for ``embed(..., in_processes=True)``,
        which decode into shared batch buffers (``process_decode``; started on
        first use); 0 = one per core. ``prepare`` (the server's path, where
        the budget charges each decode) always runs in the caller's thread.
    gpu_decode : decode JPEGs on the model's device for ``embed`` without
        signatures (``gpu_decode.GpuJpegDecoder``; the torch runtime only):
        True (on whatever device the executor uses; on a CPU that exercises
        the same code through torchvision's CPU decoder), "auto" (when the
        executor is on CUDA and torchvision decodes a probe JPEG there),
        False (the default), or a ``GpuJpegDecoder``. Images it does not
        take decode as before.
    gpu_decode_share : with a GPU decoder, the share of the JPEGs it could
        take that it does decode; the rest of them decode at the same time
        in the ``decode_processes`` worker processes (``process_decode``,
        through a ``BatchFeed``), the two halves joined on the device in
        input order. 1.0 (the default): all on the GPU, as before; 0: all in
        the workers; "auto": from each side's measured images/s (an EWMA of
        each batch's), the GPU's rate over both, so that the two finish a
        batch together (AUTO_SHARE_START before either is measured, then
        the side not yet measured first; within AUTO_SHARE_BOUNDS, and one
        image of a batch each at least, so that both stay measured). The
        workers' vectors are the CPU path's.
    """

    def __init__(self, executor: ModelExecutor, max_batch_size: int = 32, decode_workers: int = 0,
                 limits: DecodeLimits = DecodeLimits(), budget: MemoryBudget | None = None,
                 decode_processes: int = 0, gpu_decode: bool | str = False,
                 gpu_decode_share: float | str = 1.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if executor.input_kind not in INPUT_KINDS:
            raise ValueError(f"executor input_kind must be one of {INPUT_KINDS}, got {executor.input_kind!r}")
        self.executor = executor
        self.preprocessor = Preprocessor(executor.manifest)
        # What the decoders hand the model, chosen once: normalized floats, or
        # the uint8 pixels an executor normalizes on its device.
        self._model_input = (self.preprocessor if executor.input_kind == "normalized"
                             else self.preprocessor.pixels)
        self.max_batch_size = max_batch_size
        size = self.preprocessor.size
        self._tensor_bytes = 3 * size * size * (4 if executor.input_kind == "normalized" else 1)
        self.limits = limits
        self.budget = budget or MemoryBudget(0)
        self.decode_workers = decode_workers or (os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.decode_workers,
                                       thread_name_prefix="imagesieve-decode")
        if decode_processes < 0:
            raise ValueError(f"decode_processes must be >= 0, got {decode_processes}")
        self.decode_processes = decode_processes or (os.cpu_count() or 1)
        self.process_decoder: ProcessDecoder | None = None
        self._unpin_buffers = None      # undoes the page-locking of the process decoder's buffers
        self.gpu_decoder = None
        if gpu_decode:
            from .gpu_decode import gpu_decoder_for      # torch and torchvision only when asked for
            self.gpu_decoder = gpu_decoder_for(executor, self.preprocessor, limits, gpu_decode)
        # One thread ahead of the model: routing and the GPU decode of the next batch.
        self._gpu_pool = ThreadPoolExecutor(1, thread_name_prefix="imagesieve-gpu-decode") \
            if self.gpu_decoder is not None else None
        if gpu_decode_share != "auto" and not (isinstance(gpu_decode_share, (int, float))
                                               and 0 <= gpu_decode_share <= 1):
            raise ValueError(f"gpu_decode_share must be in [0, 1] or 'auto', got {gpu_decode_share!r}")
        self.gpu_decode_share = gpu_decode_share
        # images/s of the GPU decoder and of the workers, EWMAs over batches ("auto")
        self.decode_rates: dict[str, float | None] = {"gpu": None, "workers": None}
        # The split is on: each call's feeding thread (``_embed_split``) gives
        # the workers their share and takes their batches to the device.
        self._split = self.gpu_decoder is not None and gpu_decode_share != 1
        self._open_feeds: set[BatchFeed] = set()    # of calls in progress: ``close`` ends them

    @classmethod
    def from_model(cls, model: str | None = None, runtime: str = "onnx", providers: list[str] | None = None,
                   intra_op_threads: int = 0, torch_device: str | None = None, torch_dtype: str = "float32",
                   **kwargs) -> "Embedder":
        """Build from a model name or path (see ``imagesieve_models.find_model``).

        runtime : "onnx" (ONNX Runtime; ``providers``, ``intra_op_threads``) or
            "torch" (PyTorch, for GPU hosts without ONNX Runtime's CUDA build;
            ``torch_device``, ``torch_dtype``; see ``TorchExecutor``; with it
            ``gpu_decode=True`` or ``"auto"`` decodes JPEGs on its device).
        """
        from imagesieve_models.manifest import find_model
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if runtime == "torch":
            from .torch_executor import TorchExecutor  # torch only when asked for
            return cls(TorchExecutor(find_model(model), torch_device, torch_dtype), **kwargs)
        return cls(OnnxExecutor(find_model(model), providers, intra_op_threads), **kwargs)

    @property
    def dim(self) -> int:
        return self.executor.dim

    def prepare(self, data: bytes, with_signature: bool = False, with_properties: bool | None = None
                ) -> PreparedImage:
        """Decode and preprocess one image; ``with_signature``: also take its
        layout signature (duplicate verification), ``with_properties`` (by
        default as ``with_signature``) its properties (the image-property
        check), from the same decoded pixels (~0.3-2 ms and ~0.7-2.8 ms an
        image at 224-1024 px, so only for callers that store or compare them).
        Raises DecodeError."""
        min_size = self.preprocessor.decode_min_size
        charged = []
        analysed = with_signature or bool(with_properties)

        def charge(header) -> None:
            # The decode's peak and the model input that outlives it (it waits
            # for the model: up to --max-inflight of them), and the signature's
            # and properties' full-size copies of the decoded image. A bounded
            # wait: this thread may wait on bytes that wait for a decoder, so it
            # ends in a refusal, never a deadlock.
            need = decode_bytes(header, min_size) + self._tensor_bytes
            if analysed:
                need += ANALYSIS_BYTES_PER_PIXEL * output_pixels(header, min_size)
            charged.append(self.budget.reserve_now(need, "decoding this image", DECODE_BUDGET_WAIT_S))
        try:
            img = decode_image(data, min_size, self.limits, charge)
            w, h = img.info["original_size"]
            prepared = PreparedImage(self._model_input(img), w, h,
                                     layout_signature(img) if with_signature else None,
                                     image_properties(img) if (with_signature if with_properties is None
                                                               else with_properties) else None)
        except BaseException:
            for n in charged:
                self.budget.release(n)
            raise
        # The decode's working memory is free again; the input stays charged.
        keep = min(sum(charged), self._tensor_bytes)
        self.budget.release(sum(charged) - keep)
        prepared.charged = keep
        return prepared

    def content_parts(self, data: bytes, parts: list[tuple[tuple[float, float, float, float] | None, bool]]
                      ) -> list[Image.Image]:
        """Parts of one image as RGB images: each a box (x0, y0, x1, y1) as
        fractions of the image's content box (``engine.signature.content_box``:
        what its layout signature shows), or None for all of it, mirrored or
        not. A JPEG is decoded at a draft scale large enough that a box of a
        quarter of a side or more keeps the model's input size. Raises
        DecodeError; ValueError for a picture turned on a canvas (its
        signature shows it turned upright: no box of the image is what it
        shows)."""
        boxes = [box or (0.0, 0.0, 1.0, 1.0) for box, _ in parts]
        smallest = min((min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes), default=1.0)
        min_size = self.preprocessor.decode_min_size
        img = decode_image(data, int(np.ceil(min_size / max(smallest, 0.25))) if min_size else 0, self.limits)
        content = content_box(img)
        if content is None:
            raise ValueError("a picture turned on a canvas: no box of it is what its signature shows")
        left, top, right, bottom = content
        out = []
        for (x0, y0, x1, y1), (_, mirrored) in zip(boxes, parts):
            l, t = int(round(left + x0 * (right - left))), int(round(top + y0 * (bottom - top)))
            r, b = int(round(left + x1 * (right - left))), int(round(top + y1 * (bottom - top)))
            crop = img.crop((l, t, max(r, l + 1), max(b, t + 1)))
            out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else crop)
        return out

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Unit embeddings (N, D) float32 of decoded RGB images (PIL), as the
        model sees any image: the same preprocessing."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.run_model([self._model_input(im) for im in images])[0]

    def run_model(self, tensors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """list of prepared tensors -> (unit embeddings (N, D), logits (N, C) or None)."""
        return self.executor.run(np.stack(tensors))

    def embed(self, images: Iterable[bytes], with_signatures: bool = False, in_processes: bool = False
              ) -> Iterator[ImageEmbedding]:
        """Yield one ImageEmbedding per input, in input order (with its layout
        signature when ``with_signatures``). Decoding runs up to two batches
        ahead of the model, on the threads or, ``in_processes``, in
        ``decode_processes`` worker processes (~1 s to start them, once; the
        same vectors); a bad image fails alone.

        With a GPU decoder (``gpu_decode``) and no signatures, the JPEGs it
        takes decode on the model's device, the rest on the threads (this
        takes precedence over ``in_processes``). Calls with signatures keep
        the CPU path: signatures and properties are measured on the CPU
        path's decoded image (its size after DCT scaling included), which
        the GPU path never brings back to the host."""
        if self.gpu_decoder is not None and not with_signatures:
            yield from self._embed_gpu_decoded(images)
            return
        if in_processes:
            yield from self._embed_decoded_in_processes(images, with_signatures)
            return
        window: collections.deque[tuple[Future, int]] = collections.deque()
        it = iter(images)
        lookahead = 2 * self.max_batch_size
        held = 0                 # bytes of the images in the window
        exhausted = False
        while True:
            while not exhausted and len(window) < lookahead and (not window or held < READ_AHEAD_BYTES):
                try:
                    data = next(it)
                except StopIteration:
                    exhausted = True
                    break
                window.append((self.pool.submit(self.prepare, data, with_signatures), len(data)))
                held += len(data)
            if not window:
                return
            chunk = [window.popleft() for _ in range(min(self.max_batch_size, len(window)))]
            held -= sum(size for _, size in chunk)
            yield from self._finish([f for f, _ in chunk])

    def _process_decoder(self) -> ProcessDecoder:
        if self.process_decoder is None:
            ex = self.executor
            self.process_decoder = ProcessDecoder(ex.manifest_path, ex.input_kind, self.max_batch_size,
                                                  self.decode_processes, self.limits)
            # On a GPU the batches are copied from where the workers wrote them (no staging copy).
            self._unpin_buffers = ex.register_host_memory(self.process_decoder.buffers)
        return self.process_decoder

    def _embed_decoded_in_processes(self, images: Iterable[bytes], with_signatures: bool
                                    ) -> Iterator[ImageEmbedding]:
        for batch in self._process_decoder().batches(images, with_signatures):
            results = [ImageEmbedding(width=d.width, height=d.height, error=d.error, signature=d.signature,
                                      properties=d.properties) for d in batch.items]
            if len(batch.tensors):
                # The batch as the workers wrote it: no stacking copy.
                emb, logits = self.executor.run(batch.tensors)
                for row, r in enumerate(r for r in results if r.ok):
                    r.vector = emb[row]
                    r.logits = None if logits is None else logits[row]
            yield from results

    def _embed_gpu_decoded(self, images: Iterable[bytes]) -> Iterator[ImageEmbedding]:
        """``embed`` with the GPU decoder: each batch is routed on the host
        (``gpu_decode.gpu_route``); the JPEGs it takes are decoded on the
        device in one call, on a thread one batch ahead of the model; the
        others, and any the GPU decoder raised on, are prepared on the
        decoding threads and joined to the batch on the device.
        With ``gpu_decode_share`` below 1, ``_embed_split``."""
        if self._split:
            yield from self._embed_split(images)
            return
        it = iter(images)
        ahead: collections.deque = collections.deque()

        def start() -> bool:
            chunk = list(itertools.islice(it, self.max_batch_size))
            if chunk:
                ahead.append((chunk, self._gpu_pool.submit(self._gpu_decode_batch, chunk)))
            return bool(chunk)

        start() and start()
        while ahead:
            chunk, future = ahead.popleft()
            start()
            yield from self._finish_gpu_batch(chunk, *future.result())

    def _route(self, chunk: list[bytes]) -> tuple[list[int], list, dict]:
        """(indices of the chunk's images the GPU decoder takes, their sizes,
        {index: future of ``prepare``} for the others)."""
        routed, sizes, on_cpu = [], [], {}
        for i, data in enumerate(chunk):
            reason, size = self.gpu_decoder.route(data)
            if reason is None:
                routed.append(i)
                sizes.append(size)
            else:
                on_cpu[i] = self.pool.submit(self.prepare, data)
        return routed, sizes, on_cpu

    def _gpu_decode_batch(self, chunk: list[bytes]):
        """(the GPU decode of the chunk's routed images, {index: future of
        ``prepare``} for the others)."""
        routed, sizes, on_cpu = self._route(chunk)
        decoded, rows, fallback = self._gpu_decode_routed(chunk, routed, sizes)
        on_cpu.update(fallback)
        return decoded, rows, on_cpu

    def _gpu_decode_routed(self, chunk: list[bytes], routed: list[int], sizes: list):
        """(the GPU decode of ``chunk``'s images ``routed``, their indices in
        the chunk, {index: future of ``prepare``} for those it refused)."""
        t = time.perf_counter()
        decoded = self.gpu_decoder.decode([chunk[i] for i in routed], sizes)
        if routed and self._split:
            self._measured("gpu", len(routed), time.perf_counter() - t)
        rows = [routed[k] for k in decoded.rows]
        # The GPU decoder refused it: the CPU path decides.
        fallback = {routed[k]: self.pool.submit(self.prepare, chunk[routed[k]]) for k in decoded.fallback}
        return decoded, rows, fallback

    def _embed_split(self, images: Iterable[bytes]) -> Iterator[ImageEmbedding]:
        """``embed`` with the GPU decoder and ``gpu_decode_share`` below 1:
        each batch is routed here; of the routed JPEGs, the share for the
        workers is put on a ``BatchFeed`` (their thread takes each decoded
        batch to the device), the rest decoded on the GPU thread, at the same
        time; the others prepared on the decoding threads, as without it."""
        feed = BatchFeed()
        pending: collections.deque[Future] = collections.deque()     # the workers' batches, in the order put
        lock = threading.Lock()
        failed: list[BaseException] = []
        feeder = Future()
        # A daemon thread: a caller that drops this generator unfinished (never
        # closed) must not keep the interpreter from exiting; ``close`` ends
        # the feeds of such calls.
        threading.Thread(target=self._workers_loop, args=(self._process_decoder(), feed, pending, lock, failed,
                                                          feeder),
                         name="imagesieve-gpu-share", daemon=True).start()
        self._open_feeds.add(feed)
        it = iter(images)
        ahead: collections.deque = collections.deque()

        def start() -> bool:
            chunk = list(itertools.islice(it, self.max_batch_size))
            if not chunk:
                return False
            routed, sizes, on_cpu = self._route(chunk)
            to_gpu = split_share(len(routed), self._share(), both=self.gpu_decode_share == "auto")
            gpu = [k for k in range(len(routed)) if to_gpu[k]]
            workers = [routed[k] for k in range(len(routed)) if not to_gpu[k]]
            from_workers = None
            if workers:
                from_workers = Future()
                with lock:
                    if failed:
                        from_workers.set_exception(failed[0])
                    else:
                        pending.append(from_workers)
                        feed.put([chunk[i] for i in workers])
            decoding = self._gpu_pool.submit(self._gpu_decode_routed, chunk, [routed[k] for k in gpu],
                                             [sizes[k] for k in gpu])
            ahead.append((chunk, decoding, on_cpu, workers, from_workers))
            return True

        try:
            start() and start()
            while ahead:
                chunk, decoding, on_cpu, workers, from_workers = ahead.popleft()
                start()
                decoded, rows, fallback = decoding.result()
                on_cpu.update(fallback)
                got = (workers, *from_workers.result()) if from_workers is not None else None
                yield from self._finish_gpu_batch(chunk, decoded, rows, on_cpu, got)
        finally:
            wait([d for _, d, _, _, _ in ahead])   # no batch put after the feed is closed
            feed.close()
            wait([feeder])                          # the workers' decoder is free for the next call
            self._open_feeds.discard(feed)
            feed.release()

    def _workers_loop(self, decoder: ProcessDecoder, feed: BatchFeed, pending: collections.deque,
                      lock: threading.Lock, failed: list, finished: Future) -> None:
        """On the feeding thread: each batch the workers decode -> its
        future in ``pending`` as (items, pixels on the device), copied out of
        the shared buffer before the next is taken; the workers' rate."""
        import torch
        device = self.gpu_decoder.device
        last = 0.0
        try:
            for batch in decoder.batches(feed):
                done = time.perf_counter()
                began = max(feed.taken_at.popleft(), last)     # the workers' time on it
                last = done
                self._measured("workers", len(batch.items), done - began)
                future = pending.popleft()
                try:
                    future.set_result((batch.items, torch.from_numpy(batch.tensors).to(device, copy=True)))
                except BaseException as e:  # noqa: BLE001 - that batch's answer
                    future.set_exception(e)
        except BaseException as e:  # noqa: BLE001 - every batch waiting on the workers is told
            with lock:
                failed.append(e)
                while pending:
                    pending.popleft().set_exception(e)
        finally:
            finished.set_result(None)

    def _measured(self, side: str, images: int, seconds: float) -> None:
        if images and seconds > 0:
            r, old = images / seconds, self.decode_rates[side]
            self.decode_rates[side] = r if old is None else old + AUTO_RATE_WEIGHT * (r - old)

    def _share(self) -> float:
        """The GPU's share of the routed JPEGs for the next batch."""
        if self.gpu_decode_share != "auto":
            return float(self.gpu_decode_share)
        g, w = self.decode_rates["gpu"], self.decode_rates["workers"]
        if g is None or w is None:
            # a side not yet measured gets its turn (a batch of one image
            # goes all to one side: round(0.5) would never pick the GPU)
            return AUTO_SHARE_START if g is None and w is None else (1.0 if g is None else 0.0)
        lo, hi = AUTO_SHARE_BOUNDS
        return min(hi, max(lo, g / (g + w)))

    def _finish_gpu_batch(self, chunk: list[bytes], decoded, gpu_rows: list[int], on_cpu: dict,
                          from_workers: tuple | None = None) -> list[ImageEmbedding]:
        """The batch's answers, in order, from the GPU decode (``gpu_rows``
        of ``decoded``), the threads (``on_cpu``) and the workers
        (``from_workers``: (indices, items, their pixels on the device))."""
        import torch
        results = [ImageEmbedding() for _ in chunk]
        for i, (w, h) in zip(gpu_rows, decoded.sizes):
            results[i].width, results[i].height = w, h
        parts = [(gpu_rows, decoded.pixels)] if gpu_rows else []
        if from_workers is not None:
            indices, items, pixels = from_workers
            rows = []
            for i, item in zip(indices, items):
                if item.ok:
                    results[i].width, results[i].height = item.width, item.height
                    rows.append(i)
                else:
                    results[i].error = item.error
            if rows:
                parts.append((rows, pixels))
        cpu_rows, cpu_pixels = [], []
        for i, f in on_cpu.items():
            try:
                p = f.result()
                self.budget.release(p.charged)
                results[i].width, results[i].height = p.width, p.height
                cpu_rows.append(i)
                cpu_pixels.append(p.tensor)
            except DecodeError as e:
                results[i].error = e.detached()
        device = decoded.pixels.device
        if cpu_rows:
            parts.append((cpu_rows, torch.from_numpy(np.stack(cpu_pixels)).to(device)))
        order = sorted(i for rows, _ in parts for i in rows)
        if not order:
            return results
        if len(parts) == 1 and parts[0][0] == order:
            x = parts[0][1]                       # one part, in order: as it is
        else:
            at = {i: k for k, i in enumerate(order)}
            x = torch.empty((len(order), *decoded.pixels.shape[1:]), dtype=torch.uint8, device=device)
            for rows, pixels in parts:
                x[[at[i] for i in rows]] = pixels
        emb, logits = self.executor.run_device(x)
        for row, i in enumerate(order):
            results[i].vector = emb[row]
            results[i].logits = None if logits is None else logits[row]
        return results

    def embed_all(self, images: Iterable[bytes], with_signatures: bool = False, in_processes: bool = False
                  ) -> list[ImageEmbedding]:
        return list(self.embed(images, with_signatures, in_processes))

    def _finish(self, futures: list[Future]) -> list[ImageEmbedding]:
        results, ok = [], []
        for f in futures:
            try:
                p = f.result()
                self.budget.release(p.charged)
                results.append(ImageEmbedding(width=p.width, height=p.height, signature=p.signature,
                                              properties=p.properties))
                ok.append((len(results) - 1, p.tensor))
            except DecodeError as e:
                results.append(ImageEmbedding(error=e.detached()))
        if ok:
            emb, logits = self.run_model([t for _, t in ok])
            for row, (i, _) in enumerate(ok):
                results[i].vector = emb[row]
                results[i].logits = None if logits is None else logits[row]
        return results

    def close(self) -> None:
        if self._gpu_pool is not None:
            self._gpu_pool.shutdown(wait=True, cancel_futures=True)
        for feed in list(self._open_feeds):       # calls dropped unfinished: their feeding threads end
            feed.close()
        if self.gpu_decoder is not None:
            self.gpu_decoder.close()              # its helper thread, if ``overlap`` started one
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._unpin_buffers is not None:
            self._unpin_buffers()                 # before the buffers are unmapped
            self._unpin_buffers = None
        if self.process_decoder is not None:
            self.process_decoder.close()
            self.process_decoder = None


def split_share(n: int, share: float, both: bool = False) -> list[bool]:
    """Which of ``n`` routed images the GPU decodes (True) at ``share``:
    round(share * n) of them (``both``: and at least one for each side when
    n >= 2), spread evenly through the batch (the others go to the
    workers), so that neither side gets a run of the input."""
    take = round(share * n)
    if both and n >= 2:
        take = min(n - 1, max(1, take))
    elif both and n == 1:
        take = int(share >= 0.5)          # a lone image to the likelier side (round(0.5) is 0: never the GPU)
    return [(k + 1) * take // n > k * take // n for k in range(n)] if n else []
