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
7. The 10-minute label table as a band of classes per station, and per class its most confident frame beside
   its nearest neighbours (:mod:`aurora_batch.products.similar`).

A night is labelled by the date of its evening: time − 12 h, in local solar time.  Figures 1–5
are embedded in ``report.html``; the keograms, one per station-night and so as many as a
season has nights, are PNG files in ``keograms/`` beside it, loaded as the page scrolls.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.config import JobConfig
from aurora_batch.core.fs import join_url, read_bytes
from aurora_batch.formats.files import read_file
from aurora_batch.model.heads import CLASS_COLOURS
from aurora_batch.model.recipes import thumbnail
from aurora_batch.products.embedding import MAX_POINTS, embed, exemplars, plot_embedding, subsample
from aurora_batch.products.figures import save_png
from aurora_batch.products.keogram import night_of, night_window, open_night, plot_keogram
from aurora_batch.products.results import open_months, season_names
from aurora_batch.products.ridge import RidgeStats
from aurora_batch.products.season_stats import Group, SeasonStats, group_rows, groups_of, h_field, night_folds
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


def _png(fig, path: Path) -> Path:
    return save_png(fig, path)


def make_report(
    job: JobConfig,
    out_dir: str | Path,
    *,
    max_points: int = MAX_POINTS,
    progress: bool = False,
    version: str | None = None,
    as_of=None,
    workers: int | None = None,
) -> ReportResult:
    """Write the figures, the embedding maps (``max_points`` frames each), the keograms and
    ``report.html`` under ``out_dir``; ``progress`` shows a bar over the keograms.  ``version`` or
    ``as_of``: the versioned months as they were (:func:`~aurora_batch.products.results.open_station`).

    Every statistic is gathered one station-month at a time (:mod:`aurora_batch.products.season_stats`): memory
    follows the largest station-month, not the season.  Keograms are drawn by ``workers`` processes (default:
    the cores), and only for nights whose months changed since the report was last written in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    months = open_months(job.output, job.start, job.end, job.output_storage_options, version, as_of)
    groups = groups_of(months, list_groups)
    if not groups:
        raise FileNotFoundError(f"no month stores under {job.output} for {job.start:%Y-%m-%d}..{job.end:%Y-%m-%d}")
    stats = SeasonStats()
    for g in groups:
        with xr.open_zarr(g.store, group=g.path, consolidated=False) as ds:
            stats.add(group_rows(g, ds), [str(c) for c in ds["class"].to_numpy()] if "class" in ds else ())
    notes: list[str] = []
    numbers: dict[str, float] = {"images": float(stats.images)}
    figs = {
        "cloud_coverage": _cloud_coverage(stats, notes, out / "cloud_coverage.png"),
        "cloud_roc": _cloud_roc(stats, job, numbers, notes, out / "cloud_roc.png"),
    }
    ridge = _ridge_targets(stats, groups, notes)
    maps, fits, sample = _feature_pass(job, groups, ridge, out / "embedding", max_points, notes)
    scored = ridge.scored if ridge is not None else 0
    figs["magnetometer_ridge"] = _ridge_figure(fits, sample, scored, numbers, out / "magnetometer_ridge.png")
    figs["class_by_hour"] = _class_by_hour(stats, notes, out / "class_by_hour.png")
    if stats.classes and version is None and as_of is None:  # the label table and indexes are of the newest months
        figs["label_timeline"] = _label_timeline(job, stats.classes, out / "label_timeline.png")
        figs["find_similar"] = _similar_by_class(job, stats.classes, notes, out / "find_similar.png")
    keograms = _keograms(job, months, groups, out / "keograms", progress, notes, version, as_of, workers)
    page = out / "report.html"
    page.write_text(_html(job, figs, numbers, notes, _synthetic(job), maps, keograms, out))
    return ReportResult(page, figs, numbers, notes, maps, keograms)


def _cloud_coverage(stats: SeasonStats, notes: list[str], path: Path) -> Path:
    """Nightly fraction of images classified cloudy beside the ceilometer's, per station."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    if stats.has_ceilometer and stats.classes:
        for station, nightly in stats.coverage().groupby(level=0):
            nights = nightly.index.get_level_values(1)
            ax.plot(nights, nightly["predicted"], "o-", label=f"{station} images classified cloudy")
            ax.plot(nights, nightly["ceilometer"], "s--", label=f"{station} ceilometer cloudy")
        ax.set_ylabel("fraction of images")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    else:
        notes.append("cloud coverage needs a head (classify.head) and a joined ceilometer")
    ax.set_title("Daily cloud coverage")
    return _png(fig, path)


