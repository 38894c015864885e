"""Maps of the feature space: a 2-D t-SNE of a bounded subsample, coloured by class, with example frames.

TAME inspects its feature spaces this way.  A season holds hundreds of thousands of frames,
so a map is drawn from at most :data:`MAX_POINTS` of them (a seeded random subsample), and
its cost does not grow with the season: about 5 s for 1,000 points on 2 cores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from aurora_batch.model.heads import CLASS_COLOURS
from aurora_batch.products.figures import save_png

MAX_POINTS = 1000  #: points per map


def subsample(n: int, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` rows, drawn at random with ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(n, 2)`` t-SNE coordinates of ``(n, d)`` features, after PCA to at most 50 dimensions.

    Fewer than 5 rows get their first two principal components instead (t-SNE needs a few
    neighbours); a single row sits at the origin.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float64)
    n = len(x)
    if n < 2:
        return np.zeros((n, 2))
    pcs = PCA(n_components=min(50, n - 1, x.shape[1]), random_state=seed).fit_transform(x)
    if n < 5:
        return np.pad(pcs[:, :2], ((0, 0), (0, max(0, 2 - pcs.shape[1]))))
    return TSNE(
        n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(pcs)


def exemplars(xy: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
    """``{class: row}``: per class present, the row nearest the median position of its class."""
    names = np.asarray(labels, dtype=object)
    out = {}
    for c in dict.fromkeys(names):
        rows = np.flatnonzero(names == c)
        centre = np.median(xy[rows], axis=0)
        out[str(c)] = int(rows[np.argmin(((xy[rows] - centre) ** 2).sum(1))])
    return out


def plot_embedding(
    xy: np.ndarray,
    labels: Sequence[str] | None,
    path: str | Path,
    title: str = "",
    thumbnails: Mapping[int, np.ndarray] | None = None,
) -> Path:
    """A PNG of the map: one dot per frame coloured by class, ``thumbnails`` ({row: 2-D image in
    [0, 1]}) drawn beside their dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    names = None if labels is None else np.asarray(labels, dtype=object)
    fig, ax = plt.subplots(figsize=(7, 6))
    if names is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color="#555555", alpha=0.7)
    else:
        for c, colour in CLASS_COLOURS.items():
            rows = names == c
            if rows.any():
                ax.scatter(
                    xy[rows, 0],
                    xy[rows, 1],
                    s=8,
                    color=colour,
                    label=f"{c} ({rows.sum()})",
                    alpha=0.8,
                    edgecolors="none",
                )
        other = ~np.isin(names, list(CLASS_COLOURS))  # months classified without a head
        if other.any():
            ax.scatter(xy[other, 0], xy[other, 1], s=6, color="#bbbbbb", label=f"no class ({other.sum()})")
        ax.legend(fontsize=8, loc="best", markerscale=2)
    span = np.ptp(xy, axis=0) if len(xy) else np.ones(2)
    for k, (row, img) in enumerate((thumbnails or {}).items()):
        offset = 0.12 * span * np.array([np.cos(k * 1.1), np.sin(k * 1.1)])
        edge = CLASS_COLOURS.get(str(names[row]), "0.4") if names is not None else "0.4"
        box = AnnotationBbox(
            OffsetImage(img, zoom=0.6, cmap="gray", norm=Normalize(0, 1)),
            xy[row],
            xybox=xy[row] + offset,
            xycoords="data",
            boxcoords="data",
            arrowprops={"arrowstyle": "-", "color": "0.4"},
            pad=0.15,
            bboxprops={"edgecolor": edge},
        )
        ax.add_artist(box)
    ax.margins(0.15)  # room for the thumbnails at the edges
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "feature embedding (t-SNE)")
    return save_png(fig, path)
