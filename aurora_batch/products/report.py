"""TAME's science figures from the joined stores, keograms and feature maps, as one HTML page.

1. Daily cloud coverage: per night, the fraction of images classified cloudy against the
   ceilometer's cloudy fraction (a base below ``join.cloud_max_cbh``).
2. ROC of the cloud prediction (``proba`` of class cloudy) against the ceilometer.
3. Ridge regression from image features to the magnetic perturbation |ΔH|, where
   H = √(X² + Y²) and the quiet-night median is removed; R² on held-out nights.
4. Class occurrence by local solar hour (UTC + longitude/15), per station.
5. Feature embedding per station and month: t-SNE of at most ``max_points`` frames, coloured
   by class, with an example frame of each class re-read from its source URL.
6. One keogram per station-night (:mod:`aurora_batch.products.keogram`) over its class timeline.

A night is labelled by the date of its evening: time − 12 h, in local solar time.  Figures 1–5
are embedded in ``report.html``; the keograms, one per station-night and so as many as a
season has nights, are PNG files in ``keograms/`` beside it, loaded as the page scrolls.
"""

from __future__ import annotations

import base64
import dataclasses
import html
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.config import JobConfig
from aurora_batch.core.fs import join_url, read_bytes
from aurora_batch.core.stations import get_station
from aurora_batch.formats.files import read_file
from aurora_batch.model.heads import CLASS_COLOURS
from aurora_batch.model.recipes import thumbnail
from aurora_batch.products.embedding import MAX_POINTS, embed, exemplars, plot_embedding, subsample
from aurora_batch.products.keogram import night_of, night_window, plot_keogram
from aurora_batch.products.results import open_months, open_season
from aurora_batch.products.ridge import RidgeStats
from aurora_batch.store.zarrs import list_groups

RIDGE_ALPHA = 100.0  #: ridge penalty on standardised features (TAME's |ΔH| model)
SCATTER_POINTS = 2000  #: images drawn in the ridge's scatter plot (every image enters R²)
FEATURE_CHUNK = 4096  #: feature rows read at a time

FIGURES = ("cloud_coverage", "cloud_roc", "magnetometer_ridge", "class_by_hour")


@dataclasses.dataclass
class ReportResult:
    html: Path
    figures: dict[str, Path]
    numbers: dict[str, float]
    notes: list[str]
    embeddings: dict[str, Path]  #: "NYA 2010-12" -> PNG
    keograms: dict[str, Path]  #: "NYA 2010-12-01" (the night's evening) -> PNG


