"""Thin Dask wiring: a client for the configured cluster, and where partitions may run."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aurora_batch.config import ClusterConfig, seconds

if TYPE_CHECKING:
    import distributed

log = logging.getLogger(__name__)
TASK_RETRIES = 2  #: Dask retries of a failed task (storage outages): planning, partitions and commits are idempotent


def local_worker_count(cfg: ClusterConfig) -> int:
    return cfg.n_workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)


def partition_resources(client) -> dict | None:
    """``{"GPU": 1}`` when some worker offers a GPU resource, so the CNN stage runs there; else None.

    A resource no worker has would leave tasks pending forever, so CPU-only clusters get none.
    """
    workers = client.scheduler_info().get("workers", {})
    if any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
        return {"GPU": 1}
    return None


def slurm_cluster(cfg: ClusterConfig):
    """A dask-jobqueue ``SLURMCluster``: one worker per SLURM job, GPU jobs tagged ``GPU=1``."""
    from dask_jobqueue import SLURMCluster

    s = cfg.slurm
    extra = list(s.job_extra_directives)
    worker_args = ["--dashboard-address", "127.0.0.1:0"] if cfg.dashboard_address.startswith("127.") else []
    if s.gpus:
        extra.append(f"--gres=gpu:{s.gpus}")
        worker_args += ["--resources", f"GPU={s.gpus}"]
    host = cfg.dashboard_address.split(":")[0] or None
    cluster = SLURMCluster(
        cores=s.cores,
        processes=1,
        memory=s.memory,
        queue=s.queue,
        account=s.account,
        walltime=s.walltime,
        job_extra_directives=extra,
        python=s.python or sys.executable,
        local_directory=s.local_directory,
        log_directory=s.log_directory,
        interface=None,
        scheduler_options={"host": host, "dashboard_address": cfg.dashboard_address} if host else {},
        worker_extra_args=(["--host", host] if host == "127.0.0.1" else []) + worker_args,
    )
    cluster.scale(jobs=s.jobs)
    return cluster


def _kubernetes_cluster(cfg: ClusterConfig):
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError:
        raise RuntimeError(
            "cluster.kind 'kubernetes' needs dask-kubernetes: pip install 'aurora-batch[kubernetes]'"
        ) from None
    k = cfg.kubernetes
    return KubeCluster(
        name=k.name, namespace=k.namespace, image=k.image, n_workers=k.n_workers, resources=k.resources, env=k.env
    )


@contextlib.contextmanager
def dask_client(cfg: ClusterConfig) -> Iterator[distributed.Client]:
    """A ``distributed.Client`` for ``cfg``; clusters it starts are closed on exit.

    The LocalCluster listens on 127.0.0.1 only, with worker processes (not threads) so
    that PyTorch and the GIL-bound decoders run in parallel, unless ``cfg.processes`` is
    False (as for memory:// URLs, which only exist inside one process).
    """
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        with Client(cfg.scheduler, timeout="30s") as client:
            yield client
        return
    if cfg.kind == "slurm":
        cluster = slurm_cluster(cfg)
    elif cfg.kind == "kubernetes":
        cluster = _kubernetes_cluster(cfg)
    else:
        cluster = LocalCluster(
            n_workers=local_worker_count(cfg),
            threads_per_worker=cfg.threads_per_worker,
            processes=cfg.processes is not False,
            host="127.0.0.1",
            protocol="tcp://",
            dashboard_address=cfg.dashboard_address,
            memory_limit=cfg.memory_limit,
            silence_logs=logging.WARNING,
        )
    with cluster, Client(cluster) as client:
        if cfg.kind != "local":
            log.info("waiting for the first worker of the %s cluster", cfg.kind)
            client.wait_for_workers(1, timeout=seconds(cfg.timeout))
        yield client
