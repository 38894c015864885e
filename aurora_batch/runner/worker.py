"""Once-per-worker setup, as a ``distributed`` WorkerPlugin registered on whatever cluster a job gets.

Local, ``--scheduler``, SLURM or Kubernetes: the runner registers :class:`WorkerSetup` on its
client, and every worker (also those that join later, or restart after a crash) runs it once.
It sets glibc's allocator thresholds (Dask's nanny freezes the mmap threshold at 128 KiB, which
halves CPU inference) and the network's intra-op threads: the cores of the worker's host divided by
all Dask threads on that host (its own and those of the other workers there), so tasks running
side by side do not oversubscribe the CPU.  Whichever runtime runs the network takes that count (torch
when it is imported for it: a worker running ONNX Runtime does not import torch).  The science
functions (:mod:`aurora_batch.partition`) know nothing of it.
"""

from __future__ import annotations

import math
import os

from distributed.diagnostics.plugin import WorkerPlugin


def owned_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


class WorkerSetup(WorkerPlugin):
    """Allocator and network threads for a worker; what it set is kept in ``worker.aurora_setup``.

    ``cores``: cores per worker process when the runner knows them (its own LocalCluster);
    otherwise :func:`owned_cores` shared by the Dask threads of every worker the scheduler
    knows on the same host (a LocalCluster handed in, several ``dask worker`` processes on a
    node; one worker per SLURM job or Kubernetes pod gets all its cores).
    ``torch_threads``: a fixed intra-op thread count (``features.torch_threads``).
    """

    name = "aurora-batch-setup"
    idempotent = False  # a re-registration with other settings replaces the old one

    def __init__(self, torch_threads: int | None = None, cores: int | None = None):
        self.torch_threads = torch_threads
        self.cores = cores

    async def setup(self, worker) -> None:
        from aurora_batch.model.features import intra_op_threads, tune_process

        cores = self.cores or await _host_share(worker)
        threads = self.torch_threads or max(1, cores // max(1, worker.state.nthreads))
        malloc_tuned = tune_process(threads)
        worker.aurora_setup = {
            "malloc_tuned": malloc_tuned,
            "torch_threads": intra_op_threads(),
            "cores": cores,
            "nthreads": worker.state.nthreads,
        }


async def _host_share(worker) -> int:
    """This worker's share of its host's cores: :func:`owned_cores` × its threads / all Dask threads there."""
    info = await worker.scheduler.identity()
    others = sum(
        w["nthreads"]
        for addr, w in info.get("workers", {}).items()
        if w.get("host") == worker.ip and addr != worker.address
    )
    mine = worker.state.nthreads
    return max(1, owned_cores() * mine // (mine + others))


def register_worker_setup(client, torch_threads: int | None = None, cores: int | None = None) -> None:
    """Register :class:`WorkerSetup` on ``client``'s cluster (running workers now, new ones when they join)."""
    client.register_plugin(WorkerSetup(torch_threads, cores))
