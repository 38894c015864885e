"""CPU inference runtimes: the torch network exported once to ONNX and run by ONNX Runtime (or OpenVINO).

The model is built and its weights loaded in torch as always (:func:`aurora_batch.model.features.load_backbone`);
then it is exported once to ONNX (TorchScript exporter, dynamic batch) and the file is cached in the
compile cache, named by the SHA-256 of what it depends on: the backbone and its weights, the input size,
and the torch and runtime versions.  A cache file that the runtime cannot load is exported again.

Measured on this project's 2-core AMD EPYC (AVX-512, VNNI, BF16; ``benchmarks/season_throughput.py``): the
shipped EfficientNet-Lite0 at 128 px, batch 16, runs 1.5-1.6× torch eager with ONNX Runtime and 1.4-1.6× with
OpenVINO, both with a feature cosine to torch ≥ 0.9999999.  ``features.runtime: auto`` therefore picks ONNX
Runtime (a default dependency, no system library) for float32 on CPU workers, then OpenVINO where only it is
installed, else torch with one log line.

``precision: bfloat16`` on CPU workers runs in OpenVINO's bf16 (2.7-3.2× torch float32 eager on the same
AMD, with AVX-512 BF16 and no AMX; feature cosine ≥ 0.995 on every real sample frame), or in torch's
autocast where OpenVINO is not installed (1.6-1.9×).  Both need AMX or AVX-512 BF16 (:func:`bf16_units`): a CPU
without them would emulate bf16 and run slower than float32, so it is refused.  GPU workers, float16, int8,
``compile`` and model files stay on torch unless a runtime is named.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import uuid
import warnings

import numpy as np

log = logging.getLogger(__name__)
RUNTIMES = ("torch", "onnxruntime", "openvino")
#: the precisions each exported runtime runs on CPU workers
PRECISIONS = {"onnxruntime": ("float32",), "openvino": ("float32", "bfloat16")}
#: per precision, the exported runtimes ``auto`` tries, fastest first, as measured (module docs)
AUTO_ORDER = {"float32": ("onnxruntime", "openvino"), "bfloat16": ("openvino",)}
#: what the first of ``AUTO_ORDER`` gains over torch at the same precision, as measured (module docs)
AUTO_GAIN = {"float32": "1.4-1.9x", "bfloat16": "1.4-1.9x"}
INSTALL = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install 'aurora-batch[openvino]'"}
#: CPU flags (``/proc/cpuinfo``) of the units that run bf16 natively
BF16_UNITS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}


def available(runtime: str) -> bool:
    """Whether ``runtime`` can be imported here."""
    return runtime == "torch" or importlib.util.find_spec(runtime) is not None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags, as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def bf16_units() -> list[str]:
    """This CPU's units that run bf16 natively: AMX, AVX-512 BF16 (none: bf16 would be emulated, slower)."""
    return [name for flag, name in BF16_UNITS.items() if flag in cpu_flags()]


def runtime_version(runtime: str) -> str:
    return importlib.metadata.version("torch" if runtime == "torch" else runtime)


def resolve_runtime(
    runtime: str, device: str, precision: str = "float32", compile: bool = False, shipped: bool = True
) -> str:
    """The runtime a worker with ``device`` (``cpu`` or ``cuda``, resolved) runs the network in.

    ``auto``: the first installed of :data:`AUTO_ORDER` for the precision on a CPU with a shipped backbone,
    else torch (with one log line when none is installed).  A named runtime other than torch is refused
    (``ValueError``) where it does not apply (a GPU, a precision it does not run, ``compile``), and when it
    is not installed.  ``bfloat16`` on a CPU without AMX or AVX-512 BF16 is refused in any runtime.
    """
    if runtime not in ("auto", *RUNTIMES):
        raise ValueError(f"unknown runtime {runtime!r}; known: auto, {', '.join(RUNTIMES)}")
    cpu = not device.startswith("cuda")
    if cpu and precision == "bfloat16" and not bf16_units():
        raise ValueError(
            "features.precision bfloat16 on CPU workers needs AMX or AVX-512 BF16, and this CPU has neither: "
            "it would emulate bf16 and run slower than float32. Use precision float32 here, or device cuda "
            "on GPU workers"
        )
    if runtime == "torch":
        return runtime
    unfit = "a CUDA device" if not cpu else "compile: true" if compile else ""
    if runtime == "auto":
        order = AUTO_ORDER.get(precision, ())
        if unfit or not shipped or not order:
            return "torch"
        found = next((r for r in order if available(r)), None)
        if found is None:
            log.info(
                "features.runtime auto: %s not installed; the network runs in torch (%s for about %s on CPU)",
                " nor ".join(order),
                INSTALL[order[0]],
                AUTO_GAIN[precision],
            )
            return "torch"
        return found
    unfit = unfit or ("" if precision in PRECISIONS[runtime] else f"precision {precision}")
    if unfit:
        runs = " or ".join(PRECISIONS[runtime])
        raise ValueError(f"features.runtime {runtime} runs {runs} on CPU workers; not with {unfit} (use torch)")
    if not available(runtime):
        raise ValueError(f"features.runtime {runtime} is not installed here: {INSTALL[runtime]}")
    return runtime


