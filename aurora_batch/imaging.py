"""Decoding all-sky images and turning them into network input (preprocessing recipes).

Decoders return the image in its native units: ``(H, W)`` for grey, ``(H, W, 3)`` for
colour, any integer bit depth, as float32.  A recipe maps such an array to a
``(3, S, S)`` float32 tensor for the backbone.  All functions are pure numpy.
"""
from __future__ import annotations

import bz2
import dataclasses
import datetime as dt
import gzip
import io
import re
from collections.abc import Callable

import numpy as np
from PIL import Image

__all__ = ["ImageError", "decode", "read_frames", "read_pgm_frames", "write_pgm_frames", "Recipe", "RECIPES",
           "get_recipe", "to_grey", "circle_mask", "resize"]


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


_PGM_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?)")


def _decompress(data: bytes, name: str) -> bytes:
    try:
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if name.endswith(".bz2"):
            return bz2.decompress(data)
    except (OSError, EOFError, ValueError) as err:
        raise ImageError(f"{name}: cannot decompress ({err})") from None
    return data


def read_pgm_frames(data: bytes, name: str = "<bytes>") -> list[tuple[dt.datetime | None, np.ndarray]]:
    """All frames of a multi-frame binary PGM (THEMIS stream0), with their time stamps.

    Each frame is a ``P5`` header (width, height, maxval; ``#`` comment lines anywhere in
    it) followed by big-endian samples (2 bytes when maxval > 255).  The frame's UTC time is
    read from the comment that contains ``Image request start`` (else the first comment
    holding an ISO date-time); ``None`` when there is none.
    """
    data = _decompress(data, name)
    if not data:
        raise ImageError(f"{name}: empty file")
    frames, pos, n = [], 0, len(data)
    while pos < n:
        while pos < n and data[pos:pos + 1].isspace():
            pos += 1
        if pos >= n:
            break
        if data[pos:pos + 2] != b"P5":
            raise ImageError(f"{name}: frame {len(frames)} does not start with the PGM magic 'P5' (byte {pos})")
        pos += 2
        tokens, comments = [], []
        while len(tokens) < 3:
            while pos < n and data[pos:pos + 1].isspace():
                pos += 1
            if pos >= n:
                raise ImageError(f"{name}: frame {len(frames)} header is truncated")
            if data[pos:pos + 1] == b"#":
                end = data.find(b"\n", pos)
                end = n if end < 0 else end
                comments.append(data[pos + 1:end].decode("latin-1").strip())
                pos = end + 1
                continue
            start = pos
            while pos < n and not data[pos:pos + 1].isspace():
                pos += 1
            tokens.append(data[start:pos])
        try:
            width, height, maxval = (int(t) for t in tokens)
        except ValueError:
            raise ImageError(f"{name}: frame {len(frames)} has a bad header {tokens}") from None
        pos += 1  # the single whitespace byte after maxval
        size = width * height * (2 if maxval > 255 else 1)
        if pos + size > n:
            raise ImageError(f"{name}: frame {len(frames)} is truncated ({n - pos} of {size} bytes)")
        dtype = ">u2" if maxval > 255 else "u1"
        img = np.frombuffer(data, dtype=dtype, count=width * height, offset=pos).reshape(height, width)
        pos += size
        frames.append((_frame_time(comments), img.astype(np.float32)))
    if not frames:
        raise ImageError(f"{name}: no PGM frames")
    return frames


def _frame_time(comments: list[str]) -> dt.datetime | None:
    ordered = sorted(comments, key=lambda c: "image request start" not in c.lower())
    for c in ordered:
        m = _PGM_TIME.search(c)
        if m:
            return dt.datetime.fromisoformat(m.group(1).replace(" ", "T"))
    return None


