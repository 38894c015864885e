"""Staged partitions, the monthly Zarr stores written from them, and the catalog ledger.

Write path (see docs/design.md):

1. Each unit of work, a (station, wavelength, day) partition, writes **one** Parquet object
   ``{output}/_staging/{YYYY-MM}/{key}.parquet`` holding one row per image (a THEMIS file
   gives many) and the feature vectors of the kept ones.  One object is written atomically,
   so a partition is staged completely or not at all; its presence is the resume marker.
2. Once every partition of a month is staged, one task commits the month
   (:func:`commit_month`): only the rows of new or changed parts, and the chunks they touch,
   when the month was published before (:mod:`aurora_batch.increment`), else all of it; its
   stations are written by separate tasks (:func:`write_station`), never two into one group,
   and the month is published once: a tree built beside the store from hard links to the old
   one, renamed into place, or one Icechunk commit.  Readers never see a half-written month.
3. Once published, a part may be compacted to its ledger (:func:`compact_parts`): the month
   holds its arrays (:func:`read_published_part`).

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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from .catalog import CATALOG_COLUMNS, FRAME_COUNT_COLUMNS, PartitionKey, Status, file_ledger
from .fs import exists, failpoint, filesystem, is_local, join_url, link_tree, publish_tree, write_bytes_atomic
from .imaging import KEOGRAM_CONVENTION
from .increment import OBJECT_ROW_BYTES, MonthState, Tail, chunk_rows, full_plan, group_paths, part_name, plan_tails

__all__ = ["staging_url", "store_url", "month_url", "Publication", "write_part", "read_part", "read_staged_if",
           "commit_month", "MonthCommit", "check_store_format", "group_paths", "list_groups", "consolidate",
           "StoreShrinkError", "write_parquet", "write_month_catalog", "read_catalog", "read_month_catalog",
           "catalog_url", "chunk_encoding", "PART_COLUMNS"]

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


def ledger_url(output: str, key: PartitionKey) -> str:
    """``{output}/_staging/{YYYY-MM}/published/{NYA_5577_20101201}.parquet``: a published part's rows without its
    arrays, which its month holds (``store.keep_staging: false``)."""
    return join_url(output, "_staging", key.month, "published", f"{key.name}.parquet")


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
    columns = PART_COLUMNS + (["size"] if "size" in rows else [])  # a file's bytes: per-file resume compares them
    write_parquet(url, rows.reindex(columns=columns), storage_options, {_FINGERPRINT_KEY: fingerprint.encode()},
                  extra)


def _part_file(url: str, storage_options: Mapping[str, Any] | None, columns: Sequence[str] | None):
    """A part to read: all of it in memory with one GET (no stale cached size from an earlier version), or, when
    only some ``columns`` are wanted, the fsspec file, whose ranged reads fetch the footer and those columns."""
    fs, path = filesystem(url, dict(storage_options or {}))
    if columns is None:
        return io.BytesIO(fs.cat_file(path))
    fs.invalidate_cache(path)  # the part may have been rewritten since it was last listed
    return fs.open(path, "rb")


def read_staged_if(url: str, fingerprint: str, storage_options: Mapping[str, Any] | None = None,
                   columns: Sequence[str] = ("url", "status")) -> pd.DataFrame | None:
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


def read_part(url: str, storage_options: Mapping[str, Any] | None = None,
              columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
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
            light = [c for c in parquet.schema_arrow.names
                     if not pa.types.is_fixed_size_list(parquet.schema_arrow.field(c).type)]
            table = parquet.read(columns=light)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        key = PartitionKey.parse(url)
        write_bytes_atomic(ledger_url(url.rsplit("/_staging/", 1)[0], key), buf.getvalue(), options)
        fs, path = filesystem(url, options)
        fs.rm_file(path)
        n += 1
    return n


def read_published_part(output: str, key: PartitionKey, fingerprint: str,
                        storage_options: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
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
    where = next(((g, *state.offsets(g)[name]) for g, members in state.groups.items() if name in dict(members)),
                 None) if state is not None else None
    if where is None or where[2] != kept.sum():
        if kept.any():
            raise LookupError(f"{url} does not hold the {int(kept.sum())} images of {name}")
        return rows, {}
    part = _published_rows(store, where[0], where[1], where[2], ("features", "keogram_ns", "keogram_ew"))
    order = _month_order(rows).index.to_numpy()
    arrays = {}
    for name_, var in part.data_vars.items():
        values = np.empty_like(var.to_numpy())
        values[order] = var.to_numpy()
        arrays[name_] = values
    return rows, arrays


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


def chunk_encoding(ds: xr.Dataset) -> dict:
    """Time chunks sized by a row's bytes (:func:`~aurora_batch.increment.chunk_rows`), never by how many rows there
    are: a month grown by appends is chunked exactly as one built whole."""
    enc: dict[str, dict] = {"time": dict(TIME_ENCODING, chunks=(chunk_rows(8, 1),))} if "time" in ds.coords else {}
    for name, var in ds.data_vars.items():
        row_bytes = (OBJECT_ROW_BYTES if var.dtype.kind in "OUST" else var.dtype.itemsize) * int(np.prod(var.shape[1:]))
        enc[name] = {"chunks": (chunk_rows(row_bytes, var.ndim), *var.shape[1:])}
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
    counts: dict[str, int]  #: images per group path, of the groups this commit wrote
    catalog: pd.DataFrame  #: one row per file of the month (:func:`aurora_batch.catalog.file_ledger`)
    rows_written: int = 0  #: image rows written (each written group's tail)
    incremental: bool = False  #: True when the published month was appended to, not rebuilt whole
    matched: dict[str, int] = dataclasses.field(default_factory=dict)  #: from ``finish``, added up


def commit_month(output: str, month: str, part_urls: Sequence[str] | Mapping[str, str],
                 group_attrs: Mapping[str, Mapping[str, Any]], common_attrs: Mapping[str, Any],
                 storage_options: Mapping[str, Any] | None = None, classes: Sequence[str] = (),
                 allow_shrink: bool = True, kept: Mapping[str, int] | None = None,
                 finish: Callable[[Any, str, int], dict[str, int]] | None = None,
                 publication: Publication = Publication(), root_attrs: Mapping[str, Any] | None = None,
                 previous: MonthState | None = None, layout: str = "", whole: bool = False,
                 map_tasks: Callable[[Callable, Sequence], list] | None = None) -> MonthCommit:
    """Write the month store from staged parts; returns counts and the catalog.

    ``part_urls``: the staged parts, or a mapping of them to their versions (size and
    modification time).  With ``previous`` (the published month's
    :class:`~aurora_batch.increment.MonthState`), the same ``layout`` and not ``whole``, only the
    tails of the groups that new or changed parts fall in are written
    (:func:`~aurora_batch.increment.plan_tails`).  Otherwise the month is built whole: every part
    read once, appended in time order per group, one part in memory at a time.  Either way the
    published parts no longer staged (kept as ledgers only, ``store.keep_staging: false``) stay in
    the month: their rows are read from the published month.  A month without a kept
    image gets no store (only its catalog), unless one was published before.

    ``group_attrs`` maps a station code to its group attributes (site description);
    ``common_attrs`` (model, recipe, thresholds, version) go on every group, ``root_attrs`` on the
    root only; ``classes`` labels the ``class`` axis of ``proba``.  ``kept``: images per part
    name, where the caller knows them (else read from the parts' status column).
    ``finish(store, group path, first row written)`` adds to each written group (the joined
    instruments; returns counts to add up) before the month is consolidated and published as
    ``publication`` says: a plain tree put in place (built beside it on a local disk, from hard
    links to the chunks it keeps), or one Icechunk commit written straight into a session (no
    scratch copy), whose unchanged chunks the new version shares.  Stations are written by
    :func:`write_station` tasks, through ``map_tasks(fn, items)`` (a Dask cluster's map; default:
    one after another).  With ``allow_shrink=False`` a month whose groups would lose time stamps
    is not published (:class:`StoreShrinkError`).
    """
    import zarr

    from . import versions as icechunk_versions

    options = dict(storage_options or {})
    final = store_url(output, month, publication.format)
    fs, final_path = filesystem(final, options)
    for leftover in fs.glob(f"{final_path}.building-*"):  # from a killed commit
        fs.rm(leftover, recursive=True)
    urls = {part_name(u): u for u in part_urls}
    staged = {part_name(u): v for u, v in part_urls.items()} if isinstance(part_urls, Mapping) else dict.fromkeys(
        urls, "")
    published = month_url(output, month, options)
    if publication.format == "zarr" and exists(shadow := store_url(output, month, "icechunk"), options):
        raise ValueError(f"{shadow} is an Icechunk repository, which readers open before {store_url(output, month)}: "
                         "keep store.format: icechunk for this output (or move the repository away)")
    counts_of = dict(kept or {})
    if previous is not None and published is not None:  # published parts no longer staged are in the month
        known = {**previous.parts, **staged}
        counts_of.update({n: c for members in previous.groups.values() for n, c in members if n not in urls})
        counts_of.update({n: 0 for n in previous.parts if n not in urls and n not in counts_of})
        old_rows = {n: (g, *previous.offsets(g)[n]) for g, members in previous.groups.items() for n, _ in members}
    else:
        previous, known, old_rows = None, dict(staged), {}
    plan = None
    if previous is not None and not whole and (publication.format == "icechunk" or is_local(fs)):
        changed = [n for n in urls if previous.parts.get(n) != known[n]]
        counts_of.update(_kept_counts([urls[n] for n in changed if n not in counts_of], options))
        plan = plan_tails(previous, known, counts_of, layout)
    incremental = plan is not None
    if plan is None:  # built whole
        changed = list(urls)
        counts_of.update(_kept_counts([urls[n] for n in changed if n not in counts_of], options))
        plan = full_plan(known, counts_of, layout)
    tails, state = plan
    if not state.groups and published is None:  # every file dropped: a ledger, no store
        ledgers = [file_ledger(read_part(urls[n], options, columns=PART_COLUMNS)[0]) for n in sorted(urls)]
        return MonthCommit({}, pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame())
    session = icechunk_versions.begin(final, options) if publication.format == "icechunk" else None
    # the published month as it is now (an Icechunk month at this session's snapshot), which unstaged rows come from
    old = None if published is None else (published, session.snapshot_id if session and published == final else None)
    with _building(final, month, fs, session, link_from=published if incremental and session is None else None) as (
            store, building):
        by_station: dict[str, list[Tail]] = defaultdict(list)
        for gpath, tail in sorted(tails.items()):
            by_station[gpath.split("/")[0]].append(tail)
        writes = [StationWrite(station, station_tails, {**dict(common_attrs), **dict(group_attrs.get(station, {}))},
                               urls, options, classes, old, old_rows, not incremental, finish,
                               session.fork() if session is not None else building)
                  for station, station_tails in sorted(by_station.items())]
        run = map_tasks if (map_tasks is not None and len(writes) > 1 and (session is not None or is_local(fs))) \
            else _serially  # a scratch folder is on this worker only
        done = run(write_station, writes)
        if session is not None:
            session.merge(*(d.target for d in done))
        counts = {g: n for d in done for g, n in d.counts.items()}
        ledgers = {n: f for d in done for n, f in d.ledgers.items()}
        written = sum(d.rows_written for d in done)
        matched = sum((Counter(d.matched) for d in done), Counter())
        root = zarr.open_group(store=store, mode="a", zarr_format=3)
        if not incremental:  # a month built whole keeps no station it no longer has
            for name, _ in list(root.groups()):
                if name not in by_station:
                    del root[name]
        root.attrs.put({"title": f"aurora-batch features for {month}", **dict(common_attrs),
                        **dict(root_attrs or {}), **state.attrs()})
        if session is None:  # an Icechunk snapshot holds every node's metadata already
            consolidate(store)
        if not allow_shrink and old is not None:
            _refuse_shrink(final, zarr_store(old[0], options, version=old[1]), store,
                           list(tails) if incremental else list_groups(store), not incremental)
        unread = [n for n in (changed if incremental else urls) if n not in ledgers]
        ledgers.update({n: file_ledger(read_part(urls[n], options, columns=PART_COLUMNS)[0]) for n in unread})
        catalog = _month_catalog(output, month, options, ledgers, set(state.parts) - set(ledgers))
        failpoint("before-publish")
        if session is None:
            publish_tree(building, final, options)
        else:
            images = sum(n for members in state.groups.values() for _, n in members)
            icechunk_versions.commit(session, f"{publication.message}: {images} images",
                                     {**publication.metadata, "images": images, "groups": dict(counts),
                                      "rows_written": written, "incremental": incremental}, final)
            if publication.keep_versions:
                icechunk_versions.expire(final, publication.keep_versions, options)
            plain = store_url(output, month)
            if exists(join_url(plain, "zarr.json"), options):  # migrated: the repository holds the month now
                fs.rm(filesystem(plain, options)[1], recursive=True)
        return MonthCommit(counts, catalog, written, incremental, dict(matched))


def _serially(fn: Callable, items: Sequence) -> list:
    return [fn(x) for x in items]


@dataclasses.dataclass
class StationWrite:
    """One station's groups of a month commit: a task of its own (stations are written in parallel, into an
    Icechunk fork session or their own folders of the tree being built), and, once done, what it wrote."""

    station: str
    tails: list[Tail]
    attrs: dict[str, Any]  #: the station's group attributes
    urls: Mapping[str, str]  #: part name -> staged part URL
    options: Mapping[str, Any]
    classes: Sequence[str]
    old: tuple[str, str | None] | None  #: the published month (URL, version) that rows of unstaged parts come from
    old_rows: Mapping[str, tuple[str, int, int]]  #: part name -> its group, first row and rows in that month
    whole: bool  #: the station's node is written anew
    finish: Callable[[Any, str, int], dict[str, int]] | None  #: adds to a written group (the join)
    target: Any  #: an Icechunk fork session, or the local folder of the tree being built
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  #: images per group written
    rows_written: int = 0
    ledgers: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)  #: of the staged parts read
    matched: dict[str, int] = dataclasses.field(default_factory=dict)  #: from ``finish``


def write_station(job: StationWrite) -> StationWrite:
    """Write a station's tails (a month built whole first drops the station's node); returns ``job`` filled in."""
    import zarr

    store = job.target if isinstance(job.target, str) else job.target.store
    store = zarr_store(store) if isinstance(store, str) else store
    if job.whole and any(t.path != job.station for t in job.tails):
        zarr.open_group(store=store, path=job.station, mode="w", zarr_format=3)  # a wavelength subgroup's parent
    old = zarr_store(job.old[0], job.options, version=job.old[1]) if job.old is not None else None
    for tail in job.tails:
        source = _PartSource(job.urls, job.options, job.classes, old, job.old_rows)
        job.counts[tail.path] = _write_tail(store, tail.path, tail, source, job.attrs)
        job.rows_written += job.counts[tail.path] - tail.offset
        job.ledgers.update(source.ledgers)
        if job.finish is not None:
            for kind, n in job.finish(store, tail.path, tail.offset).items():
                job.matched[kind] = job.matched.get(kind, 0) + n
    return job


def _kept_counts(urls: Sequence[str], options: Mapping[str, Any], concurrency: int = 16) -> dict[str, int]:
    """Kept images of each part, from its status column alone (ranged reads, ``concurrency`` parts at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    def kept(url: str) -> int:
        return int((read_part(url, options, columns=["status"])[0]["status"] == Status.KEPT).sum())

    with ThreadPoolExecutor(max(1, min(concurrency, len(urls)))) as pool:
        return dict(zip(map(part_name, urls), pool.map(kept, urls)))


class _PartSource:
    """A group's rows of one part, as a dataset: from the staged part (kept rows, in time order), or, for a
    published part no longer staged, from the published month; the ledgers of the staged parts read."""

    def __init__(self, urls: Mapping[str, str], options: Mapping[str, Any], classes: Sequence[str], old,
                 old_rows: Mapping[str, tuple[str, int, int]]):
        self.urls, self.options, self.classes, self.old, self.old_rows = urls, options, classes, old, old_rows
        self.ledgers: dict[str, pd.DataFrame] = {}

    def __call__(self, name: str) -> xr.Dataset | None:
        if name not in self.urls:
            gpath, first, n = self.old_rows[name]
            return _published_rows(self.old, gpath, first, n, VARIABLE_ATTRS)
        rows, arrays = read_part(self.urls[name], self.options)
        self.ledgers[name] = file_ledger(rows)
        rows = _month_order(rows)
        if rows.empty:
            return None
        key = PartitionKey.parse(name)
        if {(st, _wavelength_key(w)) for st, w in zip(rows["station"], rows["wavelength"])} != {
                (key.station, key.wavelength)}:
            raise ValueError(f"{self.urls[name]}: images of other stations or wavelengths than its name says")
        return _dataset(rows, {k: v[rows.index.to_numpy()] for k, v in arrays.items()}, self.classes)


def _month_order(rows: pd.DataFrame) -> pd.DataFrame:
    """A part's kept rows in the order its month holds them (by time), indexed by their position among the kept
    rows (that of their arrays): how a part is written and how a compacted part's arrays are read back."""
    return rows[(rows["status"] == Status.KEPT).to_numpy()].reset_index(drop=True).sort_values("time")


def _published_rows(store, gpath: str, first: int, n: int, variables: Iterable[str]) -> xr.Dataset:
    """Rows [first, first + n) of group ``gpath`` of a published month: its ``variables`` there, in memory."""
    with xr.open_zarr(store, group=gpath, consolidated=False, chunks=None) as ds:
        part = ds[[v for v in ds.data_vars if v in set(variables)]].isel(time=slice(first, first + n)).load()
    for name, var in part.variables.items():
        if var.dtype.kind in "UST":  # strings as a part gives them: Python objects
            part[name] = var.astype(object)
        part[name].encoding = {}
    return part


def _write_tail(store, gpath: str, tail: Tail, source: Callable[[str], xr.Dataset | None],
                attrs: Mapping[str, Any]) -> int:
    """Write group ``gpath`` from ``tail.offset`` on, part after part; returns the group's rows.

    Rows after the offset are cut first; each part is then written as a region of the arrays,
    grown to hold it, so a chunk before the offset is never touched and a chunk across it is
    rewritten once.  A tail from the first row writes the group anew.
    """
    import zarr

    row = tail.offset
    if row:
        _resize_time(zarr.open_group(store=store, path=gpath, mode="r+"), row)
    for name in tail.parts:
        ds = source(name)
        if ds is None or not ds.sizes["time"]:
            continue
        n = ds.sizes["time"]
        if row == 0:
            ds.to_zarr(store, group=gpath, mode="w", zarr_format=3, consolidated=False, encoding=chunk_encoding(ds))
        else:
            _resize_time(zarr.open_group(store=store, path=gpath, mode="r+"), row + n)
            # without its index, the time coordinate is written with the region (xarray skips index coordinates)
            ds.drop_vars([v for v in ds.variables if "time" not in ds[v].dims]).drop_indexes("time").to_zarr(
                store, group=gpath, region={"time": slice(row, row + n)}, mode="r+", zarr_format=3, consolidated=False)
        row += n
    group = zarr.open_group(store=store, path=gpath, mode="r+")
    group.attrs.put({**dict(group.attrs), **dict(attrs)})
    return row


def _resize_time(group, rows: int) -> None:
    """Every array of ``group`` along time cut or grown to ``rows``."""
    for _, arr in group.arrays():
        if (arr.metadata.dimension_names or (None,))[0] == "time" and arr.shape[0] != rows:
            arr.resize((rows, *arr.shape[1:]))


def _month_catalog(output: str, month: str, options: Mapping[str, Any], ledgers: Mapping[str, pd.DataFrame],
                   keep: set[str]) -> pd.DataFrame:
    """The month's catalog: the ledgers of the parts read, and the published catalog's rows of the parts in
    ``keep`` (in the month, not read by this commit)."""
    frames = [f for f in ledgers.values() if len(f)]
    if keep:
        try:
            before = read_month_catalog(output, month, options)
        except FileNotFoundError:  # none yet (a run killed after publishing): the kept parts' own ledgers
            frames += [file_ledger(rows) for rows in (_staged_rows(output, month, n, options) for n in sorted(keep))
                       if rows is not None]
        else:
            names = (before["station"].astype(str) + "_" + before["wavelength"].map(
                lambda w: "all" if pd.isna(w) else str(int(w))) + "_" + before["time"].dt.strftime("%Y%m%d")
                + ".parquet")
            frames.insert(0, before[names.isin(keep)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _staged_rows(output: str, month: str, name: str, options: Mapping[str, Any]) -> pd.DataFrame | None:
    """The rows of part ``name``, staged or compacted to its ledger; None when it is neither."""
    key = PartitionKey.parse(name)
    for url in (staging_url(output, key), ledger_url(output, key)):
        try:
            return read_part(url, options, columns=PART_COLUMNS)[0]
        except FileNotFoundError:
            continue
    return None


@contextlib.contextmanager
def _building(final: str, month: str, fs, session=None, link_from: str | None = None) -> Iterator[tuple[Any, str]]:
    """The store a month is written to, and where it lies: an Icechunk session's store (its commit publishes it);
    else a tree beside the store on a local disk (published by renames; ``link_from``: the published tree,
    whose files it starts as hard links to, so the chunks it keeps are neither copied nor rewritten), or a local
    scratch folder (Dask's ``temporary-directory``) uploaded afterwards, since an object store pays a round trip
    for every small write."""
    if session is not None:
        yield session.store, final
        return
    if is_local(fs):
        url = f"{final}.building-{uuid.uuid4().hex[:12]}"
        if link_from is not None:
            link_tree(filesystem(link_from)[1], filesystem(url)[1])
        yield zarr_store(url), url
        return
    import dask

    scratch = tempfile.mkdtemp(prefix=f"{month}.zarr.building-", dir=dask.config.get("temporary-directory", None))
    try:
        yield zarr_store(scratch), scratch
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


def _refuse_shrink(final: str, old_store, new_store, new_groups: Sequence[str], whole: bool = True) -> None:
    """:class:`StoreShrinkError` when a group of the published month (``old_store``) would lose time stamps;
    ``whole``: every published group is compared (a rebuild), else only ``new_groups`` (those written)."""
    for gpath in list_groups(old_store) if whole else new_groups:
        try:
            with xr.open_zarr(old_store, group=gpath, consolidated=False) as old:
                old_t = old["time"].to_numpy()
        except (FileNotFoundError, KeyError):  # a group new to the month
            continue
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
