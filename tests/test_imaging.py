import gzip
import io
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from aurora_batch.formats.decode import (
    ImageError,
    _png_inflated,
    decode,
    decompress,
    gunzip,
    read_pgm_frames,
    reduce_to,
)
from aurora_batch.model.recipes import circle_mask, counted_percentiles, get_recipe, kvammen_steps, resize, to_grey

DATA = Path(__file__).parent / "data"


def _encode(arr, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "arr, fmt",
    [
        (np.arange(64 * 48, dtype=np.uint8).reshape(48, 64), "PNG"),
        ((np.arange(64 * 48, dtype=np.uint16) * 13).reshape(48, 64), "PNG"),
        (np.dstack([np.full((48, 64), v, np.uint8) for v in (10, 20, 30)]), "PNG"),
    ],
)
def test_decode_lossless_roundtrip(arr, fmt):
    out = decode(_encode(arr, fmt))
    assert out.dtype == arr.dtype  # the file's own bit depth
    np.testing.assert_array_equal(out, arr)


def test_decode_jpeg_grey_and_rgb():
    grey = np.full((32, 32), 128, np.uint8)
    assert decode(_encode(grey, "JPEG")).shape == (32, 32)
    rgb = np.dstack([grey] * 3)
    out = decode(_encode(rgb, "JPEG"))
    assert out.shape == (32, 32, 3) and abs(out.mean() - 128) < 2


def test_decode_16bit_keeps_range():
    arr = np.array([[0, 65535], [1000, 40000]], np.uint16)
    assert decode(_encode(arr)).max() == 65535


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty file"),
        (b"this is not an image", "cannot decode"),
        (_encode(np.zeros((64, 64), np.uint8))[:60], "cannot decode"),
    ],
)
def test_decode_rejects_with_reason(data, why):
    with pytest.raises(ImageError, match=why) as err:
        decode(data, "frame_0001.png")
    assert "frame_0001.png" in str(err.value)


def test_circle_mask_and_grey():
    m = circle_mask((5, 5))
    assert m[2, 2] and not m[0, 0] and m[0, 2]
    assert to_grey(np.dstack([np.ones((2, 2)), 2 * np.ones((2, 2)), 3 * np.ones((2, 2))])).tolist() == [[2, 2], [2, 2]]
    rng = np.random.default_rng(4)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535), (np.float32, 1e4)):
        img = (rng.random((37, 41, 3)) * top).astype(dtype)
        assert np.array_equal(to_grey(img), img.astype(np.float32).mean(axis=2))  # bit-identical, channel by channel
        assert to_grey(img).dtype == np.float32


def test_resize_box_averages():
    img = np.kron(np.array([[0.0, 1.0], [2.0, 3.0]]), np.ones((4, 4))).astype(np.float32)
    np.testing.assert_allclose(resize(img, 2), [[0, 1], [2, 3]])


def test_lite128_recipe():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (256, 256)).astype(np.float32)
    x = get_recipe("lite128")(img)
    assert x.shape == (3, 128, 128) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(x[0], x[1])
    assert x[0, 0, 0] == -1.0  # outside the field of view: zero, scaled to -1
    flat = get_recipe("lite128")(np.full((64, 64), 7.0, np.float32))  # constant image: no division by zero
    assert np.isfinite(flat).all()


def test_unknown_recipe():
    with pytest.raises(KeyError, match="unknown recipe"):
        get_recipe("nope")


# --- the seed recipes, on arrays whose answer is known by hand ---------------------------------------------


def test_kvammen_rotate_then_flip_is_a_transpose():
    from aurora_batch.model.recipes import kvammen_steps

    # Rotating 90° clockwise and then flipping east-west transposes the image. With a 4×4 block
    # pattern that survives the 3×3 median, the 2×2 bin gives the transposed 2×2 block means.
    img = np.kron(np.array([[1.0, 2.0], [3.0, 4.0]]), np.ones((8, 8), np.float32))
    out = kvammen_steps(img, crop=8)  # 16×16 -> binned 8×8 -> crop 8: quadrant centres keep their values
    np.testing.assert_allclose(out[[1, 1, 6, 6], [1, 6, 1, 6]], [1, 3, 2, 4])


