"""A nearest-neighbour index of every month group's features, written with its month, one file a staged part.

``{output}/similarity/month=YYYY-MM/<group>/t<rows>/`` (``NYA``, ``NYA-6300``) holds a FAISS inverted file of the
group's L2-normalised features, scalar-quantised (:data:`QUANTISER`): ``_quantiser.faiss``, the empty index
trained on the group when it held ``rows`` rows, and one ``<part>.npy`` a staged part (a station-night) holding its
rows' codes (FAISS "standalone" codes: inverted list and quantised vector, 962 bytes a 1,280-float row, 19 % of
it).  A search loads a group's codes into its quantiser, each part's ids its rows in the published month
(:meth:`MonthState.offsets`), so a late file that moves every later row rewrites only its own night's file, and a
nightly writes only the night it adds: what a commit writes follows the new data, never the month.

``_written.json`` records, per group, the part versions encoded and the rows trained on.  It is written last, so
a killed commit is caught up by the next one, and searches use only parts encoded at the version the month was
published with.  The quantiser is trained again, into a new ``t<rows>`` folder, once the group holds
:data:`RETRAIN_GROWTH` times the rows it was trained on (three times in a month that grows by nights).

Measured here (AMD EPYC, 2 threads, ``benchmarks/products.py``): over 10 M pooled-CNN-like vectors of 1,280
floats in 20 groups, recall@10 1.000 after the exact rerank of 40 candidates, 44.7 ms a query over every group,
files 18.9 % of the features, building 0.72 % of the season's CPU.  Graph indexes compared worse for this use
(100,000 vectors): FAISS HNSW32 0.994 in 38 s (8-bit: 0.972 in 27 s), usearch 0.963 in 76 s (int8: 0.744).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import psutil
import xarray as xr

from aurora_batch.core.cache import SizedCache
from aurora_batch.core.fs import join_url, read_bytes, remove, write_bytes_atomic
from aurora_batch.store.state import MonthState

log = logging.getLogger(__name__)

RECORD = "_written.json"  #: in similarity/month=YYYY-MM/: per group, the part versions indexed and rows trained on
RETRAIN_GROWTH = 4  #: train a group's quantiser again once it holds this many times the rows it was trained on
TRAIN_ROWS = 50_000  #: rows drawn to train the quantiser
CHUNK = 8192  #: feature rows read at a time
QUANTISER = "QT_6bit"  #: FAISS scalar quantiser: 6 bits a dimension, with the int64 id 19 % of float32 features
CACHE_SHARE = 0.25  #: of the machine's memory, for group indexes kept loaded between searches (oldest out first)


def group_url(output: str, month: str, group: str, trained: int) -> str:
    return join_url(output, f"similarity/month={month}/{group.replace('/', '-')}/t{trained}")


def part_codes_name(part: str) -> str:
    """``NYA_5577_20101201.parquet`` → ``NYA_5577_20101201.npy``."""
    return part.rsplit(".", 1)[0] + ".npy"


def normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def read_index(url: str, storage_options: Mapping[str, Any] | None = None):
    import faiss

    return faiss.deserialize_index(np.frombuffer(read_bytes(url, storage_options), np.uint8))


def write_index(url: str, index, storage_options: Mapping[str, Any] | None = None) -> None:
    import faiss

    write_bytes_atomic(url, faiss.serialize_index(index).tobytes(), storage_options)


def train_quantiser(sample: np.ndarray, n: int):
    """An empty inverted-file index of ``sample``'s dimension, its √n lists (at most 1,024) trained on ``sample``
    (normalised rows of a group of ``n``)."""
    import faiss

    lists = int(max(1, min(1024, np.sqrt(n), len(sample) // 39)))  # FAISS wants 39 training rows a list
    d = sample.shape[1]
    sq = getattr(faiss.ScalarQuantizer, QUANTISER)
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, lists, sq, faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    return index


def _train(features: xr.DataArray, n: int):
    """The quantiser trained on :data:`TRAIN_ROWS` rows drawn from ``n``, read :data:`CHUNK` rows at a time (Zarr
    reads scattered rows one by one: 5,760 of them took 0.52 s, against 0.04 s as one slice)."""
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, TRAIN_ROWS), replace=False))
    bounds = np.searchsorted(rows, np.arange(0, n + CHUNK, CHUNK))
    sample = [
        features[lo : lo + CHUNK].to_numpy()[rows[a:b] - lo]
        for lo, a, b in zip(range(0, n, CHUNK), bounds[:-1], bounds[1:])
        if b > a
    ]
    return train_quantiser(normalised(np.concatenate(sample)), n)


def read_record(output: str, month: str, storage_options: Mapping[str, Any] | None = None) -> dict:
    """What the month's indexes were built from (:data:`RECORD`); empty where none were."""
    try:
        return json.loads(read_bytes(join_url(output, f"similarity/month={month}/{RECORD}"), storage_options))
    except FileNotFoundError:
        return {}


