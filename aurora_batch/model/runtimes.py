"""CPU inference runtimes: the torch network exported once to ONNX and run by ONNX Runtime (or OpenVINO).

The model is built and its weights loaded in torch as always (:func:`aurora_batch.model.features.load_backbone`);
then it is exported once to ONNX (TorchScript exporter, dynamic batch) and the file is cached in the
compile cache, named by the SHA-256 of what it depends on: the backbone and its weights, the input size,
and the torch and runtime versions.  A cache file that the runtime cannot load is exported again.

Measured on this project's 2-core AMD EPYC (AVX-512, VNNI, BF16; ``benchmarks/runtimes.py``): the shipped
EfficientNet-Lite0 at 128 px, batch 16, runs 1.6× torch eager on one thread with ONNX Runtime and 1.4× with
OpenVINO, both with a feature cosine to torch ≥ 0.9999999.  ``features.runtime: auto`` therefore picks ONNX
Runtime (a default dependency, no system library) for float32 on CPU workers, then OpenVINO where only it is
installed, else torch with one log line.  GPU workers, other precisions (float16, bfloat16, int8),
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
AUTO_ORDER = ("onnxruntime", "openvino")  #: fastest exact runtime first, as measured (module docs)
INSTALL = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install 'aurora-batch[openvino]'"}


def available(runtime: str) -> bool:
    """Whether ``runtime`` can be imported here."""
    return runtime == "torch" or importlib.util.find_spec(runtime) is not None


def runtime_version(runtime: str) -> str:
    return importlib.metadata.version("torch" if runtime == "torch" else runtime)


def resolve_runtime(
    runtime: str, device: str, precision: str = "float32", compile: bool = False, shipped: bool = True
) -> str:
    """The runtime a worker with ``device`` (``cpu`` or ``cuda``, resolved) runs the network in.

    ``auto``: the first installed of :data:`AUTO_ORDER` for float32 on a CPU with a shipped
    backbone, else torch.  A named runtime other than torch is refused (``ValueError``) where it
    does not apply (a GPU, another precision, ``compile``), and when it is not installed.
    """
    if runtime not in ("auto", *RUNTIMES):
        raise ValueError(f"unknown runtime {runtime!r}; known: auto, {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return runtime
    unfit = (
        "a CUDA device"
        if device.startswith("cuda")
        else f"precision {precision}"
        if precision != "float32"
        else "compile: true"
        if compile
        else ""
    )
    if runtime == "auto":
        if unfit or not shipped:
            return "torch"
        found = next((r for r in AUTO_ORDER if available(r)), None)
        if found is None:
            log.info(
                "features.runtime auto: neither onnxruntime nor openvino is installed; the network runs in "
                "torch (%s for about 1.6x on CPU)",
                INSTALL["onnxruntime"],
            )
            return "torch"
        return found
    if unfit:
        raise ValueError(f"features.runtime {runtime} runs float32 on CPU workers; not with {unfit} (use torch)")
    if not available(runtime):
        raise ValueError(f"features.runtime {runtime} is not installed here: {INSTALL[runtime]}")
    return runtime


def onnx_file(cache_dir: str, backbone_key: str, input_size: int, runtime: str) -> str:
    """Where the exported network is cached: named by what it depends on."""
    import torch

    record = f"{backbone_key}|{input_size}px|torch {torch.__version__}|{runtime} {runtime_version(runtime)}"
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
    numpy in, ``(N, D)`` float32 numpy out."""

    def __init__(self, path: str, runtime: str, threads: int = 1):
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
                path, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
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
    backbone: str, weights: str | None, input_size: int, runtime: str, threads: int, cache_dir: str
) -> OnnxRunner:
    """The network of ``backbone`` (and ``weights``) in ``runtime``, from the export cache (exported on a miss,
    or when the cached file does not load); once per process."""
    from aurora_batch.model.backbones import backbone_id, load_backbone, model_file_sha256

    key = f"{backbone_id(backbone)}|{model_file_sha256(weights) if weights else 'shipped weights'}"
    path = onnx_file(cache_dir, key, input_size, runtime)
    if not os.path.exists(path):
        export_onnx(load_backbone(backbone, weights, "cpu"), input_size, path)
    try:
        return OnnxRunner(path, runtime, threads)
    except Exception as err:  # a truncated or corrupt cache file: export again
        log.warning("cached network %s does not load in %s (%s); exporting it again", path, runtime, err)
        os.remove(path)
        export_onnx(load_backbone(backbone, weights, "cpu"), input_size, path)
        return OnnxRunner(path, runtime, threads)
