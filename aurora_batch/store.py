"""Staged partitions, the monthly Zarr stores built from them, and the catalog ledger.

Write path (see docs/design.md):

1. Each unit of work, a (station, wavelength, day) partition, writes **one** Parquet object
   ``{output}/_staging/{YYYY-MM}/{key}.parquet`` holding one row per image (a THEMIS file
   gives many) and the feature vectors of the kept ones.  One object is written atomically,
   so a partition is staged completely or not at all; its presence is the resume marker.
2. Once every partition of a month is staged, a single task builds the month in a fresh
   ``{YYYY-MM}.zarr.building-<id>`` tree (beside the store on a local disk, on local scratch
   for object stores), appending partitions in time order, then publishes it as
   ``{output}/{YYYY-MM}.zarr`` (:func:`aurora_batch.fs.publish_tree`).  Only that task
   writes the month, so no two writers ever share a Zarr chunk, and readers never see a
   half-built month.

Layout: one group per station (``NYA``); a station seen at several wavelengths in a month
gets one subgroup per wavelength (``NYA/5577``, ``NYA/6300``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import tempfile
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from .catalog import CATALOG_COLUMNS, FRAME_COUNT_COLUMNS, PartitionKey, Status, file_ledger
from .fs import exists, filesystem, is_local, join_url, publish_tree, write_bytes_atomic
from .imaging import KEOGRAM_CONVENTION

__all__ = ["staging_url", "store_url", "month_url", "Publication", "write_part", "read_part", "read_staged_if",
           "commit_month", "MonthCommit", "check_store_format", "group_paths", "list_groups", "consolidate",
           "StoreShrinkError", "write_parquet", "write_month_catalog", "read_catalog", "read_month_catalog",
           "catalog_url", "TIME_CHUNK", "PART_COLUMNS"]

TIME_CHUNK = 512  #: images per Zarr chunk along time (features: 512 × 1280 float32 = 2.6 MB)
PART_COLUMNS = [*CATALOG_COLUMNS, "frame", "saturated"]
TIME_ENCODING = {"units": "microseconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian",
                 "dtype": "int64"}

VARIABLE_ATTRS = {
    "features": {"long_name": "CNN feature vector", "units": "1"},
    "sun_alt": {"long_name": "apparent altitude of the Sun (no refraction)", "units": "degrees"},
    "moon_alt": {"long_name": "apparent altitude of the Moon (no refraction)", "units": "degrees"},
    "moon_illumination": {"long_name": "illuminated fraction of the Moon's disc", "units": "1"},
    "url": {"long_name": "source file URL"},
    "frame": {"long_name": "frame index within the source file (multi-frame formats)"},
    "saturated_fraction": {"long_name": "fraction of pixels at the integer container's maximum, as decoded",
                           "units": "1"},
    "wavelength": {"long_name": "filter wavelength (0: unfiltered)", "units": "angstrom"},
    "proba": {"long_name": "class probability from the linear head", "units": "1"},
    "label": {"long_name": "most probable class"},
    "aurora_proba": {"long_name": "probability of aurora (arc, diffuse or discrete)", "units": "1"},
    "keogram_ns": {"long_name": "north-south line of pixels through zenith", "units": "counts",
                   "comment": KEOGRAM_CONVENTION},
    "keogram_ew": {"long_name": "east-west line of pixels through zenith", "units": "counts",
                   "comment": KEOGRAM_CONVENTION},
}
_FINGERPRINT_KEY = b"aurora_batch.features"


def staging_url(output: str, key: PartitionKey) -> str:
    """``{output}/_staging/{YYYY-MM}/{NYA_5577_20101201}.parquet``."""
    return join_url(output, "_staging", key.month, f"{key.name}.parquet")


def store_url(output: str, month: str, fmt: str = "zarr") -> str:
    """``{output}/{YYYY-MM}.zarr`` (a plain Zarr tree) or ``{output}/{YYYY-MM}.icechunk`` (a repository)."""
    return join_url(output, f"{month}.{fmt}")


def month_url(output: str, month: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The published store of ``month``: its Icechunk repository if there is one, else its plain Zarr tree
    (while being replaced on object storage, a plain tree has no root metadata and is not published)."""
    from . import versions

    options = dict(storage_options or {})
    url = store_url(output, month, "icechunk")
    if exists(url, options) and versions.is_repository(url, options):
        return url
    url = store_url(output, month)
    return url if exists(join_url(url, "zarr.json"), options) else None


