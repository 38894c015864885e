"""Planning a run: list the window, parse names, filter whole files by the Sun and Moon, split into partitions.

The cost of a plan follows the window, not the archive: the listing descends only into
folders that can hold the job's files (:mod:`aurora_batch.plan.listing`), and names are parsed a
whole array at a time (:class:`~aurora_batch.formats.names.NameParser`).  Where the plan runs is
chosen by size (``planning.where: auto``): the driver lists up to ``planning.driver_max_files``
files (or ``driver_max_requests`` requests) itself and plans them in-process; a larger listing
is handed to the workers, as Dask tasks over groups of folders.  Each such task lists its
folders (handing on what exceeds its own budget, so the work spreads over the cluster),
parses, filters and splits its files, and keeps the rows: the driver receives partition keys
with counts, and each partition task fetches its rows from the tasks that found them, never
through the driver.  Duplicates (one station, wavelength and time in two folders) always fall
in one partition, which marks them as it merges its rows (:func:`merge_partition_rows`).

Unparseable names are kept in ``catalog/undated.parquet``: each run replaces the rows of the
folders it listed and keeps the others, so a nightly run does not forget a season's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from aurora_batch.config import JobConfig
from aurora_batch.core.ephemeris import annotate_catalog, sun_moon_reasons
from aurora_batch.core.fs import filesystem, url_maker
from aurora_batch.core.keys import CATALOG_COLUMNS, PartitionKey, Status
from aurora_batch.formats.names import Format, NameParser, extensions
from aurora_batch.plan.catalog import build_catalog, catalog_frame, list_images, mark_duplicates, mark_unsupported
from aurora_batch.plan.listing import Folder, FolderLayout, Listing, Window, walk

log = logging.getLogger(__name__)


def job_window(job: JobConfig, starts: dict[str, pd.Timestamp] | None = None) -> Window:
    """The job's stations and window in whole UTC days (a partition is never staged with part of its day);
    ``starts``: per-station starts (nightly runs), else ``job.start`` for every station."""
    end = pd.Timestamp(job.end).ceil("D").to_pydatetime()
    first = {s: pd.Timestamp((starts or {}).get(s, job.start)).floor("D").to_pydatetime() for s in job.stations}
    return Window(first, end, pd.Timedelta(job.planning.folder_margin).to_pytimedelta())


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What listing and parsing need of a job, built once per process."""

    formats: tuple[Format, ...]
    layouts: tuple[FolderLayout, ...]
    extensions: tuple[str, ...]
    compose: bool  #: every format declares its folders: the listing composes the window's folders

    @classmethod
    def of(cls, job: JobConfig) -> _Settings:
        formats = tuple(job.formats())
        declared = [f.folders for f in formats if f.folders]
        layouts = tuple(FolderLayout.of(p) for p in dict.fromkeys(declared))
        return cls(formats, layouts, extensions(list(formats)), len(declared) == len(formats))

    def walk(self, job: JobConfig, window: Window, **kwargs) -> Listing:
        fs, root = filesystem(job.input, job.storage_options)
        p = job.planning
        return walk(fs, root, window, self.layouts, self.extensions, p.prune, self.compose, p.concurrency, **kwargs)


# --- the plan of some files (pure) ------------------------------------------------------------------


def plan_files(
    listing: Listing, job: JobConfig, window: Window, parser: NameParser | None = None
) -> tuple[PartitionedRows, pd.DataFrame, list[str]]:
    """Catalog rows of a listing's files (:func:`~aurora_batch.plan.listing.walk`), by partition.

    Returns (rows by partition, unparseable rows, misdated files): the rows of the window's
    stations and days, with the Sun and Moon at each name's time and whole files dropped where
    that is safe (:func:`drop_whole_files`); names of other stations or times are no input of
    the job.  Duplicates are marked when a partition merges its rows
    (:func:`merge_partition_rows`).  *Misdated* files are those whose time lies outside the
    dates their folder's name claims (by more than ``planning.folder_margin``): pruning by
    folder names cannot be trusted for this archive (:func:`plan_run` lists it whole).
    """
    fs, _ = filesystem(job.input, job.storage_options)
    formats = parser.formats if parser else job.formats()
    parser = parser or NameParser(formats)
    url = url_maker(fs)
    files = listing.files
    urls = [url(p) for p, _ in files]
    parsed = parser.parse(urls)
    sizes = np.fromiter((s for _, s in files), dtype=np.int64, count=len(files))
    bad = parsed["format"].isna().to_numpy()
    misdated = _misdated([p for p, _ in files], parsed["time"].to_numpy(), bad, listing, window.margin)
    undated = catalog_frame(
        [u for u, b in zip(urls, bad) if b], status=Status.UNPARSEABLE, detail=parsed.loc[bad, "detail"].tolist()
    )
    starts = parsed["station"].map(window.starts)
    keep = ~bad & starts.notna().to_numpy()
    keep[keep] = (parsed.loc[keep, "time"] >= pd.to_datetime(starts[keep])).to_numpy() & (
        parsed.loc[keep, "time"] < pd.Timestamp(window.end)
    ).to_numpy()
    mine = parsed[keep]
    rows = mark_unsupported(
        catalog_frame(
            [u for u, k in zip(urls, keep) if k],
            mine["station"].tolist(),
            mine["time"].to_numpy(),
            mine["wavelength"].array,
            mine["format"].tolist(),
        ),
        formats,
    )
    rows = drop_whole_files(annotate_catalog(rows), job, {f.name: f.span_s for f in formats})
    rows["size"] = sizes[keep]
    return PartitionedRows.of(rows), undated, misdated


