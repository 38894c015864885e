"""Feeding the network: frames judged, decoded and preprocessed in threads while the network runs, giving the
feature vectors and class probabilities of the kept frames (:func:`featurise`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aurora_batch.config import FeatureConfig, FilterConfig, JobConfig
from aurora_batch.core.fs import read_bytes
from aurora_batch.core.keys import WHOLE_FILE, Status
from aurora_batch.core.stations import get_station
from aurora_batch.formats.files import read_file
from aurora_batch.formats.names import Format
from aurora_batch.formats.skymap import find_skymaps
from aurora_batch.model.features import FeatureExtractor, default_decode_threads, freeze_long_lived_objects
from aurora_batch.model.recipes import get_recipe
from aurora_batch.model.torch_recipes import DeviceRecipe
from aurora_batch.partition.clock import untimed
from aurora_batch.partition.frames import LOW_RANGE, SITE_TOLERANCE_DEG, Judged, judge_frames, site_distance
from aurora_batch.partition.stream import StreamSettings, stream_files

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FeaturiseSettings:
    """What featurising files needs: the network and its recipe, the Sun and Moon filter, and how files are
    named, read and where their skymaps are (a job gives them all: :meth:`of`)."""

    features: FeatureConfig
    filter: FilterConfig
    formats: Sequence[Format]
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    skymaps: str | dict[str, str] | None = None  #: as ``JobConfig.skymaps``

    @classmethod
    def of(cls, job: JobConfig) -> FeaturiseSettings:
        return cls(job.features, job.filter, job.formats(), job.storage_options, job.skymaps)


def featurise(
    settings: FeaturiseSettings,
    todo: list[dict],
    out: list[dict],
    tick: Callable[[], object] | None = None,
    clock: Callable = untimed,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Stream the ``todo`` files of one station through decode, judgement, recipe and network.

    Appends their rows to ``out``.  Returns the arrays of the kept frames, in the order of
    their rows in ``out`` (``features``, ``keogram_ns``, ``keogram_ew``), and warnings for the
    user (stated site positions off the table, inputs using little of their container's range).
    Files of no known station (``station`` None) get no Sun, Moon or skymap.  ``tick`` is
    called once per file (progress bars).
    """
    f = settings.features
    recipe = get_recipe(f.recipe)
    formats = {fmt.name: fmt for fmt in settings.formats}
    station = get_station(todo[0]["station"]) if todo[0].get("station") else None
    site = (station.latitude, station.longitude, station.altitude_m) if station else None
    skymaps = (
        find_skymaps(settings.skymaps, station.code, settings.storage_options) if settings.skymaps and station else []
    )
    with clock("model"):  # loaded once per worker process: later partitions find it built
        extractor = extractor_for(f)
    decode_threads = default_decode_threads(extractor.device) if f.decode_threads is None else f.decode_threads
    on_device = f.recipe_device == "torch" or (f.recipe_device == "auto" and extractor.cuda)
    device_recipe = DeviceRecipe(recipe, extractor.device) if on_device else None
    streaming = StreamSettings(f.fetch_concurrency, int(f.prefetch_mb * 2**20), decode_threads)

    def fetch(row: dict) -> bytes:
        with clock("fetch"):
            return read_bytes(row["url"], settings.storage_options)

    def load(data: bytes, row: dict) -> Judged:
        with clock("decode"):
            frames = read_file(data, row["url"], formats.get(row.get("format") or ""), recipe.min_side, f.max_pixels)
        return judge_frames(frames, row, recipe, site, settings.filter, skymaps, f.min_elevation, clock, on_device)

    def push(images: list[np.ndarray], masks: list[np.ndarray | None]) -> None:
        if device_recipe is not None:
            with clock("recipe"):
                inputs = device_recipe(images, masks)
        else:
            inputs = np.stack(images)
        with clock("network"):
            extractor.push(inputs)
        freeze_long_lived_objects()  # once per worker, when the model (and a compiled graph) exists

    got = _Collected(out)
    for row, judged in stream_files(todo, fetch, load, size=lambda r: r.get("size"), settings=streaming):
        if tick is not None:
            tick()
        got.add(row, judged)
        while len(got.batch) >= extractor.batch_size:  # whole batches: a compiled network never sees another shape
            push(got.batch[: extractor.batch_size], got.masks[: extractor.batch_size])
            del got.batch[: extractor.batch_size], got.masks[: extractor.batch_size]
    if got.batch:
        push(got.batch, got.masks)
    keograms = got.keograms
    notes = _notes(station, site, skymaps, got.off_site, got.low_range, recipe)
    for note in notes:
        log.warning(note)
    with clock("network"):
        arrays = {"features": extractor.result()}
    if keograms:
        lines = np.stack(keograms)
        arrays.update(keogram_ns=lines[:, 0], keogram_ew=lines[:, 1])
    return arrays, notes


