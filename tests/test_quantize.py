"""int8 CPU inference: fidelity to float32 on the SYNTHETIC OATH tree and on real frames, and its bookkeeping."""

import numpy as np
import pytest
from conftest import make_job
from test_formats import DATA, REAL

from aurora_batch.config import JobConfig, JobSpecError
from aurora_batch.formats.files import read_file
from aurora_batch.formats.names import FORMATS
from aurora_batch.model.backbones import load_backbone, load_int8_backbone
from aurora_batch.model.features import FeatureExtractor
from aurora_batch.model.quantize import INT8_SCHEME, calibration_inputs, int8_convolutions
from aurora_batch.model.recipes import get_recipe
from aurora_batch.month.build import common_attrs
from aurora_batch.partition.fingerprint import feature_fingerprint
from aurora_batch.products.oath import train

pytestmark = pytest.mark.slow  # quantising and compiling the backbone takes a minute on 2 cores


def _features(inputs: np.ndarray, precision: str, runtime: str = "torch") -> np.ndarray:
    ext = FeatureExtractor(device="cpu", precision=precision, recipe="lite128", runtime=runtime)
    assert ext.runtime == runtime
    ext.push(inputs)
    return ext.result()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _real_inputs() -> np.ndarray:
    """Every frame of the real samples (THEMIS PGM and CDF, TREx NIR, blueline and RGB, an OATH crop), lite128."""
    recipe = get_recipe("lite128")
    frames = []
    for name in sorted(REAL) + ["oath_00001.png"]:
        fmt = FORMATS[REAL[name][0]] if name in REAL else None
        frames += read_file((DATA / name).read_bytes(), name, fmt, recipe.min_side).images
    return np.stack([recipe(f) for f in frames])


def assert_follows_float32(oath_tree, precision: str, runtime: str = "torch") -> np.ndarray:
    """The gates of a reduced precision: per frame cosine >= 0.99 to float32, and the same head (the OATH protocol:
    ridge on split 0) gives the same 6-class label to >= 99 % of the frames, on the SYNTHETIC OATH tree and on
    every real sample frame.  Returns the SYNTHETIC tree's features at ``precision``.

    A head trained on SYNTHETIC frames only is fragile on real ones: one trained on all of a 120-image tree
    moves a dim TREx blueline frame's decision by 3.5 for a feature cosine of 0.999 and flips its label."""
    ds, inputs = oath_tree
    real = _real_inputs()
    f32, low = _features(inputs, "float32"), _features(inputs, precision, runtime)
    r32, r_low = _features(real, "float32"), _features(real, precision, runtime)
    assert _cosine(f32, low).min() >= 0.99 and _cosine(r32, r_low).min() >= 0.99
    assert not np.array_equal(f32, low)  # it did run at the lower precision
    head = train(ds, f32, "ridge", split=0)
    assert (head.predict(low) == head.predict(f32)).mean() >= 0.99
    assert (head.predict(r_low) == head.predict(r32)).mean() >= 0.99
    return low


def test_int8_features_and_labels_follow_float32(oath_tree):
    i8 = assert_follows_float32(oath_tree, "int8")
    again = _features(oath_tree[1][:7], "int8")  # a short batch is padded: the same features as in a full one
    np.testing.assert_allclose(again, i8[:7], rtol=1e-5, atol=1e-5)


def test_int8_program_is_cached_and_a_bad_cache_rebuilt(tmp_path):
    """Later processes load the quantised program instead of calibrating again: the same features; a corrupt
    cache file is quantised again and replaced."""
    x = calibration_inputs("lite128")[:16]

    def features():
        load_int8_backbone.cache_clear()  # as in a new worker process
        ext = FeatureExtractor(device="cpu", precision="int8", compile_cache=str(tmp_path))
        ext.push(x)
        return ext.result()

    first = features()
    (cached,) = tmp_path.glob("aurora-int8-*.pt2")
    np.testing.assert_array_equal(features(), first)
    cached.write_bytes(b"not a program")
    np.testing.assert_array_equal(features(), first)
    assert cached.stat().st_size > 1_000_000 and not list(tmp_path.glob(".part-*"))


def test_int8_convolutions_of_the_shipped_backbone():
    names = int8_convolutions(load_backbone("efficientnet-lite0"))
    # Lite0 has 16 MBConv blocks; the first has no expansion, the last two stay float32
    assert names == [f"body._blocks.{i}._expand_conv" for i in range(1, 14)]


def test_int8_is_in_the_fingerprint_and_the_store_attributes(tmp_path):
    f32 = make_job("file:///in", f"file://{tmp_path}/out")
    i8 = make_job("file:///in", f"file://{tmp_path}/out", features={"precision": "int8"})
    assert feature_fingerprint(f32) != feature_fingerprint(i8)
    assert INT8_SCHEME in feature_fingerprint(i8)
    assert common_attrs(i8)["precision"] == INT8_SCHEME and common_attrs(f32)["precision"] == "float32"


@pytest.mark.parametrize(
    "features,message",
    [
        ({"precision": "int8", "device": "cuda"}, "CPU workers"),
        ({"precision": "int8", "backbone": "net.pt2"}, "shipped backbones"),
    ],
)
def test_int8_refuses_what_it_cannot_run(features, message):
    with pytest.raises(JobSpecError, match=message):
        JobConfig.from_dict(
            dict(
                input="file:///in",
                output="file:///out",
                stations=["NYA"],
                start="2010-12-01",
                end="2010-12-02",
                features=features,
            )
        )
