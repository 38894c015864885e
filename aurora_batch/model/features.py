"""Running a backbone over batches of images: the device, threads and batch sizes of a worker, and the
extractor that feeds a network (torch, or the network exported to ONNX: :mod:`aurora_batch.model.runtimes`).
Features are float32 whatever the precision the network runs at.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from aurora_batch.model.backbones import (
    BACKBONES,
    compile_cache_dir,
    feature_dim,
    load_backbone,
    load_int8_backbone,
)

#: images per forward pass when ``features.batch_size`` is not set: CPU, CUDA (halved on out-of-memory)
DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 512}


@functools.lru_cache(maxsize=1)
def _raise_mmap_threshold() -> bool:
    """Keep CNN activations on the malloc heap instead of fresh mmaps (glibc only).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes
    glibc's mmap threshold at 128 KiB: every activation buffer is then mmapped and
    page-faulted anew, halving CPU inference speed (measured: 32 vs 60 img/s per core).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def freeze_long_lived_objects() -> None:
    """Move every object alive now (Dask's state, the model, torch.compile's caches) out of the
    cyclic garbage collector's reach, once per worker process, after its first forward pass.

    Full collections otherwise walk those millions of long-lived objects again and again:
    measured, 18 % of a worker's CPU time in a compiled season.
    """
    import gc

    gc.collect()
    gc.freeze()


_THREADS: int | None = None  #: the network's intra-op threads in this process, as :func:`tune_process` set them


def tune_process(threads: int | None = None) -> bool:
    """Per-process settings for fast CPU inference: the network's intra-op threads and the allocator.

    The threads apply to whichever runtime runs the network; torch gets them when it is imported for it
    (:func:`import_torch`), so a worker whose network runs in ONNX Runtime never imports torch (1-1.6 s).
    Returns whether glibc's allocator thresholds were set (False off glibc).
    """
    global _THREADS
    malloc_tuned = _raise_mmap_threshold()
    if threads:
        _THREADS = threads
        if "torch" in sys.modules:
            import_torch()
    return malloc_tuned


def intra_op_threads() -> int:
    """The network's intra-op threads in this process: as :func:`tune_process` set them, else torch's default."""
    return _THREADS or import_torch().get_num_threads()


def import_torch():
    """``torch``, with the intra-op threads :func:`tune_process` set."""
    import torch

    if _THREADS and torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)
    return torch


def no_gpu_here() -> bool:
    """Whether this is a Linux host with no GPU device node (NVIDIA's ``/dev/nvidia0``…, ROCm's ``/dev/kfd``):
    torch cannot find CUDA there, so the question needs no torch import (1 s of a job's start)."""
    return sys.platform == "linux" and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd")


def pick_device(device: str = "auto") -> str:
    """``cuda`` when asked for or when ``auto`` finds a GPU, else ``cpu``."""
    if device == "auto" and no_gpu_here():
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("features.device is 'cuda' but this worker has no CUDA device")
    return device


def default_batch_size(device: str) -> int:
    return DEFAULT_BATCH_SIZE["cuda" if device.startswith("cuda") else "cpu"]


def default_decode_threads(device: str) -> int:
    """Decode threads a task needs to feed its network: on CPU none (0: the task's own thread
    decodes, its core is busy anyway), on CUDA one per core the worker process may use, less one
    for the feeding thread (at most 16)."""
    if not device.startswith("cuda"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(16, cores - 1))


