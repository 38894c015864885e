"""Staged parts: one Parquet object per partition, ``{output}/_staging/{YYYY-MM}/{key}.parquet``.

It holds one row per image (a THEMIS file gives many) and the feature vectors of the kept ones, and is
written atomically: a partition is staged completely or not at all, and its presence is the resume marker.
Once its month is published a part may be compacted to its ledger (:func:`compact_parts`); the month then
holds its arrays (:func:`read_published_part`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from aurora_batch.core.fs import (
    filesystem,
    write_bytes_atomic,
)
from aurora_batch.core.keys import CATALOG_COLUMNS, PartitionKey, Status
from aurora_batch.store.layout import ledger_url, month_url
from aurora_batch.store.state import (
    MonthState,
    part_name,
)
from aurora_batch.store.zarrs import zarr_store

PART_COLUMNS = [*CATALOG_COLUMNS, "frame", "saturated"]
_FINGERPRINT_KEY = b"aurora_batch.features"  # the Parquet metadata key of staged parts: never renamed


def write_parquet(
    url: str,
    frame: pd.DataFrame,
    storage_options: Mapping[str, Any] | None = None,
    metadata: Mapping[bytes, bytes] | None = None,
    extra: Mapping[str, pa.Array] | None = None,
    schema: pa.Schema | None = None,
) -> None:
    """Write ``frame`` (plus ``extra`` Arrow columns) as one Parquet object, atomically.

    ``schema`` fixes the column types (else inferred: a column of only missing values becomes ``null``).
    """
    table = pa.Table.from_pandas(frame.reset_index(drop=True), schema=schema, preserve_index=False)
    for name, arr in (extra or {}).items():
        table = table.append_column(name, arr)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(url, buf.getvalue(), dict(storage_options or {}))


def write_part(
    url: str,
    rows: pd.DataFrame,
    arrays: Mapping[str, np.ndarray] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    fingerprint: str = "",
) -> None:
    """Stage one partition: image rows plus per-kept-row arrays (``features``, ``proba``), atomically."""
    kept = (rows["status"] == Status.KEPT).to_numpy()
    extra = {}
    for name, values in (arrays or {}).items():
        if values is None or not values.size:
            continue
        dim = values.shape[1]
        full = np.zeros((len(rows), dim), dtype=np.float32)
        full[kept] = values
        flat = pa.array(full.reshape(-1), type=pa.float32())
        extra[name] = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~kept))
    columns = PART_COLUMNS + (["size"] if "size" in rows else [])  # a file's bytes: per-file resume compares them
    write_parquet(url, rows.reindex(columns=columns), storage_options, {_FINGERPRINT_KEY: fingerprint.encode()}, extra)


def _part_file(url: str, storage_options: Mapping[str, Any] | None, columns: Sequence[str] | None):
    """A part to read: all of it in memory with one GET (no stale cached size from an earlier version), or, when
    only some ``columns`` are wanted, the fsspec file, whose ranged reads fetch the footer and those columns."""
    fs, path = filesystem(url, dict(storage_options or {}))
    if columns is None:
        return io.BytesIO(fs.cat_file(path))
    fs.invalidate_cache(path)  # the part may have been rewritten since it was last listed
    return fs.open(path, "rb")


def read_staged_if(
    url: str,
    fingerprint: str,
    storage_options: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = ("url", "status"),
) -> pd.DataFrame | None:
    """``columns`` of a staged part (those it has; None: all) if it was computed with ``fingerprint``, else None.

    Reads the footer and only those columns (ranged reads through the fsspec file), not the
    features: the resume check of a partition costs a few kilobytes.
    """
    with _part_file(url, storage_options, columns) as f:
        parquet = pq.ParquetFile(f)
        meta = parquet.schema_arrow.metadata or {}
        if meta.get(_FINGERPRINT_KEY, b"").decode() != fingerprint:
            return None
        names = parquet.schema_arrow.names
        rows = parquet.read(columns=None if columns is None else [c for c in columns if c in names]).to_pandas()
    if "time" in rows:
        rows["time"] = pd.to_datetime(rows["time"]).astype("datetime64[ns]")
    return rows


def read_part(
    url: str, storage_options: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rows of a staged partition and its per-kept-row arrays (those asked for and present)."""
    with _part_file(url, storage_options, columns) as f:
        table = pq.read_table(f, columns=list(columns) if columns else None)
    list_cols = [n for n in table.column_names if pa.types.is_fixed_size_list(table.schema.field(n).type)]
    arrays = {n: table.column(n).combine_chunks() for n in list_cols}
    rows = table.drop_columns(list_cols).to_pandas()
    n_kept = int((rows["status"] == Status.KEPT).sum()) if "status" in rows else None
    out = {}
    for name, col in arrays.items():
        # flatten() skips null slots, which are exactly the rejected rows.
        flat = col.flatten().to_numpy(zero_copy_only=False) if len(col) else np.empty(0, np.float32)
        out[name] = flat.reshape(-1, col.type.list_size).astype(np.float32, copy=False)
        if n_kept is not None and len(out[name]) != n_kept:
            raise ValueError(f"{url}: {len(out[name])} {name} rows for {n_kept} kept images")
    if "time" in rows:
        rows["time"] = pd.to_datetime(rows["time"]).astype("datetime64[ns]")
    return rows, out


