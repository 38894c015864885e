"""Frames like this one: nearest neighbours of a frame's features over every stored frame of a window.

::

    import aurora_batch as ab
    hits = ab.similar("s3://bucket/out", ("GILL", "2014-01-05T06:12:03"), k=20, where="cloud_detected = 0")
    hits = ab.similar("s3://bucket/out", "s3://asi/gill/20140105_0612_gill_themis.pgm.gz")  # any image file

The query is a stored frame, ``(station, time)``, or an image file or URL, featurised exactly as the job did
(the stores' backbone and recipe, :func:`aurora_batch.products.files.classify_files`).  Each month group's
index (:mod:`aurora_batch.month.similarity`) gives candidates, which are ranked again by the exact cosine of
their stored features; ``where`` filters by the label table (:func:`aurora_batch.products.query.query`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aurora_batch.core.cache import SizedCache
from aurora_batch.core.fs import read_bytes
from aurora_batch.formats.files import read_file
from aurora_batch.model.recipes import thumbnail
from aurora_batch.month.similarity import group_index, normalised, read_record
from aurora_batch.products.figures import save_png
from aurora_batch.products.results import open_months
from aurora_batch.store.rows import read_rows
from aurora_batch.store.state import MonthState
from aurora_batch.store.zarrs import list_groups

NPROBE = 32  #: inverted lists searched per group
#: candidates ranked again by their exact cosine, per hit asked: over 10 M fabricated vectors
#: (``benchmarks/products.py``) recall@10 was 1.000 with 20 and 40 and 0.938 with the index's own 10; 40 also
#: keep the dense near-ties of consecutive frames in order (the tests' clustered features need more than 20)
RERANK = 4
COLUMNS = ["station", "time", "url", "frame", "similarity"]
TIMES_ROWS = 50_000_000  #: row times (8 bytes each) of searched groups kept between searches, oldest out first
_TIMES: SizedCache[pd.DatetimeIndex] = SizedCache(len, lambda: TIMES_ROWS)


@dataclass
class Searched:
    """One month group a search looks in: opened, its row times read and its index loaded when first asked for;
    the times and index are kept between searches while the month's parts (``state``) do not change."""

    output: str
    month: str
    path: str
    store: Any = field(repr=False)
    state: MonthState | None = field(repr=False)
    record: dict = field(repr=False)
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def station(self) -> str:
        return self.path.split("/")[0]

    @cached_property
    def group(self):
        """The group opened with zarr alone: a search reads a few rows, where xarray's decoding of every variable
        at open would cost more than the rows."""
        import zarr

        return zarr.open_group(store=self.store, path=self.path, mode="r")

    @cached_property
    def times(self) -> pd.DatetimeIndex:
        """Each row's time (UTC, naive)."""
        if self.state is None:
            return _decoded_times(self.group)
        key = (self.output, self.month, self.path, tuple((m, self.state.parts[m], n) for m, n in self._members))
        return _TIMES.get(key, lambda: _decoded_times(self.group))

    @cached_property
    def index(self):
        """The group's similarity index (:func:`~aurora_batch.month.similarity.group_index`), None if it has none."""
        if self.state is None:
            return None
        return group_index(self.output, self.month, self.path, self.state, self.storage_options, self.record)

    @property
    def _members(self) -> list[tuple[str, int]]:
        return self.state.groups.get(self.path, []) if self.state else []

    def rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``rows`` of the group's variable ``name``."""
        return read_rows(self.group[name], rows)


def _decoded_times(group) -> pd.DatetimeIndex:
    """A group's time coordinate (UTC, naive), decoded from its CF units."""
    from xarray.coding.times import decode_cf_datetime

    arr = group["time"]
    return pd.DatetimeIndex(decode_cf_datetime(arr[:], arr.attrs["units"], arr.attrs.get("calendar")))