def catalog_url(output: str) -> str:
    """The catalog is a Parquet dataset: one file per month plus ``undated.parquet``."""
    return join_url(output, "catalog")


def write_parquet(url: str, frame: pd.DataFrame, storage_options: Mapping[str, Any] | None = None,
                  metadata: Mapping[bytes, bytes] | None = None, extra: Mapping[str, pa.Array] | None = None,
                  schema: pa.Schema | None = None) -> None:
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


def write_part(url: str, rows: pd.DataFrame, arrays: Mapping[str, np.ndarray] | None = None,
               storage_options: Mapping[str, Any] | None = None, fingerprint: str = "") -> None:
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
    write_parquet(url, rows.reindex(columns=PART_COLUMNS), storage_options, {_FINGERPRINT_KEY: fingerprint.encode()},
                  extra)


def _whole_object(url: str, storage_options: Mapping[str, Any] | None) -> io.BytesIO:
    """The whole object in memory: one GET, and no stale cached size from an earlier version of it."""
    fs, path = filesystem(url, dict(storage_options or {}))
    return io.BytesIO(fs.cat_file(path))


def read_staged_if(url: str, fingerprint: str, storage_options: Mapping[str, Any] | None = None,
                   columns: Sequence[str] = ("url", "status")) -> pd.DataFrame | None:
    """``columns`` of a staged part if it was computed with ``fingerprint``, else None.

    Reads the footer and only those columns (ranged reads through the fsspec file), not the
    features: the resume check of a partition costs a few kilobytes.
    """
    fs, path = filesystem(url, dict(storage_options or {}))
    fs.invalidate_cache(path)  # the part may have been rewritten since it was last listed
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        meta = parquet.schema_arrow.metadata or {}
        if meta.get(_FINGERPRINT_KEY, b"").decode() != fingerprint:
            return None
        rows = parquet.read(columns=list(columns)).to_pandas()
    if "time" in rows:
        rows["time"] = pd.to_datetime(rows["time"]).astype("datetime64[ns]")
    return rows


