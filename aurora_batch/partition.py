"""The unit of work: one (station, wavelength, day) partition, from image URLs to a staged part.

Runs inside a Dask worker but is a plain function of its arguments, testable without a
cluster.  Per image: read (fsspec), decode, preprocess; per batch: CNN features.  A file
that cannot be read or decoded is marked ``unreadable_image`` with the reason and the
partition goes on.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from .catalog import Status
from .config import JobConfig
from .features import extract_features, pick_device, tune_process
from .fs import read_bytes
from .imaging import ImageError, decode, get_recipe
from .store import read_part, staging_url, write_part

__all__ = ["PartitionResult", "process_partition"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PartitionResult:
    key: str
    month: str
    url: str  #: the staged part
    n: int
    kept: int
    unreadable: int
    resumed: bool  #: True when an identical staged part already existed


def _already_staged(url: str, rows: pd.DataFrame, job: JobConfig) -> pd.DataFrame | None:
    try:
        staged, _ = read_part(url, job.output_storage_options, columns=["url", "status"])
    except FileNotFoundError:
        return None
    except Exception as err:  # unreadable staged part: recompute it
        log.warning("staged part %s unreadable (%s); recomputing", url, err)
        return None
    return staged if sorted(staged["url"]) == sorted(rows["url"]) else None


def process_partition(job: JobConfig, key: str, month: str, rows: pd.DataFrame,
                      force: bool = False) -> PartitionResult:
    """Read, preprocess and featurise the images of ``rows``; stage the result atomically.

    ``rows`` are catalog rows (status ``pending``) of one partition.  When an identical
    part is already staged (same input URLs), nothing is recomputed unless ``force``.
    """
    url = staging_url(job.output, month, key)
    if not force and (staged := _already_staged(url, rows, job)) is not None:
        kept = int((staged["status"] == Status.KEPT).sum())
        return PartitionResult(key, month, url, len(staged), kept,
                               int((staged["status"] == Status.UNREADABLE).sum()), True)
    tune_process(job.features.torch_threads)
    recipe = get_recipe(job.features.recipe)
    device = pick_device(job.features.device)
    rows = rows.sort_values("time").reset_index(drop=True).copy()
    status = np.full(len(rows), Status.KEPT, dtype=object)
    detail = np.full(len(rows), "", dtype=object)
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush():
        if batch:
            chunks.append(extract_features(np.stack(batch), job.features.backbone, job.features.weights,
                                           device, job.features.batch_size))
            batch.clear()

    for i, file_url in enumerate(rows["url"]):
        try:
            batch.append(recipe(decode(read_bytes(file_url, job.storage_options), file_url)))
        except (ImageError, OSError) as err:
            status[i], detail[i] = Status.UNREADABLE, str(err) or type(err).__name__
            continue
        if len(batch) >= job.features.batch_size:
            flush()
    flush()
    rows["status"], rows["detail"] = status, detail
    feats = np.concatenate(chunks) if chunks else None
    write_part(url, rows, feats, job.output_storage_options)
    kept = int((status == Status.KEPT).sum())
    return PartitionResult(key, month, url, len(rows), kept, len(rows) - kept, False)