def test_kvammen_median_removes_a_hot_pixel_and_bins():
    from aurora_batch.model.recipes import kvammen_steps

    img = np.full((8, 8), 10.0, np.float32)
    img[3, 4] = 1000.0  # a hot pixel: the 3×3 median removes it
    out = kvammen_steps(img, crop=2)
    assert out.shape == (2, 2) and np.all(out == 10.0)
    ramp = np.repeat(np.arange(8, dtype=np.float32)[None], 8, axis=0)  # columns 0..7
    # transpose -> rows 0..7; median keeps a linear ramp; bin -> rows 0.5, 2.5, 4.5, 6.5; crop central 2 rows
    np.testing.assert_allclose(kvammen_steps(ramp, crop=2), [[2.5, 2.5], [4.5, 4.5]])
    with pytest.raises(ImageError, match="too small"):
        kvammen_steps(ramp, crop=128)


def test_tame_steps_by_hand():
    from aurora_batch.model.recipes import tame_steps

    img = np.zeros((4, 4), np.float32)
    img[1:3, 1:3] = [[0, 100], [200, 300]]  # inside the inscribed circle; corners outside
    out = tame_steps(img, size=4)
    assert out.shape == (3, 4, 4)
    assert np.all(out[0] == 0) and np.all(out[2] == 0)  # R = B = 0
    g = out[1]
    assert g[0, 0] == 0 and g[3, 3] == 0  # outside the circle
    # 0.5/99.5 percentiles clip the extremes slightly, then min-max maps them to 0 and 1
    assert g[1, 1] == pytest.approx(0.0, abs=1e-6) and g[2, 2] == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < g[1, 2] < 0.36 and 0.64 < g[2, 1] < 0.7


def test_tame_normalises_with_imagenet_stats():
    from aurora_batch.model.recipes import IMAGENET_MEAN, IMAGENET_STD

    x = get_recipe("tame")(np.random.default_rng(0).random((300, 300)).astype(np.float32) * 1000)
    assert x.shape == (3, 224, 224)
    np.testing.assert_allclose(x[0], -IMAGENET_MEAN[0] / IMAGENET_STD[0], rtol=1e-5)  # red is zero


def test_oath_recipe_keeps_the_crop():
    rgb = np.zeros((256, 256, 3), np.uint8)
    rgb[..., 1] = 255
    x = get_recipe("oath")(rgb.astype(np.float32))
    assert x.shape == (3, 256, 256)
    assert np.all(x[0] == -1) and np.all(x[1] == 1)
    grey = get_recipe("oath")(np.full((256, 256), 65535.0, np.float32))
    assert np.all(grey == 1)


def _kvammen_whole_frame(img, crop=128):
    """Kvammen's recipe as published, step by step on the whole frame (the slow reference)."""
    from scipy.ndimage import median_filter

    x = np.fliplr(np.rot90(to_grey(img), k=-1))
    x = median_filter(x, size=3, mode="nearest")
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    top, left = (x.shape[0] - crop) // 2, (x.shape[1] - crop) // 2
    return x[top : top + crop, left : left + crop]


@pytest.mark.parametrize(
    "shape", [(256, 256), (257, 256), (256, 259), (258, 257), (479, 720), (479, 720, 3), (1001, 999)]
)
def test_kvammen_crop_first_equals_whole_frame(shape):
    img = np.random.default_rng(sum(shape)).integers(0, 65535, shape).astype(np.uint16)
    np.testing.assert_array_equal(kvammen_steps(img), _kvammen_whole_frame(img))


def test_reduced_decode_leaves_small_images_alone():
    """A 256² frame is decoded as it is: features of 256² archives do not change."""
    arr = np.random.default_rng(0).integers(0, 65535, (256, 256)).astype(np.uint16)
    data = _encode(arr)
    for recipe in ("lite128", "oath", "tame"):
        out = decode(data, min_side=get_recipe(recipe).min_side)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, arr)


