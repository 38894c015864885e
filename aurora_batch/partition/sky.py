"""What a partition measures on each decoded frame besides its features: keogram lines through the zenith and
the checks that tell a sky from a calibration or test frame (aspect, saturation, range).
"""

from __future__ import annotations

import numpy as np

from aurora_batch.model.recipes import Recipe, full_scale

KEOGRAM_PIXELS = 256  #: samples of each keogram line through zenith (north–south and east–west)
KEOGRAM_CONVENTION = (
    "image column (keogram_ns) and row (keogram_ew) through the zenith pixel, in native counts "
    "(colour frames: mean of the channels), from the first image row (column) to the last, "
    "resampled linearly to a fixed length; geographic north and east follow the instrument's image "
    "orientation as decoded"
)


def keogram_lines(img: np.ndarray, zenith: tuple[float, float] | None = None, n: int = KEOGRAM_PIXELS) -> np.ndarray:
    """``(2, n)`` float32: the column (north–south) and the row (east–west) of ``img`` through zenith.

    ``zenith`` is the (row, column) pixel, default the image centre ``(H // 2, W // 2)``.  Each
    line runs from the first row (column) to the last, linearly resampled to ``n`` samples (a
    frame ``n`` pixels high gives its column exactly).  Colour frames are averaged over channels.
    """
    h, w = img.shape[:2]
    row, col = zenith if zenith is not None else (h // 2, w // 2)
    row, col = int(np.clip(round(row), 0, h - 1)), int(np.clip(round(col), 0, w - 1))
    ns, ew = img[:, col], img[row, :]
    if img.ndim == 3:  # average the channels of the two lines only, not of the whole frame
        ns, ew = ns.mean(axis=-1), ew.mean(axis=-1)
    return np.stack([_resample(ns, n), _resample(ew, n)])


def _resample(line: np.ndarray, n: int) -> np.ndarray:
    line = np.asarray(line, dtype=np.float32)
    if len(line) == n:
        return line
    return np.interp(np.linspace(0, len(line) - 1, n), np.arange(len(line)), line).astype(np.float32)


MAX_ASPECT = 4.0  #: frames with a longer side more than this many times the shorter are not_sky


def sky_problem(img: np.ndarray, recipe: Recipe) -> str | None:
    """Why ``img`` is no sky image ``recipe`` can use, or None: odd shape, too small, non-finite, constant."""
    h, w = img.shape[:2]
    if min(h, w) < recipe.smallest:
        return f"{w}×{h} pixels is smaller than the {recipe.smallest} px the {recipe.name!r} recipe needs"
    if max(h, w) > MAX_ASPECT * min(h, w):
        return f"{w}×{h} pixels is not an all-sky frame (aspect ratio above {MAX_ASPECT:g})"
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        return f"{int((~np.isfinite(img)).sum())} non-finite pixel(s)"
    lo, hi = img.min(), img.max()
    if lo == hi:
        return f"constant frame (every pixel {lo})"
    return None


def saturated_fraction(img: np.ndarray) -> float:
    """Fraction of pixel values at the integer container's maximum (255, 65535); NaN for float images."""
    if img.dtype.kind not in "ui":
        return float("nan")
    return float(np.count_nonzero(img == np.iinfo(img.dtype).max) / img.size)


def range_fraction(img: np.ndarray) -> float:
    """The share of its container's range (:func:`full_scale`) that ``img`` spans, 0–1 (1st to 99th percentile,
    so a few hot or saturated pixels do not count)."""
    lo, hi = np.percentile(img, [1.0, 99.0])
    return float((hi - lo) / full_scale(img))
