"""Committing a month: staged parts → one published month store.

Once every partition of a month is staged, one task commits the month (:func:`commit_month`): only the rows
of new or changed parts, and the chunks they touch, when the month was published before
(:mod:`aurora_batch.month.increment`), else all of it.  Its stations are written by separate tasks
(:func:`write_station`), never two into one group, and the month is published once: a tree built beside the
store from hard links to the old one and renamed into place, or one Icechunk commit.  Readers never see a
half-written month.

Layout: one group per station (``NYA``); a station seen at several wavelengths in a month gets one subgroup
per wavelength (``NYA/5577``, ``NYA/6300``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.core.fs import (
    exists,
    failpoint,
    filesystem,
    is_local,
    join_url,
    link_tree,
    publish_tree,
)
from aurora_batch.core.keys import PartitionKey, file_ledger
from aurora_batch.month.dataset import VARIABLE_ATTRS, chunk_encoding, month_dataset, wavelength_key
from aurora_batch.month.increment import (
    Tail,
    full_plan,
    plan_tails,
)
from aurora_batch.store.layout import ledger_url, month_url, staging_url, store_url
from aurora_batch.store.ledger import read_month_catalog
from aurora_batch.store.parts import PART_COLUMNS, kept_counts, month_order, published_rows, read_part
from aurora_batch.store.state import MonthState, part_name
from aurora_batch.store.zarrs import consolidate, list_groups, zarr_store


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
    catalog: pd.DataFrame  #: one row per file of the month (:func:`aurora_batch.core.keys.file_ledger`)
    rows_written: int = 0  #: image rows written (each written group's tail)
    incremental: bool = False  #: True when the published month was appended to, not rebuilt whole
    matched: dict[str, int] = dataclasses.field(default_factory=dict)  #: from ``finish``, added up
    state: MonthState | None = None  #: what the published month was built from (None: no store)


def commit_month(
    output: str,
    month: str,
    part_urls: Sequence[str] | Mapping[str, str],
    group_attrs: Mapping[str, Mapping[str, Any]],
    common_attrs: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
    classes: Sequence[str] = (),
    allow_shrink: bool = True,
    kept: Mapping[str, int] | None = None,
    finish: Callable[[Any, str, int], dict[str, int]] | None = None,
    publication: Publication = Publication(),
    root_attrs: Mapping[str, Any] | None = None,
    previous: MonthState | None = None,
    layout: str = "",
    whole: bool = False,
    map_tasks: Callable[[Callable, Sequence], list] | None = None,
) -> MonthCommit:
    """Write the month store from staged parts; returns counts and the catalog.

    ``part_urls``: the staged parts, or a mapping of them to their versions (size and
    modification time).  With ``previous`` (the published month's
    :class:`~aurora_batch.month.increment.MonthState`), the same ``layout`` and not ``whole``, only the
    tails of the groups that new or changed parts fall in are written
    (:func:`~aurora_batch.month.increment.plan_tails`).  Otherwise the month is built whole: every part
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

    from aurora_batch.store import versions as icechunk_versions

    options = dict(storage_options or {})
    final = store_url(output, month, publication.format)
    fs = _clear_for(final, output, month, publication.format, options)
    urls = {part_name(u): u for u in part_urls}
    staged = (
        {part_name(u): v for u, v in part_urls.items()} if isinstance(part_urls, Mapping) else dict.fromkeys(urls, "")
    )
    published = month_url(output, month, options)
    appendable = published is not None and not whole and (publication.format == "icechunk" or is_local(fs))
    p = _plan(urls, staged, dict(kept or {}), previous if published is not None else None, layout, appendable, options)
    tails, state, incremental = p.tails, p.state, p.incremental
    if not state.groups and published is None:  # every file dropped: a ledger, no store
        frames = [file_ledger(read_part(urls[n], options, columns=PART_COLUMNS)[0]) for n in sorted(urls)]
        return MonthCommit({}, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    session = icechunk_versions.begin(final, options) if publication.format == "icechunk" else None
    # the published month as it is now (an Icechunk month at this session's snapshot), which unstaged rows come from
    old = None if published is None else (published, session.snapshot_id if session and published == final else None)
    with _building(final, month, fs, session, link_from=published if incremental and session is None else None) as (
        store,
        building,
    ):
        by_station: dict[str, list[Tail]] = defaultdict(list)
        for gpath, tail in sorted(tails.items()):
            by_station[gpath.split("/")[0]].append(tail)
        writes = [
            StationWrite(
                station,
                station_tails,
                {**dict(common_attrs), **dict(group_attrs.get(station, {}))},
                urls,
                options,
                classes,
                old,
                p.old_rows,
                not incremental,
                finish,
                session.fork() if session is not None else building,
            )
            for station, station_tails in sorted(by_station.items())
        ]
        run = (
            map_tasks
            if (map_tasks is not None and len(writes) > 1 and (session is not None or is_local(fs)))
            else _serially
        )  # a scratch folder is on this worker only
        done = run(write_station, writes)
        if session is not None:
            session.merge(*(d.target for d in done))
        counts = {g: n for d in done for g, n in d.counts.items()}
        ledgers = {n: f for d in done for n, f in d.ledgers.items()}
        written = sum(d.rows_written for d in done)
        matched = sum((Counter(d.matched) for d in done), Counter())
        attrs = {"title": f"aurora-batch features for {month}", **common_attrs, **(root_attrs or {}), **state.attrs()}
        _set_root(store, attrs, None if incremental else set(by_station))
        if session is None:  # an Icechunk snapshot holds every node's metadata already
            consolidate(store)
        if not allow_shrink and old is not None:
            _refuse_shrink(
                final,
                zarr_store(old[0], options, version=old[1]),
                store,
                list(tails) if incremental else list_groups(store),
                not incremental,
            )
        unread = [n for n in (p.changed if incremental else urls) if n not in ledgers]
        ledgers.update({n: file_ledger(read_part(urls[n], options, columns=PART_COLUMNS)[0]) for n in unread})
        catalog = _month_catalog(output, month, options, ledgers, set(state.parts) - set(ledgers))
        failpoint("before-publish")
        if session is None:
            publish_tree(building, final, options)
        else:
            images = sum(n for members in state.groups.values() for _, n in members)
            facts = {"images": images, "groups": dict(counts), "rows_written": written, "incremental": incremental}
            _commit_version(session, final, publication, facts, store_url(output, month), options)
        return MonthCommit(counts, catalog, written, incremental, dict(matched), state)


def _set_root(store, attrs: Mapping[str, Any], stations: set[str] | None) -> None:
    """The month's root attributes; with ``stations`` (a month built whole), other stations' groups removed."""
    import zarr

    root = zarr.open_group(store=store, mode="a", zarr_format=3)
    if stations is not None:
        for name in [n for n, _ in root.groups() if n not in stations]:
            del root[name]
    root.attrs.put(dict(attrs))


def _clear_for(final: str, output: str, month: str, fmt: str, options: Mapping[str, Any]):
    """The file system of ``final``, with what a killed commit left beside it removed; refuses to write a plain
    month that an Icechunk repository of the same month would hide from readers."""
    fs, final_path = filesystem(final, options)
    for leftover in fs.glob(f"{final_path}.building-*"):  # from a killed commit
        fs.rm(leftover, recursive=True)
    if fmt == "zarr" and exists(shadow := store_url(output, month, "icechunk"), options):
        raise ValueError(
            f"{shadow} is an Icechunk repository, which readers open before {store_url(output, month)}: "
            "keep store.format: icechunk for this output (or move the repository away)"
        )
    return fs


@dataclasses.dataclass
class _CommitPlan:
    tails: dict[str, Tail]  #: group path -> the rows this commit writes
    state: MonthState  #: what the month will have been built from
    incremental: bool  #: the published month is appended to, not rebuilt whole
    changed: list[str]  #: staged part names that are new or changed
    old_rows: dict[str, tuple[str, int, int]]  #: part name -> (group, first row, rows) in the published month


def _plan(
    urls: dict[str, str],
    staged: dict[str, str],
    counts: dict[str, int],
    previous: MonthState | None,
    layout: str,
    appendable: bool,
    options: Mapping[str, Any],
) -> _CommitPlan:
    """What a commit writes: the tails of the groups that new or changed parts fall in when the published month
    (``previous``) can be appended to, else every group whole.  ``counts`` (kept images per part) is completed
    by reading the status column of the parts it lacks."""
    old_rows: dict[str, tuple[str, int, int]] = {}
    known = dict(staged)
    if previous is not None:  # published parts no longer staged are in the month
        known = {**previous.parts, **staged}
        counts.update({n: c for members in previous.groups.values() for n, c in members if n not in urls})
        counts.update({n: 0 for n in previous.parts if n not in urls and n not in counts})
        old_rows = {n: (g, *previous.offsets(g)[n]) for g, members in previous.groups.items() for n, _ in members}
    if previous is not None and appendable:
        changed = [n for n in urls if previous.parts.get(n) != known[n]]
        counts.update(kept_counts([urls[n] for n in changed if n not in counts], options))
        if (planned := plan_tails(previous, known, counts, layout)) is not None:
            return _CommitPlan(*planned, True, changed, old_rows)
    changed = list(urls)
    counts.update(kept_counts([urls[n] for n in changed if n not in counts], options))
    return _CommitPlan(*full_plan(known, counts, layout), False, changed, old_rows)


def _commit_version(session, final: str, publication: Publication, facts: dict, plain: str, options) -> None:
    """One Icechunk commit of the month, old versions expired as ``publication`` says; a plain month the
    repository replaces (a migrated output) is removed."""
    from aurora_batch.store import versions as icechunk_versions

    message = f"{publication.message}: {facts['images']} images"
    icechunk_versions.commit(session, message, {**publication.metadata, **facts}, final)
    if publication.keep_versions:
        icechunk_versions.expire(final, publication.keep_versions, options)
    if exists(join_url(plain, "zarr.json"), options):  # migrated: the repository holds the month now
        fs, path = filesystem(plain, options)
        fs.rm(path, recursive=True)


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


class _PartSource:
    """A group's rows of one part, as a dataset: from the staged part (kept rows, in time order), or, for a
    published part no longer staged, from the published month; the ledgers of the staged parts read."""

    def __init__(
        self,
        urls: Mapping[str, str],
        options: Mapping[str, Any],
        classes: Sequence[str],
        old,
        old_rows: Mapping[str, tuple[str, int, int]],
    ):
        self.urls, self.options, self.classes, self.old, self.old_rows = urls, options, classes, old, old_rows
        self.ledgers: dict[str, pd.DataFrame] = {}

    def __call__(self, name: str) -> xr.Dataset | None:
        if name not in self.urls:
            gpath, first, n = self.old_rows[name]
            return published_rows(self.old, gpath, first, n, VARIABLE_ATTRS)
        rows, arrays = read_part(self.urls[name], self.options)
        self.ledgers[name] = file_ledger(rows)
        rows = month_order(rows)
        if rows.empty:
            return None
        key = PartitionKey.parse(name)
        if {(st, wavelength_key(w)) for st, w in zip(rows["station"], rows["wavelength"])} != {
            (key.station, key.wavelength)
        }:
            raise ValueError(f"{self.urls[name]}: images of other stations or wavelengths than its name says")
        return month_dataset(rows, {k: v[rows.index.to_numpy()] for k, v in arrays.items()}, self.classes)


def _write_tail(
    store, gpath: str, tail: Tail, source: Callable[[str], xr.Dataset | None], attrs: Mapping[str, Any]
) -> int:
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
                store, group=gpath, region={"time": slice(row, row + n)}, mode="r+", zarr_format=3, consolidated=False
            )
        row += n
    group = zarr.open_group(store=store, path=gpath, mode="r+")
    group.attrs.put({**dict(group.attrs), **dict(attrs)})
    return row


