"""Decoding all-sky images and turning them into network input (preprocessing recipes).

Decoders return the image in its native units: ``(H, W)`` for grey, ``(H, W, 3)`` for
colour, any integer bit depth, as float32.  A recipe maps such an array to a
``(3, S, S)`` float32 tensor for the backbone.  All functions are pure numpy.
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import numpy as np
from PIL import Image

__all__ = ["ImageError", "decode", "Recipe", "RECIPES", "get_recipe", "to_grey", "circle_mask", "resize"]


class ImageError(ValueError):
    """An image that cannot be decoded (empty, truncated, not an image)."""


def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode PNG/JPEG/PGM bytes (8 or 16 bit, grey or RGB) to float32 in native units."""
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "L", "F"):
                arr = np.asarray(im)
            elif im.mode in ("RGB",):
                arr = np.asarray(im)
            else:  # palette, alpha, CMYK...: flatten to RGB
                arr = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{name}: cannot decode image ({err})") from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageError(f"{name}: unexpected image shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def to_grey(img: np.ndarray) -> np.ndarray:
    """Mean over colour channels; grey images pass through."""
    return img.mean(axis=2) if img.ndim == 3 else img


def circle_mask(shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the circle inscribed in an image of ``shape`` (the all-sky field of view)."""
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    cy, cx, r = (h - 1) / 2, (w - 1) / 2, min(h, w) / 2
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float image to ``size``×``size`` (box filter when shrinking, bilinear else)."""
    if img.shape == (size, size):
        return img
    method = Image.Resampling.BOX if min(img.shape) >= size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((size, size), method))


def _robust_unit(grey: np.ndarray, mask: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    inside = grey[mask]
    lo, hi = np.percentile(inside, [lo_pct, hi_pct]) if inside.size else (0.0, 1.0)
    scaled = np.clip((grey - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(grey)
    return np.where(mask, scaled, 0).astype(np.float32)


def lite128(img: np.ndarray) -> np.ndarray:
    """Default recipe: grey; zero outside the field of view; 1–99.5 % stretch; 128 px; [-1, 1].

    The ``x*2-1`` scaling matches EfficientNet-Lite's training input.
    """
    grey = to_grey(img)
    unit = _robust_unit(grey, circle_mask(grey.shape), 1.0, 99.5)
    x = resize(unit, 128) * 2.0 - 1.0
    return np.repeat(x[None], 3, axis=0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    size: int
    description: str

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self.fn(img)


RECIPES: dict[str, Recipe] = {
    "lite128": Recipe("lite128", lite128, 128, lite128.__doc__.splitlines()[0]),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}") from None
