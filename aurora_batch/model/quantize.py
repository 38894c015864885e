"""int8 CPU inference (``features.precision: int8``): post-training static quantisation with PT2E.

The float network (batch norms already folded, "same" padding already inside the stride-1
convolutions) is exported (``torch.export``, strict, so each convolution keeps its module name),
annotated by torchao's ``X86InductorQuantizer`` (int8 activations per tensor, weights per
channel), calibrated on :data:`CALIBRATION_FRAMES` SYNTHETIC sky frames of every class drawn by
the sky model and put through the job's own recipe, converted, and compiled by Inductor (which
fuses the quantised convolutions with their activations and prepacks the weights for oneDNN).

Only the 1×1 expansion convolutions of EfficientNet-Lite0's MBConv blocks run in int8, and not
those of its last two blocks (:func:`int8_convolutions`): measured on 2 AMD EPYC cores
(``benchmarks/int8.py``), quantising every convolution ran 3.1× float32 eager but moved the
6-class label of 4 % of the real sample frames (per-frame feature cosine ≥ 0.990); the stem, the
depthwise and projection convolutions, the last blocks and the head kept float32 cost half of that
speed and keep every label (cosine ≥ 0.998).  Calibration is fixed (same frames, same seed), so
every worker of every run quantises identically, and the scheme is part of the fingerprint
(:data:`INT8_SCHEME`): int8 and float32 features are never mixed in a month.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 96  #: SYNTHETIC frames (16 of each of the 6 sky classes) that set the activation ranges
CALIBRATION_SEED = 20  #: their seed: a fixed calibration, identical on every worker
INT8_SCHEME = f"int8:pt2e-x86,expand-convs-but-last-2-blocks,cal{CALIBRATION_FRAMES}s{CALIBRATION_SEED}"


@functools.lru_cache(maxsize=4)
def calibration_inputs(recipe: str, n: int = CALIBRATION_FRAMES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``(n, 3, S, S)`` float32: SYNTHETIC sky frames of every class (arc, diffuse, discrete, cloudy, moon,
    clear) across a night, through ``recipe``."""
    import pandas as pd

    from aurora_batch.datasets.synth import CLASSES, render_frame
    from aurora_batch.model.recipes import get_recipe

    rng = np.random.default_rng(seed)
    prepare = get_recipe(recipe)
    start = pd.Timestamp("2010-12-01T18:00")
    return np.stack(
        [prepare(render_frame(CLASSES[i % len(CLASSES)], start + pd.Timedelta(minutes=7 * i), rng)) for i in range(n)]
    )


def int8_convolutions(model, spare_last_blocks: int = 2) -> list[str]:
    """Names of the convolutions run in int8: the 1×1 expansions of an EfficientNet's MBConv blocks, but those
    of its last ``spare_last_blocks`` blocks (every other convolution stays float32)."""
    import torch

    blocks = {name.split(".")[-2] for name, m in model.named_modules() if name.endswith("._expand_conv")}
    last = sorted(int(b) for b in blocks)[-spare_last_blocks:] if spare_last_blocks else []
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and name.endswith("._expand_conv") and int(name.split(".")[-2]) not in last
    ]


def quantize_int8(model, recipe: str, batch_size: int = 16, cache_dir: str | None = None, key: str = ""):
    """``model`` (float32, eval, on CPU) quantised to int8 and compiled (for one batch size: pad to it).

    With ``cache_dir``, the quantised program is saved there (``torch.export``, named by ``key``, the
    scheme and the torch and torchao versions) and later processes load it instead of exporting and
    calibrating again (about 5 s a worker).  Raises ``ValueError`` for a network with no EfficientNet
    expansion convolutions to quantise.
    """
    import torch

    if isinstance(model, torch.jit.ScriptModule) or not int8_convolutions(model):
        raise ValueError("features.precision: int8 is for the shipped EfficientNet backbones")
    path = _cache_path(cache_dir, key, recipe) if cache_dir else None
    converted = _load_quantised(path) if path else None
    if converted is None:
        converted = _quantise(model, recipe, batch_size)
        if path:
            _save_quantised(converted, path, calibration_inputs(recipe)[:2])
    import torch._inductor.config as inductor

    # The weights are constants, which Inductor then prepacks into oneDNN's int8 layout.  Set for the
    # process (compile options do not reach the prepacking pass); every network here serves inference only.
    inductor.freezing = True
    return torch.compile(converted, dynamic=False)


def _torchao():
    """torchao's PT2E functions; importing them also registers the quantised operators a saved program uses."""
    torchao_log = logging.getLogger("torchao")
    level, torchao_log.level = torchao_log.level, logging.ERROR  # its CUDA-only kernels do not load on CPU hosts
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    finally:
        torchao_log.setLevel(level)
    return prepare_pt2e, convert_pt2e, x86


def _quantise(model, recipe: str, batch_size: int):
    import torch

    prepare_pt2e, convert_pt2e, x86 = _torchao()
    calib = torch.from_numpy(calibration_inputs(recipe)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exported = torch.export.export(
            model, (calib[:2],), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), strict=True
        ).module()
        quantizer, config = x86.X86InductorQuantizer(), x86.get_default_x86_inductor_quantization_config()
        for name in int8_convolutions(model):
            quantizer.set_module_name_qconfig(name, config)
        prepared = prepare_pt2e(exported, quantizer)
        for i in range(0, len(calib), batch_size):
            prepared(calib[i : i + batch_size])
        return convert_pt2e(prepared)


def _cache_path(cache_dir: str, key: str, recipe: str) -> str:
    import hashlib
    import importlib.metadata
    import os

    import torch

    versions = f"torch {torch.__version__}, torchao {importlib.metadata.version('torchao')}"
    digest = hashlib.sha256(f"{INT8_SCHEME}|{key}|{recipe}|{versions}".encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"aurora-int8-{digest}.pt2")


def _load_quantised(path: str):
    """The quantised program saved at ``path``, or None (missing, or unreadable: it is then rebuilt)."""
    import os

    import torch

    if not os.path.exists(path):
        return None
    _torchao()
    try:
        return torch.export.load(path).module()
    except Exception as err:  # a truncated or foreign file: quantise again and replace it
        log.warning("cached int8 program %s unreadable (%s: %s); quantising again", path, type(err).__name__, err)
        return None


def _save_quantised(converted, path: str, example: np.ndarray) -> None:
    """Save atomically (a temporary file renamed), so a concurrent worker never loads half a file; ``example``:
    inputs of the recipe's shape (the batch dimension stays dynamic)."""
    import os
    import tempfile

    import torch

    x = torch.from_numpy(example).contiguous(memory_format=torch.channels_last)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-", suffix=".pt2")
    os.close(fd)
    try:
        program = torch.export.export(converted, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, tmp)
        os.chmod(tmp, 0o644)  # a cache shared by the workers of a cluster
        os.replace(tmp, path)
    except Exception as err:  # the cache is an optimisation: a failure to write it only costs the next worker time
        log.warning("could not cache the int8 program at %s (%s: %s)", path, type(err).__name__, err)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
