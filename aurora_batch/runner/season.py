"""The season job: plan → partitions on Dask → monthly Zarr stores.

The plan (:mod:`aurora_batch.plan.planner`) lists only the folders that can hold the window's files
and leaves large plans' rows on the workers: the driver holds partition keys with counts (a
few KB a partition) and small per-partition summaries; images and features stay on the workers
and in staged parts.  Months are submitted in time order, a few at a time; each is committed
from *all* its staged partitions (so a nightly run over a few days keeps the rest of the month)
by one task that also writes the month's catalog, and a month none of whose partitions changed
is not rewritten at all.  Driver memory therefore does not grow with the number of images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import pandas as pd

from aurora_batch.config import JobConfig, seconds
from aurora_batch.core.fs import StorageError, endpoint_of, filesystem, is_local, storage_errors
from aurora_batch.core.keys import PartitionKey, Status
from aurora_batch.core.lock import OutputLock
from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs
from aurora_batch.month.join import month_sources
from aurora_batch.partition.process import Chunk, PartitionResult, process_chunk, stage_chunks
from aurora_batch.plan.planner import merge_partition_rows, part_rows
from aurora_batch.runner.cluster import TASK_RETRIES, dask_client, local_worker_count, partition_resources
from aurora_batch.runner.planning import Plan, plan_run, write_undated
from aurora_batch.runner.worker import register_worker_setup
from aurora_batch.store.layout import catalog_url, store_url
from aurora_batch.store.versions import MonthConflictError
from aurora_batch.store.zarrs import check_store_format

log = logging.getLogger(__name__)
PARTITIONS_IN_FLIGHT_PER_THREAD = 4  #: partitions submitted ahead per worker thread (later months wait their turn)
MIN_CHUNK_FILES = 32  #: files a task gets at least, when partitions are shared between tasks


@dataclasses.dataclass
class SeasonSummary:
    output: str
    catalog: str
    stores: list[str]  #: month stores (re)written by this run
    seen: int  #: input files
    kept: int  #: files kept
    images: int  #: images processed into stores by this run's partitions (frames: a THEMIS file holds many)
    dropped: dict[str, int]  #: files dropped, by reason
    groups: dict[str, dict[str, int]]  #: month → group → images, for the months (re)written
    partitions: int
    resumed_partitions: int
    seconds: float
    last_time: dict[str, pd.Timestamp] = dataclasses.field(default_factory=dict)  #: station → latest file time
    warnings: list[str] = dataclasses.field(default_factory=list)  #: from the partitions, one line each
    plan: Plan | None = None  #: how the run was planned (listing requests, files, where)
    store_format: str = "zarr"  #: how its months are published: zarr trees, or icechunk repositories
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  #: wall seconds of the run's phases
    stage_cpu: dict[str, float] = dataclasses.field(default_factory=dict)  #: CPU s per stage over its partitions
    computed: int = 0  #: frames decoded and judged by this run
    reused: int = 0  #: frames taken unchanged from parts staged before

    def format(self) -> str:
        lines = [
            f"aurora-batch season: {self.seen} files seen, {self.kept} kept ({self.images} images), "
            f"{sum(self.dropped.values())} dropped in {self.seconds:.1f} s"
        ]
        lines += [f"  dropped ({reason}): {n}" for reason, n in sorted(self.dropped.items())]
        lines.append(
            f"  partitions: {self.partitions} ({self.resumed_partitions} already staged); frames: "
            f"{self.computed} computed, {self.reused} reused"
        )
        if self.plan is not None:
            lines.append(f"  {self.plan.line()}")
        if self.timings:
            lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        if self.stage_cpu:
            lines.append(
                "  partition CPU: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.stage_cpu.items(), key=lambda kv: -kv[1]))
            )
        lines.append(f"  catalog: {self.catalog}")
        for month, groups in sorted(self.groups.items()):
            desc = ", ".join(f"{g}: {n}" for g, n in sorted(groups.items()))
            lines.append(f"  store {store_url(self.output, month, self.store_format)}  [{desc}]")
        if not self.groups:
            lines.append("  no store changed")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclasses.dataclass
class CommitConflict:
    """A month commit that met another writer's (returned, not raised, so that Dask does not retry it)."""

    message: str


