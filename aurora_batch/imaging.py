"""Decoding all-sky images and turning them into network input (preprocessing recipes).

Decoders return the image in its native units: ``(H, W)`` for grey, ``(H, W, 3)`` for
colour, any integer bit depth, as float32.  A recipe maps such an array to a
``(3, S, S)`` float32 tensor for the backbone.  All functions are pure numpy.
"""
from __future__ import annotations

import bz2
import dataclasses
import functools
import datetime as dt
import gzip
import io
import math
import re
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image

__all__ = ["ImageError", "decode", "image_shape", "read_pgm", "read_pgm_frames", "write_pgm_frames", "Recipe",
           "RECIPES", "get_recipe", "to_grey", "circle_mask", "resize", "reduce_to", "sky_problem",
           "saturated_fraction", "range_fraction", "full_scale", "thumbnail"]


class ImageError(ValueError):
    """An image that cannot be decoded (empty, truncated, not an image)."""


def decode(data: bytes, name: str = "<bytes>", min_side: int | None = None) -> np.ndarray:
    """Decode PNG/JPEG/TIFF/PGM bytes (8 or 16 bit, grey or RGB) to an array in the file's own units.

    Returns ``(H, W)`` or ``(H, W, 3)`` in the file's dtype (``uint8``, ``uint16``, ``float32``).
    PNG and TIFF are decoded with imagecodecs, which keeps 16 bits per colour channel (Pillow
    silently reduces 16-bit RGB PNGs to 8 bits); JPEG and the rest with Pillow.  With
    ``min_side`` (pixels), an image whose shorter side is at least twice that is returned
    reduced, its shorter side still ``>= min_side``: JPEGs are decoded at a reduced DCT scale
    (1/2, 1/4 or 1/8: Pillow's ``draft``, 20-50x faster for multi-megapixel frames), other
    images are averaged over whole ``f×f`` blocks (same dtype).
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:4] in (b"II*\x00", b"MM\x00*"):
        arr = _decode_imagecodecs(data, name)
    else:
        arr = _decode_pillow(data, name, min_side)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[2] == 4:  # drop alpha
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageError(f"{name}: unexpected image shape {arr.shape}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return reduce_to(arr, min_side) if min_side else arr


def _decode_imagecodecs(data: bytes, name: str) -> np.ndarray:
    import imagecodecs

    try:
        if data[:4] == b"\x89PNG":
            return np.asarray(imagecodecs.png_decode(data))
        return np.asarray(imagecodecs.tiff_decode(data))
    except Exception as err:  # imagecodecs raises its own *Error classes per codec
        raise ImageError(f"{name}: cannot decode image ({err})") from None


def _decode_pillow(data: bytes, name: str, min_side: int | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
                scale = min_side / min(im.size)
                im.draft(im.mode, (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "L", "F", "RGB"):
                return np.asarray(im)
            return np.asarray(im.convert("RGB"))  # palette, alpha, CMYK...: flatten to RGB
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{name}: cannot decode image ({err})") from None


def image_shape(data: bytes, name: str = "<bytes>") -> tuple[int, int]:
    """``(height, width)`` from the image's header, without decoding its pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own limit
            with Image.open(io.BytesIO(data)) as im:
                return im.size[1], im.size[0]
    except Image.DecompressionBombError as err:  # still only the header: report the size
        raise ImageError(f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: cannot decode image ({err})") from None


def reduce_to(img: np.ndarray, min_side: int) -> np.ndarray:
    """Average whole ``f×f`` blocks, the largest ``f`` that keeps the shorter side ``>= min_side``.

    Returns ``img`` itself when ``f`` would be 1; otherwise the block means in the same dtype
    (rounded for integers, so the container's range and saturation keep their meaning; the
    last ``H mod f`` rows and ``W mod f`` columns are dropped).
    """
    f = min(img.shape[:2]) // min_side
    if f < 2:
        return img
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    blocks = img[:h, :w].reshape(h // f, f, w // f, f, *img.shape[2:])
    mean = blocks.mean(axis=(1, 3), dtype=np.float32)
    return np.rint(mean).astype(img.dtype) if img.dtype.kind in "ui" else mean.astype(img.dtype, copy=False)


_PGM_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?)")
_PGM_KEY = re.compile(r'^"([^"]+)"\s*(.*)$')


COMPRESSIONS = {".gz": gzip.decompress, ".bz2": bz2.decompress}  #: file-name suffix -> decompressor


def decompress(data: bytes, name: str) -> bytes:
    """Gunzip or bunzip2 ``data`` when ``name`` ends in ``.gz`` or ``.bz2``; else return it."""
    try:
        for suffix, unpack in COMPRESSIONS.items():
            if name.lower().endswith(suffix):
                return unpack(data)
    except (OSError, EOFError, ValueError) as err:
        raise ImageError(f"{name}: cannot decompress ({err})") from None
    return data


def read_pgm_frames(data: bytes, name: str = "<bytes>") -> list[tuple[dt.datetime | None, np.ndarray]]:
    """All frames of a (possibly ``.gz``/``.bz2``) multi-frame binary PGM, with their UTC times."""
    return read_pgm(decompress(data, name), name)[0]


def read_pgm(data: bytes, name: str = "<bytes>", max_pixels: int | None = None
             ) -> tuple[list[tuple[dt.datetime | None, np.ndarray]], dict[str, str]]:
    """Frames of an uncompressed multi-frame binary PGM (UCalgary stream0), and the first frame's keys.

    Each frame is a ``P5`` header (width, height, maxval; ``#`` comment lines anywhere in
    it) followed by big-endian samples (2 bytes when maxval > 255).  The frame's UTC time is
    read from the comment that contains ``Image request start`` (else the first comment
    holding an ISO date-time); ``None`` when there is none.  Comments of the form
    ``#"Key" value`` of the first frame are returned as ``{key: value}`` (values stripped).
    A frame of more than ``max_pixels`` is refused from its header.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    frames, keys, pos, n = [], {}, 0, len(data)
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
        if max_pixels and width * height > max_pixels:
            raise ImageError(f"{name}: frame {len(frames)} has {width}×{height} pixels, more than the limit of "
                             f"{max_pixels} (features.max_pixels)")
        pos += 1  # the single whitespace byte after maxval
        size = width * height * (2 if maxval > 255 else 1)
        if pos + size > n:
            raise ImageError(f"{name}: frame {len(frames)} is truncated ({n - pos} of {size} bytes)")
        dtype = ">u2" if maxval > 255 else "u1"
        img = np.frombuffer(data, dtype=dtype, count=width * height, offset=pos).reshape(height, width)
        pos += size
        if not frames:
            keys = {m.group(1): m.group(2).strip() for c in comments if (m := _PGM_KEY.match(c))}
        frames.append((_frame_time(comments), img.astype(np.uint16 if maxval > 255 else np.uint8)))
    if not frames:
        raise ImageError(f"{name}: no PGM frames")
    return frames, keys


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


def to_grey(img: np.ndarray) -> np.ndarray:
    """float32 grey: the mean over colour channels; grey images are only converted.

    Summed channel by channel, ``(r + g) + b`` then ``/ 3``: bit-identical to ``mean(axis=2)`` (numpy adds
    three values in that order) and 7× faster than reducing over a last axis of three.
    """
    if img.ndim != 3:
        return img.astype(np.float32, copy=False)
    if img.shape[2] != 3:
        return img.astype(np.float32).mean(axis=2)
    grey = np.add(img[..., 0], img[..., 1], dtype=np.float32)
    grey += img[..., 2]
    grey /= 3
    return grey


@functools.lru_cache(maxsize=16)
def circle_mask(shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the circle inscribed in an image of ``shape`` (the all-sky field of view); read-only."""
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    cy, cx, r = (h - 1) / 2, (w - 1) / 2, min(h, w) / 2
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    mask.flags.writeable = False
    return mask


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float image to ``size``×``size`` (box filter when shrinking, bilinear else).

    Shrinking by a whole factor is the mean of each block (what Pillow's box filter computes, within float32
    rounding), 3.5× faster than Pillow for a 256² frame."""
    if img.shape == (size, size):
        return img
    h, w = img.shape
    fh, fw = h // size, w // size
    if fh * size == h and fw * size == w and 1 <= fh * fw <= 16:
        img = img.astype(np.float32, copy=False)
        out = np.zeros((size, size), np.float32)
        for i in range(fh):
            for j in range(fw):
                out += img[i::fh, j::fw]
        out *= np.float32(1.0 / (fh * fw))
        return out
    method = Image.Resampling.BOX if min(img.shape) >= size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((size, size), method))


def _robust_unit(grey: np.ndarray, mask: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    """float32 in [0, 1]: ``grey`` stretched between its ``lo_pct`` and ``hi_pct`` percentiles inside ``mask``,
    zero outside (in place on one float32 array: no float64 temporaries)."""
    inside = grey[mask]
    lo, hi = np.percentile(inside, [lo_pct, hi_pct]) if inside.size else (0.0, 1.0)
    if not hi > lo:
        return np.zeros(grey.shape, np.float32)
    out = np.subtract(grey, np.float32(lo), dtype=np.float32)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0, 1, out=out)
    out *= mask
    return out


def thumbnail(img: np.ndarray, size: int = 96) -> np.ndarray:
    """A ``size``² grey preview in [0, 1] (1–99.5 % stretch inside the inscribed circle) for figures."""
    small = resize(to_grey(img), size)
    return _robust_unit(small, circle_mask(small.shape), 1.0, 99.5)


def _field_of_view(shape: tuple[int, int], mask: np.ndarray | None) -> np.ndarray:
    return circle_mask(shape) if mask is None else mask


def lite128(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Default recipe: grey; zero outside the field of view; 1–99.5 % stretch; 128 px; [-1, 1].

    The field of view is ``mask`` (a skymap's elevation mask) or the inscribed circle.  The
    ``x*2-1`` scaling matches EfficientNet-Lite's training input.
    """
    grey = to_grey(img)
    unit = _robust_unit(grey, _field_of_view(grey.shape, mask), 1.0, 99.5)
    x = resize(unit, 128) * 2.0 - 1.0
    return np.repeat(x[None], 3, axis=0).astype(np.float32)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def full_scale(img: np.ndarray) -> float:
    """The container's full range as the paper recipes assume it: 255 for 8-bit data, 65535 above."""
    return 255.0 if img.max(initial=0) <= 255 else 65535.0


def _oath_tensor(x: np.ndarray) -> np.ndarray:
    """Unit-range (H, W) or (H, W, C) -> OATH's 256² input in [-1, 1], three channels."""
    x = x[None] if x.ndim == 2 else np.moveaxis(x[..., :3], 2, 0)
    x = np.stack([resize(c, 256) for c in x])
    x = np.repeat(x, 3, axis=0) if len(x) == 1 else x
    return (x * 2.0 - 1.0).astype(np.float32)


def oath(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """OATH: the 256×256 crops as they are (grey or RGB), full-range scaled to [-1, 1].

    For OATH's own pre-scaled PNG crops.  Other sizes are box-resized to 256×256 first.
    ``mask`` is not used (OATH feeds whole crops).
    """
    return _oath_tensor(img.astype(np.float32) / full_scale(img))


def oath_stretch(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """OATH on raw frames: each channel stretched 1–99.5 % over the field of view, then as :func:`oath`."""
    x = img.astype(np.float32)
    fov = _field_of_view(x.shape[:2], mask)
    x = _robust_unit(x, fov, 1.0, 99.5) if x.ndim == 2 else np.stack(
        [_robust_unit(x[..., c], fov, 1.0, 99.5) for c in range(min(3, x.shape[2]))], axis=2)
    return _oath_tensor(x)


def tame_steps(img: np.ndarray, size: int = 224, mask: np.ndarray | None = None) -> np.ndarray:
    """TAME before normalisation: grey, zero outside the field of view, 0.5–99.5 % clip, min–max, green only."""
    grey = to_grey(img).astype(np.float32)
    mask = _field_of_view(grey.shape, mask)
    lo, hi = np.percentile(grey[mask], [0.5, 99.5]) if mask.any() else (0.0, 0.0)
    clipped = np.clip(grey, lo, hi)
    inside = clipped[mask]
    span = inside.max() - inside.min() if inside.size else 0.0
    unit = (clipped - inside.min()) / span if span > 0 else np.zeros_like(clipped)
    unit = np.where(mask, unit, 0.0).astype(np.float32)
    rgb = np.zeros((3, size, size), np.float32)
    rgb[1] = resize(unit, size)
    return rgb


def tame(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """TAME (Sado et al. 2022): :func:`tame_steps` at 224 px, then ImageNet mean/std."""
    x = tame_steps(img, 224, mask)
    return ((x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


def kvammen_steps(img: np.ndarray, crop: int = 128) -> np.ndarray:
    """Kvammen et al. 2020: rotate 90° clockwise, flip east–west, 3×3 median, 2×2 mean bin, central crop.

    Needs the full resolution by definition (the crop is 256×256 pixels of the original
    frame).  Rotating clockwise and then flipping east–west is a transpose, and only the
    pixels under the crop (plus the median's one-pixel margin) are converted and filtered, so
    a multi-megapixel frame costs little more than its decoding; the result is identical to
    filtering the whole frame (the margin is exact, and at the frame's edges ``nearest``
    padding sees the same pixels).
    """
    from scipy.ndimage import median_filter

    h, w = (img.shape[1] // 2) * 2, (img.shape[0] // 2) * 2  # transposed, trimmed to even for binning
    if min(h, w) // 2 < crop:
        raise ImageError(f"image of {img.shape} is too small for a {crop}×{crop} crop after 2×2 binning")
    top, left = 2 * ((h // 2 - crop) // 2), 2 * ((w // 2 - crop) // 2)
    r0, r1 = max(top - 1, 0), min(top + 2 * crop + 1, img.shape[1])
    c0, c1 = max(left - 1, 0), min(left + 2 * crop + 1, img.shape[0])
    window = to_grey(img[c0:c1, r0:r1]).T  # rows of the transposed frame are columns of the original
    x = median_filter(window, size=3, mode="nearest")[top - r0:top - r0 + 2 * crop, left - c0:left - c0 + 2 * crop]
    return np.ascontiguousarray(x.reshape(crop, 2, crop, 2).mean(axis=(1, 3)))


def _three(x: np.ndarray) -> np.ndarray:
    return np.repeat((x * 2.0 - 1.0)[None], 3, axis=0).astype(np.float32)


def kvammen(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Kvammen: :func:`kvammen_steps`, full-range scaled to [-1, 1], three equal channels."""
    return _three(kvammen_steps(img) / full_scale(img))


def kvammen_stretch(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Kvammen on raw frames: :func:`kvammen_steps`, the crop stretched 1–99.5 %, [-1, 1], three channels."""
    x = kvammen_steps(img)
    return _three(_robust_unit(x, np.ones(x.shape, bool), 1.0, 99.5))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named preprocessing recipe: image in native units (and a field-of-view mask) -> ``(3, size, size)``."""

    name: str
    fn: Callable[..., np.ndarray]
    size: int  #: output side, pixels
    description: str
    #: the shorter image side the recipe needs (pixels): larger frames are decoded reduced to it
    #: (twice ``size``, so percentiles and the final box filter still see >= 4 samples an output
    #: pixel); None: the recipe needs the full resolution
    min_side: int | None = None
    #: the smallest shorter side (pixels) of a frame this recipe can use; smaller ones are not_sky
    smallest: int = 32
    #: for recipes that scale by the container's full range: the variant that stretches each image
    stretch_variant: str | None = None

    def __call__(self, img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self.fn(img, mask)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("lite128", lite128, 128, lite128.__doc__.splitlines()[0], min_side=256),
    Recipe("oath", oath, 256, oath.__doc__.splitlines()[0], min_side=512, stretch_variant="oath_stretch"),
    Recipe("oath_stretch", oath_stretch, 256, oath_stretch.__doc__.splitlines()[0], min_side=512),
    Recipe("tame", tame, 224, tame.__doc__.splitlines()[0], min_side=448),
    Recipe("kvammen", kvammen, 128, kvammen.__doc__.splitlines()[0], smallest=256,
           stretch_variant="kvammen_stretch"),
    Recipe("kvammen_stretch", kvammen_stretch, 128, kvammen_stretch.__doc__.splitlines()[0], smallest=256),
)}

KEOGRAM_PIXELS = 256  #: samples of each keogram line through zenith (north–south and east–west)
KEOGRAM_CONVENTION = ("image column (keogram_ns) and row (keogram_ew) through the zenith pixel, in native counts "
                      "(colour frames: mean of the channels), from the first image row (column) to the last, "
                      "resampled linearly to a fixed length; geographic north and east follow the instrument's image "
                      "orientation as decoded")


def keogram_lines(img: np.ndarray, zenith: tuple[float, float] | None = None,
                  n: int = KEOGRAM_PIXELS) -> np.ndarray:
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


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}") from None