def _misdated(
    paths: list[str], times: np.ndarray, unparsed: np.ndarray, listing: Listing, margin: dt.timedelta, examples: int = 3
) -> list[str]:
    """Up to ``examples`` files whose name's time contradicts the dates of the folder they were listed in."""
    if not listing.dated:
        return []
    spans: dict[str, tuple | None] = {}
    out = []
    pad = np.timedelta64(margin)
    for path, t, skip in zip(paths, times, unparsed):
        if skip:
            continue
        folder = path.rsplit("/", 1)[0]
        if folder not in spans:
            span = listing.folder_span(folder)
            spans[folder] = None if span is None else (np.datetime64(span[0]) - pad, np.datetime64(span[1]) + pad)
        span = spans[folder]
        if span is not None and not span[0] <= t < span[1]:
            out.append(f"{path} ({pd.Timestamp(t):%Y-%m-%d %H:%M})")
            if len(out) >= examples:
                break
    return out


@dataclasses.dataclass
class PartitionedRows:
    """Dated catalog rows in partition order, with each (station, wavelength, UTC day) partition's row range.

    One frame, not a frame per partition: a partition's rows are copied out when its task asks
    for them (a slice would keep, and be weighed by Dask as, the whole frame's buffers).
    """

    rows: pd.DataFrame
    bounds: dict[PartitionKey, tuple[int, int]]

    @classmethod
    def of(cls, rows: pd.DataFrame) -> PartitionedRows:
        if not len(rows):
            return cls(rows, {})
        day = rows["time"].to_numpy().astype("datetime64[D]")
        wl = rows["wavelength"].fillna(-1).to_numpy(np.int64)
        order = np.lexsort((day, wl, rows["station"].to_numpy(dtype=str)))
        rows = rows.take(order).reset_index(drop=True)
        day, wl, station = day[order], wl[order], rows["station"].to_numpy()
        edges = np.flatnonzero((day[1:] != day[:-1]) | (wl[1:] != wl[:-1]) | (station[1:] != station[:-1])) + 1
        bounds = {
            PartitionKey.of(station[a], None if wl[a] < 0 else wl[a], day[a]): (int(a), int(b))
            for a, b in zip(np.r_[0, edges], np.r_[edges, len(rows)])
        }
        return cls(rows, bounds)

    def __getitem__(self, key: PartitionKey) -> pd.DataFrame:
        a, b = self.bounds[key]
        return self.rows.iloc[a:b].copy().reset_index(drop=True)

    def counts(self) -> dict[PartitionKey, int]:
        return {k: b - a for k, (a, b) in self.bounds.items()}

    def split(self) -> dict[PartitionKey, pd.DataFrame]:
        return {k: self[k] for k in self.bounds}