def test_reduced_decode_of_a_large_jpeg_keeps_what_the_recipe_needs():
    import pandas as pd

    from aurora_batch.datasets.synth import render_colour_frame
    from aurora_batch.model.features import extract_features

    sky = render_colour_frame("arc", pd.Timestamp("2010-12-01"), np.random.default_rng(1), 1416)[:, :1400]
    data = _encode(sky, "JPEG")
    small = decode(data, min_side=256)
    assert small.shape == (354, 350, 3) and small.dtype == np.uint8  # DCT scale 1/4: shorter side >= 256
    full = decode(data)
    assert full.shape == sky.shape
    lite = get_recipe("lite128")
    a, b = lite(small), lite(full)
    assert np.abs(a - b).mean() < 0.03  # measured 0.012 (a clear, noise-dominated sky: 0.045)
    fa, fb = extract_features(np.stack([a, b]), device="cpu")
    assert fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)) > 0.98  # measured 0.991


def test_reduce_to_averages_whole_blocks():
    img = np.arange(10 * 7, dtype=np.uint16).reshape(10, 7)
    assert reduce_to(img, 4) is img  # a factor of 1: untouched
    out = reduce_to(img, 3)  # factor 2: 5 x 3 blocks, the last column dropped
    assert out.shape == (5, 3) and out.dtype == np.uint16  # the container keeps its meaning
    assert out[0, 0] == np.rint(np.mean([0, 1, 7, 8])) and out[1, 2] == np.rint(np.mean([18, 19, 25, 26]))
    assert reduce_to(img.astype(np.float32), 3)[0, 0] == np.mean([0, 1, 7, 8])
    rgb = np.ones((600, 900, 3), np.uint8)
    assert reduce_to(rgb, 256).shape == (300, 450, 3)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _png_kinds() -> dict[str, bytes]:
    """PNGs of every colour type and depth, with several image-data chunks and chunks after them."""
    rng = np.random.default_rng(3)

    def pil(arr, mode=None, convert=None, **kw):
        im = Image.fromarray(arr, mode)
        buf = io.BytesIO()
        (im.convert(convert) if convert else im).save(buf, format="PNG", **kw)
        return buf.getvalue()

    kinds = {
        "grey 1-bit": pil(rng.integers(0, 2, (21, 35), dtype=np.uint8) * 255, convert="1"),
        "grey 8-bit": pil(rng.integers(0, 256, (37, 53), dtype=np.uint8)),
        "grey 16-bit": imagecodecs.png_encode(rng.integers(0, 65536, (64, 31), dtype=np.uint16)),
        "RGB 8-bit": pil(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
        "RGB 16-bit": imagecodecs.png_encode(rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)),
        "RGBA": pil(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)),
        "grey and alpha": pil(rng.integers(0, 256, (20, 30, 2), dtype=np.uint8), "LA"),
        "palette": pil(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), convert="P"),
    }
    # several IDAT chunks (as cameras write them), and a text chunk after them
    data = kinds["grey 16-bit"]
    start = data.index(b"IDAT") - 4
    end = start + 12 + int.from_bytes(data[start : start + 4], "big")
    body = data[start + 8 : end - 4]
    split = b"".join(_chunk(b"IDAT", body[i : i + 1000]) for i in range(0, len(body), 1000))
    kinds["grey 16-bit, split data, text after"] = data[:start] + split + _chunk(b"tEXt", b"k\0v") + data[end:]
    return kinds


