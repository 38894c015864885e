"""The season job: catalog → ephemeris filter → partitions on Dask → monthly Zarr stores.

The driver holds only the catalog (metadata, ~100 bytes a file) and small per-partition
summaries; images and features stay on the workers and in staged parts.  Each month is
committed from *all* its staged partitions (so a nightly run over a few days keeps the rest
of the month), by one task that also writes the month's catalog; a month none of whose
partitions changed is not rewritten at all.  Driver memory therefore does not grow with
the number of images.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import pandas as pd

from .catalog import FRAME_COUNT_COLUMNS, PartitionKey, Status, build_catalog, list_images
from .cluster import dask_client, local_worker_count, partition_resources
from .config import JobConfig
from .ephemeris import annotate_catalog, sun_moon_reasons
from .formats import extensions
from .lock import OutputLock
from .partition import PartitionResult, process_partition
from .month import build_month, common_attrs, join_fingerprint, month_inputs
from .store import catalog_url, store_url, write_month_catalog
from .worker import register_worker_setup

__all__ = ["SeasonSummary", "plan_season", "run_season"]

log = logging.getLogger(__name__)
TASK_RETRIES = 2  #: Dask retries of a failed partition or commit (storage outages); both are idempotent


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

    def format(self) -> str:
        lines = [f"aurora-batch season: {self.seen} files seen, {self.kept} kept ({self.images} images), "
                 f"{sum(self.dropped.values())} dropped in {self.seconds:.1f} s"]
        lines += [f"  dropped ({reason}): {n}" for reason, n in sorted(self.dropped.items())]
        lines.append(f"  partitions: {self.partitions} ({self.resumed_partitions} already staged)")
        lines.append(f"  catalog: {self.catalog}")
        for month, groups in sorted(self.groups.items()):
            desc = ", ".join(f"{g}: {n}" for g, n in sorted(groups.items()))
            lines.append(f"  store {store_url(self.output, month)}  [{desc}]")
        if not self.groups:
            lines.append("  no store changed")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def plan_season(job: JobConfig) -> tuple[pd.DataFrame, dict[PartitionKey, pd.DataFrame]]:
    """List, parse and ephemeris-filter the archive; split dated files into partitions.

    Returns the catalog (rows to process still ``pending``) and ``{key: rows}``; a
    partition holds every dated file of its (station, wavelength, UTC day), dropped ones too,
    so the window [start, end) is rounded out to whole days: a partition is never staged
    with only part of its day.  Partition rows also carry each file's listed ``size`` (bytes),
    which bounds the bytes a partition reads ahead.
    """
    start = pd.Timestamp(job.start).floor("D")
    end = pd.Timestamp(job.end).ceil("D")
    formats = job.formats()
    listing = list_images(job.input, job.storage_options, extensions(formats))
    catalog = annotate_catalog(build_catalog(listing["url"], formats, job.stations, start, end))
    catalog = _filter_files(catalog, job, {f.name: f.span_s for f in formats})
    dated = catalog[catalog["time"].notna()]
    dated = dated.assign(size=dated["url"].map(listing.set_index("url")["size"]))
    partitions: dict[PartitionKey, pd.DataFrame] = {}
    day = dated["time"].dt.floor("D")
    for (station, wl, d), rows in dated.groupby([dated["station"], dated["wavelength"], day], dropna=False, sort=True):
        partitions[PartitionKey.of(station, wl, d)] = rows
    return catalog, partitions


def _filter_files(catalog: pd.DataFrame, job: JobConfig, spans: dict[str, float]) -> pd.DataFrame:
    """Drop whole files by the Sun and Moon where that is safe; the rest is judged per frame.

    A single-frame file is judged at its name's time, exactly.  A file whose frames run
    ``span_s`` past its name's time (a one-minute PGM stream, an hourly CDF) is dropped only
    when both ends of its span fail the same test by a margin that bounds how far an altitude
    can sag below the chord between them (altitude curvature is at most about 4 deg/h², so
    0.5 deg × span_h² + 0.01 deg).  Files near a threshold go to their partition, where every
    frame is judged at its own time stamp.
    """
    pending = catalog.index[catalog["status"] == Status.PENDING]
    if not len(pending):
        return catalog
    sub = catalog.loc[pending]
    span = sub["format"].map(spans).fillna(0.0).to_numpy(float)
    margin = np.where(span > 0, 0.5 * (span / 3600.0) ** 2 + 0.01, 0.0)
    f = job.filter
    moon_max = None if f.moon_max_alt is None else f.moon_max_alt + margin

    def reasons(rows: pd.DataFrame) -> np.ndarray:
        return sun_moon_reasons(rows["sun_alt"].to_numpy(), rows["moon_alt"].to_numpy(),
                                rows["moon_illumination"].to_numpy(), f.sun_max_alt + margin, moon_max,
                                f.moon_min_illumination)

    first = reasons(sub)
    spanned = span > 0
    if spanned.any():
        last = reasons(annotate_catalog(sub.assign(time=sub["time"] + pd.to_timedelta(span, unit="s"))))
        first = np.where(first == last, first, "")
    for reason, detail in (("sun", f"Sun above {f.sun_max_alt} deg"), ("moon", f"Moon above {f.moon_max_alt} deg")):
        hit = pending[first == reason]
        catalog.loc[hit, "status"] = reason
        catalog.loc[hit, "detail"] = detail
    return catalog


def _commit(job: JobConfig, month: str, results: list[PartitionResult], attrs: dict, join_fp: str,
            allow_shrink: bool) -> dict | None:
    """Build ``month`` (:func:`aurora_batch.month.build_month`) unless neither its partitions nor its join changed."""
    build = build_month(job, month_inputs(job, month, results), attrs, join_fp, allow_shrink,
                        changed=not all(r.resumed for r in results))
    return None if build is None else build.counts


def run_season(job: JobConfig, client=None, progress: bool = True, allow_shrink: bool = True,
               lock_purpose: str = "season") -> SeasonSummary:
    """Run ``job`` on ``client`` (or on the cluster its config names) and write the catalog.

    Holds the output's lock for the whole run: a second job on the same output is refused
    with :class:`~aurora_batch.lock.LockHeld`.  Safe to re-run or resume after a kill: staged
    partitions with the same inputs are reused, and a month is rebuilt from its staged parts
    only when one of them changed.  ``allow_shrink=False`` refuses to publish a month whose
    time axis would lose images (nightly runs).
    """
    t0 = time.perf_counter()
    job.check_files()
    with OutputLock(job.output, job.output_storage_options, purpose=lock_purpose, ttl_s=job.nightly.lock_ttl_s):
        catalog, partitions = plan_season(job)
        log.info("catalog: %d files, %d partitions", len(catalog), len(partitions))
        if client is None:
            own_local = job.cluster.kind == "local" and not job.cluster.scheduler
            cores = max(1, (os.cpu_count() or 1) // local_worker_count(job.cluster)) if own_local else None
            with dask_client(job.cluster) as client:
                register_worker_setup(client, job.features.torch_threads, cores)
                results, groups = _run_graph(job, partitions, client, progress, allow_shrink)
        else:
            register_worker_setup(client, job.features.torch_threads)
            results, groups = _run_graph(job, partitions, client, progress, allow_shrink)
        undated = catalog[catalog["time"].isna()].assign(**{c: 0 for c in FRAME_COUNT_COLUMNS})
        write_month_catalog(job.output, "undated", undated, job.output_storage_options)
    statuses = Counter(catalog.loc[catalog["time"].isna(), "status"])
    last: dict[str, pd.Timestamp] = {}
    for r in results:
        statuses.update(r.statuses)
        station = r.key.station
        last[station] = max(last.get(station, r.last_time), r.last_time)
    kept = statuses.pop(Status.KEPT, 0)
    return SeasonSummary(job.output, catalog_url(job.output), [store_url(job.output, m) for m in sorted(groups)],
                         len(catalog), kept, sum(r.images for r in results), dict(statuses), groups,
                         len(results), sum(r.resumed for r in results), time.perf_counter() - t0, last,
                         [w for r in results for w in r.warnings])


def _run_graph(job: JobConfig, partitions, client, progress: bool, allow_shrink: bool):
    from distributed import as_completed

    if progress and client.dashboard_link:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    by_month: dict[str, list[PartitionKey]] = defaultdict(list)
    for key in partitions:
        by_month[key.month].append(key)
    attrs, join_fp = common_attrs(job), join_fingerprint(job)
    resources = partition_resources(client)
    futures, commits = [], {}
    for month in sorted(by_month):  # submit month by month so early months commit early
        part_futs = [client.submit(process_partition, job, key, partitions[key], resources=resources,
                                   key=f"partition-{key.name}-{job.output}", pure=False, retries=TASK_RETRIES)
                     for key in by_month[month]]
        commits[month] = client.submit(_commit, job, month, part_futs, attrs, join_fp, allow_shrink,
                                       key=f"commit-{month}-{job.output}", pure=False, retries=TASK_RETRIES)
        futures += part_futs
    results: list[PartitionResult] = []
    groups: dict[str, dict[str, int]] = {}
    month_of_commit = {fut.key: month for month, fut in commits.items()}
    bar = _progress_bar(len(futures) + len(commits), progress)
    try:
        for fut in as_completed(futures + list(commits.values())):
            try:
                value = fut.result()
            except Exception as err:
                raise RuntimeError(f"task {fut.key!r} failed: {type(err).__name__}: {err}") from err
            if isinstance(value, PartitionResult):
                results.append(value)
            elif value is not None:
                groups[month_of_commit[fut.key]] = value
            bar.update(1)
    finally:
        bar.close()
    return results, groups


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="partitions+commits", unit="task", disable=not enabled, file=sys.stderr)
