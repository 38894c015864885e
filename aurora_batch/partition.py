"""The unit of work: one (station, wavelength, day) partition, from file URLs to a staged part.

Runs inside a Dask worker but is a plain function of its arguments, testable without a
cluster.  Files stream through :func:`aurora_batch.stream.stream_files`: many reads in
flight (fsspec), decoding into frames (one, or many for THEMIS PGM) at the resolution the
recipe needs and preprocessing in threads, while this thread feeds the network whole
batches.  A file that is gone or cannot be decoded becomes one row ``unreadable_image``
with the reason, and the partition goes on; any other error (a storage outage) fails the
task, which Dask retries, so no good image is ever rejected for it.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from .catalog import Status
from .classify import load_head
from .config import JobConfig
from .features import FeatureExtractor, default_decode_threads, freeze_long_lived_objects, tune_process
from .fs import read_bytes
from .imaging import get_recipe, read_frames
from .store import part_fingerprint, read_part, staging_url, write_part
from .stream import StreamSettings, stream_files

__all__ = ["PartitionResult", "process_partition"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PartitionResult:
    key: str
    month: str
    url: str  #: the staged part
    statuses: dict[str, int]  #: files by catalog status
    images: int  #: kept images (frames)
    last_time: pd.Timestamp  #: latest file time in the partition (UTC)
    resumed: bool  #: True when an identical staged part already existed


def _result(key: str, month: str, url: str, rows: pd.DataFrame, resumed: bool) -> PartitionResult:
    per_file = rows.drop_duplicates("url")
    return PartitionResult(key, month, url, per_file["status"].value_counts().to_dict(),
                           int((rows["status"] == Status.KEPT).sum()), pd.Timestamp(per_file["time"].max()), resumed)


def _already_staged(url: str, rows: pd.DataFrame, job: JobConfig) -> pd.DataFrame | None:
    try:
        if part_fingerprint(url, job.output_storage_options) != job.feature_fingerprint():
            return None
        staged, _ = read_part(url, job.output_storage_options, columns=["url", "status", "time"])
    except FileNotFoundError:
        return None
    except Exception as err:  # an unreadable staged part is recomputed
        log.warning("staged part %s unreadable (%s); recomputing", url, err)
        return None
    return staged if set(staged["url"]) == set(rows["url"]) else None


def process_partition(job: JobConfig, key: str, month: str, rows: pd.DataFrame,
                      force: bool = False) -> PartitionResult:
    """Read, preprocess and featurise the files of ``rows``; stage the result atomically.

    ``rows`` are all catalog rows of one partition: ``pending`` ones are processed, rows
    already decided (``sun``, ``moon``, ``duplicate``) are staged as they are, so the part is
    the partition's whole ledger.  When a part with the same input URLs and settings is
    already staged, nothing is recomputed unless ``force``.
    """
    url = staging_url(job.output, month, key)
    if not force and (staged := _already_staged(url, rows, job)) is not None:
        return _result(key, month, url, staged, resumed=True)
    out: list[dict] = [{**row, "frame": 0} for row in rows[rows["status"] != Status.PENDING].to_dict("records")]
    todo = rows[rows["status"] == Status.PENDING].sort_values("time").to_dict("records")
    features = np.empty((0, 0), np.float32)
    if todo:
        features = _featurise(job, todo, out)
    staged = pd.DataFrame(out)  # row order matches the feature order; the commit sorts by time
    staged["time"] = pd.to_datetime(staged["time"]).astype("datetime64[ns]")
    staged["frame"] = staged["frame"].astype("int32")
    arrays = {}
    if len(features):
        arrays["features"] = features
        if job.classify.head:
            arrays["proba"] = load_head(job.classify.head).predict_proba(features)
    write_part(url, staged, arrays, job.output_storage_options, job.feature_fingerprint())
    return _result(key, month, url, staged, resumed=False)


def _featurise(job: JobConfig, todo: list[dict], out: list[dict]) -> np.ndarray:
    """Stream the ``todo`` files through decode, recipe and network; append their rows to ``out``.

    Returns the features of the kept frames, in the order of their rows in ``out``.
    """
    f = job.features
    tune_process(f.torch_threads)
    recipe = get_recipe(f.recipe)
    extractor = FeatureExtractor(f.backbone, f.weights, f.device, f.batch_size, f.precision, f.compile)
    decode_threads = default_decode_threads(extractor.device) if f.decode_threads is None else f.decode_threads
    settings = StreamSettings(f.fetch_concurrency, int(f.prefetch_mb * 2**20), decode_threads)

    def load(data: bytes, row: dict) -> list[tuple]:
        return [(t, recipe(img)) for t, img in read_frames(data, row["url"], recipe.min_side)]

    def push(images: list[np.ndarray]) -> None:
        extractor.push(np.stack(images))
        freeze_long_lived_objects()  # once per worker, when the model (and a compiled graph) exists

    batch: list[np.ndarray] = []
    for row, frames in stream_files(todo, lambda r: read_bytes(r["url"], job.storage_options), load,
                                    size=lambda r: r.get("size"), settings=settings):
        if isinstance(frames, Exception):
            out.append({**row, "status": Status.UNREADABLE, "detail": str(frames) or type(frames).__name__,
                        "frame": 0})
            continue
        for i, (t, x) in enumerate(frames):
            out.append({**row, "time": t or row["time"], "status": Status.KEPT, "detail": "", "frame": i})
            batch.append(x)
        while len(batch) >= extractor.batch_size:  # whole batches: a compiled network never sees another shape
            push(batch[:extractor.batch_size])
            del batch[:extractor.batch_size]
    if batch:
        push(batch)
    return extractor.result()
