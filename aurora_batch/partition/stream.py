"""Streaming input: fetch many files at once, decode them in threads, hand them on in order.

A partition's files are read from object storage, where each GET waits 10–100 ms, and may
be multi-megapixel JPEGs that take tens of milliseconds to decode.  :func:`stream_files`
overlaps the three stages a partition needs:

- **fetch**: up to ``fetch_concurrency`` GETs in flight (threads; fsspec's async
  filesystems serve them concurrently on their event loop), admitted while the listed
  sizes of the files fetched but not yet consumed stay within ``prefetch_bytes``, so memory
  is bounded whatever the file size (a single file larger than the budget still goes
  through, alone);
- **decode** and preprocess: ``decode_threads`` threads (Pillow, zlib, numpy and scipy
  release the GIL), or, with ``decode_threads=0``, the caller's thread as it takes each
  file: on a CPU worker whose core is busy with the network anyway this avoids the GIL
  hand-offs between two busy threads (measured: a quarter of the time spent in the kernel);
- **consume**: the caller receives ``(item, result)`` in input order, while the pools work
  ahead, and feeds the network whole batches.

A file's own fault (it is gone: ``FileNotFoundError``; it cannot be decoded:
:class:`~aurora_batch.formats.decode.ImageError`) comes back as the result, to be recorded as a
rejection.  Any other error (a storage outage, credentials) is raised when the caller
reaches that file, and the remaining work is cancelled, so the task fails and Dask retries
it: no good image is rejected for a network error.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from typing import Any, TypeVar

from aurora_batch.formats.decode import ImageError

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741
FILE_FAULTS = (ImageError, FileNotFoundError)  #: errors that are the file's fault, not the storage's


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    fetch_concurrency: int = 16  #: GETs in flight
    prefetch_bytes: int = 256 << 20  #: listed bytes fetched ahead of the consumer
    decode_threads: int = 1  #: threads decoding and preprocessing; 0: the consumer's thread


def _chain(fetched: Future, pool: ThreadPoolExecutor, decode: Callable[[bytes, Any], T], item) -> Future:
    """A future of ``decode(fetched.result(), item)``, run on ``pool`` once the bytes are in."""
    out: Future = Future()

    def relay(done: Future) -> None:
        try:
            if done.cancelled():
                out.cancel()
            elif (err := done.exception()) is not None:
                out.set_exception(err)
            else:
                out.set_result(done.result())
        except InvalidStateError:  # the consumer cancelled ``out`` meanwhile
            pass

    def on_fetched(done: Future) -> None:
        if done.cancelled() or done.exception() is not None:
            relay(done)
            return
        try:
            pool.submit(decode, done.result(), item).add_done_callback(relay)
        except RuntimeError:  # the pool was shut down: the consumer has gone
            out.cancel()

    fetched.add_done_callback(on_fetched)
    return out


def _bytes(size) -> int:
    """A listed size as bytes; unknown (None, NaN) counts as 0."""
    return int(size) if size is not None and size == size else 0


def stream_files(
    items: Sequence[I],
    fetch: Callable[[I], bytes],
    decode: Callable[[bytes, I], T],
    size: Callable[[I], int | None] = lambda item: None,
    settings: StreamSettings = StreamSettings(),
) -> Iterator[tuple[I, T | Exception]]:
    """``(item, decode(fetch(item), item))`` for each item, in order, computed ahead in threads.

    The result is the exception instead when it is one of :data:`FILE_FAULTS`; other
    exceptions are raised.  ``size(item)`` is the item's listed size in bytes (None: unknown,
    counted as 0 against ``prefetch_bytes``; the count of files ahead is bounded too).
    """
    ahead_max = 4 * settings.fetch_concurrency + 2 * settings.decode_threads
    pending: collections.deque[tuple[I, Future, int]] = collections.deque()
    waiting = list(items)[::-1]  # next item last
    in_flight = 0
    fetchers = ThreadPoolExecutor(settings.fetch_concurrency, thread_name_prefix="aurora-fetch")
    decoders = (
        ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="aurora-decode")
        if settings.decode_threads
        else None
    )
    try:
        while True:
            while waiting and len(pending) < ahead_max:
                cost = _bytes(size(waiting[-1]))
                if pending and in_flight + cost > settings.prefetch_bytes:
                    break
                item = waiting.pop()
                in_flight += cost
                fetched = fetchers.submit(fetch, item)
                pending.append((item, _chain(fetched, decoders, decode, item) if decoders else fetched, cost))
            if not pending:
                return
            item, future, cost = pending.popleft()
            try:
                result = future.result() if decoders else decode(future.result(), item)
            except FILE_FAULTS as err:
                result = err
            in_flight -= cost
            yield item, result
    finally:
        for _, future, _ in pending:
            future.cancel()
        for pool in (fetchers, decoders):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
