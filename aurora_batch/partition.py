"""The unit of work: one (station, wavelength, day) partition, from file URLs to a staged part.

Runs inside a Dask worker but is a plain function of its arguments, testable without a
cluster.  Per file: read (fsspec), decode into frames (one, or many for THEMIS PGM),
preprocess; per batch: CNN features.  A file that is gone or cannot be decoded becomes one
row ``unreadable_image`` with the reason, and the partition goes on; any other error (a
storage outage) fails the task, which Dask retries, so no good image is ever rejected for it.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from .catalog import Status
from .classify import load_head
from .config import JobConfig
from .features import extract_features, pick_device, tune_process
from .fs import read_bytes
from .imaging import ImageError, get_recipe, read_frames
from .store import part_fingerprint, read_part, staging_url, write_part

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
    todo = rows[rows["status"] == Status.PENDING]
    if len(todo):
        tune_process(job.features.torch_threads)
    recipe = get_recipe(job.features.recipe)
    device = pick_device(job.features.device) if len(todo) else "cpu"
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush():
        if batch:
            chunks.append(extract_features(np.stack(batch), job.features.backbone, job.features.weights,
                                           device, job.features.batch_size))
            batch.clear()

    for row in todo.sort_values("time").to_dict("records"):
        try:
            frames = read_frames(read_bytes(row["url"], job.storage_options), row["url"])
            tensors = [recipe(img) for _, img in frames]
        except (ImageError, FileNotFoundError) as err:  # a network error is not the image's fault: it fails the task
            out.append({**row, "status": Status.UNREADABLE, "detail": str(err) or type(err).__name__, "frame": 0})
            continue
        for i, ((t, _), x) in enumerate(zip(frames, tensors)):
            out.append({**row, "time": t or row["time"], "status": Status.KEPT, "detail": "", "frame": i})
            batch.append(x)
            if len(batch) >= job.features.batch_size:
                flush()
    flush()
    staged = pd.DataFrame(out)  # row order matches the feature order; the commit sorts by time
    staged["time"] = pd.to_datetime(staged["time"]).astype("datetime64[ns]")
    staged["frame"] = staged["frame"].astype("int32")
    arrays = {}
    if chunks:
        arrays["features"] = np.concatenate(chunks)
        if job.classify.head:
            arrays["proba"] = load_head(job.classify.head).predict_proba(arrays["features"])
    write_part(url, staged, arrays, job.output_storage_options, job.feature_fingerprint())
    return _result(key, month, url, staged, resumed=False)