def _cloud_roc(stats: SeasonStats, job: JobConfig, numbers: dict[str, float], notes: list[str], path: Path) -> Path:
    """ROC of the cloudy probability against the ceilometer, on the images it saw (binned by log-odds)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    curve = stats.roc_curve() if "cloudy" in stats.classes else None
    if curve is not None:
        fpr, tpr, auc, n = curve
        numbers["cloud_roc_auc"] = auc
        ax.plot(fpr, tpr, label=f"AUC {auc:.3f} (n={n})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.legend()
    else:
        notes.append("cloud ROC needs a head and ceilometer readings with both cloudy and clear skies")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"Cloud prediction vs ceilometer (base < {job.join.cloud_max_cbh:.0f} m)")
    return _png(fig, path)


@dataclasses.dataclass
class _Ridge:
    """What the ridge needs per row, found from the season's sums: each station's quiet H and each night's fold."""

    quiet: dict[str, float]  #: station -> median H of its quietest night (nT)
    fold: dict[pd.Timestamp, int]  #: night -> cross-validation fold
    scored: int  #: images with a target and a fold

    def targets(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """|H − H_quiet| (nT) and fold per row (-1: no magnetometer partner or no quiet night)."""
        dh = np.abs(h_field(rows) - rows["station"].map(self.quiet).to_numpy(float))
        fold = rows["night"].map(self.fold).fillna(-1).to_numpy(int)
        return dh, np.where(np.isfinite(dh), fold, -1)


def _ridge_targets(stats: SeasonStats, groups: list[Group], notes: list[str]) -> _Ridge | None:
    """The quiet H of each station (one more read of its quietest night) and the folds; None (and a note)
    where the ridge cannot run."""
    if not stats.has_magnetometer:
        notes.append("the magnetometer ridge needs a joined magnetometer with X and Y")
        return None
    quiet_nights = stats.quiet_nights()
    images = stats.night_images(quiet_nights)
    if len(images) < 2:
        notes.append("the magnetometer ridge needs images from at least two nights")
        return None
    quiet = {}
    for station, night in quiet_nights.items():
        h = []
        for g in groups:
            start, end = night_window(night, g.longitude)
            if g.station == station and g.month in {f"{start:%Y-%m}", f"{end:%Y-%m}"}:
                with xr.open_zarr(g.store, group=g.path, consolidated=False) as ds:
                    rows = group_rows(g, ds)
                h.append(h_field(rows)[(rows["night"] == night).to_numpy()])
        quiet[station] = float(np.nanmedian(np.concatenate(h)))
    return _Ridge(quiet, night_folds(images), int(images.sum()))


def _ridge_figure(
    fits, sample: list[tuple[np.ndarray, float, int]], scored: int, numbers: dict[str, float], path: Path
) -> Path:
    """|ΔH| (nT) predicted from image features against observed, on held-out nights."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if fits:
        scores = [r2 for _, _, r2 in fits]
        numbers["magnetometer_ridge_r2_mean"] = float(np.mean(scores))
        y = np.array([target for _, target, _ in sample])
        pred = np.array([fits[k][0] + x @ fits[k][1] for x, _, k in sample])
        ax.scatter(y, pred, s=6, alpha=0.5)
        lim = [0, max(float(y.max()), float(pred.max()), 1.0)]
        ax.plot(lim, lim, ":", color="grey")
        ax.set_title(
            f"|ΔH| from image features\nR² {np.mean(scores):.2f} on held-out nights "
            f"({scored:,} images, {len(y):,} drawn)",
            fontsize=10,
        )
    ax.set_xlabel("observed |ΔH| (nT)")
    ax.set_ylabel("predicted |ΔH| (nT)")
    return _png(fig, path)


def _class_by_hour(stats: SeasonStats, notes: list[str], path: Path) -> Path:
    """Images of each class by local solar hour, one panel per station."""
    import matplotlib.pyplot as plt

    counts = stats.by_hour() if stats.classes else None
    stations = sorted(counts.index.get_level_values(0).unique()) if counts is not None else ["?"]
    fig, axes = plt.subplots(1, len(stations), figsize=(5 * len(stations), 4), squeeze=False)
    for ax, station in zip(axes[0], stations):
        if counts is not None:
            table = counts.loc[station, "images"].unstack(fill_value=0).reindex(range(24), fill_value=0)
            shown = [c for c in stats.classes if c in table]
            colours = [CLASS_COLOURS.get(c, "#bbbbbb") for c in shown]
            table[shown].plot.bar(stacked=True, ax=ax, width=0.9, legend=False, color=colours)
        ax.set_title(f"{station}: classes by local solar hour")
        ax.set_xlabel("local solar hour")
        ax.set_ylabel("images")
    if counts is not None:
        handles = axes[0][0].get_legend_handles_labels()
        axes[0][-1].legend(*handles, title="class", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        notes.append("class occurrence needs a head (classify.head)")
    return _png(fig, path)


def _label_timeline(job: JobConfig, classes: list[str], path: Path) -> Path:
    """The 10-minute label table (majority class per bin) as one colour band per station: a raster of stations
    × 10-minute bins (blank where a station has no frame), whose cost follows the window, not a shape per bin."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from aurora_batch.month.labels import BIN
    from aurora_batch.products.query import query

    bins = query(
        job.output,
        None,
        job.stations,
        job.start,
        job.end,
        job.output_storage_options,
        table="labels_10min",
        columns=["label"],
    )
    stations = sorted(bins["station"].unique())
    known = list(dict.fromkeys([*classes, *sorted(set(bins["label"].dropna()) - set(classes))]))
    t = bins["time"].dt.tz_localize(None)
    start, end = (t.min(), t.max() + pd.Timedelta(BIN)) if len(t) else (pd.Timestamp(job.start), pd.Timestamp(job.end))
    raster = np.full((max(len(stations), 1), max(1, int((end - start) / pd.Timedelta(BIN)))), np.nan)
    rows = bins["station"].map({s: i for i, s in enumerate(stations)}).to_numpy(int)
    cols = ((t - start) / pd.Timedelta(BIN)).to_numpy().astype(int)
    raster[rows, cols] = bins["label"].map({c: i for i, c in enumerate(known)}).to_numpy(float)
    colours = [CLASS_COLOURS.get(c, "#bbbbbb") for c in known]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(stations) + 1.5))
    cmap = ListedColormap(colours or ["#bbbbbb"]).with_extremes(bad="white")
    ax.imshow(
        np.ma.masked_invalid(raster),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(colours) - 0.5,
        aspect="auto",
        interpolation="nearest",
        extent=(mdates.date2num(start), mdates.date2num(end), len(stations) - 0.5, -0.5),
    )
    ax.xaxis_date()
    ax.set_yticks(range(len(stations)), stations)
    ax.set_xlabel("time (UTC)")
    ax.legend(
        handles=[Patch(color=CLASS_COLOURS.get(c, "#bbbbbb"), label=c) for c in classes],
        fontsize=8,
        bbox_to_anchor=(1.01, 1),
        loc="upper left",
    )
    return _png(fig, path)