def _resize_time(group, rows: int) -> None:
    """Every array of ``group`` along time cut or grown to ``rows``."""
    for _, arr in group.arrays():
        if (arr.metadata.dimension_names or (None,))[0] == "time" and arr.shape[0] != rows:
            arr.resize((rows, *arr.shape[1:]))


def _month_catalog(
    output: str, month: str, options: Mapping[str, Any], ledgers: Mapping[str, pd.DataFrame], keep: set[str]
) -> pd.DataFrame:
    """The month's catalog: the ledgers of the parts read, and the published catalog's rows of the parts in
    ``keep`` (in the month, not read by this commit)."""
    frames = [f for f in ledgers.values() if len(f)]
    if keep:
        try:
            before = read_month_catalog(output, month, options)
        except FileNotFoundError:  # none yet (a run killed after publishing): the kept parts' own ledgers
            frames += [
                file_ledger(rows)
                for rows in (_staged_rows(output, month, n, options) for n in sorted(keep))
                if rows is not None
            ]
        else:
            names = (
                before["station"].astype(str)
                + "_"
                + before["wavelength"].map(lambda w: "all" if pd.isna(w) else str(int(w)))
                + "_"
                + before["time"].dt.strftime("%Y%m%d")
                + ".parquet"
            )
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
            raise StoreShrinkError(
                f"refusing to shrink {final} group {gpath}: {len(lost)} published time stamp(s) "
                f"would disappear (first {pd.Timestamp(lost[0])})"
            )