def read_part(url: str, storage_options: Mapping[str, Any] | None = None,
              columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rows of a staged partition and its per-kept-row arrays (those asked for and present)."""
    with _whole_object(url, storage_options) as f:
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


def group_paths(pairs: Iterable[tuple[str, int | None]]) -> dict[tuple[str, int | None], str]:
    """Group path for each (station, wavelength): ``NYA``, or ``NYA/5577`` when a station has several."""
    by_station: dict[str, set] = defaultdict(set)
    for station, wl in pairs:
        by_station[station].add(wl)
    paths = {}
    for station, wls in by_station.items():
        for wl in wls:
            paths[(station, wl)] = station if len(wls) == 1 else f"{station}/{wl}"
    return paths


def _wavelength_key(w) -> int | None:
    return None if pd.isna(w) else int(w)


def _dataset(rows: pd.DataFrame, arrays: Mapping[str, np.ndarray], classes: Sequence[str] = ()) -> xr.Dataset:
    feats = arrays["features"]
    data = {
        "features": (("time", "feature"), feats),
        "sun_alt": ("time", rows["sun_alt"].to_numpy(np.float32)),
        "moon_alt": ("time", rows["moon_alt"].to_numpy(np.float32)),
        "moon_illumination": ("time", rows["moon_illumination"].to_numpy(np.float32)),
        "url": ("time", rows["url"].to_numpy(dtype=object)),
        "frame": ("time", rows["frame"].to_numpy(np.int32)),
        "saturated_fraction": ("time", rows["saturated"].to_numpy(np.float32)),
        "wavelength": ("time", rows["wavelength"].fillna(0).to_numpy(np.int32)),
    }
    coords = {"time": ("time", rows["time"].to_numpy("datetime64[ns]"), {"timezone": "UTC"}),
              "feature": np.arange(feats.shape[1], dtype=np.int32)}
    for name, dim in (("keogram_ns", "ns"), ("keogram_ew", "ew")):
        if name in arrays:
            data[name] = (("time", dim), arrays[name])
    if "proba" in arrays:
        from .classify import class_outputs

        data["proba"] = (("time", "class"), arrays["proba"])
        data.update({name: ("time", values) for name, values in class_outputs(arrays["proba"], classes).items()})
        coords["class"] = np.asarray(classes, dtype=object)
    ds = xr.Dataset(data, coords=coords)
    for name, attrs in VARIABLE_ATTRS.items():
        if name in ds:
            ds[name].attrs.update(attrs)
    return ds


def _encoding(ds: xr.Dataset) -> dict:
    enc: dict[str, dict] = {"time": dict(TIME_ENCODING, chunks=(TIME_CHUNK * 8,))}
    for name, var in ds.data_vars.items():
        enc[name] = {"chunks": (TIME_CHUNK, var.shape[1]) if var.ndim == 2 else (TIME_CHUNK * 8,)}
    return enc


def zarr_store(url: str, storage_options: Mapping[str, Any] | None = None, version: str | None = None,
               as_of: Any = None):
    """A zarr v3 store object for any fsspec URL; a month's Icechunk repository (``*.icechunk``) opens read-only
    at its newest version, or at ``version`` (tag or snapshot id) or ``as_of`` (UTC)."""
    from zarr.storage import FsspecStore, LocalStore

    if url.rstrip("/").endswith(".icechunk"):
        from . import versions

        return versions.open_store(url, storage_options, version, as_of)
    if version is not None or as_of is not None:
        raise LookupError(f"{url} is a plain Zarr store: it has no versions (store.format: icechunk keeps them)")
    fs, path = filesystem(url, dict(storage_options or {}))
    if is_local(fs):
        return LocalStore(path)
    return FsspecStore.from_url(url, storage_options=dict(storage_options or {}) or None)


def check_store_format(output: str, fmt: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """``ValueError`` when plain months would be written beside Icechunk ones (readers open a month's repository
    first, so a new plain store would stay hidden behind it)."""
    if fmt != "zarr":
        return
    fs, root = filesystem(output, dict(storage_options or {}))
    try:
        found = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)
                       if p.rstrip("/").endswith(".icechunk"))
    except FileNotFoundError:
        return
    if found:
        raise ValueError(f"store.format is zarr, but {output} holds Icechunk repositories ({', '.join(found[:3])}), "
                         "which readers open before plain months: keep store.format: icechunk for this output")


@dataclasses.dataclass(frozen=True)
class Publication:
    """How a built month is published: a plain Zarr tree put in place of the old one (``zarr``), or one commit
    to the month's Icechunk repository (``icechunk``), with a message and metadata, keeping ``keep_versions``
    versions (None: all)."""

    format: str = "zarr"
    message: str = ""
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    keep_versions: int | None = None


@dataclasses.dataclass
class MonthCommit:
    counts: dict[str, int]  #: kept images per group path
    catalog: pd.DataFrame  #: one row per file of the month (:func:`aurora_batch.catalog.file_ledger`)


def commit_month(output: str, month: str, part_urls: Sequence[str], group_attrs: Mapping[str, Mapping[str, Any]],
                 common_attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None,
                 classes: Sequence[str] = (), allow_shrink: bool = True,
                 groups: Iterable[tuple[str, int | None]] | None = None,
                 finish: Callable[[Any, list[str]], None] | None = None,
                 publication: Publication = Publication(), root_attrs: Mapping[str, Any] | None = None) -> MonthCommit:
    """Build the month store from staged partitions, each read once; returns counts and the catalog.

    A month without a kept image gets no store (only its catalog), unless one was published before.

    ``group_attrs`` maps a station code to its group attributes (site description);
    ``common_attrs`` (model, recipe, thresholds, version) go on every group, ``root_attrs`` on the
    root only (what the month was built from); ``classes``
    labels the ``class`` axis of ``proba`` when the parts carry probabilities.  ``groups``: the
    (station, wavelength) pairs with kept images, when the caller knows them (else the parts'
    light columns are read first).  Partitions are appended in time order per group, one
    partition in memory at a time, into a temporary tree; ``finish(store, group_paths)`` adds
    to it (the joined instruments) before it is consolidated and published as ``publication``
    says (:class:`Publication`: a plain tree put in place, or one Icechunk commit).  With
    ``allow_shrink=False`` a month whose groups would lose time stamps is not published
    (:class:`StoreShrinkError`).
    """
    import zarr

    from . import versions

    options = dict(storage_options or {})
    final = store_url(output, month, publication.format)
    fs, final_path = filesystem(final, options)
    for leftover in fs.glob(f"{final_path}.building-*"):  # from a killed commit
        fs.rm(leftover, recursive=True)
    plain = store_url(output, month)
    parts = sorted(part_urls, key=lambda u: u.rsplit("/", 1)[-1])
    if groups is None:
        groups = set()
        for u in parts:  # which groups exist, from the light columns only
            rows, _ = read_part(u, options, columns=["station", "wavelength", "status"])
            kept = rows[rows["status"] == Status.KEPT]
            groups.update(zip(kept["station"], kept["wavelength"].map(_wavelength_key)))
    if not groups and month_url(output, month, options) is None:  # every file dropped: a ledger, no store
        ledgers = [file_ledger(read_part(u, options, columns=PART_COLUMNS)[0]) for u in parts]
        return MonthCommit({}, pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame())
    if publication.format == "zarr":
        if exists(shadow := store_url(output, month, "icechunk"), options):
            raise ValueError(f"{shadow} is an Icechunk repository, which readers open before {plain}: keep "
                             "store.format: icechunk for this output (or move the repository away)")
        session, old = None, (zarr_store(plain, options) if month_url(output, month, options) else None)
    else:  # opened now: whoever commits to the month before this build does is a conflict
        session = versions.begin(final, options)
        old = versions.open_store(final, options, version=session.snapshot_id) if len(
            versions.history(final, options)) else None
    with _building(final, month, fs) as url:
        paths = group_paths(groups)
        counts: dict[str, int] = defaultdict(int)
        ledgers = []
        store = zarr_store(url)  # always on a local disk
        root = zarr.open_group(store=store, mode="w", zarr_format=3)
        root.attrs.update({"title": f"aurora-batch features for {month}", **dict(common_attrs),
                           **dict(root_attrs or {})})
        for u in parts:
            rows, arrays = read_part(u, options)
            ledgers.append(file_ledger(rows))
            kept_mask = (rows["status"] == Status.KEPT).to_numpy()
            rows = rows[kept_mask].reset_index(drop=True)
            wl_key = rows["wavelength"].map(_wavelength_key)
            for (station, wl), idx in rows.groupby([rows["station"], wl_key], dropna=False).groups.items():
                gpath = paths[(station, _wavelength_key(wl))]
                sub = rows.loc[idx].sort_values("time")
                ds = _dataset(sub, {k: v[sub.index.to_numpy()] for k, v in arrays.items()}, classes)
                ds.attrs.update({**dict(common_attrs), **dict(group_attrs.get(station, {}))})  # appends rewrite attrs
                if counts[gpath] == 0:
                    ds.to_zarr(store, group=gpath, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(ds))
                else:
                    ds.to_zarr(store, group=gpath, append_dim="time", zarr_format=3, consolidated=False)
                counts[gpath] += len(sub)
        if finish is not None:
            finish(store, sorted(counts))
        consolidate(store)
        if not allow_shrink and old is not None:
            _refuse_shrink(final, old, store, paths.values())
        if session is None:
            publish_tree(url, final, options)
        else:
            images = sum(counts.values())
            versions.commit_tree(session, store, f"{publication.message}: {images} images",
                                 {**publication.metadata, "images": images, "groups": dict(counts)}, final)
            if publication.keep_versions:
                versions.expire(final, publication.keep_versions, options)
            if exists(join_url(plain, "zarr.json"), options):  # migrated: the repository holds the month now
                fs.rm(filesystem(plain, options)[1], recursive=True)
        catalog = pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame()
        return MonthCommit(dict(counts), catalog)


@contextlib.contextmanager
def _building(final: str, month: str, fs) -> Iterator[str]:
    """Where a month is built before it is published: beside the store on a local disk (published
    by renames), else in a local scratch folder (Dask's ``temporary-directory``) that is then
    uploaded concurrently, since an object store pays a round trip for every small write."""
    if is_local(fs):
        yield f"{final}.building-{uuid.uuid4().hex[:12]}"
        return
    import dask

    scratch = tempfile.mkdtemp(prefix=f"{month}.zarr.building-", dir=dask.config.get("temporary-directory", None))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class StoreShrinkError(RuntimeError):
    """A rebuilt month would have fewer images than the published one."""


def consolidate(store) -> None:
    """Consolidate a store's metadata (an extension in Zarr v3 that xarray reads: fast opens)."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)


def list_groups(store, root: str = "") -> list[str]:
    """Paths of the groups in a month store that hold images (``NYA``, ``NYA/5577``, ...)."""
    import zarr

    group = zarr.open_group(store=store, mode="r", path=root or None)
    paths = []
    for name, sub in group.groups():
        full = f"{root}/{name}" if root else name
        if "time" in sub.array_keys():
            paths.append(full)
        paths += list_groups(store, full)
    return paths


def _refuse_shrink(final: str, old_store, new_store, new_groups) -> None:
    """:class:`StoreShrinkError` when a group of the published month (``old_store``) would lose time stamps."""
    for gpath in list_groups(old_store):
        with xr.open_zarr(old_store, group=gpath, consolidated=False) as old:
            old_t = old["time"].to_numpy()
        new_t = np.array([], dtype="datetime64[ns]")
        if gpath in set(new_groups):
            with xr.open_zarr(new_store, group=gpath, consolidated=False) as new:
                new_t = new["time"].to_numpy()
        lost = np.setdiff1d(old_t, new_t)
        if len(lost):
            raise StoreShrinkError(f"refusing to shrink {final} group {gpath}: {len(lost)} published time stamp(s) "
                                   f"would disappear (first {pd.Timestamp(lost[0])})")


#: one schema for every month's catalog file, so the folder reads as one Parquet dataset even when a month has no
#: wavelength (THEMIS) or the undated file has no station
CATALOG_SCHEMA = pa.schema(
    [("url", pa.string()), ("station", pa.string()), ("time", pa.timestamp("ns", tz="UTC")),
     ("wavelength", pa.int64()), ("format", pa.string()), ("status", pa.string()), ("detail", pa.string()),
     ("sun_alt", pa.float64()), ("moon_alt", pa.float64()), ("moon_illumination", pa.float64())]
    + [(c, pa.int64()) for c in FRAME_COUNT_COLUMNS])


def write_month_catalog(output: str, month: str, rows: pd.DataFrame,
                        storage_options: Mapping[str, Any] | None = None) -> None:
    """Write the catalog rows of one month (or ``undated``) as ``{output}/catalog/{month}.parquet``.

    Frame counts a row lacks are 0 (a file whose name does not parse has no frames read)."""
    rows = rows.sort_values(["station", "wavelength", "time", "url"], na_position="last", kind="stable")
    rows = rows.assign(time=pd.to_datetime(rows["time"]).dt.tz_localize("UTC"),
                       **{c: 0 for c in FRAME_COUNT_COLUMNS if c not in rows})
    rows = rows.reindex(columns=CATALOG_SCHEMA.names)
    write_parquet(join_url(catalog_url(output), f"{month}.parquet"), rows, storage_options, schema=CATALOG_SCHEMA)


def read_month_catalog(output: str, month: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The catalog rows of one month (or ``undated``), with naive UTC times as the planner makes them;
    ``FileNotFoundError`` when there are none yet."""
    fs, path = filesystem(join_url(catalog_url(output), f"{month}.parquet"), dict(storage_options or {}))
    rows = pq.read_table(io.BytesIO(fs.cat_file(path))).to_pandas()
    rows["time"] = pd.to_datetime(rows["time"]).dt.tz_localize(None).astype("datetime64[ns]")
    return rows


def read_catalog(output: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The whole catalog ledger under ``output`` (all months and the undated rows)."""
    fs, path = filesystem(catalog_url(output), dict(storage_options or {}))
    files = sorted(fs.glob(f"{path}/*.parquet"))
    frames = []
    for f in files:
        frames.append(pq.read_table(io.BytesIO(fs.cat_file(f))).to_pandas())
    if not frames:
        raise FileNotFoundError(f"no catalog under {catalog_url(output)}")
    return pd.concat(frames, ignore_index=True)
