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
import xarray as xr

from aurora_batch.core.fs import read_bytes
from aurora_batch.formats.files import read_file
from aurora_batch.model.recipes import thumbnail
from aurora_batch.month.similarity import group_index, normalised, read_record
from aurora_batch.products.results import open_months, open_station
from aurora_batch.store.state import MonthState
from aurora_batch.store.zarrs import list_groups

NPROBE = 32  #: inverted lists searched per group
COLUMNS = ["station", "time", "url", "frame", "similarity"]


def query_vector(output: str, query, months: dict, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The feature vector of ``query``: a stored frame ``(station, time)``, or an image file featurised with the
    stores' backbone and recipe."""
    if isinstance(query, tuple):
        station, time = query
        t = pd.Timestamp(time)
        ds = open_station(output, station, t, t + pd.Timedelta("1ms"), storage_options=storage_options)
        if ds.sizes["time"] == 0:
            raise LookupError(f"no stored frame of {station} at {t}")
        return ds["features"].isel(time=0).to_numpy()
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
    q = normalised(query_vector(output, query, months, storage_options)[None, :])
    allowed = None
    if where:
        from aurora_batch.products.query import query as label_query

        hits = label_query(output, where, stations, start, end, storage_options, columns=[])
        allowed = set(zip(hits["station"], hits["time"].dt.tz_localize(None)))
    wanted = {s.upper() for s in stations} if stations else None
    lo = pd.Timestamp(start) if start is not None else None
    hi = pd.Timestamp(end) if end is not None else None
    ask = k * (20 if allowed is not None or lo is not None or hi is not None else 4)
    candidates = _candidates(output, months, q, ask, wanted, storage_options)
    found = []
    for (month, gpath), rows in candidates.items():
        with xr.open_zarr(months[month][1], group=gpath, consolidated=False, chunks=None) as ds:
            got = ds[["features", "url", "frame"]].isel(time=np.sort(rows)).load()
        frame = pd.DataFrame(
            {
                "station": gpath.split("/")[0],
                "time": pd.DatetimeIndex(got["time"].to_numpy()),
                "url": got["url"].to_numpy().astype(object),
                "frame": got["frame"].to_numpy(),
                "similarity": (normalised(got["features"].to_numpy()) @ q[0]).astype(np.float32),
            }
        )
        keep = np.ones(len(frame), bool)
        if lo is not None:
            keep &= (frame["time"] >= lo).to_numpy()
        if hi is not None:
            keep &= (frame["time"] < hi).to_numpy()
        if allowed is not None:
            keep &= np.array([(s, t) in allowed for s, t in zip(frame["station"], frame["time"])], bool)
        found.append(frame[keep])
    hits = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=COLUMNS)
    hits = hits.sort_values("similarity", ascending=False, kind="stable").head(k).reset_index(drop=True)
    hits["time"] = pd.to_datetime(hits["time"]).dt.tz_localize("UTC")
    return hits[COLUMNS]


def _candidates(
    output: str, months: dict, q: np.ndarray, ask: int, wanted: set[str] | None, storage_options
) -> dict[tuple[str, str], np.ndarray]:
    """The ``ask`` rows most like ``q`` by the indexes' (quantised) cosine over every month group searched:
    ``{(month, group): rows}``.  Only these rows are read from the stores, whatever the number of groups."""
    import zarr

    scores, keys = [], []
    for month, (_, store) in sorted(months.items()):
        state = MonthState.from_attrs(zarr.open_group(store=store, mode="r").attrs)
        record = read_record(output, month, storage_options)
        for gpath in list_groups(store):
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
        return {}
    best = np.argsort(-np.concatenate(scores), kind="stable")[:ask]
    out: dict[tuple[str, str], list[int]] = {}
    for i in best:
        month, gpath, row = keys[i]
        out.setdefault((month, gpath), []).append(row)
    return {key: np.asarray(rows) for key, rows in out.items()}


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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
