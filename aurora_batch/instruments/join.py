"""Nearest-time joins of image rows to instrument series, exact across chunk borders.

``nearest(left, right, on="time", by="station", tolerance=...)`` attaches to every left row
the right row of the same station nearest in time, if one lies within ``tolerance``; the
result has the left rows in their original order, the right's value columns, and ``dt``
(right time − left time).  Rows with no partner within the tolerance get NaN / NaT, never a
far-away sample.  Its reference semantics are ``pandas.merge_asof(direction="nearest",
tolerance=..., by=...)`` over the whole data.

With Dask DataFrames both indexed by sorted time with known divisions, it is
``dask.dataframe.merge_asof``.  Otherwise it runs per left partition against the right rows in
[min − tolerance, max + tolerance] of that partition's times (a cheap ``.loc`` on the
right's sorted time index), so a row near a partition border still sees every candidate
and the result is the same row for row.  (TAME split by calendar day instead and missed
partners across midnight.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _nearest_pandas(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str,
    by: str | None,
    tolerance: pd.Timedelta,
    direction: str,
    suffix: str,
) -> pd.DataFrame:
    values = [c for c in right.columns if c not in (on, by)]
    r = right[[on] + ([by] if by else []) + values].rename(columns={c: c + suffix for c in values})
    r = r.assign(**{f"_{on}_right": r[on]}).sort_values(on, kind="stable")
    r = r.dropna(subset=[on])
    lft = left.assign(_order=np.arange(len(left)))
    has_time = lft[on].notna()
    key = lft.loc[has_time].sort_values(on, kind="stable")
    merged = pd.merge_asof(
        key[[on, "_order"] + ([by] if by else [])], r, on=on, by=by, tolerance=tolerance, direction=direction
    )
    merged = merged.set_index("_order").reindex(lft["_order"])
    out = left.copy()
    for c in values:
        out[c + suffix] = merged[c + suffix].to_numpy()
    out["dt"] = merged[f"_{on}_right"].to_numpy() - lft[on].to_numpy()  # NaT where no partner
    return out


def prepare_right(right, on: str = "time"):
    """A right-hand Dask frame indexed by sorted ``on`` with known divisions (sorts if needed)."""
    if right.index.name == on and right.known_divisions:
        return right
    return right.set_index(on, sorted=False, drop=False, shuffle_method="tasks")  # any scheduler


def nearest(
    left,
    right,
    *,
    on: str = "time",
    by: str | None = "station",
    tolerance: Any,
    direction: str = "nearest",
    suffix: str = "",
):
    """Attach the nearest ``right`` sample (same ``by``, within ``tolerance``) to every ``left`` row.

    ``left`` and ``right`` are pandas or Dask DataFrames.  Returns the same kind as ``left``:
    the left rows in their original order plus the right's value columns (with ``suffix``)
    and ``dt`` = right time − left time (NaT when no partner).
    """
    tolerance = pd.Timedelta(tolerance)
    if direction not in ("nearest", "backward", "forward"):
        raise ValueError(f"direction must be nearest, backward or forward, not {direction!r}")
    import dask.dataframe as dd

    if not isinstance(left, dd.DataFrame):
        if isinstance(right, dd.DataFrame):
            right = right.compute()
        return _nearest_pandas(left, right, on, by, tolerance, direction, suffix)

    import dask

    if (
        left.index.name == on
        and left.known_divisions
        and isinstance(right, dd.DataFrame)
        and right.index.name == on
        and right.known_divisions
    ):
        return _nearest_indexed(left, right, on, by, tolerance, direction, suffix)
    right = prepare_right(right if isinstance(right, dd.DataFrame) else dd.from_pandas(right, npartitions=1), on)
    bounds = dask.compute(*[dask.delayed(lambda d: (d[on].min(), d[on].max()))(p) for p in left.to_delayed()])
    meta = _nearest_pandas(left._meta, right._meta.reset_index(drop=True), on, by, tolerance, direction, suffix)
    parts = []
    for part, (lo, hi) in zip(left.to_delayed(), bounds):
        if pd.isna(lo):
            window = right._meta.reset_index(drop=True)
        else:
            window = dask.delayed(lambda d: d.reset_index(drop=True))(
                dask.delayed(pd.concat)(right.loc[lo - tolerance : hi + tolerance].to_delayed())
            )
        parts.append(dask.delayed(_nearest_pandas)(part, window, on, by, tolerance, direction, suffix))
    return dd.from_delayed(parts, meta=meta, divisions=left.divisions if left.known_divisions else None)


def _nearest_indexed(left, right, on, by, tolerance, direction, suffix):
    """Both sides indexed by sorted ``on`` with known divisions: ``dask.dataframe.merge_asof``.

    Dask's merge_asof borrows rows across partition borders for the ``nearest`` direction;
    the left rows keep their (time) order.
    """
    import dask.dataframe as dd

    values = [c for c in right.columns if c not in (on, by)]
    r = right[([by] if by else []) + values].rename(columns={c: c + suffix for c in values})
    r = r.assign(_right_time=r.index)
    lft = left.drop(columns=[on]) if on in left.columns else left
    out = dd.merge_asof(lft, r, left_index=True, right_index=True, by=by, tolerance=tolerance, direction=direction)
    columns = list(left.columns) + [c + suffix for c in values] + ["dt"]
    # One opaque step: it also stops dask's optimiser from pushing a later column selection
    # through merge_asof, which drops the ``by`` column there (dask 2026.8).
    return out.map_partitions(_finish_indexed, on, columns, meta=_finish_indexed(out._meta, on, columns))


def _finish_indexed(frame: pd.DataFrame, on: str, columns: list[str]) -> pd.DataFrame:
    frame = frame.assign(dt=frame["_right_time"] - frame.index.to_series(), **{on: frame.index.to_series()})
    return frame[columns]