def write_pgm_frames(frames: list[tuple[dt.datetime, np.ndarray]], site: str = "", compress: str = "") -> bytes:
    """Encode frames as a multi-frame 16-bit PGM stream (the THEMIS stream0 layout)."""
    out = bytearray()
    for t, img in frames:
        h, w = img.shape
        out += (f"P5\n# site {site}\n# Image request start: {t:%Y-%m-%d %H:%M:%S.%f} UTC\n"
                f"{w} {h}\n65535\n").encode()
        out += np.asarray(img, dtype=">u2").tobytes()
    if compress == "gz":
        return gzip.compress(bytes(out))
    if compress == "bz2":
        return bz2.compress(bytes(out))
    return bytes(out)


def read_frames(data: bytes, name: str) -> list[tuple[dt.datetime | None, np.ndarray]]:
    """The frames of one file: many for a THEMIS PGM stream, one (time ``None``) otherwise."""
    base = name.lower()
    if base.endswith((".pgm", ".pgm.gz", ".pgm.bz2")):
        return read_pgm_frames(data, name)
    return [(None, decode(data, name))]


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


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _unit_range(img: np.ndarray) -> np.ndarray:
    """Scale by the container's full range: 255 for 8-bit data, 65535 above."""
    return img / (255.0 if img.max(initial=0) <= 255 else 65535.0)


def oath(img: np.ndarray) -> np.ndarray:
    """OATH: the 256×256 crops as they are (grey or RGB), full-range scaled to [-1, 1]."""
    x = _unit_range(img.astype(np.float32))
    x = np.repeat(x[None], 3, axis=0) if x.ndim == 2 else np.moveaxis(x[..., :3], 2, 0)
    return (x * 2.0 - 1.0).astype(np.float32)


def tame_steps(img: np.ndarray, size: int = 224) -> np.ndarray:
    """TAME before normalisation: grey, zero outside the circle, 0.5–99.5 % clip, min–max, green only."""
    grey = to_grey(img).astype(np.float32)
    mask = circle_mask(grey.shape)
    lo, hi = np.percentile(grey[mask], [0.5, 99.5])
    clipped = np.clip(grey, lo, hi)
    inside = clipped[mask]
    span = inside.max() - inside.min()
    unit = (clipped - inside.min()) / span if span > 0 else np.zeros_like(clipped)
    unit = np.where(mask, unit, 0.0).astype(np.float32)
    rgb = np.zeros((3, size, size), np.float32)
    rgb[1] = resize(unit, size)
    return rgb


def tame(img: np.ndarray) -> np.ndarray:
    """TAME (Sado et al. 2022): :func:`tame_steps` at 224 px, then ImageNet mean/std."""
    return ((tame_steps(img, 224) - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


def kvammen_steps(img: np.ndarray, crop: int = 128) -> np.ndarray:
    """Kvammen et al. 2020: rotate 90° clockwise, flip east–west, 3×3 median, 2×2 mean bin, central crop."""
    from scipy.ndimage import median_filter

    x = np.rot90(to_grey(img).astype(np.float32), k=-1)
    x = np.fliplr(x)
    x = median_filter(x, size=3, mode="nearest")
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    if min(x.shape) < crop:
        raise ImageError(f"image of {img.shape} is too small for a {crop}×{crop} crop after 2×2 binning")
    top, left = (x.shape[0] - crop) // 2, (x.shape[1] - crop) // 2
    return np.ascontiguousarray(x[top:top + crop, left:left + crop])


def kvammen(img: np.ndarray) -> np.ndarray:
    """Kvammen: :func:`kvammen_steps`, full-range scaled to [-1, 1], three equal channels."""
    x = kvammen_steps(img) / (255.0 if img.max(initial=0) <= 255 else 65535.0)
    return np.repeat((x * 2.0 - 1.0)[None], 3, axis=0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    size: int
    description: str

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self.fn(img)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("lite128", lite128, 128, lite128.__doc__.splitlines()[0]),
    Recipe("oath", oath, 256, oath.__doc__.splitlines()[0]),
    Recipe("tame", tame, 224, tame.__doc__.splitlines()[0]),
    Recipe("kvammen", kvammen, 128, kvammen.__doc__.splitlines()[0]),
)}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}") from None