def compact_parts(urls: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> int:
    """Keep only the ledger of each staged part (its rows, with the settings in its metadata) once its month is
    published (:func:`ledger_url`); the parts compacted.  The ledger is written before the part is deleted, so a
    kill in between leaves the part whole."""
    options = dict(storage_options or {})
    n = 0
    for url in urls:
        with _part_file(url, options, ()) as f:
            parquet = pq.ParquetFile(f)
            light = [
                c
                for c in parquet.schema_arrow.names
                if not pa.types.is_fixed_size_list(parquet.schema_arrow.field(c).type)
            ]
            table = parquet.read(columns=light)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        key = PartitionKey.parse(url)
        write_bytes_atomic(ledger_url(url.rsplit("/_staging/", 1)[0], key), buf.getvalue(), options)
        fs, path = filesystem(url, options)
        fs.rm_file(path)
        n += 1
    return n


def read_published_part(
    output: str, key: PartitionKey, fingerprint: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A compacted part as :func:`read_part` gives a staged one: its ledger rows, and the arrays of its kept rows
    (features, keogram lines) from the published month.  ``LookupError`` when there is no such part with these
    settings."""
    import zarr

    options = dict(storage_options or {})
    try:
        rows = read_staged_if(ledger_url(output, key), fingerprint, options, columns=None)
    except FileNotFoundError:
        rows = None
    url = month_url(output, key.month, options)
    if rows is None or url is None:
        raise LookupError(f"no published part {key.name} computed with these settings under {output}")
    store = zarr_store(url, options)
    state = MonthState.from_attrs(zarr.open_group(store=store, mode="r").attrs)
    name = f"{key.name}.parquet"
    kept = (rows["status"] == Status.KEPT).to_numpy()
    where = (
        next(((g, *state.offsets(g)[name]) for g, members in state.groups.items() if name in dict(members)), None)
        if state is not None
        else None
    )
    if where is None or where[2] != kept.sum():
        if kept.any():
            raise LookupError(f"{url} does not hold the {int(kept.sum())} images of {name}")
        return rows, {}
    part = published_rows(store, where[0], where[1], where[2], ("features", "keogram_ns", "keogram_ew"))
    order = month_order(rows).index.to_numpy()
    arrays: dict[str, np.ndarray] = {}
    for name_, var in part.data_vars.items():
        values = np.empty_like(var.to_numpy())
        values[order] = var.to_numpy()
        arrays[str(name_)] = values
    return rows, arrays


def kept_counts(urls: Sequence[str], options: Mapping[str, Any], concurrency: int = 16) -> dict[str, int]:
    """Kept images of each part, from its status column alone (ranged reads, ``concurrency`` parts at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    def kept(url: str) -> int:
        return int((read_part(url, options, columns=["status"])[0]["status"] == Status.KEPT).sum())

    with ThreadPoolExecutor(max(1, min(concurrency, len(urls)))) as pool:
        return dict(zip(map(part_name, urls), pool.map(kept, urls)))


def month_order(rows: pd.DataFrame) -> pd.DataFrame:
    """A part's kept rows in the order its month holds them (by time), indexed by their position among the kept
    rows (that of their arrays): how a part is written and how a compacted part's arrays are read back."""
    return rows[(rows["status"] == Status.KEPT).to_numpy()].reset_index(drop=True).sort_values("time")


def published_rows(store, gpath: str, first: int, n: int, variables: Iterable[str]) -> xr.Dataset:
    """Rows [first, first + n) of group ``gpath`` of a published month: its ``variables`` there, in memory."""
    with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:
        part = ds[[v for v in ds.data_vars if v in set(variables)]].isel(time=slice(first, first + n)).load()
    for name, var in part.variables.items():
        if var.dtype.kind in "UST":  # strings as a part gives them: Python objects
            part[name] = var.astype(object)
        part[name].encoding = {}
    return part
