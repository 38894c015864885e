"""The report's statistics, gathered one store group (a station-month) at a time and combined: memory follows the
largest station-month, never the season.

Per group, from its 1-D variables only (:func:`group_rows`): images classified cloudy and the ceilometer's cloudy
fraction per station-night, a binned ROC of the cloudy probability against the ceilometer (its log-odds in bins
0.01 wide), class counts by local solar hour, and per station-night the sums of
H = √(X² + Y²) (nT) that pick each station's quietest night.  The ridge's targets |H − H_quiet| and folds (each night
in one fold, folds balanced by images) then follow from those sums and one more read of each quiet night.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.core.stations import get_station
from aurora_batch.products.keogram import night_of

ROC_BINS = 8000  #: bins of the cloudy log-odds over ±ROC_LOGIT: 0.01 wide, finest where softmax saturates
ROC_LOGIT = 40.0
ROW_VARIABLES = ("label", "ceilometer_cloudy", "mag_x", "mag_y", "url", "frame")


@dataclasses.dataclass(frozen=True)
class Group:
    """One store group of one month: where its rows are, and its station's longitude (degrees east)."""

    month: str
    store: Any
    path: str  #: NYA, or NYA/6300 for a station with several wavelengths
    station: str
    longitude: float


def groups_of(months: dict[str, tuple[str, Any]], list_groups) -> list[Group]:
    """Every group of ``months`` (:func:`~aurora_batch.products.results.open_months`), by station then month;
    the station table is read once per group, not per row."""
    out = []
    for month, (_, store) in sorted(months.items()):
        for path in list_groups(store):
            station = path.split("/")[0]
            out.append(Group(month, store, path, station, get_station(station).longitude))
    return sorted(out, key=lambda g: (g.path, g.month))


def group_rows(group: Group, ds: xr.Dataset) -> pd.DataFrame:
    """The 1-D variables of a group the report uses, with ``night``, ``local_hour`` and ``proba_cloudy``."""
    time = pd.DatetimeIndex(ds["time"].to_numpy())
    rows = pd.DataFrame({v: ds[v].to_numpy() for v in ROW_VARIABLES if v in ds}, index=range(len(time)))
    rows.insert(0, "time", time)
    if "proba" in ds and "cloudy" in list(ds["class"].to_numpy()):
        rows["proba_cloudy"] = ds["proba"].sel({"class": "cloudy"}).to_numpy()
    rows["night"] = night_of(time, group.longitude)
    rows["local_hour"] = (time + pd.Timedelta(hours=group.longitude / 15.0)).hour
    rows["station"] = group.station
    return rows


def h_field(rows: pd.DataFrame) -> np.ndarray:
    """H = √(X² + Y²) (nT) per row; NaN where the magnetometer had no partner."""
    return np.hypot(rows["mag_x"].to_numpy(float), rows["mag_y"].to_numpy(float))