@pytest.mark.parametrize("kind", list(_png_kinds()))
def test_png_inflated_by_isal_decodes_as_libpng_does(kind):
    data = _png_kinds()[kind]
    restored = _png_inflated(data)
    assert restored is not None  # the fast path was taken
    expected = imagecodecs.png_decode(data)
    got = imagecodecs.png_decode(restored)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_real_pngs_decode_as_libpng_does():
    for name in ("oath_00001.png", "20200508_060500_122643_gill_rgb-04_320ms_full.png"):
        data = (DATA / name).read_bytes()
        assert _png_inflated(data) is not None
        np.testing.assert_array_equal(decode(data, name), imagecodecs.png_decode(data))


def test_damaged_or_interlaced_pngs_are_left_to_libpng():
    data = _png_kinds()["grey 16-bit"]
    at = data.index(b"IDAT") + 20
    damaged = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    ihdr = bytearray(data[16:29])
    ihdr[12] = 1  # Adam7
    interlaced = data[:8] + _chunk(b"IHDR", bytes(ihdr)) + data[33:]
    for bad in (damaged, data[:-40], interlaced):
        assert _png_inflated(bad) is None
    for bad in (damaged, data[:-40]):
        with pytest.raises(ImageError, match="frame.png: cannot decode"):
            decode(bad, "frame.png")


def test_pngs_decode_without_isal(monkeypatch):
    data = (DATA / "oath_00001.png").read_bytes()
    expected = decode(data)
    monkeypatch.setitem(sys.modules, "isal", None)  # not installed: libpng inflates too
    assert _png_inflated(data) is None
    np.testing.assert_array_equal(decode(data), expected)


def test_gunzip_equals_gzip_and_names_damage(monkeypatch):
    frames = (DATA / "20220307_0601_gill_nir-216_8446.pgm.gz").read_bytes()
    expected = gzip.decompress(frames)
    assert gunzip(frames) == expected
    assert gunzip(frames + frames) == expected + expected  # members concatenated, as `cat` writes them
    with pytest.raises(ImageError, match="x.pgm.gz: cannot decompress.*CRC"):
        decompress(frames[:-8] + bytes(4) + frames[-4:], "x.pgm.gz")
    with pytest.raises(ImageError, match="x.pgm.gz: cannot decompress.*Not a gzipped file"):
        decompress(b"P5 256 256", "x.pgm.gz")
    monkeypatch.setitem(sys.modules, "isal.igzip", None)  # not installed: zlib's gzip
    assert gunzip(frames) == expected


def _percentile_cases():
    rng = np.random.default_rng(7)
    for trial in range(400):
        n = int(rng.choice([1, 2, 3, 17, 1000, int(rng.integers(1, 60000))]))
        top = int(rng.choice([1, 255, 4000, 65535]))
        keys = {
            0: rng.integers(0, top + 1, n),
            1: rng.exponential(top / 20, n).astype(int).clip(0, top),
            2: np.full(n, rng.integers(0, top + 1)),
        }[trial % 3].astype(np.uint16)
        q = (float(rng.choice([0.0, 0.5, 1.0, 50.0, 99.5, 100.0])), float(rng.uniform(0, 100)))
        yield keys, q, 3 if trial % 4 == 0 else 1


def test_counted_percentiles_are_numpys_bit_for_bit():
    for keys, q, divisor in _percentile_cases():
        expected = np.percentile(keys.astype(np.float32) / np.float32(divisor), q)
        got = counted_percentiles(keys, q, divisor)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), (keys.size, q, divisor)


@pytest.mark.parametrize("recipe", ["lite128", "oath_stretch", "tame"])
def test_recipes_count_integer_levels_with_the_same_result(recipe):
    """Integer frames take the counted percentiles; their float32 copies numpy's: the tensors are equal."""
    fn = get_recipe(recipe)
    frames = [a for _, a in read_pgm_frames((DATA / "20220307_0601_gill_nir-216_8446.pgm.gz").read_bytes(), "x.gz")]
    frames += [
        decode((DATA / n).read_bytes()) for n in ("oath_00001.png", "20200508_060500_122643_gill_rgb-04_320ms_full.png")
    ]
    for img in frames:
        assert img.dtype.kind == "u"
        np.testing.assert_array_equal(fn(img), fn(img.astype(np.float32)))