def write_indexes(
    output: str, month: str, store, state: MonthState, storage_options: Mapping[str, Any] | None = None
) -> int:
    """Bring the indexes of ``month`` up to its published ``store`` (built from ``state``): each part new or changed
    since it was indexed (the record says which) is encoded again, into its own file.  Returns the rows encoded."""
    record = read_record(output, month, storage_options)
    retired = []  # written over: removed once the new record is in place
    if record.get("layout") != state.layout:
        old = record.get("groups", {})
        retired += [group_url(output, month, g, int(r.get("trained", 0))) for g, r in old.items()]
        record = {"layout": state.layout, "groups": {}}
    added = 0
    for gpath, members in sorted(state.groups.items()):
        done = record["groups"].get(gpath, {})
        n, trained = sum(c for _, c in members), int(done.get("trained", 0))
        retrain = not trained or n > RETRAIN_GROWTH * trained
        indexed = {} if retrain else done.get("parts", {})
        offsets = state.offsets(gpath)
        todo = [m for m, _ in members if indexed.get(m) != state.parts[m]]
        if not todo and set(indexed) == set(offsets):
            continue
        folder = group_url(output, month, gpath, trained)
        retired += [join_url(folder, part_codes_name(m)) for m in set(indexed) - set(offsets)]
        with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:  # read here, no dask threads
            if retrain:
                retired += [folder] if trained else []
                empty, trained = _train(ds["features"], n), n
                folder = group_url(output, month, gpath, trained)
                write_index(join_url(folder, "_quantiser.faiss"), empty, storage_options)
            else:
                empty = read_index(join_url(folder, "_quantiser.faiss"), storage_options)
            for name in todo:
                codes = _codes(empty, ds["features"], *offsets[name])
                write_bytes_atomic(join_url(folder, part_codes_name(name)), codes, storage_options)
                added += offsets[name][1]
        record["groups"][gpath] = {"parts": {m: state.parts[m] for m, _ in members}, "trained": trained}
    write_bytes_atomic(
        join_url(output, f"similarity/month={month}/{RECORD}"), json.dumps(record, indent=1).encode(), storage_options
    )
    live = set()
    for g, r in record["groups"].items():
        folder = group_url(output, month, g, r["trained"])
        live |= {folder, *(join_url(folder, part_codes_name(m)) for m in r["parts"])}
    for url in set(retired) - live:  # after the record: a search that read the old one may want them a moment
        remove(url, storage_options)
    return added


def _codes(empty, features: xr.DataArray, first: int, rows: int) -> bytes:
    """The standalone codes of ``rows`` feature rows from ``first``, as an ``.npy`` file's bytes."""
    codes = [
        empty.sa_encode(normalised(features[lo : min(lo + CHUNK, first + rows)].to_numpy()))
        for lo in range(first, first + rows, CHUNK)
    ]
    buf = io.BytesIO()
    np.save(buf, np.concatenate(codes) if codes else np.zeros((0, empty.sa_code_size()), np.uint8))
    return buf.getvalue()


def fill(index, codes: np.ndarray, ids: np.ndarray) -> None:
    """Put standalone ``codes`` (rows of :meth:`sa_encode`) with their ``ids`` into the empty ``index``, one
    append a list: each list is sized exactly (FAISS's ``add_sa_codes`` appends a row at a time, and the lists'
    doubling left the index up to twice its codes' size), and a search uses every thread on one query."""
    import faiss

    lists = np.zeros(len(codes), np.int64)
    for i in range(index.coarse_code_size()):  # the list number, little-endian, before each code
        lists |= codes[:, i].astype(np.int64) << (8 * i)
    order = np.argsort(lists, kind="stable")
    codes = np.ascontiguousarray(codes[order, index.coarse_code_size() :])
    ids, lists = np.ascontiguousarray(ids[order]), lists[order]
    bounds = np.flatnonzero(np.diff(lists)) + 1
    invlists = index.invlists
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(lists)]):
        if hi > lo:
            invlists.add_entries(int(lists[lo]), int(hi - lo), faiss.swig_ptr(ids[lo:hi]), faiss.swig_ptr(codes[lo:hi]))
    index.ntotal += len(codes)
    index.parallel_mode = 1


#: group indexes kept loaded between searches: a share of the machine's memory (:data:`CACHE_SHARE`)
_CACHE: SizedCache[Any] = SizedCache(
    lambda index: index.ntotal * (index.code_size + 8), lambda: CACHE_SHARE * psutil.virtual_memory().total
)


def group_index(
    output: str,
    month: str,
    group: str,
    state: MonthState,
    storage_options: Mapping[str, Any] | None = None,
    record: dict | None = None,
):
    """``group``'s index of ``month``: its parts' codes in its quantiser, ids the group's rows in the published month
    (``state``), or None where nothing is indexed.  Parts indexed at another version than ``state``'s (a commit
    killed before its index was written) are left out, with a warning.  Kept in memory (:data:`CACHE_SHARE`)
    while the record and the month do not change.  ``record``: the month's :func:`read_record`, read once for
    all its groups."""
    record = read_record(output, month, storage_options) if record is None else record
    done = record.get("groups", {}).get(group)
    if not done:
        return None
    offsets = state.offsets(group)
    parts = sorted((m, v) for m, v in done["parts"].items() if state.parts.get(m) == v and m in offsets)
    key = (output, month, group, done["trained"], tuple((m, v, offsets[m][0]) for m, v in parts))
    if len(parts) < len(offsets):
        missing = len(offsets) - len(parts)
        log.warning(
            "%s %s: %d of %d parts not indexed; 'aurora-batch labels' indexes them", month, group, missing, len(offsets)
        )

    def load():
        url = group_url(output, month, group, int(done["trained"]))
        index = read_index(join_url(url, "_quantiser.faiss"), storage_options)
        codes = [np.load(io.BytesIO(read_bytes(join_url(url, part_codes_name(m)), storage_options))) for m, _ in parts]
        ids = [np.arange(offsets[m][0], offsets[m][0] + len(c), dtype=np.int64) for (m, _), c in zip(parts, codes)]
        fill(index, np.concatenate(codes), np.concatenate(ids))
        return index

    return _CACHE.get(key, load)
