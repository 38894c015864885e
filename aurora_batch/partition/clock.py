"""CPU seconds per stage of a partition (fetch, decode, recipe, network), for the run summary."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time

log = logging.getLogger(__name__)


class StageClock:
    """CPU seconds (of the thread doing the work) and wall seconds spent per stage of a partition."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.wall: dict[str, float] = collections.defaultdict(float)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            c, w = time.thread_time() - c0, time.perf_counter() - w0
            with self._lock:
                self.cpu[stage] += c
                self.wall[stage] += w


_UNTIMED = contextlib.nullcontext()


def untimed(stage: str):
    return _UNTIMED