def searched_groups(output: str, months: dict, storage_options: Mapping[str, Any] | None = None) -> list[Searched]:
    """The groups of ``months`` (open month stores), in month and path order: from each month's state, listed only
    for months published before states were recorded."""
    import zarr

    out = []
    for month, (_, store) in sorted(months.items()):
        state = MonthState.from_attrs(zarr.open_group(store=store, mode="r").attrs)
        record = read_record(output, month, storage_options) if state else {}
        for path in sorted(state.groups) if state else list_groups(store):
            out.append(Searched(output, month, path, store, state, record, storage_options))
    return out


def query_vector(
    output: str,
    query,
    months: dict,
    storage_options: Mapping[str, Any] | None = None,
    groups: Sequence[Searched] | None = None,
) -> np.ndarray:
    """The feature vector of ``query``: a stored frame ``(station, time)``, or an image file featurised with the
    stores' backbone and recipe.  ``months``: open month stores to look in first; ``groups``: their groups."""
    if isinstance(query, tuple):
        station, time = query
        t = pd.Timestamp(time)
        t = t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t
        month = f"{t:%Y-%m}"
        if month in months:
            found = [g for g in (groups or searched_groups(output, months, storage_options)) if g.month == month]
        else:
            elsewhere = open_months(output, t, t + pd.Timedelta("1ms"), storage_options)
            found = searched_groups(output, elsewhere, storage_options)
        for g in found:
            if g.station == station.upper():
                i = g.times.searchsorted(t)
                if i < len(g.times) and g.times[i] == t:
                    return np.asarray(g.rows("features", np.array([i]))[0], np.float32)
        raise LookupError(f"no stored frame of {station} at {t}")
    import zarr

    from aurora_batch.products.files import classify_files

    store = next(iter(months.values()))[1]
    attrs = dict(zarr.open_group(store=store, mode="r").attrs)
    recipe, backbone = str(attrs.get("recipe", "lite128")), str(attrs.get("backbone", "efficientnet-lite0"))
    table = classify_files([str(query)], recipe=recipe, backbone=backbone, features=True, progress=False)
    kept = table[table["status"] == "kept"]
    if kept.empty:
        raise ValueError(f"{query}: no frame kept ({table['detail'].iloc[0] if len(table) else 'no frame'})")
    return kept[[c for c in table if c.startswith("f") and c[1:].isdigit()]].to_numpy(np.float32)[0]


