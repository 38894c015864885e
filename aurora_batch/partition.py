"""The unit of work: one (station, wavelength, day) partition, from file URLs to a staged part.

Runs inside a Dask worker but is a plain function of its arguments, testable without a
cluster.  Files stream through :func:`aurora_batch.stream.stream_files`: many reads in
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

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from .catalog import WHOLE_FILE, PartitionKey, Status, file_ledger
from .classify import load_head
from .config import FilterConfig, JobConfig
from .ephemeris import sun_moon, sun_moon_reasons
from .features import FeatureExtractor, default_decode_threads, freeze_long_lived_objects
from .formats import FileFrames, read_file
from .fs import read_bytes
from .imaging import Recipe, get_recipe, keogram_lines, range_fraction, saturated_fraction, sky_problem
from .skymap import Skymap, elevation_mask, find_skymaps, skymap_for
from .stations import get_station
from .store import ledger_url, read_part, read_published_part, read_staged_if, staging_url, write_part
from .stream import StreamSettings, stream_files
from .torch_recipes import DeviceRecipe

__all__ = ["PartitionResult", "process_partition", "process_chunk", "stage_chunks", "Chunk", "judge_frames",
           "StageClock", "SITE_TOLERANCE_DEG", "LOW_RANGE"]

log = logging.getLogger(__name__)
SITE_TOLERANCE_DEG = 0.05  #: a file's stated site position may differ this much from the station table
LOW_RANGE = 0.10  #: warn when a container-scaled recipe's input spans less than this share of its range


class StageClock:
    """CPU seconds (of the thread doing the work) and wall seconds spent per stage of a partition."""

    def __init__(self):
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


def _untimed(stage: str):
    return _UNTIMED


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


def _result(key: PartitionKey, url: str, fingerprint: str, rows: pd.DataFrame, resumed: bool,
            warnings: list[str] | None = None, clock: StageClock | None = None, wall_s: float = 0.0,
            reused: int | None = None, published: bool = False) -> PartitionResult:
    files = file_ledger(rows)
    frames = _frames(rows)
    reused = frames if resumed else (reused or 0)
    return PartitionResult(key, url, fingerprint, files["status"].value_counts().to_dict(),
                           int((rows["status"] == Status.KEPT).sum()), pd.Timestamp(files["time"].max()), resumed,
                           warnings or [], dict(clock.cpu) if clock else {}, wall_s, frames - reused, reused,
                           published)


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
    for where, published in ((url, False), (ledger_url(job.output, PartitionKey.parse(url)), True)):
        try:
            staged = read_staged_if(where, job.feature_fingerprint(), job.output_storage_options, [*columns, "size"])
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


def process_chunk(job: JobConfig, key: PartitionKey, rows: pd.DataFrame, index: int, count: int,
                  force: bool = False) -> Chunk:
    """Share ``index`` of ``count`` of the partition's pending files, in time order (the first share also
    carries the rows decided as whole files); the partition's :func:`stage_chunks` stages the shares
    together, so a partition uses several workers when a run has fewer partitions than threads.

    Files of the part staged before with the same settings, URL and size are not read again: the
    first share names them, and :func:`stage_chunks` takes their rows and arrays from that part."""
    t0 = time.perf_counter()
    url, fingerprint = staging_url(job.output, key), job.feature_fingerprint()
    staged = _Staged(None) if force else _already_staged(url, rows, job)
    if staged.whole is not None:
        return Chunk([], {}, [], {}, 0.0, _result(key, url, fingerprint, staged.whole, resumed=True,
                                                  published=staged.published))
    clock = StageClock()
    out: list[dict] = [] if index else [{**row, "frame": WHOLE_FILE, "saturated": np.nan}
                                        for row in rows[rows["status"] != Status.PENDING].to_dict("records")]
    todo = rows[(rows["status"] == Status.PENDING) & ~rows["url"].isin(staged.files)]
    todo = todo.sort_values("time", kind="stable").to_dict("records")
    todo = todo[len(todo) * index // count: len(todo) * (index + 1) // count]
    arrays, notes = _featurise(job, todo, out, clock=clock) if todo else ({}, [])
    return Chunk(out, arrays, notes, dict(clock.cpu), time.perf_counter() - t0,
                 reuse=staged.files if index == 0 else frozenset(), reuse_published=staged.published)


def _reused(url: str, files: frozenset[str], job: JobConfig, published: bool) -> Chunk:
    """The rows and arrays of ``files`` in the part staged at ``url``, or in its ledger and its published month
    (the classes are computed again)."""
    if published:
        rows, arrays = read_published_part(job.output, PartitionKey.parse(url), job.feature_fingerprint(),
                                           job.output_storage_options)
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
    url, fingerprint = staging_url(job.output, key), job.feature_fingerprint()
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
    arrays = {name: np.concatenate([c.arrays[name] for c in chunks if name in c.arrays])
              for name in dict.fromkeys(n for c in chunks for n in c.arrays)}
    if job.classify.head and len(arrays.get("features", ())):
        arrays["proba"] = load_head(job.classify.head).predict_proba(arrays["features"])
    with clock("staging"):
        write_part(url, staged, arrays, job.output_storage_options, fingerprint)
    notes = list(dict.fromkeys(n for c in chunks for n in c.notes))
    return _result(key, url, fingerprint, staged, resumed=False, warnings=notes, clock=clock,
                   wall_s=sum(c.wall_s for c in chunks), reused=_frames(pd.DataFrame(chunks[0].rows)) if reuse else 0)


@dataclasses.dataclass
class _Judged:
    """One file's frames, judged: a row per frame and the network input of the kept ones."""

    rows: list[dict]
    inputs: list[np.ndarray]
    keograms: list[np.ndarray] = dataclasses.field(default_factory=list)  #: (2, KEOGRAM_PIXELS) per input
    #: with a recipe run later on the network's device: each input is the decoded frame, and this its field of view
    masks: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    site_offset: float | None = None  #: degrees between the file's stated site and the station table
    low_range: bool = False  #: a container-scaled recipe's input spans < LOW_RANGE of its range


