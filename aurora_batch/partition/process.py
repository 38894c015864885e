"""The unit of work: one (station, wavelength, day) partition, from file URLs to a staged part.

Runs inside a Dask worker but is a plain function of its arguments, testable without a
cluster.  Files stream through :func:`aurora_batch.partition.stream.stream_files`: many reads in
flight (fsspec), decoding into frames (one, or many for PGM streams, CDF and HDF5 files) at
the resolution the recipe needs, and per-frame work in threads, while this thread feeds the
network whole batches.  Each frame gets the Sun and Moon at its own time stamp and its own
verdict: ``kept``, ``sun``, ``moon`` or ``not_sky`` (a constant, non-finite, too small or
implausibly shaped frame); only kept frames reach the network.  A file that is gone or cannot
be decoded becomes one row ``unreadable_image`` with the reason, and the partition goes on;
any other error (a storage outage) fails the task, which Dask retries, so no good image is
ever rejected for it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd

from aurora_batch.config import JobConfig
from aurora_batch.core.keys import WHOLE_FILE, PartitionKey, Status, file_ledger
from aurora_batch.model.heads import load_head
from aurora_batch.partition.clock import StageClock
from aurora_batch.partition.featurise import FeaturiseSettings, featurise
from aurora_batch.partition.fingerprint import feature_fingerprint
from aurora_batch.store.layout import ledger_url, staging_url
from aurora_batch.store.parts import read_part, read_published_part, read_staged_if, write_part

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PartitionResult:
    """A staged part: what the month build needs to know of it without reading it again."""

    key: PartitionKey
    url: str  #: the staged part
    fingerprint: str  #: the settings it was computed with (:meth:`JobConfig.feature_fingerprint`)
    statuses: dict[str, int]  #: files by catalog status
    images: int  #: kept images (frames)
    last_time: pd.Timestamp  #: latest file time in the partition (UTC)
    resumed: bool  #: True when an identical staged part already existed
    warnings: list[str] = dataclasses.field(default_factory=list)  #: for the user, one line each
    cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)  #: CPU seconds per stage (StageClock)
    wall_s: float = 0.0  #: the task's wall time
    computed: int = 0  #: frames decoded and judged by this run
    reused: int = 0  #: frames taken from the part staged before (files that did not change)
    published: bool = False  #: resumed from a compacted part: its month holds it already, nothing is staged


def _frames(rows: pd.DataFrame) -> int:
    """Frames read in ``rows`` (not the rows that stand for whole files)."""
    return int((rows["frame"] != WHOLE_FILE).sum()) if len(rows) else 0


def _result(
    key: PartitionKey,
    url: str,
    fingerprint: str,
    rows: pd.DataFrame,
    resumed: bool,
    warnings: list[str] | None = None,
    clock: StageClock | None = None,
    wall_s: float = 0.0,
    reused: int | None = None,
    published: bool = False,
) -> PartitionResult:
    files = file_ledger(rows)
    frames = _frames(rows)
    reused = frames if resumed else (reused or 0)
    return PartitionResult(
        key,
        url,
        fingerprint,
        files["status"].value_counts().to_dict(),
        int((rows["status"] == Status.KEPT).sum()),
        pd.Timestamp(files["time"].max()),
        resumed,
        warnings or [],
        dict(clock.cpu) if clock else {},
        wall_s,
        frames - reused,
        reused,
        published,
    )


@dataclasses.dataclass
class _Staged:
    """What the partition's staged part (computed with the same settings) offers: all of it, or its files."""

    whole: pd.DataFrame | None  #: its ledger columns, when it was computed from exactly these files
    files: frozenset[str] = frozenset()  #: else the pending files it holds unchanged (same URL and size)
    published: bool = False  #: it is compacted: its rows in its ledger, its arrays in the published month


def _already_staged(url: str, rows: pd.DataFrame, job: JobConfig) -> _Staged:
    """How much of the staged part can be reused: all of it when it was computed from the same files with the same
    settings; else its files whose URL and size are unchanged (per-file resume: a late file costs one file).  A
    part compacted after its month was published (``store.keep_staging: false``) is read from its ledger."""
    columns = ["url", "status", "detail", "time", "frame"]
    staged, published = None, False
    for where, published in ((url, False), (ledger_url(job.output, PartitionKey.parse(url)), True)):  # noqa: B007  (read after the break)
        try:
            staged = read_staged_if(where, feature_fingerprint(job), job.output_storage_options, [*columns, "size"])
            break
        except FileNotFoundError:
            continue
        except Exception as err:  # an unreadable staged part is recomputed
            log.warning("staged part %s unreadable (%s); recomputing", where, err)
            return _Staged(None)
    if staged is None:
        return _Staged(None)
    urls = set(staged["url"])
    if "size" in rows and "size" in staged:
        sizes, now = staged.groupby("url")["size"].first(), rows.set_index("url")["size"]
        same = {u for u in now.index.intersection(sizes.index) if now[u] == sizes[u]}
    else:  # a part staged without file sizes (by an earlier version): only all of it, as it was
        same = urls if urls == set(rows["url"]) else set()
    if urls == set(rows["url"]) == same:
        return _Staged(staged[columns], published=published)
    pending = set(rows.loc[rows["status"] == Status.PENDING, "url"])
    read = set(staged.loc[(staged["frame"] != WHOLE_FILE) | (staged["status"] == Status.UNREADABLE), "url"])
    return _Staged(None, frozenset(pending & read & same), published)