def similar(
    output: str,
    query,
    k: int = 10,
    stations: Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
    where: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The ``k`` frames most like ``query`` in [start, end) and ``stations``: station, time (UTC), url, frame and
    similarity (cosine of the features), best first.  ``where``: an SQL condition over the label table."""
    months = open_months(output, start, end, storage_options)
    if not months:
        raise FileNotFoundError(f"no month store under {output} in [{start}, {end})")
    everywhere = searched_groups(output, months, storage_options)
    q = normalised(query_vector(output, query, months, storage_options, everywhere)[None, :])[0]
    wanted = {s.upper() for s in stations} if stations else None
    groups = [g for g in everywhere if wanted is None or g.station in wanted]
    allowed = None
    if where:
        from aurora_batch.products.query import query as label_query

        hits = label_query(output, where, stations, start, end, storage_options, columns=[])
        allowed = set(zip(hits["station"], hits["time"].dt.tz_localize(None)))
    lo = pd.Timestamp(start) if start is not None else None
    hi = pd.Timestamp(end) if end is not None else None
    filtered = allowed is not None or lo is not None or hi is not None
    which, rows = _candidates(groups, q, k * (20 if filtered else RERANK))
    if filtered:  # by time and the label table, before any features are read
        times = _times_of(groups, which, rows)
        keep = np.ones(len(rows), bool)
        if lo is not None:
            keep &= times >= lo
        if hi is not None:
            keep &= times < hi
        if allowed is not None:
            keep &= np.array([(groups[g].station, t) in allowed for g, t in zip(which, times)], bool)
        which, rows = which[keep], rows[keep]
    which, rows = which[: k * RERANK], rows[: k * RERANK]
    cosine = np.zeros(len(rows), np.float32)
    for g, at in _by_group(which, rows):  # the exact cosine of the best candidates: their inner chunks only
        cosine[at] = normalised(groups[g].rows("features", rows[at])) @ q
    best = np.argsort(-cosine, kind="stable")[:k]
    return _hits(groups, which[best], rows[best], cosine[best])


def _by_group(which: np.ndarray, rows: np.ndarray):
    """``(group number, positions)`` of each searched group's candidates, rows ascending within each."""
    order = np.lexsort((rows, which))
    bounds = np.flatnonzero(np.diff(which[order])) + 1
    for at in np.split(order, bounds) if len(order) else []:
        yield int(which[at[0]]), at


def _times_of(groups: Sequence[Searched], which: np.ndarray, rows: np.ndarray) -> pd.DatetimeIndex:
    """The time (UTC, naive) of each candidate."""
    times = np.empty(len(rows), "datetime64[ns]")
    for g, at in _by_group(which, rows):
        times[at] = groups[g].times[rows[at]]
    return pd.DatetimeIndex(times)


def _hits(groups: Sequence[Searched], which: np.ndarray, rows: np.ndarray, cosine: np.ndarray) -> pd.DataFrame:
    """The hits as :data:`COLUMNS`: the URLs and frames read for these rows only."""
    url = np.empty(len(rows), object)
    frame = np.zeros(len(rows), np.int32)
    for g, at in _by_group(which, rows):
        url[at] = groups[g].rows("url", rows[at])
        frame[at] = groups[g].rows("frame", rows[at])
    return pd.DataFrame(
        {
            "station": pd.Series([groups[g].station for g in which], dtype=object),
            "time": _times_of(groups, which, rows).tz_localize("UTC"),
            "url": url,
            "frame": frame,
            "similarity": cosine.astype(np.float32),
        },
        columns=COLUMNS,
    )


def _candidates(groups: Sequence[Searched], q: np.ndarray, ask: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``ask`` rows most like ``q`` by the indexes' (quantised) cosine over every group searched, best first:
    (group number, row).  Only these rows are read from the stores, whatever the number of groups."""
    scores, which, rows = [], [], []
    for g, group in enumerate(groups):
        index = group.index
        if index is None or index.ntotal == 0:
            continue
        index.nprobe = NPROBE
        sims, ids = index.search(q[None, :], min(index.ntotal, max(ask, 1)))
        ok = ids[0] >= 0
        scores.append(sims[0][ok])
        rows.append(ids[0][ok])
        which.append(np.full(ok.sum(), g))
    if not scores:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    best = np.argsort(-np.concatenate(scores), kind="stable")[:ask]
    return np.concatenate(which)[best], np.concatenate(rows)[best].astype(np.int64)


def contact_sheet(
    hits: pd.DataFrame, path: str | Path, storage_options: Mapping[str, Any] | None = None, columns: int = 5
) -> Path:
    """A PNG of the hits' frames re-read from their URLs, each captioned with station, time and similarity (and
    its ``label`` column where there is one), ``columns`` a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(hits) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, hit in zip(axes.ravel(), hits.itertuples()):
        try:
            img = read_file(read_bytes(hit.url, storage_options), hit.url, min_side=96).images[int(hit.frame)]
            ax.imshow(thumbnail(img), cmap="gray", vmin=0, vmax=1)
        except (OSError, ValueError, IndexError) as err:
            ax.text(0.5, 0.5, f"not readable:\n{type(err).__name__}", ha="center", va="center", fontsize=7)
        label = f"{hit.label}: " if getattr(hit, "label", "") else ""
        ax.set_title(f"{label}{hit.station} {hit.time:%Y-%m-%d %H:%M:%S}\ncos {hit.similarity:.3f}", fontsize=7)
    return save_png(fig, path, dpi=100)
