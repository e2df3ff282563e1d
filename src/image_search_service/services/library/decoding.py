"""Decoding ahead of the model, in input order, on every decoder the machine has.

CPU lanes decode one photo at a time (:func:`decode_one`): ``workers`` threads (the JPEG
decoder and Pillow's resize release the GIL), or ``processes`` worker processes where
threads stop scaling, each given the encoders' picklable batch preprocessing, never the
models. Where the models run on a GPU that decodes JPEGs (encoders/device_decode.py), a
device lane takes runs of photos, reads them with a few reader threads (header, metadata,
bytes) and decodes the plain JPEGs among them there in one call; anything else in the
run, and any file the device cannot decode, is decoded on the CPU as usual.

The lanes take work from one window of the input, so each takes what it can: the GPU does
not wait for the CPU decoders, nor they for it. Results come back in input order and
never more than ``lookahead`` photos ahead of the consumer (plus two of the device lane's
runs when it has one). When the device lane is waiting for room for its next run, the
CPU lanes leave it that room. A device whose runs keep failing is left alone for the
rest of the run (:attr:`DeviceJpegDecoder.failing`): the CPU lanes take everything.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from PIL import Image

from image_search_service.core.config import ModelKey
from image_search_service.core.errors import ImageTooLarge, UnsupportedImage
from image_search_service.encoders.base import Encoder
from image_search_service.encoders.device_decode import DeviceJpegDecoder
from image_search_service.images.loading import ImageMeta, JpegFile, load_image, read_jpeg
from image_search_service.images.metadata import PhotoMetadata, read_metadata, sidecar_signature

logger = logging.getLogger(__name__)

# Threads reading files for the device lane (header, XMP, bytes): a few are enough to
# keep nvJPEG's batches coming; the decoding itself is on the device.
DEVICE_READERS = 4


@dataclass(frozen=True)
class AssetRef:
    id: UUID
    path: Path


@dataclass(frozen=True)
class Decoded:
    ref: AssetRef
    meta: ImageMeta | None
    tensors: dict[ModelKey, Any] | None  # each encoder's preprocessed input
    error: str | None
    photo: PhotoMetadata | None = None  # people, tags, caption, title (never fails)
    sidecar: str | None = None
    vanished: bool = False  # the file was deleted or moved away before it was read


# Each model's per-image preprocessing: the encoder's own (threads), or its picklable
# BatchPreprocess (processes); both make what the encoder's encode_preprocessed takes.
Preprocessors = Mapping[ModelKey, Callable[[Image.Image], Any]]


def decode_one(
    ref: AssetRef, preprocessors: Preprocessors, min_side: int, max_pixels: int
) -> Decoded:
    """Decode and preprocess one photo on the CPU; one file's failure is its own."""
    try:
        loaded = load_image(ref.path, max_pixels=max_pixels, min_side=min_side)
        tensors = {key: prepare(loaded.image) for key, prepare in preprocessors.items()}
        photo = read_metadata(ref.path)
        return Decoded(ref, loaded.meta, tensors, None, photo, sidecar_signature(ref.path))
    except (UnsupportedImage, ImageTooLarge) as exc:
        return _refused(ref, exc.detail)
    except Exception as exc:  # one file's failure, whatever it is, never the batch's
        logger.warning("cannot prepare %s: %s: %s", ref.path, type(exc).__name__, exc)
        return Decoded(ref, None, None, f"{ref.path.name}: {type(exc).__name__}: {exc}")


def _refused(ref: AssetRef, reason: str) -> Decoded:
    if not ref.path.exists():
        # Not unreadable: gone (a watched folder changing under us, an unmounted disk).
        # It stays pending; the next index run marks it missing or embeds it.
        return Decoded(ref, None, None, None, vanished=True)
    return Decoded(ref, None, None, reason)


def decode_pool(
    encoders: Sequence[Encoder], *, processes: int
) -> tuple[ProcessPoolExecutor | None, Preprocessors]:
    """The worker processes the CPU lanes decode in and what they preprocess with:
    ``processes`` of them when asked for and every encoder's preprocessing can travel
    there (see :mod:`image_search_service.encoders.preprocess`); else None (the lanes
    decode in their own threads, with the encoders' own preprocessing)."""
    if processes > 0:
        portable = {enc.spec.key: getattr(enc, "batch_preprocess", None) for enc in encoders}
        if all(portable.values()):
            # forkserver: a clean child, never a fork of a process holding model threads.
            context = multiprocessing.get_context("forkserver")
            return ProcessPoolExecutor(processes, mp_context=context), portable  # type: ignore[return-value]
        logger.info("decoding in threads: a model's preprocessing cannot run in a process")
    return None, {enc.spec.key: enc.preprocess for enc in encoders}