def load_joined(job: JobConfig, months: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per-image table of all stations, without features, and the class names.

    ``months``: :func:`~aurora_batch.products.results.open_months` (default: the newest version of the job's
    months).  ``store`` (of ``month``) and ``group`` say where each row's features are (``NYA``, or
    ``NYA/6300`` for a station with several wavelengths); a (store, group)'s rows are in the store's order.
    """
    frames = []
    classes: list[str] = []
    months = months if months is not None else open_months(job.output, job.start, job.end, job.output_storage_options)
    for month, (url, store) in months.items():
        for gpath in list_groups(store):
            with xr.open_zarr(store, group=gpath, consolidated=False) as ds:
                cols = {k: ds[k].to_numpy() for k in ds.data_vars if ds[k].dims == ("time",)}
                if "proba" in ds:
                    classes = [str(c) for c in ds["class"].to_numpy()]
                    for i, c in enumerate(classes):
                        cols[f"proba_{c}"] = ds["proba"].to_numpy()[:, i]
                frame = pd.DataFrame(cols, index=pd.DatetimeIndex(ds["time"].to_numpy(), name="time")).reset_index()
                frame["store"] = url
                frame["month"] = month
                frame["group"] = gpath
                frame["station"] = gpath.split("/")[0]
                frames.append(frame)
    if not frames:
        raise FileNotFoundError(f"no month stores under {job.output} for {job.start:%Y-%m-%d}..{job.end:%Y-%m-%d}")
    table = pd.concat(frames, ignore_index=True)
    lon = table["station"].map(lambda s: get_station(s).longitude)
    table["local_hour"] = (table["time"] + pd.to_timedelta(lon / 15.0, unit="h")).dt.hour
    table["night"] = night_of(table["time"], lon)
    return table, classes


def _png(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def make_report(
    job: JobConfig,
    out_dir: str | Path,
    *,
    max_points: int = MAX_POINTS,
    progress: bool = False,
    version: str | None = None,
    as_of=None,
) -> ReportResult:
    """Write the figures, the embedding maps (``max_points`` frames each), the keograms and
    ``report.html`` under ``out_dir``; ``progress`` shows a bar over the keograms.  ``version`` or
    ``as_of``: the versioned months as they were (:func:`~aurora_batch.products.results.open_station`)."""
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    months = open_months(job.output, job.start, job.end, job.output_storage_options, version, as_of)
    table, classes = load_joined(job, months)
    notes: list[str] = []
    numbers: dict[str, float] = {"images": float(len(table))}
    figs: dict[str, Path] = {}
    has_cloud = "ceilometer_cloudy" in table and table["ceilometer_cloudy"].notna().any()
    has_class = "proba_cloudy" in table
    figs["cloud_coverage"] = _cloud_coverage(table, has_cloud and has_class, notes, out / "cloud_coverage.png")
    known = table[table["ceilometer_cloudy"].notna()] if has_cloud else table.iloc[:0]
    figs["cloud_roc"] = _cloud_roc(known if has_class else known.iloc[:0], job, numbers, notes, out / "cloud_roc.png")
    ridge = _ridge_folds(table, notes)
    maps, fits, sample = _feature_pass(job, months, table, ridge, out / "embedding", max_points, notes)
    figs["magnetometer_ridge"] = _ridge_figure(ridge, fits, sample, numbers, out / "magnetometer_ridge.png")
    figs["class_by_hour"] = _class_by_hour(table, classes, notes, out / "class_by_hour.png")
    keograms = _keograms(job, out / "keograms", progress, notes, version, as_of)
    page = out / "report.html"
    page.write_text(_html(job, figs, numbers, notes, _synthetic(job), maps, keograms, out))
    return ReportResult(page, figs, numbers, notes, maps, keograms)


def _cloud_coverage(table: pd.DataFrame, joined: bool, notes: list[str], path: Path) -> Path:
    """Nightly fraction of images classified cloudy beside the ceilometer's, per station."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    if joined:
        for station, g in table.groupby("station"):
            nightly = g.groupby("night").agg(
                predicted=("label", lambda s: (s == "cloudy").mean()), ceilometer=("ceilometer_cloudy", "mean")
            )
            ax.plot(nightly.index, nightly["predicted"], "o-", label=f"{station} images classified cloudy")
            ax.plot(nightly.index, nightly["ceilometer"], "s--", label=f"{station} ceilometer cloudy")
        ax.set_ylabel("fraction of images")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    else:
        notes.append("cloud coverage needs a head (classify.head) and a joined ceilometer")
    ax.set_title("Daily cloud coverage")
    return _png(fig, path)


def _cloud_roc(known: pd.DataFrame, job: JobConfig, numbers: dict[str, float], notes: list[str], path: Path) -> Path:
    """ROC of the cloudy probability against the ceilometer, on the images it saw (``known``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if len(known) and known["ceilometer_cloudy"].nunique() == 2:
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
    return _png(fig, path)


def _ridge_figure(ridge, fits, sample: dict, numbers: dict[str, float], path: Path) -> Path:
    """|ΔH| (nT) predicted from image features against observed, on held-out nights."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if fits:
        assert ridge is not None  # the fits are the ridge's, one per fold
        dh, fold = ridge
        scores = [r2 for _, _, r2 in fits]
        numbers["magnetometer_ridge_r2_mean"] = float(np.mean(scores))
        rows = np.array(sorted(sample), dtype=int)
        y = dh[rows]
        pred = np.array([fits[fold[r]][0] + sample[r] @ fits[fold[r]][1] for r in rows])
        ax.scatter(y, pred, s=6, alpha=0.5)
        lim = [0, max(float(y.max()), float(pred.max()), 1.0)]
        ax.plot(lim, lim, ":", color="grey")
        ax.set_title(
            f"|ΔH| from image features\nR² {np.mean(scores):.2f} on held-out nights "
            f"({(fold >= 0).sum():,} images, {len(rows):,} drawn)",
            fontsize=10,
        )
    ax.set_xlabel("observed |ΔH| (nT)")
    ax.set_ylabel("predicted |ΔH| (nT)")
    return _png(fig, path)


def _class_by_hour(table: pd.DataFrame, classes, notes: list[str], path: Path) -> Path:
    """Images of each class by local solar hour, one panel per station."""
    import matplotlib.pyplot as plt

    stations = sorted(table["station"].unique())
    fig, axes = plt.subplots(1, len(stations), figsize=(5 * len(stations), 4), squeeze=False)
    for ax, station in zip(axes[0], stations):
        g = table[table["station"] == station]
        if "label" in g:
            counts = g.groupby(["local_hour", "label"]).size().unstack(fill_value=0).reindex(range(24), fill_value=0)
            shown = [c for c in classes if c in counts]
            counts[shown].plot.bar(
                stacked=True, ax=ax, width=0.9, legend=False, color=[CLASS_COLOURS.get(c, "#bbbbbb") for c in shown]
            )
        ax.set_title(f"{station}: classes by local solar hour")
        ax.set_xlabel("local solar hour")
        ax.set_ylabel("images")
    if "label" in table:
        axes[0][-1].legend(
            *axes[0][0].get_legend_handles_labels(),
            title="class",
            fontsize=8,
            bbox_to_anchor=(1.01, 1),
            loc="upper left",
        )
    else:
        notes.append("class occurrence needs a head (classify.head)")
    return _png(fig, path)


