"""The torch recipes (run on a GPU worker's device) against the numpy recipes, on CPU, within 1e-5."""

import shutil

import numpy as np
import pytest
import torch
from conftest import make_job
from test_formats import DATA, REAL
from test_real_inputs import NO_FILTER, _rows

from aurora_batch.core.keys import PartitionKey
from aurora_batch.formats.files import read_file
from aurora_batch.formats.names import FORMATS
from aurora_batch.model import torch_recipes
from aurora_batch.model.recipes import RECIPES, circle_mask, get_recipe, resize
from aurora_batch.model.torch_recipes import TORCH_RECIPES, DeviceRecipe, resize_weights
from aurora_batch.partition.process import process_partition
from aurora_batch.store.layout import staging_url
from aurora_batch.store.parts import read_part

TOLERANCE = 1e-5
KINDS = ("grey8", "grey16", "rgb8", "rgb16")
SHAPES = ((256, 256), (300, 280), (100, 120))  #: equal, box-shrunk by a fraction, bilinear-grown (lite128)


def _frames(kind: str, shape: tuple[int, int], n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Sky-like frames: a bright oval on a noisy background, 8- or 16-bit, grey or colour."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    oval = np.exp(-((yy - 0.4 * h) ** 2 / (0.02 * h * h) + (xx - w / 2) ** 2 / (0.2 * w * w)))
    top = 255 if kind.endswith("8") else 14000
    out = []
    for _ in range(n):
        img = 0.1 * top + 0.6 * top * oval * rng.uniform(0.5, 1.0) + rng.normal(0, 0.03 * top, shape)
        img = np.stack([img * g for g in (0.8, 1.0, 0.6)], axis=2) if kind.startswith("rgb") else img
        out.append(
            np.clip(img, 0, 255 if kind.endswith("8") else 65535).astype(np.uint8 if kind.endswith("8") else np.uint16)
        )
    return out


def _check(name: str, frames: list[np.ndarray], mask: np.ndarray | None = None) -> None:
    recipe = get_recipe(name)
    expected = np.stack([recipe(f, mask) for f in frames])
    x = torch.from_numpy(np.stack(frames).astype(np.float32))
    got = TORCH_RECIPES[name](x, None if mask is None else torch.from_numpy(mask.copy())).numpy()
    assert got.shape == expected.shape == (len(frames), 3, recipe.size, recipe.size)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE, name


def test_every_recipe_has_a_torch_twin():
    assert set(TORCH_RECIPES) == set(RECIPES)


@pytest.mark.parametrize(
    "name,shape", [(n, s) for n in sorted(RECIPES) for s in SHAPES if min(s) >= RECIPES[n].smallest]
)
@pytest.mark.parametrize("kind", KINDS)
def test_torch_recipe_equals_numpy(name, shape, kind):
    _check(name, _frames(kind, shape))


@pytest.mark.parametrize("name", ["lite128", "oath_stretch", "tame"])
def test_torch_recipe_with_a_skymap_mask(name):
    """A field of view that is not the inscribed circle (a skymap's elevation mask), off centre."""
    shape = (260, 270)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = (yy - 120) ** 2 + (xx - 150) ** 2 <= 100**2
    for kind in ("grey16", "rgb8"):
        _check(name, _frames(kind, shape), mask)


def test_empty_and_constant_fields_of_view_match_numpy():
    frames = _frames("grey16", (256, 256))
    _check("lite128", frames, np.zeros((256, 256), bool))  # nothing inside: numpy's fallback range 0-1
    _check("tame", frames, np.zeros((256, 256), bool))
    flat = [np.full((256, 256), 900, np.uint16)]
    for name in RECIPES:
        _check(name, flat)


def test_resize_weights_are_pillows():
    """The weights reproduce Pillow's resize on an image that is no identity matrix."""
    img = np.random.default_rng(1).random((300, 280)).astype(np.float32)
    for size in (128, 256, 400):
        box = min(img.shape) >= size
        got = resize_weights(300, size, box) @ img @ resize_weights(280, size, box).T
        assert np.abs(got - resize(img, size)).max() < 1e-6
    assert np.abs(resize_weights(300, 128, True).sum(axis=1) - 1).max() < 1e-6  # weights of each output sum to 1


def test_circle_mask_default_is_the_numpy_one():
    x = torch.zeros(1, 200, 210)
    assert torch.equal(torch_recipes._fov(x, None), torch.from_numpy(circle_mask((200, 210)).copy()))


@pytest.mark.parametrize(
    "sample",
    [
        "20140310_0605_gill_themis19_full.pgm.gz",
        "oath_00001.png",
        "20200508_060500_122643_gill_rgb-04_320ms_full.png",
        "20220307_0601_gill_nir-216_8446.pgm.gz",
        "thg_l1_asf_gako_2011010617_v01.cdf",
    ],
)
def test_torch_recipes_on_real_frames(sample):
    """Real THEMIS (16-bit grey, PGM and CDF), OATH (16-bit crop), TREx RGB (8-bit colour) and NIR frames, decoded
    as a partition decodes them."""
    data = (DATA / sample).read_bytes()
    fmt = FORMATS[REAL[sample][0]] if sample in REAL else None
    for name, recipe in RECIPES.items():
        frames = read_file(data, sample, fmt, recipe.min_side).images[:4]
        if min(frames[0].shape[:2]) < recipe.smallest:
            continue
        _check(name, frames)


def test_device_recipe_groups_shapes_and_masks_in_order():
    """Frames of two shapes and two fields of view, interleaved: each gets its own recipe, in order."""
    a, b = _frames("grey16", (256, 256), 4), _frames("grey8", (300, 280), 2, seed=5)
    mask = np.zeros((256, 256), bool)
    mask[40:200, 30:220] = True
    frames = [a[0], a[1], b[0], a[2], a[3], b[1]]
    masks = [None, None, None, mask, mask.copy(), None]  # an equal mask in another array is the same field of view
    recipe = get_recipe("lite128")
    got = DeviceRecipe(recipe, "cpu")(frames, masks).numpy()
    expected = np.stack([recipe(f, m) for f, m in zip(frames, masks)])
    assert np.abs(got - expected).max() <= TOLERANCE
    assert DeviceRecipe(recipe, "cpu")([], []).shape == (0, 3, 128, 128)


def test_partition_with_torch_recipes_matches_numpy(tmp_path):
    """A real THEMIS stream0 file through a partition, recipe on the device (torch) or in numpy: same rows,
    features equal to float rounding."""
    name = "20140310_0605_gill_themis19_full.pgm.gz"
    shutil.copy(DATA / name, tmp_path / name)
    key = PartitionKey.parse("GILL_all_20140310")
    parts = {}
    for where in ("numpy", "torch"):
        job = make_job(
            f"file://{tmp_path}",
            f"file://{tmp_path}/out-{where}",
            stations=["GILL"],
            start="2014-03-10",
            end="2014-03-11",
            filter=NO_FILTER,
            features={"recipe": "lite128", "recipe_device": where, "device": "cpu"},
        )
        process_partition(job, key, _rows([f"file://{tmp_path}/{name}"], "GILL", job))
        parts[where] = read_part(staging_url(job.output, key))
    (rows_n, arrays_n), (rows_t, arrays_t) = parts["numpy"], parts["torch"]
    assert rows_n[["time", "status", "frame"]].equals(rows_t[["time", "status", "frame"]])
    fn, ft = arrays_n["features"], arrays_t["features"]
    assert len(fn) == len(rows_n) > 1
    cosine = (fn * ft).sum(1) / np.linalg.norm(fn, axis=1) / np.linalg.norm(ft, axis=1)
    assert cosine.min() > 0.9999
    assert np.array_equal(arrays_n["keogram_ns"], arrays_t["keogram_ns"])