def process_partition(job: JobConfig, key: PartitionKey, rows: pd.DataFrame, force: bool = False) -> PartitionResult:
    """Read, judge, preprocess and featurise the files of ``rows``; stage the result atomically.

    ``rows`` are all catalog rows of one partition: ``pending`` ones are processed, rows
    already decided (``sun``, ``moon``, ``duplicate``) are staged as they are, so the part is
    the partition's whole ledger (one row per frame of the files read).  When a part with the
    same input URLs and settings is already staged, nothing is recomputed unless ``force``.
    The same as :func:`stage_chunks` of one :func:`process_chunk`.
    """
    return stage_chunks(job, key, [process_chunk(job, key, rows, 0, 1, force)])


@dataclasses.dataclass
class Chunk:
    """The featurised rows of a share of one partition's files, not yet staged (or the partition, if it was)."""

    rows: list[dict]
    arrays: dict[str, np.ndarray]
    notes: list[str]
    cpu_s: dict[str, float]
    wall_s: float
    resumed: PartitionResult | None = None  #: the partition was staged already with the same inputs
    reuse: frozenset[str] = frozenset()  #: files whose rows and arrays the staged part gives (first share only)
    reuse_published: bool = False  #: that part is compacted: read from its ledger and its month


def process_chunk(
    job: JobConfig, key: PartitionKey, rows: pd.DataFrame, index: int, count: int, force: bool = False
) -> Chunk:
    """Share ``index`` of ``count`` of the partition's pending files, in time order (the first share also
    carries the rows decided as whole files); the partition's :func:`stage_chunks` stages the shares
    together, so a partition uses several workers when a run has fewer partitions than threads.

    Files of the part staged before with the same settings, URL and size are not read again: the
    first share names them, and :func:`stage_chunks` takes their rows and arrays from that part."""
    t0 = time.perf_counter()
    url, fingerprint = staging_url(job.output, key), feature_fingerprint(job)
    staged = _Staged(None) if force else _already_staged(url, rows, job)
    if staged.whole is not None:
        return Chunk(
            [], {}, [], {}, 0.0, _result(key, url, fingerprint, staged.whole, resumed=True, published=staged.published)
        )
    clock = StageClock()
    out: list[dict] = (
        []
        if index
        else [
            {**row, "frame": WHOLE_FILE, "saturated": np.nan}
            for row in rows[rows["status"] != Status.PENDING].to_dict("records")
        ]
    )
    todo = rows[(rows["status"] == Status.PENDING) & ~rows["url"].isin(staged.files)]
    todo = todo.sort_values("time", kind="stable").to_dict("records")
    todo = todo[len(todo) * index // count : len(todo) * (index + 1) // count]
    arrays, notes = featurise(FeaturiseSettings.of(job), todo, out, clock=clock) if todo else ({}, [])
    return Chunk(
        out,
        arrays,
        notes,
        dict(clock.cpu),
        time.perf_counter() - t0,
        reuse=staged.files if index == 0 else frozenset(),
        reuse_published=staged.published,
    )


def _reused(url: str, files: frozenset[str], job: JobConfig, published: bool) -> Chunk:
    """The rows and arrays of ``files`` in the part staged at ``url``, or in its ledger and its published month
    (the classes are computed again)."""
    if published:
        rows, arrays = read_published_part(
            job.output, PartitionKey.parse(url), feature_fingerprint(job), job.output_storage_options
        )
    else:
        rows, arrays = read_part(url, job.output_storage_options)
    mine = rows["url"].isin(files).to_numpy()
    take = mine[(rows["status"] == Status.KEPT).to_numpy()]
    return Chunk(rows[mine].to_dict("records"), {k: v[take] for k, v in arrays.items() if k != "proba"}, [], {}, 0.0)


def stage_chunks(job: JobConfig, key: PartitionKey, chunks: list[Chunk]) -> PartitionResult:
    """Stage one partition from its chunks, in order (and the files reused from the part staged before): one
    Parquet object, written atomically."""
    if (resumed := next((c.resumed for c in chunks if c.resumed is not None), None)) is not None:
        return resumed
    url, fingerprint = staging_url(job.output, key), feature_fingerprint(job)
    clock = StageClock()
    for c in chunks:
        for stage, seconds in c.cpu_s.items():
            clock.cpu[stage] += seconds
    reuse = frozenset().union(*(c.reuse for c in chunks))
    if reuse:
        chunks = [_reused(url, reuse, job, any(c.reuse_published for c in chunks)), *chunks]
    staged = pd.DataFrame([row for c in chunks for row in c.rows])  # row order is the feature order
    staged["time"] = pd.to_datetime(staged["time"]).astype("datetime64[ns]")
    staged["frame"] = staged["frame"].astype("int32")
    staged["saturated"] = staged["saturated"].astype("float32")
    arrays = {
        name: np.concatenate([c.arrays[name] for c in chunks if name in c.arrays])
        for name in dict.fromkeys(n for c in chunks for n in c.arrays)
    }
    if job.classify.head and len(arrays.get("features", ())):
        arrays["proba"] = load_head(job.classify.head).predict_proba(arrays["features"])
    with clock("staging"):
        write_part(url, staged, arrays, job.output_storage_options, fingerprint)
    notes = list(dict.fromkeys(n for c in chunks for n in c.notes))
    return _result(
        key,
        url,
        fingerprint,
        staged,
        resumed=False,
        warnings=notes,
        clock=clock,
        wall_s=sum(c.wall_s for c in chunks),
        reused=_frames(pd.DataFrame(chunks[0].rows)) if reuse else 0,
    )
