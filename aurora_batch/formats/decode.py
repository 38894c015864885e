"""Decoding single all-sky images: PNG, JPEG and TIFF (imagecodecs, Pillow), PGM (stream0, many frames), and
their gzip or bzip2 compression.

Decoders return the image in its native units: ``(H, W)`` for grey, ``(H, W, 3)`` for colour, any integer bit
depth, as float32.  All functions are pure numpy.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import math
import re
import warnings

import numpy as np
from PIL import Image


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
            return np.asarray(imagecodecs.png_decode(_png_inflated(data) or data))
        return np.asarray(imagecodecs.tiff_decode(data))
    except Exception as err:  # imagecodecs raises its own *Error classes per codec
        raise ImageError(f"{name}: cannot decode image ({err})") from None


#: PNG colour type -> samples a pixel
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: the most image data (bytes) :func:`_png_inflated` holds in memory, three times over (a 2048² 16-bit RGB frame)
PNG_INFLATE_MAX = 2**25
_STORED_BLOCK = 65535  #: the most bytes a stored deflate block holds


def _png_inflated(data: bytes) -> bytes | None:
    """``data`` with its image data inflated by ISA-L and stored again uncompressed, for libpng to unfilter.

    libpng inflates with zlib, 2-3× slower than ISA-L, and checks CRCs with zlib's, 10× slower: a 256² 16-bit
    PNG decodes in 0.49 ms this way against 0.90, a TREx RGB frame in 2.2 against 3.1.  The pixels are libpng's
    own.  None (decode ``data`` as it is) for interlaced, damaged or large files, so libpng reports what is
    wrong with them, and where ``isal`` is not installed.
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    if len(data) < 45 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour, interlace = data[24], data[25], data[28]
    size = height * (1 + (width * _PNG_SAMPLES.get(colour, 0) * depth + 7) // 8)
    if interlace or colour not in _PNG_SAMPLES or not 0 < size <= PNG_INFLATE_MAX:
        return None
    view, pos, first, last = memoryview(data), 8, 0, 0
    parts: list[memoryview] = []  # the image data chunks' bodies
    while pos + 12 <= len(data):  # chunks: length, type, body, CRC of type and body
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if end > len(data):
            return None
        if kind == b"IDAT":
            crc = int.from_bytes(data[end - 4 : end], "big")
            if (parts and last != pos) or isal_zlib.crc32(view[pos + 4 : end - 4]) != crc:
                return None  # image data interrupted, or damaged: libpng says so
            first, last = first or pos, end
            parts.append(view[pos + 8 : end - 4])
        elif kind == b"IEND":
            break
        pos = end
    try:
        pixels = isal_zlib.decompress(b"".join(parts)) if parts else b""
    except Exception:  # isal_zlib.error (damaged data): libpng says what is wrong
        return None
    if len(pixels) != size:
        return None
    # A zlib stream (header: deflate, 32 KiB window) of stored blocks (each: last-block flag, length and its
    # complement, the bytes), then the Adler-32 of the pixels.
    stored: list[bytes | memoryview] = [b"\x78\x01"]
    for at in range(0, size, _STORED_BLOCK):
        n = min(_STORED_BLOCK, size - at)
        stored += [bytes([at + n == size]) + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little")]
        stored += [memoryview(pixels)[at : at + n]]
    body = b"".join([b"IDAT", *stored, isal_zlib.adler32(pixels).to_bytes(4, "big")])
    chunk = (len(body) - 4).to_bytes(4, "big") + body + isal_zlib.crc32(body).to_bytes(4, "big")
    return b"".join((view[:first], chunk, view[last:]))


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


def gunzip(data: bytes) -> bytes:
    """``gzip.decompress`` through ISA-L (``isal``, a default dependency) where it is installed: a THEMIS
    stream0 ``.pgm.gz`` minute (20 frames) in 7.9 ms against zlib's 16.4.  A damaged stream is decompressed
    again by ``gzip`` for its error, which names what is wrong."""
    try:
        from isal.igzip import decompress
    except ImportError:
        return gzip.decompress(data)
    try:
        return decompress(data)
    except Exception:  # isal's errors are its own classes, and call a file that is not gzip "ended early"
        return gzip.decompress(data)


COMPRESSIONS = {".gz": gunzip, ".bz2": bz2.decompress}  #: file-name suffix -> decompressor


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


def read_pgm(
    data: bytes, name: str = "<bytes>", max_pixels: int | None = None
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
    frames: list[tuple[dt.datetime | None, np.ndarray]] = []
    keys: dict[str, str] = {}
    pos, n = 0, len(data)
    while pos < n:
        while pos < n and data[pos : pos + 1].isspace():
            pos += 1
        if pos >= n:
            break
        if data[pos : pos + 2] != b"P5":
            raise ImageError(f"{name}: frame {len(frames)} does not start with the PGM magic 'P5' (byte {pos})")
        pos += 2
        tokens: list[bytes] = []
        comments: list[str] = []
        while len(tokens) < 3:
            while pos < n and data[pos : pos + 1].isspace():
                pos += 1
            if pos >= n:
                raise ImageError(f"{name}: frame {len(frames)} header is truncated")
            if data[pos : pos + 1] == b"#":
                end = data.find(b"\n", pos)
                end = n if end < 0 else end
                comments.append(data[pos + 1 : end].decode("latin-1").strip())
                pos = end + 1
                continue
            start = pos
            while pos < n and not data[pos : pos + 1].isspace():
                pos += 1
            tokens.append(data[start:pos])
        try:
            width, height, maxval = (int(t) for t in tokens)
        except ValueError:
            raise ImageError(f"{name}: frame {len(frames)} has a bad header {tokens}") from None
        if max_pixels and width * height > max_pixels:
            raise ImageError(
                f"{name}: frame {len(frames)} has {width}×{height} pixels, more than the limit of "
                f"{max_pixels} (features.max_pixels)"
            )
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
        out += (f"P5\n# site {site}\n# Image request start: {t:%Y-%m-%d %H:%M:%S.%f} UTC\n{w} {h}\n65535\n").encode()
        out += np.asarray(img, dtype=">u2").tobytes()
    if compress == "gz":
        return gzip.compress(bytes(out))
    if compress == "bz2":
        return bz2.compress(bytes(out))
    return bytes(out)
