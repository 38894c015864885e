"""A nearest-neighbour index of every month group's features, written with its month.

``{output}/similarity/month=YYYY-MM/<group>.faiss`` (``NYA``, ``NYA-6300``) holds a FAISS inverted-file index of
the group's L2-normalised features, scalar-quantised to 8 bits (a quarter of the features' size), whose ids are
the rows of the group.  Measured here (AMD EPYC, 2 threads, 100,000 pooled-CNN-like vectors of 1,280 floats):
this index builds in 4.2 s, answers in 0.94 ms with 40 candidates whose exact rerank gives recall@10 1.000, takes
124 MiB, and adds a night of 14,400 frames in 0.1 s.  Graph indexes compared worse for this use: FAISS HNSW32
0.994 in 38 s (8-bit: 0.972 in 27 s), usearch 0.963 in 76 s (int8: 0.744), and neither FAISS's HNSW nor an
append-only graph removes vectors, which an inverted file does: a commit whose tail starts at row r removes
ids ≥ r and adds the rows written.  The coarse quantiser is trained on the group's rows when the index is first
built, and again when the group has grown four times since.  Searches rank their candidates again by the exact
cosine of the stored features.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from aurora_batch.core.fs import exists, join_url, read_bytes, write_bytes_atomic
from aurora_batch.store.state import MonthState

RECORD = "_written.json"  #: in similarity/month=YYYY-MM/: per group, the part versions and rows indexed
RETRAIN_GROWTH = 4  #: rebuild a group's index (train again) once it holds this many times the rows trained on
TRAIN_ROWS = 50_000  #: rows drawn to train the coarse quantiser
CHUNK = 8192  #: feature rows read at a time


def index_url(output: str, month: str, group: str) -> str:
    return join_url(output, f"similarity/month={month}/{group.replace('/', '-')}.faiss")


def normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def read_index(url: str, storage_options: Mapping[str, Any] | None = None):
    import faiss

    return faiss.deserialize_index(np.frombuffer(read_bytes(url, storage_options), np.uint8))


def _new_index(features: xr.DataArray, n: int):
    """An empty IVF (8-bit) index trained on at most :data:`TRAIN_ROWS` of the group's ``n`` rows."""
    import faiss

    lists = int(max(1, min(1024, np.sqrt(n), n // 39)))  # FAISS wants 39 training rows a list
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, TRAIN_ROWS), replace=False))
    sample = normalised(features[rows].to_numpy())
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(sample.shape[1]),
        sample.shape[1],
        lists,
        faiss.ScalarQuantizer.QT_8bit,
        faiss.METRIC_INNER_PRODUCT,
    )
    index.train(sample)
    return index


def write_indexes(
    output: str, month: str, store, state: MonthState, storage_options: Mapping[str, Any] | None = None
) -> int:
    """Bring the indexes of ``month`` up to its published ``store`` (built from ``state``): in each group, the
    rows from its first part new or changed since it was indexed (a record says which) are removed and added
    again.  Returns the rows indexed."""
    record_url = join_url(output, f"similarity/month={month}/{RECORD}")
    try:
        record = json.loads(read_bytes(record_url, storage_options))
    except FileNotFoundError:
        record = {}
    if record.get("layout") != state.layout:
        record = {"layout": state.layout, "groups": {}}
    added = 0
    for gpath, members in sorted(state.groups.items()):
        done = record["groups"].get(gpath, {})
        versions = done.get("parts", {})
        offsets = state.offsets(gpath)
        changed = [offsets[n][0] for n, _ in members if versions.get(n) != state.parts[n]]
        n = sum(c for _, c in members)
        if not changed and done.get("rows") == n:
            continue
        first = min(changed, default=n)
        url = index_url(output, month, gpath)
        with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:  # read here, no dask threads
            trained = done.get("trained", 0)
            if not trained or first == 0 or n > RETRAIN_GROWTH * trained or not exists(url, storage_options):
                index, first, trained = _new_index(ds["features"], n), 0, n
            else:
                index = read_index(url, storage_options)
                index.remove_ids(np.arange(first, max(done.get("rows", n), n), dtype=np.int64))
            for lo in range(first, n, CHUNK):
                x = normalised(ds["features"][lo : lo + CHUNK].to_numpy())
                index.add_with_ids(x, np.arange(lo, lo + len(x), dtype=np.int64))
        import faiss

        write_bytes_atomic(url, faiss.serialize_index(index).tobytes(), storage_options)
        record["groups"][gpath] = {"parts": {m: state.parts[m] for m, _ in members}, "rows": n, "trained": trained}
        added += n - first
    write_bytes_atomic(record_url, json.dumps(record, indent=1).encode(), storage_options)
    return added
