import io

import numpy as np
import pytest
from PIL import Image

from aurora_batch.imaging import ImageError, circle_mask, decode, get_recipe, resize, to_grey


def _encode(arr, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("arr, fmt", [
    (np.arange(64 * 48, dtype=np.uint8).reshape(48, 64), "PNG"),
    ((np.arange(64 * 48, dtype=np.uint16) * 13).reshape(48, 64), "PNG"),
    (np.dstack([np.full((48, 64), v, np.uint8) for v in (10, 20, 30)]), "PNG"),
])
def test_decode_lossless_roundtrip(arr, fmt):
    out = decode(_encode(arr, fmt))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr.astype(np.float32))


def test_decode_jpeg_grey_and_rgb():
    grey = np.full((32, 32), 128, np.uint8)
    assert decode(_encode(grey, "JPEG")).shape == (32, 32)
    rgb = np.dstack([grey] * 3)
    out = decode(_encode(rgb, "JPEG"))
    assert out.shape == (32, 32, 3) and abs(out.mean() - 128) < 2


def test_decode_16bit_keeps_range():
    arr = np.array([[0, 65535], [1000, 40000]], np.uint16)
    assert decode(_encode(arr)).max() == 65535


@pytest.mark.parametrize("data, why", [
    (b"", "empty file"),
    (b"this is not an image", "cannot decode"),
    (_encode(np.zeros((64, 64), np.uint8))[:60], "cannot decode"),
])
def test_decode_rejects_with_reason(data, why):
    with pytest.raises(ImageError, match=why) as err:
        decode(data, "frame_0001.png")
    assert "frame_0001.png" in str(err.value)


def test_circle_mask_and_grey():
    m = circle_mask((5, 5))
    assert m[2, 2] and not m[0, 0] and m[0, 2]
    assert to_grey(np.dstack([np.ones((2, 2)), 2 * np.ones((2, 2)), 3 * np.ones((2, 2))])).tolist() == [[2, 2], [2, 2]]


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
