"""The season job: catalog → ephemeris filter → partitions on Dask → monthly Zarr stores.

The driver holds only the catalog (metadata, ~100 bytes a file) and small per-partition
summaries; images and features stay on the workers and in staged parts, so driver memory
does not grow with the number of images.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import sys
import time
from collections import Counter, defaultdict

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .catalog import CATALOG_COLUMNS, LAYOUTS, Status, build_catalog, list_images, partition_key
from .cluster import dask_client, local_worker_count
from .config import JobConfig
from .ephemeris import annotate_catalog, sun_moon_reasons
from .fs import join_url, write_bytes_atomic
from .partition import PartitionResult, process_partition
from .stations import get_station
from .store import commit_month, month_of, read_part, store_url

__all__ = ["SeasonSummary", "plan_season", "run_season", "catalog_url"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SeasonSummary:
    output: str
    catalog: str
    stores: list[str]
    seen: int
    kept: int
    dropped: dict[str, int]
    groups: dict[str, dict[str, int]]  #: month → group → kept images
    partitions: int
    resumed_partitions: int
    seconds: float

    def format(self) -> str:
        lines = [f"aurora-batch season: {self.seen} images seen, {self.kept} kept, "
                 f"{sum(self.dropped.values())} dropped in {self.seconds:.1f} s"]
        for reason, n in sorted(self.dropped.items()):
            lines.append(f"  dropped ({reason}): {n}")
        lines.append(f"  partitions: {self.partitions} ({self.resumed_partitions} already staged)")
        lines.append(f"  catalog: {self.catalog}")
        for month, groups in sorted(self.groups.items()):
            desc = ", ".join(f"{g}: {n}" for g, n in sorted(groups.items()))
            lines.append(f"  store {store_url(self.output, month)}  [{desc}]")
        return "\n".join(lines)


def catalog_url(output: str) -> str:
    return join_url(output, "catalog.parquet")


def plan_season(job: JobConfig) -> tuple[pd.DataFrame, dict[str, tuple[str, pd.DataFrame]]]:
    """List, parse and ephemeris-filter the archive; split the rest into partitions.

    Returns the catalog (pending rows still ``pending``) and ``{key: (month, rows)}``.
    """
    listing = list_images(job.input, job.storage_options)
    catalog = build_catalog(listing["url"], LAYOUTS[job.layout], job.stations, job.start, job.end)
    catalog = annotate_catalog(catalog)
    pending = catalog["status"] == Status.PENDING
    f = job.filter
    reasons = sun_moon_reasons(catalog.loc[pending, "sun_alt"].to_numpy(),
                               catalog.loc[pending, "moon_alt"].to_numpy(),
                               catalog.loc[pending, "moon_illumination"].to_numpy(),
                               f.sun_max_alt, f.moon_max_alt, f.moon_min_illumination)
    idx = catalog.index[pending]
    dropped = reasons != ""
    catalog.loc[idx[dropped], "status"] = reasons[dropped]
    catalog.loc[idx[dropped & (reasons == "sun")], "detail"] = f"sun above {f.sun_max_alt} deg"
    catalog.loc[idx[dropped & (reasons == "moon")], "detail"] = f"moon above {f.moon_max_alt} deg"
    todo = catalog[catalog["status"] == Status.PENDING]
    partitions: dict[str, tuple[str, pd.DataFrame]] = {}
    day = todo["time"].dt.floor("D")
    for (station, wl, d), rows in todo.groupby([todo["station"], todo["wavelength"], day],
                                               dropna=False, sort=True):
        partitions[partition_key(station, wl, d)] = (month_of(d), rows)
    return catalog, partitions


def _commit(job: JobConfig, month: str, results: list[PartitionResult], group_attrs: dict,
            common_attrs: dict) -> dict:
    return commit_month(job.output, month, [r.url for r in results], group_attrs, common_attrs,
                        job.output_storage_options)


def _common_attrs(job: JobConfig) -> dict:
    return {
        "aurora_batch_version": __version__,
        "backbone": job.features.backbone,
        "weights": os.path.basename(job.features.weights) if job.features.weights else "pretrained (shipped)",
        "recipe": job.features.recipe,
        "sun_max_alt": job.filter.sun_max_alt,
        "moon_max_alt": job.filter.moon_max_alt,
        "moon_min_illumination": job.filter.moon_min_illumination,
        "threshold_units": "degrees (altitudes), 1 (illumination)",
        "time_standard": "UTC",
    }


def run_season(job: JobConfig, client=None, progress: bool = True) -> SeasonSummary:
    """Run ``job`` on ``client`` (or on the cluster its config names) and write the catalog.

    Safe to re-run: staged partitions with the same inputs are reused, and each month store
    is rebuilt from the staged parts.
    """
    t0 = time.perf_counter()
    catalog, partitions = plan_season(job)
    log.info("catalog: %d files, %d partitions to process", len(catalog), len(partitions))
    if client is None:
        if job.features.torch_threads is None and not job.cluster.scheduler:
            cores = os.cpu_count() or 1
            per_task = max(1, cores // (local_worker_count(job.cluster) * job.cluster.threads_per_worker))
            job = job.model_copy(update={"features": job.features.model_copy(update={"torch_threads": per_task})})
        with dask_client(job.cluster) as client:
            results, groups = _run_graph(job, partitions, client, progress)
    else:
        results, groups = _run_graph(job, partitions, client, progress)
    final = _final_catalog(job, catalog, results)
    cat_url = catalog_url(job.output)
    buf = io.BytesIO()
    table = pa.Table.from_pandas(final, preserve_index=False)
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(cat_url, buf.getvalue(), job.output_storage_options)
    counts = Counter(final["status"])
    kept = counts.pop(Status.KEPT, 0)
    return SeasonSummary(job.output, cat_url, [store_url(job.output, m) for m in sorted(groups)], len(final), kept,
                         dict(counts), groups, len(results), sum(r.resumed for r in results),
                         time.perf_counter() - t0)


def _run_graph(job: JobConfig, partitions, client, progress: bool):
    from distributed import as_completed

    if progress and client.dashboard_link:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    by_month: dict[str, list[str]] = defaultdict(list)
    for key, (month, _) in partitions.items():
        by_month[month].append(key)
    common = _common_attrs(job)
    futures, commits = [], {}
    for month in sorted(by_month):  # submit month by month so early months commit early
        part_futs = [client.submit(process_partition, job, key, month, partitions[key][1],
                                   key=f"partition-{key}-{job.output}", pure=False)
                     for key in by_month[month]]
        stations = {partitions[k][1]["station"].iloc[0] for k in by_month[month]}
        attrs = {s: get_station(s).attrs() for s in stations}
        commits[month] = client.submit(_commit, job, month, part_futs, attrs, common,
                                       key=f"commit-{month}-{job.output}", pure=False)
        futures += part_futs
    results: list[PartitionResult] = []
    groups: dict[str, dict[str, int]] = {}
    bar = _progress_bar(len(futures) + len(commits), progress)
    try:
        for fut in as_completed(futures + list(commits.values())):
            try:
                value = fut.result()
            except Exception as err:
                raise RuntimeError(f"task {fut.key!r} failed: {err}") from err
            if isinstance(value, PartitionResult):
                results.append(value)
            bar.update(1)
        for month, fut in commits.items():
            groups[month] = fut.result()
    finally:
        bar.close()
    return results, groups


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="partitions+commits", unit="task", disable=not enabled, file=sys.stderr)


def _final_catalog(job: JobConfig, catalog: pd.DataFrame, results: list[PartitionResult]) -> pd.DataFrame:
    decided = catalog[catalog["status"] != Status.PENDING]
    parts = [read_part(r.url, job.output_storage_options, columns=CATALOG_COLUMNS)[0] for r in results]
    final = pd.concat([decided, *parts], ignore_index=True) if parts else decided.copy()
    final = final.sort_values(["station", "wavelength", "time", "url"], na_position="last", kind="stable")
    final["time"] = pd.to_datetime(final["time"]).dt.tz_localize("UTC")
    return final.reset_index(drop=True)[CATALOG_COLUMNS]
