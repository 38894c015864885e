"""Planning on the cluster: the driver lists what its budget allows and hands the rest to planning tasks on
the workers, gathering only their summaries (:func:`plan_run`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections import Counter, defaultdict

import pandas as pd

from aurora_batch.config import JobConfig
from aurora_batch.core.fs import filesystem, join_url, write_bytes_atomic
from aurora_batch.core.keys import PartitionKey
from aurora_batch.plan.listing import Folder, Listing, Window, folder_time_span
from aurora_batch.plan.planner import (
    cached_settings,
    job_window,
    merge_undated,
    part_summary,
    part_undated,
    plan_files,
    plan_part,
)
from aurora_batch.runner.cluster import TASK_RETRIES

log = logging.getLogger(__name__)


# --- the plan of a run (Dask wiring) ----------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """What the driver holds of a plan: partition keys with their file counts, and where their rows are."""

    rows: dict[PartitionKey, list]  #: key -> DataFrames (planned in the driver) or futures of plan parts
    counts: dict[PartitionKey, int]  #: key -> dated files
    where: str  #: "driver" or "workers"
    unparseable: int = 0
    listed: int = 0  #: files listed
    requests: int = 0  #: listing requests
    pruned: int = 0  #: folders not entered
    tasks: int = 0  #: planning tasks run on workers
    seconds: float = 0.0
    #: (unparseable rows, the listing that found them) per part, or futures of them (plans made on workers)
    undated_parts: list = dataclasses.field(default_factory=list)
    misdated: list[str] = dataclasses.field(default_factory=list)  #: files contradicting their folder's dates
    warnings: list[str] = dataclasses.field(default_factory=list)  #: for the user, one line each
    holders: dict[str, list[str]] = dataclasses.field(default_factory=dict)  #: plan part key -> its workers

    @property
    def files(self) -> int:
        """Dated files in the window."""
        return sum(self.counts.values())

    def line(self) -> str:
        return (
            f"plan ({self.where}, {self.tasks} tasks): {self.listed} files listed in {self.requests} requests "
            f"({self.pruned} folders skipped), {self.files} in the window, {self.unparseable} unparseable, "
            f"{len(self.counts)} partitions, {self.seconds:.2f} s"
        )


def plan_run(job: JobConfig, client=None, starts: dict[str, pd.Timestamp] | None = None) -> Plan:
    """Plan ``job`` (see the module docs): in the driver, or on ``client``'s workers when the listing is large.

    Without a client everything is planned in the driver.  Raises ``FileNotFoundError`` when the
    input does not exist.  When a listed folder holds files its name's dates do not cover (a
    season folder named by its first year, folders dated in local time beyond the margin),
    folder names cannot be trusted: the run is planned again listing everything, and
    ``{output}/_planning.json`` records it so that later runs do the same.
    """
    t0 = time.perf_counter()
    warnings = []
    if job.planning.prune and (reason := _pruning_disabled(job)):
        job = _unpruned(job)
        warnings.append(
            f"folders are listed whole: {reason} (delete {_planning_url(job)} once the folders are "
            "named by their dates)"
        )
    plan = _plan(job, client, starts)
    if plan.misdated and job.planning.prune:
        reason = (
            f"listed folders hold files outside the dates their names claim, e.g. {plan.misdated[0]}: "
            "pruning by folder names could skip files"
        )
        log.warning("%s; planning again with everything listed", reason)
        _disable_pruning(job, reason, plan.misdated)
        misdated, plan = plan.misdated, _plan(_unpruned(job), client, starts)
        plan.misdated = misdated
        warnings.append(f"folders are listed whole from now on: {reason} (recorded in {_planning_url(job)})")
    plan.warnings = warnings
    plan.seconds = time.perf_counter() - t0
    log.info(plan.line())
    return plan


def _plan(job: JobConfig, client, starts) -> Plan:
    window = job_window(job, starts)
    settings, parser = cached_settings(job)
    p = job.planning
    where = "driver" if client is None else p.where
    budget = {"driver": (math.inf, math.inf), "workers": (0, 0), "auto": (p.driver_max_files, p.driver_max_requests)}
    first = settings.walk(job, window, max_files=budget[where][0], max_calls=budget[where][1])
    if first.pending or where == "workers":
        return _plan_on_workers(job, client, window, first)
    partitions, undated, misdated = plan_files(first, job, window, parser)
    return Plan(
        {k: [v] for k, v in partitions.split().items()},
        partitions.counts(),
        "driver",
        len(undated),
        len(first.files),
        first.calls,
        first.pruned,
        undated_parts=[(undated, dataclasses.replace(first, files=[], pending=[]))],
        misdated=misdated,
    )


def _unpruned(job: JobConfig) -> JobConfig:
    return job.model_copy(update={"planning": job.planning.model_copy(update={"prune": False})})


def _planning_url(job: JobConfig) -> str:
    return join_url(job.output, "_planning.json")


def _pruning_disabled(job: JobConfig) -> str | None:
    """Why an earlier run found this archive's folder names untrustworthy, if it did."""
    fs, path = filesystem(_planning_url(job), job.output_storage_options)
    try:
        record = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    return None if record.get("prune", True) else record.get("reason", "an earlier run found misdated folders")