def merge_partition_rows(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One partition's rows from every plan part that found some, in catalog order, duplicates marked.

    Duplicates always fall in one partition (same station, wavelength and day), so marking them
    here is marking them across every folder of the archive, as the reference planner does.
    """
    rows = pd.concat(list(parts), ignore_index=True) if len(parts) > 1 else parts[0].copy()
    return mark_duplicates(rows).reset_index(drop=True)


def drop_whole_files(catalog: pd.DataFrame, job: JobConfig, spans: dict[str, float]) -> pd.DataFrame:
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
        return sun_moon_reasons(
            rows["sun_alt"].to_numpy(),
            rows["moon_alt"].to_numpy(),
            rows["moon_illumination"].to_numpy(),
            f.sun_max_alt + margin,
            moon_max,
            f.moon_min_illumination,
        )

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


def reference_plan(job: JobConfig) -> tuple[pd.DataFrame, dict[PartitionKey, pd.DataFrame]]:
    """The planner before folder pruning and worker planning: everything listed and parsed name by name
    in the driver.  Kept as the reference the planner is tested against: the catalog (rows to
    process still ``pending``) and ``{key: rows}``."""
    window = job_window(job)
    start, end = min(window.starts.values()), window.end
    formats = job.formats()
    listing = list_images(job.input, job.storage_options, extensions(formats))
    catalog = annotate_catalog(build_catalog(listing["url"], formats, job.stations, start, end))
    catalog = drop_whole_files(catalog, job, {f.name: f.span_s for f in formats})
    dated = catalog[catalog["time"].notna()]
    dated = dated.assign(size=dated["url"].map(listing.set_index("url")["size"]))
    return catalog, PartitionedRows.of(dated).split()


def merge_undated(
    old: pd.DataFrame | None, new: Sequence[pd.DataFrame], listings: Sequence[Listing], fs
) -> pd.DataFrame:
    """The unparseable-name ledger after a run: ``old`` rows of folders no listing covered, then ``new``."""
    frames = [n for n in new if len(n)]
    if old is not None and len(old):
        folders = [fs._strip_protocol(u).rsplit("/", 1)[0] for u in old["url"]]
        kept = [not any(listing.covers(f) for listing in listings) for f in folders]
        frames.insert(0, old.loc[kept, CATALOG_COLUMNS])
    if not frames:
        return catalog_frame([], status=Status.UNPARSEABLE)
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates("url", keep="last").sort_values("url", kind="stable").reset_index(drop=True)


@dataclasses.dataclass
class PlanPart:
    """A planning task's result, kept on its worker: rows by partition, unparseable names, what it listed."""

    partitions: PartitionedRows
    undated: pd.DataFrame
    listing: Listing  #: the folders it covered and those it left pending, without the files
    listed: int  #: files it listed
    misdated: list[str]  #: files whose time contradicts their folder's dates (examples)

    def __sizeof__(self) -> int:  # what Dask weighs before it moves a part between workers
        from dask.sizeof import sizeof

        return sizeof(self.partitions.rows) + sizeof(self.undated)

    def summary(self) -> dict:
        return {
            "counts": self.partitions.counts(),
            "pending": self.listing.pending,
            "listed": self.listed,
            "requests": self.listing.calls,
            "pruned": self.listing.pruned,
            "unparseable": len(self.undated),
            "misdated": self.misdated,
        }


def plan_part(
    job: JobConfig,
    window: Window,
    ops: list[tuple[str, Folder]],
    preset: Listing | None = None,
    budget: tuple[float, float, float] | None = None,
) -> PlanPart:
    """A planning task: list ``ops``, or take the driver's ``preset`` listing, and plan what it found.

    ``budget``: (files, requests beyond ``ops``, new folders to list beyond ``ops``); a task that
    reaches it leaves the rest in its listing's ``pending``, to be spread over other tasks.
    """
    settings, parser = cached_settings(job)
    p = job.planning
    files, requests, spread = budget or (p.task_max_files, p.task_max_requests, p.task_spread)
    listing = (
        preset
        if preset is not None
        else settings.walk(
            job, window, ops=ops, max_files=files, max_calls=len(ops) + requests, max_pending=len(ops) + spread
        )
    )
    partitions, undated, misdated = plan_files(listing, job, window, parser)
    return PlanPart(partitions, undated, dataclasses.replace(listing, files=[]), len(listing.files), misdated)


def part_summary(part: PlanPart) -> dict:
    return part.summary()


def part_rows(part: PlanPart, key: PartitionKey) -> pd.DataFrame:
    return part.partitions[key]


def part_undated(part: PlanPart) -> tuple[pd.DataFrame, Listing]:
    return part.undated, dataclasses.replace(part.listing, pending=[])


_CACHE: dict[str, tuple[_Settings, NameParser]] = {}


def cached_settings(job: JobConfig) -> tuple[_Settings, NameParser]:
    """The job's formats, folder layouts and compiled name patterns, once per process and layout."""
    key = repr(job.layout)
    if key not in _CACHE:
        settings = _Settings.of(job)
        _CACHE[key] = (settings, NameParser(settings.formats))
    return _CACHE[key]
