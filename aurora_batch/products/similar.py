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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aurora_batch.core.fs import read_bytes
from aurora_batch.formats.files import read_file
from aurora_batch.model.recipes import thumbnail
from aurora_batch.month.similarity import group_index, normalised, read_record
from aurora_batch.products.figures import save_png
from aurora_batch.products.results import open_months
from aurora_batch.store.state import MonthState
from aurora_batch.store.zarrs import list_groups

NPROBE = 32  #: inverted lists searched per group
#: candidates ranked again by their exact cosine, per hit asked: over 10 M fabricated vectors
#: (``benchmarks/products.py``) recall@10 was 1.000 with 20 and 40 and 0.938 with the index's own 10; 40 also
#: keep the dense near-ties of consecutive frames in order (the tests' clustered features need more than 20)
RERANK = 4
COLUMNS = ["station", "time", "url", "frame", "similarity"]


def _group(store, gpath: str):
    """A month group opened with zarr alone: a search reads a few rows, where xarray's decoding of every
    variable at open would cost more than the rows."""
    import zarr

    return zarr.open_group(store=store, path=gpath, mode="r")


def _times(group) -> pd.DatetimeIndex:
    """A group's time coordinate (UTC, naive), decoded from its CF units."""
    from xarray.coding.times import decode_cf_datetime

    arr = group["time"]
    return pd.DatetimeIndex(decode_cf_datetime(arr[:], arr.attrs["units"], arr.attrs.get("calendar")))


def query_vector(
    output: str,
    query,
    months: dict,
    storage_options: Mapping[str, Any] | None = None,
    groups: Mapping[str, list[str]] | None = None,
) -> np.ndarray:
    """The feature vector of ``query``: a stored frame ``(station, time)``, or an image file featurised with the
    stores' backbone and recipe.  ``months``: open month stores to look in first; ``groups``: their groups."""
    if isinstance(query, tuple):
        station, time = query
        t = pd.Timestamp(time)
        t = t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t
        month = f"{t:%Y-%m}"
        found = (
            {month: months[month]}
            if month in months
            else open_months(output, t, t + pd.Timedelta("1ms"), storage_options)
        )
        for month, (_, store) in found.items():
            for gpath in (groups or {}).get(month) or list_groups(store):
                if gpath.split("/")[0] == station.upper():
                    group = _group(store, gpath)
                    times = _times(group)
                    i = times.searchsorted(t)
                    if i < len(times) and times[i] == t:
                        return np.asarray(group["features"][i], np.float32)
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
    groups = {month: list_groups(store) for month, (_, store) in months.items()}
    q = normalised(query_vector(output, query, months, storage_options, groups)[None, :])
    allowed = None
    if where:
        from aurora_batch.products.query import query as label_query

        hits = label_query(output, where, stations, start, end, storage_options, columns=[])
        allowed = set(zip(hits["station"], hits["time"].dt.tz_localize(None)))
    wanted = {s.upper() for s in stations} if stations else None
    lo = pd.Timestamp(start) if start is not None else None
    hi = pd.Timestamp(end) if end is not None else None
    filtered = allowed is not None or lo is not None or hi is not None
    cands = _candidates(output, months, groups, q, k * (20 if filtered else RERANK), wanted, storage_options)
    opened = {key: _group(months[key[0]][1], key[1]) for key in cands.groupby(["month", "group"]).groups}
    if filtered:  # by time and the label table, before any features are read
        cands = _with_times(cands, opened)
        keep = np.ones(len(cands), bool)
        if lo is not None:
            keep &= (cands["time"] >= lo).to_numpy()
        if hi is not None:
            keep &= (cands["time"] < hi).to_numpy()
        if allowed is not None:
            keep &= np.array([(g.split("/")[0], t) in allowed for g, t in zip(cands["group"], cands["time"])], bool)
        cands = cands[keep]
    cands = cands.head(k * RERANK).assign(similarity=np.float32(0))
    for i, group in _by_group(cands, opened):  # the exact cosine of the best candidates: their inner chunks only
        features = group["features"].get_orthogonal_selection((cands.loc[i, "row"].to_numpy(), slice(None)))
        cands.loc[i, "similarity"] = (normalised(features) @ q[0]).astype(np.float32)
    hits = cands.sort_values("similarity", ascending=False, kind="stable").head(k).reset_index(drop=True)
    return _with_sources(hits if "time" in hits else _with_times(hits, opened), opened)


def _by_group(cands: pd.DataFrame, opened: Mapping[tuple[str, str], Any]):
    """``(index labels, zarr group)`` of each month group's candidates, rows ascending within each."""
    ordered = cands.sort_values(["month", "group", "row"])
    for key, index in ordered.groupby(["month", "group"], sort=False).groups.items():
        yield index, opened[key]


def _with_times(cands: pd.DataFrame, opened: Mapping[tuple[str, str], Any]) -> pd.DataFrame:
    """``cands`` with the time (UTC, naive) of each row."""
    times = pd.Series(pd.NaT, index=cands.index, dtype="datetime64[ns]")
    for i, group in _by_group(cands, opened):
        times.loc[i] = _times(group)[cands.loc[i, "row"].to_numpy()]
    return cands.assign(time=times)


def _with_sources(hits: pd.DataFrame, opened: Mapping[tuple[str, str], Any]) -> pd.DataFrame:
    """``hits`` (month, group, row, time, similarity) as :data:`COLUMNS`: the URL and frame of the best only."""
    out = pd.DataFrame(
        {
            "station": hits["group"].str.split("/").str[0],
            "time": pd.to_datetime(hits["time"]).dt.tz_localize("UTC"),
            "url": pd.Series([None] * len(hits), dtype=object),
            "frame": np.zeros(len(hits), np.int32),
            "similarity": hits["similarity"].astype(np.float32),
        }
    )
    for picked, group in _by_group(hits, opened):
        rows = hits.loc[picked, "row"].to_numpy()
        out.loc[picked, "url"] = np.asarray(group["url"].get_coordinate_selection(rows), dtype=object)
        out.loc[picked, "frame"] = group["frame"].get_coordinate_selection(rows)
    return out[COLUMNS]


def _candidates(
    output: str,
    months: dict,
    groups: Mapping[str, list[str]],
    q: np.ndarray,
    ask: int,
    wanted: set[str] | None,
    storage_options,
) -> pd.DataFrame:
    """The ``ask`` rows most like ``q`` by the indexes' (quantised) cosine over every month group searched, best
    first: month, group, row.  Only these rows are read from the stores, whatever the number of groups."""
    import zarr

    scores, keys = [], []
    for month, (_, store) in sorted(months.items()):
        state = MonthState.from_attrs(zarr.open_group(store=store, mode="r").attrs)
        record = read_record(output, month, storage_options)
        for gpath in groups[month]:
            if (wanted is not None and gpath.split("/")[0] not in wanted) or state is None:
                continue
            index = group_index(output, month, gpath, state, storage_options, record)
            if index is None or index.ntotal == 0:
                continue
            index.nprobe = NPROBE
            sims, ids = index.search(q, min(index.ntotal, max(ask, 1)))
            ok = ids[0] >= 0
            scores.append(sims[0][ok])
            keys += [(month, gpath, int(i)) for i in ids[0][ok]]
    if not keys:
        return pd.DataFrame({"month": [], "group": [], "row": np.zeros(0, np.int64)})
    best = np.argsort(-np.concatenate(scores), kind="stable")[:ask]
    return pd.DataFrame([keys[i] for i in best], columns=["month", "group", "row"])


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