def onnx_file(cache_dir: str, backbone_key: str, input_size: int, runtime: str) -> str:
    """Where the exported network is cached: named by what it depends on (read without importing torch)."""
    record = f"{backbone_key}|{input_size}px|torch {runtime_version('torch')}|{runtime} {runtime_version(runtime)}"
    return os.path.join(cache_dir, "onnx", hashlib.sha256(record.encode()).hexdigest()[:32] + ".onnx")


def export_onnx(model, input_size: int, path: str) -> None:
    """Export ``model`` (``(N, 3, S, S)`` float32 -> ``(N, D)``) to ``path`` with a dynamic batch, atomically."""
    import torch

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    example = torch.zeros(2, 3, input_size, input_size)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding and its future
            torch.onnx.export(
                model,
                (example,),
                tmp,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class OnnxRunner:
    """An exported network in ONNX Runtime or OpenVINO on ``threads`` CPU threads: ``(N, 3, S, S)`` float32
    numpy in, ``(N, D)`` float32 numpy out; OpenVINO computes in bf16 with ``precision`` ``bfloat16``."""

    def __init__(self, path: str, runtime: str, threads: int = 1, precision: str = "float32"):
        self.runtime = runtime
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads  # one per Dask thread, as torch is set
            options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        elif runtime == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(
                path,
                "CPU",
                {
                    "INFERENCE_NUM_THREADS": threads,
                    "NUM_STREAMS": 1,
                    # not pinned: each of a node's worker processes would pin its threads to the same first
                    # cores (measured: two 1-thread workers shared one core, 51 % each)
                    "ENABLE_CPU_PINNING": False,
                    "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
                },
            )
            self._request = compiled.create_infer_request()
        else:
            raise ValueError(f"OnnxRunner runs onnxruntime or openvino, not {runtime}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.runtime == "onnxruntime":
            return self._session.run(None, {"images": x})[0]
        return np.array(self._request.infer({0: x})[0], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def load_runner(
    backbone: str,
    weights: str | None,
    input_size: int,
    runtime: str,
    threads: int,
    cache_dir: str,
    precision: str = "float32",
) -> OnnxRunner:
    """The network of ``backbone`` (and ``weights``) in ``runtime`` at ``precision``, from the export cache
    (exported on a miss, or when the cached file does not load); once per process."""
    from aurora_batch.model.backbones import backbone_id, load_backbone, model_file_sha256

    key = f"{backbone_id(backbone)}|{model_file_sha256(weights) if weights else 'shipped weights'}"
    path = onnx_file(cache_dir, key, input_size, runtime)
    if not os.path.exists(path):
        export_onnx(load_backbone(backbone, weights, "cpu"), input_size, path)
    try:
        return OnnxRunner(path, runtime, threads, precision)
    except Exception as err:  # a truncated or corrupt cache file: export again
        log.warning("cached network %s does not load in %s (%s); exporting it again", path, runtime, err)
        os.remove(path)
        export_onnx(load_backbone(backbone, weights, "cpu"), input_size, path)
        return OnnxRunner(path, runtime, threads, precision)