def _zenith(skymap: Skymap | None, shape: tuple[int, int]) -> tuple[float, float] | None:
    """The skymap's zenith pixel at an image's ``shape`` (a reduced decode scales it), or None."""
    if skymap is None:
        return None
    (row, col), (h, w) = skymap.zenith, skymap.elevation.shape
    return (row + 0.5) * shape[0] / h - 0.5, (col + 0.5) * shape[1] / w - 0.5


def _site_offset(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Largest of the latitude and (wrapped) longitude differences between two sites, degrees."""
    return max(abs(a[0] - b[0]), abs((a[1] - b[1] + 180) % 360 - 180))


def judge_frames(frames: FileFrames, row: dict, recipe: Recipe, site: tuple[float, float, float] | None,
                 flt: FilterConfig, skymaps: list[Skymap] = (), min_elevation: float = 10.0,
                 clock: Callable = _untimed, defer_recipe: bool = False) -> _Judged:
    """Per frame: Sun and Moon at the frame's own time, the filter's verdict, the not-sky checks and the input.

    ``row`` is the file's catalog row (its ``time`` stands in for frames without a stamp);
    ``site`` is (latitude deg, longitude deg, altitude m), or None for a file of no known
    station (no Sun or Moon then, NaN).  Kept frames are preprocessed by ``recipe`` over the
    field of view of the skymap valid at their time (elevation at least ``min_elevation``
    degrees), else the recipe's own; their keogram lines go through that skymap's zenith, else
    the image centre.  With ``defer_recipe`` kept frames are left as decoded, with their masks, for the
    recipe's torch twin on the network's device (:class:`~aurora_batch.torch_recipes.DeviceRecipe`).
    """
    times = pd.DatetimeIndex([t or row["time"] for t in frames.times]).as_unit("ns")
    if site is None:
        sun = moon = illumination = np.full(len(times), np.nan)
    elif frames.times == [None] and np.isfinite(row.get("sun_alt", np.nan)):  # at the name's time: planned already
        sun, moon, illumination = (np.array([row[c]]) for c in ("sun_alt", "moon_alt", "moon_illumination"))
    else:
        with clock("ephemeris"):
            sun, moon, illumination = sun_moon(times, *site).to_numpy().T
    reasons = sun_moon_reasons(sun, moon, illumination, flt.sun_max_alt, flt.moon_max_alt, flt.moon_min_illumination)
    judged = _Judged([], [])
    for i, (t, img) in enumerate(zip(times, frames.images)):
        status, detail, saturated = Status.KEPT, "", np.nan
        if reasons[i] == "sun":
            status, detail = Status.SUN, f"Sun above {flt.sun_max_alt} deg"
        elif reasons[i] == "moon":
            status, detail = Status.MOON, f"Moon above {flt.moon_max_alt} deg"
        else:
            with clock("checks"):
                problem = sky_problem(img, recipe)
                saturated = saturated_fraction(img) if problem is None else np.nan
            if problem is not None:
                status, detail = Status.NOT_SKY, problem
            else:
                skymap = skymap_for(skymaps, t.to_pydatetime()) if skymaps else None
                with clock("recipe"):
                    mask = elevation_mask(skymap, img.shape[:2], min_elevation) if skymap else None
                    if defer_recipe:
                        judged.masks.append(mask)
                    judged.inputs.append(img if defer_recipe else recipe(img, mask))
                with clock("keogram"):
                    judged.keograms.append(keogram_lines(img, _zenith(skymap, img.shape[:2])))
                judged.low_range |= bool(recipe.stretch_variant) and range_fraction(img) < LOW_RANGE
        judged.rows.append({**row, "time": t, "status": status, "detail": detail, "frame": i,
                            "sun_alt": sun[i], "moon_alt": moon[i], "moon_illumination": illumination[i],
                            "saturated": saturated})
    if frames.site is not None and site is not None:
        judged.site_offset = _site_offset(frames.site, site[:2])
    return judged


def _featurise(job: JobConfig, todo: list[dict], out: list[dict], tick: Callable[[], None] | None = None,
               clock: Callable = _untimed) -> tuple[dict[str, np.ndarray], list[str]]:
    """Stream the ``todo`` files of one station through decode, judgement, recipe and network.

    Appends their rows to ``out``.  Returns the arrays of the kept frames, in the order of
    their rows in ``out`` (``features``, ``keogram_ns``, ``keogram_ew``), and warnings for the
    user (stated site positions off the table, inputs using little of their container's range).
    Files of no known station (``station`` None) get no Sun, Moon or skymap.  ``tick`` is
    called once per file (progress bars).
    """
    f = job.features
    recipe = get_recipe(f.recipe)
    formats = {fmt.name: fmt for fmt in job.formats()}
    station = get_station(todo[0]["station"]) if todo[0].get("station") else None
    site = (station.latitude, station.longitude, station.altitude_m) if station else None
    skymaps = find_skymaps(job.skymaps, station.code, job.storage_options) if job.skymaps and station else []
    with clock("model"):  # loaded once per worker process: later partitions find it built
        extractor = FeatureExtractor(f.backbone, f.weights, f.device, f.batch_size, f.precision, f.compile,
                                     input_size=recipe.size, compile_cache=f.compile_cache, recipe=recipe.name,
                                     runtime=f.runtime)
    decode_threads = default_decode_threads(extractor.device) if f.decode_threads is None else f.decode_threads
    on_device = f.recipe_device == "torch" or (f.recipe_device == "auto" and extractor.cuda)
    device_recipe = DeviceRecipe(recipe, extractor.device) if on_device else None
    settings = StreamSettings(f.fetch_concurrency, int(f.prefetch_mb * 2**20), decode_threads)

    def fetch(row: dict) -> bytes:
        with clock("fetch"):
            return read_bytes(row["url"], job.storage_options)

    def load(data: bytes, row: dict) -> _Judged:
        with clock("decode"):
            frames = read_file(data, row["url"], formats.get(row.get("format")), recipe.min_side, f.max_pixels)
        return judge_frames(frames, row, recipe, site, job.filter, skymaps, f.min_elevation, clock, on_device)

    def push(images: list[np.ndarray], masks: list[np.ndarray | None]) -> None:
        if device_recipe is not None:
            with clock("recipe"):
                inputs = device_recipe(images, masks)
        else:
            inputs = np.stack(images)
        with clock("network"):
            extractor.push(inputs)
        freeze_long_lived_objects()  # once per worker, when the model (and a compiled graph) exists

    batch: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    keograms: list[np.ndarray] = []
    off_site: list[tuple[str, float]] = []
    low_range: list[str] = []
    for row, judged in stream_files(todo, fetch, load,
                                    size=lambda r: r.get("size"), settings=settings):
        if tick is not None:
            tick()
        if isinstance(judged, Exception):
            out.append({**row, "status": Status.UNREADABLE, "detail": str(judged) or type(judged).__name__,
                        "frame": WHOLE_FILE, "saturated": np.nan})
            continue
        out += judged.rows
        batch += judged.inputs
        masks += judged.masks
        keograms += judged.keograms
        if judged.site_offset is not None and judged.site_offset > SITE_TOLERANCE_DEG:
            off_site.append((row["url"], judged.site_offset))
        if judged.low_range:
            low_range.append(row["url"])
        while len(batch) >= extractor.batch_size:  # whole batches: a compiled network never sees another shape
            push(batch[:extractor.batch_size], masks[:extractor.batch_size])
            del batch[:extractor.batch_size], masks[:extractor.batch_size]
    if batch:
        push(batch, masks)
    notes = []
    for m in skymaps:
        offset = _site_offset((m.latitude, m.longitude), site[:2])
        if offset > SITE_TOLERANCE_DEG:
            off_site.append((m.url, offset))
    if off_site:
        url, worst = max(off_site, key=lambda x: x[1])
        notes.append(f"{len(off_site)} file(s) or skymap(s) of {station.code} state a site position up to "
                     f"{worst:.3f} deg from the station table ({station.latitude}, {station.longitude}), e.g. {url}")
    if low_range:
        notes.append(f"recipe {recipe.name!r} scales by the container's full range, but the frames of "
                     f"{len(low_range)} file(s) span less than {LOW_RANGE:.0%} of it (raw counts?), e.g. "
                     f"{low_range[0]}: use features.recipe: {recipe.stretch_variant}")
    for note in notes:
        log.warning(note)
    with clock("network"):
        arrays = {"features": extractor.result()}
    if keograms:
        lines = np.stack(keograms)
        arrays.update(keogram_ns=lines[:, 0], keogram_ew=lines[:, 1])
    return arrays, notes
