"""Keograms from the season's stores: the north–south line through zenith of every frame, stacked in time.

A season writes ``keogram_ns(time, ns)`` and ``keogram_ew(time, ew)`` for every kept frame
(:func:`aurora_batch.partition.sky.keogram_lines`), so a keogram of any station-night is a slice of
a store, not a second pass over the images.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.core.stations import get_station
from aurora_batch.products.figures import save_png
from aurora_batch.products.results import open_station


def night_window(night: str | dt.date, longitude: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) in UTC of the night that begins on the evening of ``night``: local mean solar noon
    to noon, at ``longitude`` (degrees east)."""
    noon = pd.Timestamp(night).normalize() + pd.Timedelta(hours=12) - pd.Timedelta(hours=longitude / 15.0)
    return noon, noon + pd.Timedelta(days=1)


def night_of(times: pd.DatetimeIndex | pd.Series, longitude: float | np.ndarray | pd.Series):
    """The night (the date of its evening, :func:`night_window`) of UTC ``times`` at ``longitude`` (degrees east)."""
    evening = times + pd.to_timedelta(np.asarray(longitude) / 15.0 - 12.0, unit="h")  # local time - 12 h
    return evening.dt.floor("D") if isinstance(evening, pd.Series) else evening.floor("D")


def open_night(
    output: str,
    station: str,
    night: str | dt.date,
    *,
    wavelength: int | None = None,
    version: str | None = None,
    as_of=None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """The frames of one station-night (:func:`night_window`) from the month stores, across a month border too
    (``version``, ``as_of``: as in :func:`aurora_batch.products.results.open_station`)."""
    start, end = night_window(night, get_station(station).longitude)
    return open_station(
        output,
        station,
        start,
        end,
        wavelength=wavelength,
        version=version,
        as_of=as_of,
        storage_options=storage_options,
    )


def _regular(ds: xr.Dataset, var: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The keogram on a regular time grid at the median cadence; gaps (no frame within a step) are NaN."""
    times = pd.DatetimeIndex(ds["time"].to_numpy()).as_unit("ns")  # asi8 below: ns whatever the stored unit
    step = pd.Timedelta(int(np.median(np.diff(times.asi8))), unit="ns") if len(times) > 1 else pd.Timedelta("1min")
    grid = pd.date_range(times[0], times[-1], freq=step).as_unit("ns")
    idx = np.clip(np.searchsorted(times.asi8, grid.asi8), 0, len(times) - 1)
    prev = np.clip(idx - 1, 0, len(times) - 1)
    nearest = np.where(np.abs(times.asi8[prev] - grid.asi8) < np.abs(times.asi8[idx] - grid.asi8), prev, idx)
    far = np.abs(times.asi8[nearest] - grid.asi8) > step.value / 2
    lines = ds[var].to_numpy()[nearest].astype(np.float32)
    lines[far] = np.nan
    labels = None
    if "label" in ds:
        labels = ds["label"].to_numpy()[nearest].astype(object)
        labels[far] = None
    return grid.to_numpy(), lines, labels


def plot_keogram(ds: xr.Dataset, path: str | Path, title: str = "", var: str = "keogram_ns") -> Path:
    """A PNG: the keogram (time on x; image row 0, north for north-up imagers, at the top) over a class timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from aurora_batch.model.heads import CLASS_COLOURS, CLASSES6

    if var not in ds or not ds.sizes.get("time"):
        raise ValueError(f"no {var} to draw{': ' + title if title else ''} (a store written before keograms?)")
    grid, lines, labels = _regular(ds, var)
    lo, hi = np.nanpercentile(lines, [1, 99.5]) if np.isfinite(lines).any() else (0, 1)
    rows = 2 if labels is not None else 1
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(11, 4.2 if rows == 2 else 3.6),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [6, 1][:rows]},
    )
    t0, t1 = mdates.date2num(grid[0]), mdates.date2num(grid[-1])
    if t1 <= t0:  # one frame: a minute wide, not a singular axis
        t0, t1 = t0 - 0.5 / 1440, t0 + 0.5 / 1440
    ax = axes[0, 0]
    ax.imshow(
        lines.T,
        aspect="auto",
        origin="upper",
        cmap="gray",
        vmin=lo,
        vmax=hi,
        extent=(t0, t1, 1, 0),
        interpolation="nearest",
    )
    ax.set_ylabel("N–S line\n(0 = image top)")
    ax.set_title(title or "keogram")
    if labels is not None:
        codes = np.array([CLASSES6.index(x) if x in CLASSES6 else -1 for x in labels], float)
        codes[codes < 0] = np.nan
        colours = list(CLASS_COLOURS.values())
        axes[1, 0].imshow(
            codes[None, :],
            aspect="auto",
            cmap=ListedColormap(colours),
            vmin=-0.5,
            vmax=5.5,
            extent=(t0, t1, 0, 1),
            interpolation="nearest",
        )
        axes[1, 0].set_yticks([])
        axes[1, 0].set_ylabel("class", rotation=0, ha="right", va="center")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
        fig.legend(handles, CLASSES6, ncol=6, loc="lower center", frameon=False)
    axes[-1, 0].xaxis_date()
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    axes[-1, 0].set_xlabel(f"UTC from {pd.Timestamp(grid[0]):%Y-%m-%d %H:%M}")
    # Fixed margins (inches: the figure size is fixed too): tight_layout cost a third of the drawing.
    fig.subplots_adjust(
        left=0.9 / 11,
        right=1 - 0.2 / 11,
        top=1 - 0.35 / fig.get_figheight(),
        bottom=(0.95 if labels is not None else 0.6) / fig.get_figheight(),
        hspace=0.08,
    )
    return save_png(fig, path, dpi=110, tight=False)