def _commit(
    job: JobConfig,
    month: str,
    results: list[PartitionResult],
    attrs: dict,
    allow_shrink: bool,
    command: str,
    rebuild: bool = False,
) -> dict | CommitConflict | None:
    """Build ``month`` (:func:`aurora_batch.month.build.build_month`) unless it was built from the same parts and join;
    ``rebuild``: whole, regardless."""
    sources = month_sources(job, month)  # the month's instrument files only, listed once
    try:
        build = build_month(
            job,
            month_inputs(job, month, results),
            attrs,
            join_fingerprint(job, month, sources),
            allow_shrink,
            force=rebuild,
            command=command,
            map_tasks=map_on_cluster,
            sources=sources,
        )
    except MonthConflictError as err:
        return CommitConflict(str(err))
    return build.counts if build is not None and build.counts else None  # no store: nothing to report


def map_on_cluster(fn, items: list) -> list:
    """``fn`` over ``items`` as tasks of the cluster the calling task runs on (a month's stations in parallel); the
    calling task leaves its thread to them while it waits."""
    from distributed import worker_client

    with worker_client() as client:
        return client.gather(client.map(fn, items, pure=False, retries=TASK_RETRIES))


def run_season(
    job: JobConfig,
    client=None,
    progress: bool = True,
    allow_shrink: bool = True,
    lock_purpose: str = "season",
    starts: dict[str, pd.Timestamp] | None = None,
    rebuild: bool = False,
) -> SeasonSummary:
    """Run ``job`` on ``client`` (or on the cluster its config names) and write the catalog.

    Holds the output's lock for the whole run: a second job on the same output is refused
    with :class:`~aurora_batch.core.lock.LockHeld`.  Safe to re-run or resume after a kill: staged
    partitions with the same inputs are reused, and a month is rebuilt from its staged parts
    only when one of them changed.  ``allow_shrink=False`` refuses to publish a month whose
    time axis would lose images (nightly runs); ``starts``: a first time per station (UTC)
    instead of ``job.start`` (nightly runs); ``rebuild``: the window's months are rebuilt whole from their staged
    parts (by default a published month is appended to, :mod:`aurora_batch.month.increment`).
    """
    t0 = time.perf_counter()
    job.check_files()
    _check_input(job)
    with storage_errors(job.output, job.output_storage_options):
        check_store_format(job.output, job.store_format(), job.output_storage_options)
        lock = OutputLock(
            job.output, job.output_storage_options, purpose=lock_purpose, ttl_s=seconds(job.nightly.lock_ttl)
        ).acquire()
    timings: dict[str, float] = {}
    try:
        with contextlib.ExitStack() as cluster:
            cores = None
            if client is None:
                own_local = job.cluster.kind == "local" and not job.cluster.scheduler
                cores = max(1, (os.cpu_count() or 1) // local_worker_count(job.cluster)) if own_local else None
                # registered first, so that it runs last, once the cluster is closed
                now = time.perf_counter
                cluster.callback(lambda: timings.__setitem__("shutdown", now() - timings["_done"]))
                with _timed(timings, "cluster start"):
                    client = cluster.enter_context(dask_client(job.cluster))
            with _timed(timings, "worker setup"):
                register_worker_setup(client, job.features.torch_threads, cores)
            plan, results, groups = _plan_and_run(
                job, client, progress, allow_shrink, starts, lock_purpose, timings, rebuild
            )
            timings["_done"] = time.perf_counter()
    finally:
        lock.release()
    timings.pop("_done", None)
    return _summary(job, plan, results, groups, time.perf_counter() - t0, timings)


def _check_input(job: JobConfig) -> None:
    """``FileNotFoundError`` for an input that does not exist; ``StorageError`` naming a missing bucket."""
    fs, root = filesystem(job.input, job.storage_options)
    with storage_errors(job.input, job.storage_options):
        if not fs.exists(root):
            bucket = root.split("/", 1)[0]
            if not is_local(fs) and "memory" not in fs.protocol and not fs.exists(bucket):
                raise StorageError(
                    f"{job.input}: no such bucket {bucket!r} at {endpoint_of(job.input, job.storage_options)}"
                )
            raise FileNotFoundError(f"input {job.input} does not exist")


def _summary(
    job: JobConfig,
    plan: Plan,
    results: list[PartitionResult],
    groups: dict[str, dict[str, int]],
    seconds: float,
    timings: dict[str, float],
) -> SeasonSummary:
    statuses = Counter({Status.UNPARSEABLE: plan.unparseable} if plan.unparseable else {})
    last: dict[str, pd.Timestamp] = {}
    for r in results:
        statuses.update(r.statuses)
        station = r.key.station
        last[station] = max(last.get(station, r.last_time), r.last_time)
    kept = statuses.pop(Status.KEPT, 0)
    fmt = job.store_format()
    return SeasonSummary(
        job.output,
        catalog_url(job.output),
        [store_url(job.output, m, fmt) for m in sorted(groups)],
        plan.files + plan.unparseable,
        kept,
        sum(r.images for r in results),
        dict(statuses),
        groups,
        len(results),
        sum(r.resumed for r in results),
        seconds,
        last,
        plan.warnings + [w for r in results for w in r.warnings],
        plan,
        fmt,
        timings,
        dict(sum((Counter(r.cpu_s) for r in results), Counter())),
        sum(r.computed for r in results),
        sum(r.reused for r in results),
    )


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t0


def _plan_and_run(
    job: JobConfig,
    client,
    progress: bool,
    allow_shrink: bool,
    starts,
    command: str,
    timings: dict[str, float],
    rebuild: bool = False,
):
    with _timed(timings, "plan"):
        plan = plan_run(job, client, starts)
    if progress:
        print(plan.line(), file=sys.stderr)
    results, groups = _run_graph(job, plan, client, progress, allow_shrink, command, timings, rebuild)
    return plan, results, groups


def run_chunk(job: JobConfig, key: PartitionKey, parts: list[pd.DataFrame], index: int, count: int) -> Chunk:
    """A partition's share ``index`` of ``count``: its rows from every plan part that found some, merged, then
    :func:`~aurora_batch.partition.process.process_chunk`; :func:`~aurora_batch.partition.process.stage_chunks`
    stages them."""
    return process_chunk(job, key, merge_partition_rows(parts), index, count)


def chunks_per_partition(partitions: int, files: int, threads: int) -> int:
    """How many tasks share one partition: enough for every worker thread to have two when a run has fewer
    partitions than that (a one-station nightly), none under :data:`MIN_CHUNK_FILES` files."""
    return max(1, min(-(-2 * threads // max(1, partitions)), files // MIN_CHUNK_FILES))


def _run_graph(
    job: JobConfig,
    plan: Plan,
    client,
    progress: bool,
    allow_shrink: bool,
    command: str,
    timings: dict[str, float],
    rebuild: bool = False,
):
    """Submit the months in time order, each as its partitions and one commit, while at most about
    :data:`PARTITIONS_IN_FLIGHT_PER_THREAD` partitions a worker thread wait: the graph (and what the
    scheduler and driver hold of it) stays the size of a few months, however long the season."""
    from distributed import as_completed

    if progress and client.dashboard_link:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    by_month: dict[str, list[PartitionKey]] = defaultdict(list)
    for key in sorted(plan.counts, key=lambda k: k.name):
        by_month[key.month].append(key)
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
    months = sorted(by_month)
    running = as_completed()
    graph = _MonthGraph(
        job, plan, client, threads, partition_resources(client), common_attrs(job), allow_shrink, command
    )
    month_of_commit: dict[str, str] = {}
    waiting = 0  #: partitions submitted and not finished

    def submit(month: str) -> None:
        nonlocal waiting
        part_futs = [graph.partition(key) for key in by_month.pop(month)]
        commit = graph.commit(month, part_futs, rebuild)
        month_of_commit[commit.key] = month
        running.update(part_futs + [commit])
        waiting += len(part_futs)

    def top_up() -> None:
        while months and (waiting < PARTITIONS_IN_FLIGHT_PER_THREAD * threads or not running.count()):
            submit(months.pop(0))

    results: list[PartitionResult] = []
    groups: dict[str, dict[str, int]] = {}
    bar = _progress_bar(len(plan.counts) + len(months), progress)
    t0 = last_partition = time.perf_counter()
    top_up()
    try:
        for fut in running:
            try:
                value = fut.result()
            except Exception as err:
                raise RuntimeError(f"task {fut.key!r} failed: {type(err).__name__}: {err}") from err
            if isinstance(value, PartitionResult):
                results.append(value)
                waiting -= 1
                last_partition = time.perf_counter()
            elif isinstance(value, CommitConflict):
                raise MonthConflictError(value.message)
            elif fut.key in month_of_commit and value is not None:
                groups[month_of_commit[fut.key]] = value
            bar.update(1)
            top_up()
    finally:
        bar.close()
    timings["partitions"] = last_partition - t0
    timings["months after the last partition"] = time.perf_counter() - last_partition
    with _timed(timings, "ledger"):
        _write_ledger(job, plan, client)
    return results, groups


def _write_ledger(job: JobConfig, plan: Plan, client) -> None:
    """The ledger of unparseable names, last (a finished run's mark): on a worker from the planning tasks'
    results, where they are."""
    if plan.where == "workers":
        client.submit(write_undated, job, plan.undated_parts, pure=False, retries=TASK_RETRIES).result()
    else:
        write_undated(job, plan.undated_parts)
    plan.undated_parts = []


@dataclasses.dataclass
class _MonthGraph:
    """Submits a month's tasks: each partition as chunk tasks and one staging task, then the month's commit."""

    job: JobConfig
    plan: Plan
    client: Any
    threads: int  #: worker threads of the cluster
    resources: dict | None  #: what a chunk task asks of its worker (a GPU, where some worker has one)
    attrs: dict  #: the stores' common attributes
    allow_shrink: bool
    command: str

    def partition(self, key: PartitionKey):
        """The future of ``key``'s :class:`PartitionResult`: its files shared by chunk tasks, then staged."""
        job, plan, client = self.job, self.plan, self.client
        rows = plan.rows.pop(key)
        if plan.where == "workers":  # the rows stay on the workers: a small task, where they are, takes them
            holders = plan.holders
            rows = [
                client.submit(part_rows, p, key, pure=False, workers=holders.get(p.key), allow_other_workers=True)
                for p in rows
            ]
        count = chunks_per_partition(len(plan.counts), plan.counts[key], self.threads)
        chunks = [
            client.submit(
                run_chunk,
                job,
                key,
                rows,
                i,
                count,
                resources=self.resources,
                pure=False,
                key=f"chunk-{key.name}-{i}-{job.output}",
                retries=TASK_RETRIES,
            )
            for i in range(count)
        ]
        return client.submit(
            stage_chunks, job, key, chunks, key=f"partition-{key.name}-{job.output}", pure=False, retries=TASK_RETRIES
        )

    def commit(self, month: str, partitions: list, rebuild: bool):
        """The future of ``month``'s commit, once its ``partitions`` are staged."""
        return self.client.submit(
            _commit,
            self.job,
            month,
            partitions,
            self.attrs,
            self.allow_shrink,
            self.command,
            rebuild,
            key=f"commit-{month}-{self.job.output}",
            pure=False,
            retries=TASK_RETRIES,
        )


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="partitions+commits", unit="task", disable=not enabled, file=sys.stderr)