def _similar_by_class(job: JobConfig, classes: list[str], notes: list[str], path: Path, k: int = 5) -> Path:
    """Per class, its most confident frame of the season and the ``k`` frames nearest it, as one sheet."""
    from aurora_batch.products.query import query
    from aurora_batch.products.similar import contact_sheet, similar

    rows = []
    for c in classes:
        found = query(
            job.output,
            f"label = '{c}'",
            job.stations,
            job.start,
            job.end,
            job.output_storage_options,
            columns=["confidence"],
            order_by="confidence DESC, station, time",
            limit=k + 1,  # the best, and enough frames of the class to show k neighbours
        )
        if len(found) <= k:
            continue
        best = found.iloc[0]
        hits = similar(
            job.output,
            (best["station"], best["time"].tz_localize(None)),
            k + 1,
            job.stations,
            job.start,
            job.end,
            storage_options=job.output_storage_options,
        )
        rows.append(hits.head(k + 1).assign(label=[c] + [""] * k))
    if not rows:
        notes.append("find similar needs a head and more frames of a class than neighbours shown")
        return contact_sheet(pd.DataFrame(columns=["station", "time", "url", "frame", "similarity"]), path)
    return contact_sheet(pd.concat(rows, ignore_index=True), path, job.storage_options, columns=k + 1)


