"""TAME's science figures from the joined stores, as PNGs and one self-contained HTML page.

1. Daily cloud coverage: per night, the fraction of images classified cloudy against the
   ceilometer's cloudy fraction (a base below ``join.cloud_max_cbh``).
2. ROC of the cloud prediction (``proba`` of class cloudy) against the ceilometer.
3. Ridge regression from image features to the magnetic perturbation |ΔH|, where
   H = √(X² + Y²) and the quiet-night median is removed; R² on held-out nights.
4. Class occurrence by local solar hour (UTC + longitude/15), per station.

A night is labelled by the date of its evening: time − 12 h, in local solar time.
"""
from __future__ import annotations

import base64
import dataclasses
import html
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .month import month_stores
from .config import JobConfig
from .stations import get_station
from .fs import filesystem, join_url
from .store import list_groups, zarr_store

__all__ = ["load_joined", "make_report", "ReportResult"]

FIGURES = ("cloud_coverage", "cloud_roc", "magnetometer_ridge", "class_by_hour")


@dataclasses.dataclass
class ReportResult:
    html: Path
    figures: dict[str, Path]
    numbers: dict[str, float]
    notes: list[str]


def load_joined(job: JobConfig) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Per-image table of all stations (no features) and the feature matrix in the same row order."""
    frames, feats = [], []
    classes: list[str] = []
    for _, url in month_stores(job):
        store = zarr_store(url, job.output_storage_options)
        for gpath in list_groups(store):
            with xr.open_zarr(store, group=gpath, consolidated=False) as ds:
                cols = {k: ds[k].to_numpy() for k in ds.data_vars if ds[k].dims == ("time",)}
                if "proba" in ds:
                    classes = [str(c) for c in ds["class"].to_numpy()]
                    for i, c in enumerate(classes):
                        cols[f"proba_{c}"] = ds["proba"].to_numpy()[:, i]
                frame = pd.DataFrame(cols, index=pd.DatetimeIndex(ds["time"].to_numpy(), name="time")).reset_index()
                frame["station"] = gpath.split("/")[0]
                frames.append(frame)
                feats.append(ds["features"].to_numpy())
    if not frames:
        raise FileNotFoundError(f"no month stores under {job.output} for {job.start:%Y-%m-%d}..{job.end:%Y-%m-%d}")
    table = pd.concat(frames, ignore_index=True)
    lon = table["station"].map(lambda s: get_station(s).longitude)
    local = table["time"] + pd.to_timedelta(lon / 15.0, unit="h")
    table["local_hour"] = local.dt.hour
    table["night"] = (local - pd.Timedelta(hours=12)).dt.floor("D")
    return table, np.concatenate(feats), classes


def _png(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def make_report(job: JobConfig, out_dir: str | Path) -> ReportResult:
    """Write the four figures and ``report.html`` under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, feats, classes = load_joined(job)
    notes: list[str] = []
    numbers: dict[str, float] = {"images": float(len(table))}
    figs: dict[str, Path] = {}
    has_cloud = "ceilometer_cloudy" in table and table["ceilometer_cloudy"].notna().any()
    has_class = "proba_cloudy" in table

    fig, ax = plt.subplots(figsize=(8, 4))
    if has_cloud and has_class:
        for station, g in table.groupby("station"):
            nightly = g.groupby("night").agg(predicted=("label", lambda s: (s == "cloudy").mean()),
                                             ceilometer=("ceilometer_cloudy", "mean"))
            ax.plot(nightly.index, nightly["predicted"], "o-", label=f"{station} images classified cloudy")
            ax.plot(nightly.index, nightly["ceilometer"], "s--", label=f"{station} ceilometer cloudy")
        ax.set_ylabel("fraction of images")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    else:
        notes.append("cloud coverage needs a head (classify.head) and a joined ceilometer")
    ax.set_title("Daily cloud coverage")
    figs["cloud_coverage"] = _png(fig, out / "cloud_coverage.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    known = table[table["ceilometer_cloudy"].notna()] if has_cloud else table.iloc[:0]
    if has_class and len(known) and known["ceilometer_cloudy"].nunique() == 2:
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(known["ceilometer_cloudy"], known["proba_cloudy"])
        auc = roc_auc_score(known["ceilometer_cloudy"], known["proba_cloudy"])
        numbers["cloud_roc_auc"] = float(auc)
        ax.plot(fpr, tpr, label=f"AUC {auc:.3f} (n={len(known)})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.legend()
    else:
        notes.append("cloud ROC needs a head and ceilometer readings with both cloudy and clear skies")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"Cloud prediction vs ceilometer (base < {job.join.cloud_max_cbh:.0f} m)")
    figs["cloud_roc"] = _png(fig, out / "cloud_roc.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    if {"mag_x", "mag_y"} <= set(table.columns):
        dh, ok = _delta_h(table)
        nights = table.loc[ok, "night"].to_numpy()
        if len(np.unique(nights)) >= 2:
            from sklearn.linear_model import Ridge
            from sklearn.model_selection import GroupKFold
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            x, y = feats[ok], dh[ok]
            pred = np.empty_like(y)
            scores = []
            for train, test in GroupKFold(n_splits=min(5, len(np.unique(nights)))).split(x, y, nights):
                model = make_pipeline(StandardScaler(), Ridge(alpha=100.0)).fit(x[train], y[train])
                pred[test] = model.predict(x[test])
                scores.append(model.score(x[test], y[test]))
            numbers["magnetometer_ridge_r2_mean"] = float(np.mean(scores))
            ax.scatter(y, pred, s=6, alpha=0.5)
            lim = [0, max(float(y.max()), float(pred.max()), 1.0)]
            ax.plot(lim, lim, ":", color="grey")
            ax.set_title(f"|ΔH| from image features\nR² {np.mean(scores):.2f} on held-out nights")
        else:
            notes.append("the magnetometer ridge needs images from at least two nights")
    else:
        notes.append("the magnetometer ridge needs a joined magnetometer with X and Y")
    ax.set_xlabel("observed |ΔH| (nT)")
    ax.set_ylabel("predicted |ΔH| (nT)")
    figs["magnetometer_ridge"] = _png(fig, out / "magnetometer_ridge.png")

    stations = sorted(table["station"].unique())
    fig, axes = plt.subplots(1, len(stations), figsize=(5 * len(stations), 4), squeeze=False)
    for ax, station in zip(axes[0], stations):
        g = table[table["station"] == station]
        if "label" in g:
            counts = g.groupby(["local_hour", "label"]).size().unstack(fill_value=0).reindex(range(24), fill_value=0)
            counts[[c for c in classes if c in counts]].plot.bar(stacked=True, ax=ax, width=0.9, legend=False)
        ax.set_title(f"{station}: classes by local solar hour")
        ax.set_xlabel("local solar hour")
        ax.set_ylabel("images")
    if "label" in table:
        axes[0][-1].legend(*axes[0][0].get_legend_handles_labels(), title="class", fontsize=8,
                           bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        notes.append("class occurrence needs a head (classify.head)")
    figs["class_by_hour"] = _png(fig, out / "class_by_hour.png")

    page = out / "report.html"
    page.write_text(_html(job, figs, numbers, notes, _synthetic(job)))
    return ReportResult(page, figs, numbers, notes)


def _delta_h(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """|H − H_quiet| per image, H_quiet the median H of the station's quietest night (nT)."""
    h = np.hypot(table["mag_x"].to_numpy(float), table["mag_y"].to_numpy(float))
    dh = np.full(len(h), np.nan)
    for idx in table.groupby("station").groups.values():
        sub = pd.Series(h[idx], index=idx)
        by_night = sub.groupby(table.loc[idx, "night"])
        spread = by_night.std().dropna()
        if spread.empty:
            continue
        quiet = by_night.median()[spread.idxmin()]
        dh[idx] = np.abs(sub.to_numpy() - quiet)
    return dh, np.isfinite(dh)


def _synthetic(job: JobConfig) -> bool:
    """True when the archive says it is SYNTHETIC (``aurora-batch synth`` writes README.txt)."""
    fs, path = filesystem(join_url(job.input, "README.txt"), job.storage_options)
    try:
        return b"SYNTHETIC" in fs.cat_file(path)
    except (FileNotFoundError, OSError):
        return False


def _html(job: JobConfig, figs: dict[str, Path], numbers: dict[str, float], notes: list[str],
          synthetic: bool) -> str:
    titles = {"cloud_coverage": "Daily cloud coverage", "cloud_roc": "Cloud prediction vs ceilometer (ROC)",
              "magnetometer_ridge": "Magnetic perturbation from image features (ridge)",
              "class_by_hour": "Class occurrence by local solar hour"}
    parts = [f"<h2>{titles[k]}</h2><img alt='{k}' src='data:image/png;base64,"
             f"{base64.b64encode(p.read_bytes()).decode()}'>" for k, p in figs.items()]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in numbers.items())
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    banner = "<p class='warn'>Built from SYNTHETIC demo data.</p>" if synthetic else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>aurora-batch report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}
.warn{{background:#fee;padding:6px}}td{{padding:2px 12px}}</style></head><body>
<h1>aurora-batch report</h1>{banner}
<p>Stations {", ".join(job.stations)}; {job.start:%Y-%m-%d} to {job.end:%Y-%m-%d}; output {html.escape(job.output)}.</p>
<table>{rows}</table>{"<ul>" + note + "</ul>" if note else ""}
{"".join(parts)}
</body></html>
"""