@dataclasses.dataclass
class _Collected:
    """What the judged files of a stream add up to: their rows (appended to ``rows``), the network inputs not yet
    pushed, the keogram lines, and the files to warn about."""

    rows: list[dict]
    batch: list[np.ndarray] = dataclasses.field(default_factory=list)
    masks: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    keograms: list[np.ndarray] = dataclasses.field(default_factory=list)
    off_site: list[tuple[str, float]] = dataclasses.field(default_factory=list)  #: (url, degrees off the table)
    low_range: list[str] = dataclasses.field(default_factory=list)  #: urls

    def add(self, row: dict, judged: Judged | Exception) -> None:
        if isinstance(judged, Exception):  # an unreadable file: one row, no frames
            detail = str(judged) or type(judged).__name__
            self.rows.append(
                {**row, "status": Status.UNREADABLE, "detail": detail, "frame": WHOLE_FILE, "saturated": np.nan}
            )
            return
        self.rows += judged.rows
        self.batch += judged.inputs
        self.masks += judged.masks
        self.keograms += judged.keograms
        if judged.site_offset is not None and judged.site_offset > SITE_TOLERANCE_DEG:
            self.off_site.append((row["url"], judged.site_offset))
        if judged.low_range:
            self.low_range.append(row["url"])


def extractor_for(f: FeatureConfig) -> FeatureExtractor:
    """The network of ``features`` settings, on this worker's device (built once per process)."""
    recipe = get_recipe(f.recipe)
    return FeatureExtractor(
        f.backbone,
        f.weights,
        f.device,
        f.batch_size,
        f.precision,
        f.compile,
        input_size=recipe.size,
        compile_cache=f.compile_cache,
        recipe=recipe.name,
        runtime=f.runtime,
    )


def _notes(station, site, skymaps, off_site: list[tuple[str, float]], low_range: list[str], recipe) -> list[str]:
    """Warnings for the user: stated site positions off the station table, inputs using little of their range."""
    notes = []
    for m in skymaps:
        assert site is not None  # skymaps are found for a known station only
        offset = site_distance((m.latitude, m.longitude), site[:2])
        if offset > SITE_TOLERANCE_DEG:
            off_site.append((m.url, offset))
    if off_site:
        assert station is not None  # only a known station's site is compared with the files'
        url, worst = max(off_site, key=lambda x: x[1])
        notes.append(
            f"{len(off_site)} file(s) or skymap(s) of {station.code} state a site position up to "
            f"{worst:.3f} deg from the station table ({station.latitude}, {station.longitude}), e.g. {url}"
        )
    if low_range:
        notes.append(
            f"recipe {recipe.name!r} scales by the container's full range, but the frames of "
            f"{len(low_range)} file(s) span less than {LOW_RANGE:.0%} of it (raw counts?), e.g. "
            f"{low_range[0]}: use features.recipe: {recipe.stretch_variant}"
        )
    return notes