@dataclasses.dataclass
class SeasonStats:
    """Sums over every group added; :meth:`add` once per group, then read the combined tables."""

    classes: list[str] = dataclasses.field(default_factory=list)
    _coverage: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    _hours: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    _h: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    roc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((2, ROC_BINS), np.int64))  #: clear, cloudy
    images: int = 0
    has_magnetometer: bool = False
    has_ceilometer: bool = False

    def add(self, rows: pd.DataFrame, classes: Iterable[str] = ()) -> None:
        self.images += len(rows)
        self.classes = self.classes or list(classes)
        keys = [rows["station"], rows["night"]]
        if "label" in rows:
            cloudy = (rows["label"] == "cloudy").astype(float)
            ceil = rows["ceilometer_cloudy"] if "ceilometer_cloudy" in rows else pd.Series(np.nan, rows.index)
            part = pd.DataFrame(
                {
                    "images": 1.0,
                    "cloudy": cloudy,
                    "ceilometer": ceil.notna().astype(float),
                    "ceilometer_cloudy": ceil.fillna(0.0),
                }
            )
            self._coverage.append(part.groupby(keys).sum())
            self._hours.append(rows.groupby(["station", "local_hour", "label"]).size().rename("images").to_frame())
        if "ceilometer_cloudy" in rows and rows["ceilometer_cloudy"].notna().any():
            self.has_ceilometer = True
            if "proba_cloudy" in rows:
                known = rows["ceilometer_cloudy"].notna().to_numpy()
                p = rows["proba_cloudy"].to_numpy(np.float64)[known]
                with np.errstate(divide="ignore"):
                    logit = np.clip(np.log(p) - np.log1p(-p), -ROC_LOGIT, ROC_LOGIT)
                bins = np.clip(((logit + ROC_LOGIT) / (2 * ROC_LOGIT) * ROC_BINS).astype(int), 0, ROC_BINS - 1)
                truth = rows["ceilometer_cloudy"].to_numpy()[known].astype(int)
                np.add.at(self.roc, (truth, bins), 1)
        if {"mag_x", "mag_y"} <= set(rows.columns):
            self.has_magnetometer = True
            h = pd.Series(h_field(rows), rows.index)
            ok = np.isfinite(h)
            sums = pd.DataFrame({"n": ok.astype(float), "sum": h.where(ok, 0.0), "sumsq": (h**2).where(ok, 0.0)})
            self._h.append(sums.groupby(keys).sum())

    def coverage(self) -> pd.DataFrame:
        """Per station and night: the fraction of images classified cloudy, and the ceilometer's."""
        total = pd.concat(self._coverage).groupby(level=[0, 1]).sum()
        return pd.DataFrame(
            {
                "predicted": total["cloudy"] / total["images"],
                "ceilometer": total["ceilometer_cloudy"] / total["ceilometer"].where(total["ceilometer"] > 0),
            }
        )

    def by_hour(self) -> pd.DataFrame:
        """Images per station, local solar hour and class."""
        return pd.concat(self._hours).groupby(level=[0, 1, 2])["images"].sum().to_frame()

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray, float, int] | None:
        """(false positive rate, true positive rate, AUC, images) of the binned ROC; None without both skies."""
        clear, cloudy = self.roc
        if not clear.sum() or not cloudy.sum():
            return None
        fpr = np.concatenate([[0.0], np.cumsum(clear[::-1]) / clear.sum()])
        tpr = np.concatenate([[0.0], np.cumsum(cloudy[::-1]) / cloudy.sum()])
        return fpr, tpr, float(np.trapezoid(tpr, fpr)), int(self.roc.sum())

    def quiet_nights(self) -> dict[str, pd.Timestamp]:
        """Per station, the night whose H varied least (sample standard deviation over its images)."""
        if not self._h:
            return {}
        s = pd.concat(self._h).groupby(level=[0, 1]).sum()
        s = s[s["n"] >= 2]
        std = np.sqrt(np.maximum(s["sumsq"] - s["sum"] ** 2 / s["n"], 0.0) / (s["n"] - 1))
        return {station: night for station, night in std.groupby(level=0).idxmin().to_numpy()}

    def night_images(self, stations: Iterable[str]) -> pd.Series:
        """Images with a finite H per night, over ``stations`` (those with a quiet night)."""
        s = pd.concat(self._h).groupby(level=[0, 1])["n"].sum()
        s = s[s.index.get_level_values(0).isin(list(stations))]
        return s.groupby(level=1).sum()


def night_folds(images: pd.Series, folds: int = 5) -> dict[pd.Timestamp, int]:
    """Each night (index) in one of ``min(folds, nights)`` folds, largest nights first into the fold with the fewest
    images so far (as scikit-learn's GroupKFold balances groups)."""
    k = min(folds, len(images))
    totals = np.zeros(k)
    out = {}
    for night, n in sorted(images.items(), key=lambda x: (-x[1], x[0])):
        fold = int(np.argmin(totals))
        out[night] = fold
        totals[fold] += n
    return out
