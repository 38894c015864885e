"""Thin Dask wiring: get a client for the configured cluster."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from .config import ClusterConfig

__all__ = ["dask_client", "local_worker_count"]

log = logging.getLogger(__name__)


def local_worker_count(cfg: ClusterConfig) -> int:
    return cfg.n_workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)


@contextlib.contextmanager
def dask_client(cfg: ClusterConfig) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client``: connected to ``cfg.scheduler``, or to a new LocalCluster.

    The LocalCluster listens on 127.0.0.1 only, with worker processes (not threads) so
    that PyTorch and the GIL-bound decoders run in parallel, unless ``cfg.processes`` is
    False (as for memory:// URLs, which only exist inside one process).
    """
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        with Client(cfg.scheduler, timeout="30s") as client:
            yield client
        return
    with LocalCluster(
        n_workers=local_worker_count(cfg),
        threads_per_worker=cfg.threads_per_worker,
        processes=cfg.processes is not False,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address=cfg.dashboard_address,
        memory_limit=cfg.memory_limit,
        silence_logs=logging.WARNING,
    ) as cluster, Client(cluster) as client:
        yield client