class FeatureExtractor:
    """Batched CNN features on one device: :meth:`push` batches, then :meth:`result`.

    On CPU each push runs the network at once.  On CUDA a push only queues work: the batch
    is copied into one of two pinned host buffers, sent to the GPU with a non-blocking copy
    on a side stream (so it overlaps the compute of the previous batch), and the network
    runs on the compute stream; features stay on the GPU until :meth:`result`.  The caller's
    thread is free to assemble the next batch meanwhile.

    ``precision`` ``float16``/``bfloat16`` runs the network under autocast; ``int8`` (CPU only)
    runs it quantised (:mod:`aurora_batch.model.quantize`, calibrated through ``recipe``); features are
    returned as float32 whatever the precision.  With ``compile`` (and int8, which is compiled)
    every batch is padded to ``batch_size`` so that the graph is never rebuilt for a short last batch.
    ``runtime`` (:mod:`aurora_batch.model.runtimes`): ``torch``, or the network exported to ONNX and run by
    ``onnxruntime`` or ``openvino`` on CPU (``bfloat16``: OpenVINO's bf16); ``auto`` picks
    (:func:`~aurora_batch.model.runtimes.resolve_runtime`).
    """

    def __init__(
        self,
        backbone: str = "efficientnet-lite0",
        weights: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        precision: str = "float32",
        compile: bool = False,
        input_size: int = 128,
        compile_cache: str | None = None,
        recipe: str = "lite128",
        runtime: str = "torch",
    ):
        from aurora_batch.model.runtimes import load_runner, resolve_runtime

        self.device = pick_device(device)
        self.cuda = self.device.startswith("cuda")
        self.batch_size = batch_size or default_batch_size(self.device)
        self.compile = compile or precision == "int8"
        self.runtime = resolve_runtime(runtime, self.device, precision, compile, backbone in BACKBONES)
        self.model: Callable[..., Any]  #: an exported network's runner (numpy in and out) or a torch module
        if self.runtime != "torch":  # exported: torch is imported only to export it on a cache miss
            self.model = load_runner(
                backbone,
                weights,
                input_size,
                self.runtime,
                intra_op_threads(),
                compile_cache_dir(compile_cache),
                precision,
            )
        elif precision == "int8":
            if self.cuda:
                raise ValueError("features.precision: int8 is for CPU workers; on a GPU use float16 or bfloat16")
            import_torch()  # with this process's threads, before the model is built
            self.model = load_int8_backbone(backbone, weights, recipe, self.batch_size, compile_cache)
        else:
            import_torch()
            self.model = load_backbone(backbone, weights, self.device, compile, compile_cache)
        self.dim = feature_dim(backbone, input_size, self.device)
        exact_or_exported = precision in ("float32", "int8") or self.runtime != "torch"
        self.autocast = None if exact_or_exported else precision  #: a torch dtype's name
        self._outputs: list = []
        self._buffers: dict = {}
        if self.cuda:
            self._copy_stream = import_torch().cuda.Stream(device=self.device)

    def push(self, batch) -> None:
        """Queue ``(N, 3, S, S)`` float32 images, a numpy array or a tensor already on the device (the
        :mod:`~aurora_batch.model.torch_recipes` output); any N (split into ``batch_size`` pieces)."""
        for i in range(0, len(batch), self.batch_size):
            self._run(batch[i : i + self.batch_size])

    def result(self) -> np.ndarray:
        """``(N, D)`` float32 features of everything pushed, in order; resets the extractor."""
        outputs, self._outputs = self._outputs, []
        if not outputs:
            return np.empty((0, self.dim), np.float32)
        if self.cuda:
            return import_torch().cat(outputs).cpu().numpy()
        return np.concatenate(outputs)

    def _run(self, x) -> None:
        if self.runtime != "torch":  # an exported network on CPU: numpy in, numpy out
            self._outputs.append(self.model(x if isinstance(x, np.ndarray) else x.numpy()))
            return
        torch = import_torch()
        n = len(x)
        on_device = isinstance(x, torch.Tensor)
        if self.compile and n < self.batch_size:
            pad = (self.batch_size - n, *x.shape[1:])
            x = torch.cat([x, x.new_zeros(pad)]) if on_device else np.concatenate([x, np.zeros(pad, x.dtype)])
        with torch.inference_mode(), self._autocast():
            if self.cuda:
                try:
                    self._outputs.append(self.model(x if on_device else self._to_device(x))[:n].float())
                except torch.cuda.OutOfMemoryError:
                    if self.batch_size == 1:
                        raise
                    torch.cuda.empty_cache()
                    self.batch_size //= 2
                    self.push(x[:n])
                return
            t = (x if on_device else torch.from_numpy(np.ascontiguousarray(x))).contiguous(
                memory_format=torch.channels_last
            )
            self._outputs.append(self.model(t)[:n].float().numpy())

    def _to_device(self, x: np.ndarray):
        """Copy through a pinned buffer on the side stream; the compute stream waits for it."""
        import torch

        slot = len(self._outputs) % 2
        host, done = self._buffers.get((slot, x.shape), (None, None))
        if host is None:
            host, done = torch.empty(x.shape, dtype=torch.float32, pin_memory=True), torch.cuda.Event()
            self._buffers[(slot, x.shape)] = host, done
        else:
            done.synchronize()  # the copy that last read this buffer has finished
        host.numpy()[...] = x
        with torch.cuda.stream(self._copy_stream):
            dev = host.to(self.device, non_blocking=True)
            done.record()
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(done)
        dev.record_stream(compute)
        return dev

    def _autocast(self):
        import contextlib

        import torch

        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda" if self.cuda else "cpu", dtype=getattr(torch, self.autocast))


def extract_features(
    batch: np.ndarray,
    name: str = "efficientnet-lite0",
    weights: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
) -> np.ndarray:
    """Features ``(N, D)`` float32 for preprocessed images ``batch`` of shape ``(N, 3, S, S)``."""
    extractor = FeatureExtractor(name, weights, device, batch_size, input_size=batch.shape[-1])
    extractor.push(batch)
    return extractor.result()
