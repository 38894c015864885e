"""CPU runtimes: the network exported to ONNX and run by ONNX Runtime or OpenVINO, exact to torch on real frames."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from conftest import make_job
from test_quantize import _cosine, _real_inputs, assert_follows_float32

from aurora_batch.config import JobSpecError
from aurora_batch.model import runtimes
from aurora_batch.model.features import FeatureExtractor
from aurora_batch.model.runtimes import load_runner, resolve_runtime
from aurora_batch.month.build import common_attrs
from aurora_batch.partition.fingerprint import feature_fingerprint

EXPORTED = [r for r in ("onnxruntime", "openvino") if runtimes.available(r)]
BF16_HERE = bool(runtimes.bf16_units())


def _features(inputs: np.ndarray, runtime: str, cache: str) -> np.ndarray:
    ext = FeatureExtractor(device="cpu", runtime=runtime, compile_cache=cache)
    assert ext.runtime == runtime
    ext.push(inputs)
    return ext.result()


def test_onnxruntime_is_installed():
    """The default runtime is a dependency of the package: CI must run it, never skip it."""
    assert "onnxruntime" in EXPORTED


@pytest.mark.parametrize("runtime", EXPORTED)
def test_exported_network_equals_torch_on_every_real_frame(runtime, tmp_path):
    real = _real_inputs()
    ref = _features(real, "torch", str(tmp_path))
    got = _features(real, runtime, str(tmp_path))
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _cosine(got, ref).min() >= 0.99999, runtime
    short = _features(real[:3], runtime, str(tmp_path))  # any batch length: the batch axis is dynamic
    np.testing.assert_allclose(short, got[:3], rtol=1e-4, atol=1e-4)


def test_export_cache_hit_miss_and_corrupt_file(tmp_path):
    cache = str(tmp_path)
    load_runner.cache_clear()
    load_runner("efficientnet-lite0", None, 128, "onnxruntime", 1, cache)
    (path,) = list((tmp_path / "onnx").glob("*.onnx"))
    stamp = path.stat().st_mtime_ns
    load_runner.cache_clear()
    load_runner("efficientnet-lite0", None, 128, "onnxruntime", 1, cache)  # hit: not exported again
    assert path.stat().st_mtime_ns == stamp
    load_runner("efficientnet-lite0", None, 96, "onnxruntime", 1, cache)  # another input size: another file
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
    path.write_bytes(b"not an onnx file")  # corrupt: exported again, and it works
    load_runner.cache_clear()
    runner = load_runner("efficientnet-lite0", None, 128, "onnxruntime", 1, cache)
    assert path.stat().st_size > 1_000_000
    assert runner(np.zeros((2, 3, 128, 128), np.float32)).shape == (2, 1280)
    assert not list((tmp_path / "onnx").glob("*.tmp"))


def test_a_worker_running_onnxruntime_never_imports_torch(tmp_path):
    """Importing torch costs a worker 1-1.6 s at start: with the export cached, a CPU worker whose network runs
    in ONNX Runtime sets its threads, decides its device and extracts features without it."""
    load_runner("efficientnet-lite0", None, 128, "onnxruntime", 1, str(tmp_path))  # the export (needs torch)
    code = (
        "import sys, numpy as np\n"
        "from aurora_batch.model.features import FeatureExtractor, intra_op_threads, no_gpu_here, tune_process\n"
        "tune_process(1)\n"
        "device = 'auto' if no_gpu_here() else 'cpu'  # auto: decided without torch on a host with no GPU\n"
        f"ext = FeatureExtractor(device=device, runtime='onnxruntime', compile_cache={str(tmp_path)!r})\n"
        "ext.push(np.zeros((3, 3, 128, 128), np.float32))\n"
        "assert ext.result().shape == (3, 1280) and intra_op_threads() == 1 and ext.device == 'cpu'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_runtime_resolution_fallback_and_refusals(monkeypatch, caplog):
    assert resolve_runtime("auto", "cpu") == "onnxruntime"
    assert resolve_runtime("auto", "cuda") == "torch"  # GPU workers stay on torch
    assert resolve_runtime("auto", "cpu", precision="int8") == "torch"
    assert resolve_runtime("auto", "cpu", shipped=False) == "torch"  # model files: torch unless named
    with pytest.raises(ValueError, match="not with a CUDA device"):
        resolve_runtime("onnxruntime", "cuda")
    with pytest.raises(ValueError, match="not with precision float16"):
        resolve_runtime("openvino", "cpu", precision="float16")
    # No exported runtime installed: auto falls back to torch, saying so once; a named one is refused.
    monkeypatch.setattr(runtimes, "available", lambda r: r == "torch")
    with caplog.at_level(logging.INFO, logger="aurora_batch.model.runtimes"):
        assert resolve_runtime("auto", "cpu") == "torch"
    assert "onnxruntime" in caplog.text and "runs in torch" in caplog.text
    with pytest.raises(ValueError, match="not installed here: pip install onnxruntime"):
        resolve_runtime("onnxruntime", "cpu")
    with pytest.raises(JobSpecError, match="features.runtime"):
        make_job("file:///in", "file:///out", features={"runtime": "tensorrt"})


def test_runtime_in_fingerprint_and_store_attributes():
    ort = make_job("file:///in", "file:///out", features={"device": "cpu"})
    torch_job = make_job("file:///in", "file:///out", features={"device": "cpu", "runtime": "torch"})
    assert ort.feature_runtime() == "onnxruntime" and "|rt:onnxruntime" in feature_fingerprint(ort)
    assert "|rt:" not in feature_fingerprint(torch_job)  # torch parts staged before stay reusable
    assert common_attrs(ort)["runtime"] == "onnxruntime" and common_attrs(torch_job)["runtime"] == "torch"


@pytest.mark.slow
@pytest.mark.skipif(not BF16_HERE, reason="this CPU has neither AMX nor AVX-512 BF16 (the refusal is tested)")
@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_bfloat16_on_cpu_passes_the_gates(runtime, oath_tree):
    """OpenVINO's bf16 (what ``auto`` picks), and torch autocast where OpenVINO is not installed: the gates of a
    reduced precision on the SYNTHETIC OATH tree and every real sample frame."""
    if not runtimes.available(runtime):
        pytest.skip(f"{runtime} is not installed")
    assert resolve_runtime("auto", "cpu", precision="bfloat16") == (
        "openvino" if runtimes.available("openvino") else "torch"
    )
    assert_follows_float32(oath_tree, "bfloat16", runtime)


def test_bfloat16_is_refused_on_a_cpu_without_bf16_units(monkeypatch):
    """Emulated bf16 would run slower than float32: refused in every runtime, on the driver at job start."""
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    for runtime in ("auto", "torch", "openvino"):
        with pytest.raises(ValueError, match="needs AMX or AVX-512 BF16"):
            resolve_runtime(runtime, "cpu", precision="bfloat16")
    assert resolve_runtime("auto", "cuda", precision="bfloat16") == "torch"  # GPUs run it in autocast
    job = make_job("file:///in", "file:///out", features={"device": "cpu", "precision": "bfloat16"})
    with pytest.raises(JobSpecError, match="features.precision bfloat16"):
        job.check_files()
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    assert runtimes.bf16_units() == ["AMX"]
    job.check_files()


def test_bfloat16_runtime_and_fallback(monkeypatch, caplog):
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    with pytest.raises(ValueError, match="onnxruntime runs float32 on CPU workers; not with precision bfloat16"):
        resolve_runtime("onnxruntime", "cpu", precision="bfloat16")
    monkeypatch.setattr(runtimes, "available", lambda r: r != "openvino")
    with caplog.at_level(logging.INFO, logger="aurora_batch.model.runtimes"):
        assert resolve_runtime("auto", "cpu", precision="bfloat16") == "torch"
    assert "openvino not installed" in caplog.text and "aurora-batch[openvino]" in caplog.text
    bf16 = make_job("file:///in", "file:///out", features={"device": "cpu", "precision": "bfloat16"})
    assert "|bfloat16" in feature_fingerprint(bf16) and "|rt:" not in feature_fingerprint(bf16)  # torch autocast
    monkeypatch.setattr(runtimes, "available", lambda r: True)
    assert "|bfloat16|rt:openvino" in feature_fingerprint(bf16)  # never mixed with torch's bf16 in a month
    assert common_attrs(bf16)["runtime"] == "openvino" and common_attrs(bf16)["precision"] == "bfloat16"


@pytest.mark.slow
def test_a_season_with_each_runtime(tmp_path, dask_client):
    from aurora_batch.datasets.synth import write_archive
    from aurora_batch.runner.season import run_season

    archive = f"file://{tmp_path}/archive"
    write_archive(archive, ["NYA"], "2010-12-01T18:00", "2010-12-01T20:00", cadence="10min", seed=2)
    stores = {}
    for runtime in ("torch", *EXPORTED):
        job = make_job(
            archive,
            f"file://{tmp_path}/{runtime}",
            stations=["NYA"],
            features={"runtime": runtime, "compile_cache": str(tmp_path / "cache")},
        )
        summary = run_season(job, client=dask_client, progress=False)
        assert summary.kept == 12
        stores[runtime] = xr.open_zarr(f"{tmp_path}/{runtime}/2010-12.zarr", group="NYA").load()
        assert stores[runtime].attrs["runtime"] == runtime
    for runtime in EXPORTED:
        assert _cosine(stores[runtime]["features"].to_numpy(), stores["torch"]["features"].to_numpy()).min() >= 0.99999
    assert os.listdir(tmp_path / "cache" / "onnx")  # exported once, into the job's compile cache