def _feature_pass(job: JobConfig, groups: list[Group], ridge: _Ridge | None, out: Path, max_points: int, notes):
    """One pass over the stored features, :data:`FEATURE_CHUNK` rows at a time: the ridge's per-fold sums
    (:class:`~aurora_batch.products.ridge.RidgeStats`), the rows drawn for its scatter plot, and one t-SNE map per
    store group and month (drawn as soon as its rows are read).

    Returns ``(maps, fits, sample)``: ``fits[k] = (intercept, coef, held-out R²)`` per fold (empty without a
    ridge) and ``sample``, (features, |ΔH|, fold) of at most :data:`SCATTER_POINTS` images.
    """
    out.mkdir(parents=True, exist_ok=True)
    drawn = subsample(ridge.scored, SCATTER_POINTS) if ridge is not None else np.empty(0, int)
    stats: RidgeStats | None = None
    maps: dict[str, Path] = {}
    failed: list[str] = []
    sample: list[tuple[np.ndarray, float, int]] = []
    seen = 0  #: scored images before this group, in the season's order
    for g in groups:
        with xr.open_zarr(g.store, group=g.path, consolidated=False) as ds:
            rows = group_rows(g, ds)
            dh, fold = ridge.targets(rows) if ridge is not None else (None, None)
            pick = subsample(len(rows), max_points)
            picked = []
            for lo in range(0, len(rows), FEATURE_CHUNK):
                x = ds["features"][lo : lo + FEATURE_CHUNK].to_numpy()
                if ridge is not None and dh is not None and fold is not None:
                    y, folds = dh[lo : lo + len(x)], fold[lo : lo + len(x)]
                    stats = stats or RidgeStats(max(ridge.fold.values()) + 1, x.shape[1])
                    stats.add(x, y, folds)
                    scored = np.flatnonzero(folds >= 0)
                    chosen = np.isin(seen + np.arange(len(scored)), drawn)
                    sample += [(x[i], float(y[i]), int(folds[i])) for i in scored[chosen]]
                    seen += len(scored)
                picked.append(x[pick[(pick >= lo) & (pick < lo + len(x))] - lo])
        maps[f"{g.path} {g.month}"] = _embedding_map(
            job,
            rows.iloc[pick].reset_index(drop=True),
            np.concatenate(picked),
            out / f"{g.path.replace('/', '-')}_{g.month}.png",
            f"{g.path} {g.month}: t-SNE of {len(pick):,} of {len(rows):,} frames",
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


def _embedding_map(job: JobConfig, rows: pd.DataFrame, feats: np.ndarray, path: Path, title: str, failed) -> Path:
    """The t-SNE map of ``rows`` (with features ``feats``), with the typical frame of each class beside its dots."""
    xy = embed(feats)
    thumbs = {}
    labels = rows["label"].to_numpy(object) if "label" in rows else None
    if labels is not None:
        known = np.flatnonzero(pd.notna(labels))
        for i in exemplars(xy[known], labels[known]).values():
            row = rows.iloc[known[i]]
            try:
                thumbs[int(known[i])] = _thumbnail(row["url"], int(row["frame"]), job.storage_options)
            except (OSError, ValueError, IndexError) as exc:
                failed.append(f"{row['url']}: {exc}")
    return plot_embedding(xy, labels, path, title, thumbs)


def _thumbnail(url: str, frame: int, storage_options) -> np.ndarray:
    """A small preview of frame ``frame`` of the file at ``url``."""
    return thumbnail(read_file(read_bytes(url, storage_options), url, min_side=96).images[frame])


def _keograms(
    job: JobConfig,
    months: dict,
    groups: list[Group],
    out: Path,
    progress: bool,
    notes: list[str],
    version,
    as_of,
    workers: int | None,
) -> dict[str, Path]:
    """One keogram PNG per store group and night, each night's lines the only ones read, drawn by a pool of
    processes; a night whose months are as they were when ``out`` last got its keogram is not drawn again
    (``_drawn.json`` records each PNG's month versions)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "_drawn.json"
    drawn = json.loads(record_path.read_text()) if record_path.exists() else {}
    versions = {m: _month_version(store) for m, (_, store) in months.items()}
    paths, todo, bare = {}, [], set()
    lo, hi = pd.Timestamp(job.start), pd.Timestamp(job.end)
    names = season_names(months)  # GILL/0 in every month where GILL has another wavelength in some month
    for g in groups:  # one station-month's times at a time: never a station's season
        name = names[(g.month, g.path)]
        with xr.open_zarr(g.store, group=g.path, consolidated=False, chunks=None) as ds:
            if "keogram_ns" not in ds:
                bare.add(name)
                continue
            times = pd.DatetimeIndex(ds["time"].to_numpy())
        for night in night_of(times[(times >= lo) & (times < hi)], g.longitude).unique():
            key, path = f"{name} {night:%Y-%m-%d}", out / f"{name.replace('/', '-')}_{night:%Y-%m-%d}.png"
            if key in paths:  # a night across two months
                continue
            start, end = night_window(night, g.longitude)
            made_of = "|".join(versions.get(m, "") for m in sorted({f"{start:%Y-%m}", f"{end:%Y-%m}"}))
            paths[key] = path
            if drawn.get(path.name) != made_of or not path.exists():
                todo.append((name, night, path, made_of))
    notes += [f"{p}: no keograms in its stores (written before aurora-batch stored them)" for p in sorted(bare)]
    processes = workers or os.cpu_count() or 1
    args = (job.output, version, as_of, job.output_storage_options)
    with (
        ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("forkserver")) as pool,
        tqdm(total=len(todo), desc="keograms", unit="night", disable=not progress) as bar,
    ):  # a task is a name: each process reads its night's lines itself, and the driver holds none
        running = {
            pool.submit(_draw_night, group, night, path, *args): (path, made_of) for group, night, path, made_of in todo
        }
        for done in as_completed(running):
            path, made_of = running[done]
            done.result()  # a drawing that failed raises here
            drawn[path.name] = made_of
            bar.update(1)
    record_path.write_text(json.dumps({p.name: drawn[p.name] for p in paths.values() if p.name in drawn}, indent=1))
    return paths


def _draw_night(group: str, night: pd.Timestamp, path: Path, output: str, version, as_of, options) -> Path:
    """Read one station-night's keogram lines and classes from the month stores and draw them (in a worker)."""
    station, _, wavelength = group.partition("/")
    ds = open_night(
        output,
        station,
        night,
        wavelength=int(wavelength) if wavelength else None,
        version=version,
        as_of=as_of,
        storage_options=options,
    )
    lines = ds[[v for v in ("keogram_ns", "label") if v in ds]].load()
    return plot_keogram(lines, path, title=f"{group}, night of {night:%Y-%m-%d}")


def _month_version(store) -> str:
    """What a month store was built from (its parts and layout), as a short digest: a keogram of its nights is
    drawn again only when it changes."""
    import zarr

    attrs = dict(zarr.open_group(store=store, mode="r").attrs)
    record = json.dumps([attrs.get("parts"), attrs.get("layout"), attrs.get("parts_digest")], sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()[:16]


def _keogram_pages(keograms: dict[str, Path], out: Path) -> dict[str, tuple[Path, int]]:
    """One page per store group of its keograms, loaded lazily: a season's thousands of nights never load at
    once.  Returns group -> (page, nights)."""
    pages = {}
    for group in dict.fromkeys(k.split(" ")[0] for k in keograms):
        images = [
            f"<img class='keogram' loading='lazy' alt='keogram {html.escape(k)}' "
            f"src='{html.escape(p.relative_to(out).as_posix())}'>"
            for k, p in keograms.items()
            if k.split(" ")[0] == group
        ]
        page = out / f"keograms_{group.replace('/', '-')}.html"
        page.write_text(
            f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(group)} keograms</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(group)}: keograms, per night</h1><p><a href='report.html'>back to the report</a>. Time on x; the
north–south line through zenith on y (image top at the top); classes beneath.</p>{"".join(images)}</body></html>
"""
        )
        pages[group] = (page, len(images))
    return pages


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
        "label_timeline": "Labels per station: the majority class of every 10 minutes",
        "find_similar": "Find similar: each class's most confident frame (left) and its nearest neighbours",
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
    pages = _keogram_pages(keograms, out)
    links = "".join(
        f"<li><a href='{html.escape(page.name)}'>{html.escape(group)}</a>: {n} night(s)</li>"
        for group, (page, n) in pages.items()
    )
    parts.append(
        "<h2 id='keograms'>Keograms, per station-night</h2>"
        f"<p>One page per station (its nights load as the page scrolls):</p><ul>{links}</ul>"
    )
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