def _disable_pruning(job: JobConfig, reason: str, examples: list[str]) -> None:
    record = {
        "prune": False,
        "reason": reason,
        "examples": examples,
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(_planning_url(job), json.dumps(record, indent=2).encode(), job.output_storage_options)


def _plan_on_workers(job: JobConfig, client, window: Window, first: Listing) -> Plan:
    """Planning tasks over groups of folders; a task that reaches its budget hands its pending folders back,
    and they are spread over new tasks.  The driver gathers only each task's summary."""
    from distributed import as_completed

    plan = Plan(defaultdict(list), Counter(), "workers")
    budget = (job.planning.task_max_files, job.planning.task_max_requests, job.planning.task_spread)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    done = as_completed()

    def submit(ops, preset=None):
        done.add(client.submit(plan_part, job, window, ops, preset, budget, pure=False, retries=TASK_RETRIES))
        plan.tasks += 1

    def submit_groups(ops):  # at least two groups a worker, none larger than a task's request budget
        ops = sorted(ops, key=_op_order)  # a group holds the same days of every station: one ephemeris for them
        groups = max(math.ceil(len(ops) / budget[1]), 2 * workers)
        size = max(1, math.ceil(len(ops) / groups))
        for i in range(0, len(ops), size):
            submit(ops[i : i + size])

    if first.files or first.direct or first.subtrees:  # what the driver listed is planned by one task
        submit([], dataclasses.replace(first, pending=[]))
    else:
        plan.requests, plan.pruned = first.calls, first.pruned
    submit_groups(first.pending)
    for part in done:
        if part.status == "error":
            err = part.exception()
            raise RuntimeError(f"planning task {part.key!r} failed: {type(err).__name__}: {err}") from err
        # Tasks that read a part run where it is: an idle worker would otherwise fetch the whole part.
        holder = plan.holders[part.key] = list(client.who_has([part]).get(part.key, ()))
        s = client.submit(part_summary, part, pure=False, workers=holder, allow_other_workers=True).result()
        plan.undated_parts.append(
            client.submit(part_undated, part, pure=False, workers=holder, allow_other_workers=True)
        )
        for key, n in s["counts"].items():
            plan.rows[key].append(part)
            plan.counts[key] += n
        plan.unparseable += s["unparseable"]
        plan.misdated += s["misdated"]
        plan.listed += s["listed"]
        plan.requests += s["requests"]
        plan.pruned += s["pruned"]
        if s["pending"]:
            submit_groups(s["pending"])
    plan.rows, plan.counts = dict(plan.rows), dict(plan.counts)
    return plan


def _op_order(op: tuple[str, Folder]) -> tuple:
    span = folder_time_span(op[1].fields())
    return (span[0] if span else dt.datetime.min), op[1].station or "", op[1].path


def write_undated(job: JobConfig, parts: list[tuple[pd.DataFrame, Listing]]) -> int:
    """Write ``catalog/undated.parquet``: the old ledger merged with the parts' (see :func:`merge_undated`)."""
    from aurora_batch.store.ledger import read_month_catalog, write_month_catalog

    try:
        old = read_month_catalog(job.output, "undated", job.output_storage_options)
    except FileNotFoundError:
        old = None
    fs, _ = filesystem(job.input, job.storage_options)
    merged = merge_undated(old, [rows for rows, _ in parts], [scope for _, scope in parts], fs)
    write_month_catalog(job.output, "undated", merged, job.output_storage_options)
    return len(merged)