class _Window:
    """Which input positions are taken, and the results waiting for the consumer."""

    def __init__(self, total: int, lookahead: int):
        self._total = total
        self._lookahead = max(1, lookahead)
        self._cond = threading.Condition()
        self._next = 0  # the first position no lane has taken
        self._taken_by_consumer = 0
        self._results: dict[int, Decoded] = {}
        self._error: BaseException | None = None
        self._closed = False
        self._reserved = 0  # room the device lane waits for; CPU lanes leave it

    def _room(self) -> int:
        return self._taken_by_consumer + self._lookahead - self._next

    def claim(self, most: int, *, device: bool = False) -> range:
        """Up to ``most`` next positions (an empty range: none left, or closed). The
        device lane waits until its whole run fits (or the input ends)."""
        with self._cond:
            while True:
                if self._closed or self._next >= self._total:
                    return range(0)
                want = min(most, self._total - self._next)
                room = self._room()
                if device:
                    if room >= want or room >= self._lookahead:
                        want = min(want, max(room, 1))
                        break
                    self._reserved = want
                elif room - self._reserved >= 1:
                    want = min(want, room - self._reserved)
                    break
                self._cond.wait()
            if device:
                self._reserved = 0
            taken = range(self._next, self._next + want)
            self._next += want
            self._cond.notify_all()
            return taken

    def put(self, index: int, item: Decoded) -> None:
        with self._cond:
            self._results[index] = item
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = self._error or exc
            self._closed = True
            self._cond.notify_all()

    def take(self) -> Decoded:
        """The next result in input order (waits for it; raises what a lane raised)."""
        with self._cond:
            while self._taken_by_consumer not in self._results:
                if self._error is not None:
                    raise self._error
                self._cond.wait()
            item = self._results.pop(self._taken_by_consumer)
            self._taken_by_consumer += 1
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def decoded_in_order(
    refs: Sequence[AssetRef],
    encoders: Sequence[Encoder],
    *,
    workers: int,
    processes: int = 0,
    max_pixels: int,
    lookahead: int,
    device: DeviceJpegDecoder | None = None,
) -> Generator[Decoded, None, None]:
    """Every ref decoded (see the module's docstring), yielded in input order."""
    if not refs:
        return
    min_side = max(enc.image_size for enc in encoders)
    pool, preprocessors = decode_pool(encoders, processes=processes)
    lanes = max(1, processes if pool is not None else workers)
    window = _Window(len(refs), lookahead + (2 * device.batch_size if device else 0))

    def cpu_lane() -> None:
        while taken := window.claim(1):
            for i in taken:
                args = (refs[i], preprocessors, min_side, max_pixels)
                if pool is None:
                    window.put(i, decode_one(*args))
                else:
                    window.put(i, pool.submit(decode_one, *args).result())

    # The device lane's CPU work (and its CPU fallbacks) always runs in threads: the
    # encoder's own preprocessing is fine there, whatever the CPU lanes use.
    thread_preprocessors = {enc.spec.key: enc.preprocess for enc in encoders}
    readers = ThreadPoolExecutor(DEVICE_READERS, thread_name_prefix="device-read")

    def read(ref: AssetRef) -> Decoded | tuple[JpegFile, PhotoMetadata, str | None]:
        try:
            jpeg = read_jpeg(ref.path, max_pixels=max_pixels)
            if jpeg is None:  # not a plain JPEG: the CPU decodes it
                return decode_one(ref, thread_preprocessors, min_side, max_pixels)
            return jpeg, read_metadata(ref.path), sidecar_signature(ref.path)
        except (UnsupportedImage, ImageTooLarge) as exc:
            return _refused(ref, exc.detail)
        except Exception:  # decode_one says what is wrong with this file
            return decode_one(ref, thread_preprocessors, min_side, max_pixels)

    def device_lane(decoder: DeviceJpegDecoder) -> None:
        while not decoder.failing and (taken := window.claim(decoder.batch_size, device=True)):
            read_results = list(readers.map(read, [refs[i] for i in taken]))
            on_device = [
                (i, r) for i, r in zip(taken, read_results, strict=True) if isinstance(r, tuple)
            ]
            for i, r in zip(taken, read_results, strict=True):
                if isinstance(r, Decoded):
                    window.put(i, r)
            try:
                pixels = decoder.decode([jpeg for _, (jpeg, _, _) in on_device])
            except Exception as exc:  # the device itself (out of memory): the CPU decodes
                logger.warning(
                    "decoding on %s failed (%s: %s); the CPU decodes these photos%s",
                    decoder.device,
                    type(exc).__name__,
                    exc,
                    " and the rest of the run" if decoder.failing else "",
                )
                pixels = [None] * len(on_device)
            fallback = []
            for (i, (jpeg, photo, sidecar)), tensors in zip(on_device, pixels, strict=True):
                if tensors is None:
                    fallback.append(i)
                else:
                    window.put(i, Decoded(refs[i], jpeg.meta, tensors, None, photo, sidecar))
            for i, decoded in zip(
                fallback,
                readers.map(
                    lambda i: decode_one(refs[i], thread_preprocessors, min_side, max_pixels),
                    fallback,
                ),
                strict=True,
            ):
                window.put(i, decoded)

    def guarded(lane: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                lane()
            except BaseException as exc:  # a broken process pool: the consumer raises it
                window.fail(exc)

        return run

    threads = [
        threading.Thread(target=guarded(cpu_lane), name=f"decode-lane-{n}", daemon=True)
        for n in range(lanes)
    ]
    if device is not None:
        threads.append(
            threading.Thread(
                target=guarded(lambda: device_lane(device)), name="decode-device", daemon=True
            )
        )
    for thread in threads:
        thread.start()
    try:
        for _ in range(len(refs)):
            yield window.take()
    finally:
        window.close()
        for thread in threads:
            thread.join()
        readers.shutdown()
        if pool is not None:
            pool.shutdown()