def _ridge_folds(table: pd.DataFrame, notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """|ΔH| per row and its cross-validation fold (-1: no magnetometer partner), each night in one fold;
    None (and a note) where the ridge cannot run."""
    from sklearn.model_selection import GroupKFold

    if not {"mag_x", "mag_y"} <= set(table.columns):
        notes.append("the magnetometer ridge needs a joined magnetometer with X and Y")
        return None
    dh, ok = _delta_h(table)
    rows = np.flatnonzero(ok)
    nights = table["night"].to_numpy()[rows]
    if len(np.unique(nights)) < 2:
        notes.append("the magnetometer ridge needs images from at least two nights")
        return None
    fold = np.full(len(table), -1)
    splits = GroupKFold(n_splits=min(5, len(np.unique(nights)))).split(np.zeros((len(rows), 1)), groups=nights)
    for k, (_, test) in enumerate(splits):
        fold[rows[test]] = k
    return dh, fold


def _feature_pass(
    job: JobConfig, months: dict, table: pd.DataFrame, ridge, out: Path, max_points: int, notes: list[str]
):
    """One pass over the stored features, :data:`FEATURE_CHUNK` rows at a time, so memory does not grow
    with the season: the ridge's per-fold sums (:class:`~aurora_batch.products.ridge.RidgeStats`), the rows drawn
    for its scatter plot, and one t-SNE map per store group and month (drawn as soon as its rows are read).

    Returns ``(maps, fits, sample)``: ``fits[k] = (intercept, coef, held-out R²)`` per fold (empty
    without a ridge) and ``sample`` ``{row: features}`` of at most :data:`SCATTER_POINTS` rows.
    """
    labels = table["label"].to_numpy(object) if "label" in table else None
    drawn = np.zeros(len(table), bool)
    if ridge is not None:
        scored = np.flatnonzero(ridge[1] >= 0)
        drawn[scored[subsample(len(scored), SCATTER_POINTS)]] = True
    stats, maps = None, {}
    sample: dict[int, np.ndarray] = {}
    failed: list[str] = []
    for (_url, month, group), rows in table.groupby(["store", "month", "group"], sort=False).indices.items():
        pick = subsample(len(rows), max_points)  # positions within the group
        picked = []
        with xr.open_zarr(months[month][1], group=group, consolidated=False) as ds:
            for lo in range(0, len(rows), FEATURE_CHUNK):
                x = ds["features"][lo : lo + FEATURE_CHUNK].to_numpy()
                r = rows[lo : lo + len(x)]
                if ridge is not None:
                    if stats is None:
                        stats = RidgeStats(int(ridge[1].max()) + 1, x.shape[1])
                    stats.add(x, ridge[0][r], ridge[1][r])
                    sample.update(zip(r[drawn[r]], x[drawn[r]]))
                picked.append(x[pick[(pick >= lo) & (pick < lo + len(x))] - lo])
        maps[f"{group} {month}"] = _embedding_map(
            job,
            table,
            rows[pick],
            np.concatenate(picked),
            labels,
            out / f"{group.replace('/', '-')}_{month}.png",
            f"{group} {month}: t-SNE of {len(pick):,} of {len(rows):,} frames",
            failed,
        )
    if failed:
        notes.append(f"{len(failed)} example frames could not be re-read for the embedding maps, e.g. {failed[0]}")
    fits = []
    if stats is not None:
        for k in range(len(stats.n)):
            intercept, coef = stats.fit(k, RIDGE_ALPHA)
            fits.append((intercept, coef, stats.r2(k, intercept, coef)))
    return maps, fits, sample


def _embedding_map(
    job: JobConfig,
    table: pd.DataFrame,
    rows: np.ndarray,
    feats: np.ndarray,
    labels,
    path: Path,
    title: str,
    failed: list[str],
) -> Path:
    """The t-SNE map of ``rows``, with the typical frame of each class beside its dots."""
    xy = embed(feats)
    thumbs = {}
    if labels is not None:
        known = np.flatnonzero(pd.notna(labels[rows]))
        for i in exemplars(xy[known], labels[rows][known]).values():
            row = table.iloc[rows[known[i]]]
            try:
                thumbs[int(known[i])] = _thumbnail(row["url"], int(row["frame"]), job.storage_options)
            except (OSError, ValueError, IndexError) as exc:
                failed.append(f"{row['url']}: {exc}")
    return plot_embedding(xy, None if labels is None else labels[rows], path, title, thumbs)


def _thumbnail(url: str, frame: int, storage_options) -> np.ndarray:
    """A small preview of frame ``frame`` of the file at ``url``."""
    return thumbnail(read_file(read_bytes(url, storage_options), url, min_side=96).images[frame])


def _keograms(job: JobConfig, out: Path, progress: bool, notes: list[str], version, as_of) -> dict[str, Path]:
    """One keogram PNG per store group and night; each night's lines are the only ones read."""
    from tqdm.auto import tqdm

    tree = open_season(
        job.output, job.start, job.end, version=version, as_of=as_of, storage_options=job.output_storage_options
    )
    nights = []
    for node in tree.subtree:
        ds = node.to_dataset()
        if "time" not in ds.dims:
            continue
        group = node.path.strip("/")
        if "keogram_ns" not in ds:
            notes.append(f"{group}: no keograms in its stores (written before aurora-batch stored them)")
            continue
        lon = get_station(group.split("/")[0]).longitude
        times = pd.DatetimeIndex(ds["time"].to_numpy())
        for night in night_of(times, lon).unique():
            start, end = night_window(night, lon)
            nights.append((group, night, ds.isel(time=slice(times.searchsorted(start), times.searchsorted(end)))))
    paths = {}
    for group, night, ds in tqdm(nights, desc="keograms", unit="night", disable=not progress):
        sub = ds[[v for v in ("keogram_ns", "label") if v in ds]].load()
        paths[f"{group} {night:%Y-%m-%d}"] = plot_keogram(
            sub, out / f"{group.replace('/', '-')}_{night:%Y-%m-%d}.png", title=f"{group}, night of {night:%Y-%m-%d}"
        )
    return paths


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
    try:
        return b"SYNTHETIC" in read_bytes(join_url(job.input, "README.txt"), job.storage_options)
    except OSError:  # FileNotFoundError included
        return False


def _html(
    job: JobConfig,
    figs: dict[str, Path],
    numbers: dict[str, float],
    notes: list[str],
    synthetic: bool,
    maps: dict[str, Path],
    keograms: dict[str, Path],
    out: Path,
) -> str:
    titles = {
        "cloud_coverage": "Daily cloud coverage",
        "cloud_roc": "Cloud prediction vs ceilometer (ROC)",
        "magnetometer_ridge": "Magnetic perturbation from image features (ridge)",
        "class_by_hour": "Class occurrence by local solar hour",
    }

    def embedded(path: Path, alt: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"

    parts = [f"<h2>{titles[k]}</h2>{embedded(p, k)}" for k, p in figs.items()]
    parts.append(
        "<h2 id='embedding'>Feature embedding (t-SNE), per station and month</h2>"
        "<p>Each dot a frame, coloured by its predicted class; beside the dots, the frame nearest the middle "
        "of each class.</p><div class='maps'>"
        + "".join(embedded(p, f"embedding {k}") for k, p in maps.items())
        + "</div>"
    )
    parts.append(
        "<h2 id='keograms'>Keograms, per station-night</h2>"
        "<p>Time on x; the north–south line through zenith on y (image top at the top); "
        "classes beneath.</p>"
    )
    for group in dict.fromkeys(k.split(" ")[0] for k in keograms):
        parts.append(f"<h3>{html.escape(group)}</h3>")
        parts += [
            f"<img class='keogram' loading='lazy' alt='keogram {html.escape(k)}' "
            f"src='{html.escape(p.relative_to(out).as_posix())}'>"
            for k, p in keograms.items()
            if k.split(" ")[0] == group
        ]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in numbers.items())
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    banner = "<p class='warn'>Built from SYNTHETIC demo data.</p>" if synthetic else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>aurora-batch report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}
.maps img{{max-width:49%}}.warn{{background:#fee;padding:6px}}td{{padding:2px 12px}}</style></head><body>
<h1>aurora-batch report</h1>{banner}
<p>Stations {", ".join(job.stations)}; {job.start:%Y-%m-%d} to {job.end:%Y-%m-%d}; output {html.escape(job.output)}.
{len(keograms)} station-nights.</p>
<table>{rows}</table>{"<ul>" + note + "</ul>" if note else ""}
{"".join(parts)}
</body></html>
"""
