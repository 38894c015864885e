"""The preprocessing recipes in torch, on a batch of frames, on the network's device.

A GPU worker's CPU threads then only read and decode: grey conversion, the percentile
stretch, masks, resizing, the median filter and crops run on the GPU, a batch at a time.
Each function here equals its numpy twin in :mod:`aurora_batch.model.recipes` within 1e-5 on CPU
(tested for every recipe on 8- and 16-bit, grey and colour frames): the steps numpy does in
float64 (the stretch, whose percentiles numpy returns as float64) are done in float64 here
too, and resizing multiplies by the very weights Pillow uses, read off Pillow itself
(:func:`resize_weights`).

Frames are ``(B, H, W)`` (grey) or ``(B, H, W, 3)`` (colour) float32 tensors of one shape,
in the file's own units; masks are ``(H, W)`` booleans on the same device (the field of view
shared by the batch; None: the inscribed circle).  Results are ``(B, 3, S, S)`` float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from aurora_batch.formats.decode import ImageError
from aurora_batch.model.recipes import IMAGENET_MEAN, IMAGENET_STD, Recipe, circle_mask


@functools.lru_cache(maxsize=32)
def resize_weights(n_in: int, n_out: int, box: bool) -> np.ndarray:
    """``(n_out, n_in)`` float32: Pillow's resampling weights along one axis (box filter or bilinear).

    Resizing is linear and Pillow resamples one axis at a time, so resizing an identity
    matrix along one axis yields exactly the weights it applies.
    """
    from PIL import Image

    method = Image.Resampling.BOX if box else Image.Resampling.BILINEAR
    eye = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
    return np.ascontiguousarray(np.asarray(eye.resize((n_out, n_in), method)).T)


@functools.lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int, box: bool, device: str):
    """:func:`resize_weights` on ``device``, sent there once per process."""
    import torch

    return torch.from_numpy(resize_weights(n_in, n_out, box)).to(device)


def resize(x, size: int):
    """``(..., H, W)`` -> ``(..., size, size)`` as :func:`aurora_batch.model.recipes.resize` (box when shrinking)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    box, device = min(h, w) >= size, str(x.device)
    return _weights(h, size, box, device) @ x @ _weights(w, size, box, device).T


def grey(x):
    """Mean over the colour channels (``(B, H, W, 3)`` -> ``(B, H, W)``); grey frames as they are."""
    return x.mean(dim=-1) if x.ndim == 4 else x


def percentiles(values, qs: Sequence[float]):
    """``(len(qs), B)`` float64: numpy's linear percentiles of each row of ``(B, N)`` values."""
    import torch

    ordered = values.sort(dim=1).values
    n = ordered.shape[1]
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        i = min(int(pos), n - 1)
        t = pos - i
        a, b = ordered[:, i].double(), ordered[:, min(i + 1, n - 1)].double()
        out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))  # numpy's lerp
    return torch.stack(out)


def robust_unit(x, mask, lo_pct: float, hi_pct: float):
    """Each frame of ``(B, H, W)`` stretched between its percentiles inside ``mask`` to [0, 1], zero outside."""
    import torch

    inside = x[:, mask]
    if inside.shape[1]:
        lo, hi = percentiles(inside, [lo_pct, hi_pct])
    else:
        lo = hi = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        hi = hi + 1
    lo, hi = lo[:, None, None], hi[:, None, None]
    span = hi - lo
    scaled = torch.where(span > 0, ((x.double() - lo) / span.clamp_min(1e-300)).clamp(0, 1), 0.0)
    return torch.where(mask, scaled, 0.0).float()


@functools.lru_cache(maxsize=16)
def _circle(shape: tuple[int, int], device: str):
    import torch

    return torch.tensor(circle_mask(shape), device=device)


def _fov(x, mask):
    return mask if mask is not None else _circle(tuple(x.shape[1:3]), str(x.device))


def _full_scale(x):
    """Per frame, as :func:`aurora_batch.model.recipes.full_scale`: 255 for 8-bit data, 65535 above;
    ``(B, 1, 1[, 1])``."""
    import torch

    peak = x.reshape(len(x), -1).amax(dim=1)
    scale = torch.where(peak <= 255, 255.0, 65535.0)
    return scale.reshape(-1, *([1] * (x.ndim - 1)))


def lite128(x, mask=None):
    """:func:`aurora_batch.model.recipes.lite128` on a batch."""
    g = grey(x)
    unit = robust_unit(g, _fov(x, mask), 1.0, 99.5)
    return (resize(unit, 128) * 2.0 - 1.0)[:, None].expand(-1, 3, -1, -1).contiguous()


def _oath_tensor(x):
    """Unit-range ``(B, C, H, W)`` -> OATH's ``(B, 3, 256, 256)`` in [-1, 1]."""
    x = resize(x, 256)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return (x * 2.0 - 1.0).contiguous()


def _channels_first(x):
    return x[:, None] if x.ndim == 3 else x[..., :3].permute(0, 3, 1, 2)


def oath(x, mask=None):
    """:func:`aurora_batch.model.recipes.oath` on a batch."""
    return _oath_tensor(_channels_first(x / _full_scale(x)))


def oath_stretch(x, mask=None):
    """:func:`aurora_batch.model.recipes.oath_stretch` on a batch."""
    fov = _fov(x, mask)
    c = _channels_first(x)
    b, k = c.shape[:2]
    unit = robust_unit(c.reshape(b * k, *c.shape[2:]), fov, 1.0, 99.5).reshape(c.shape)
    return _oath_tensor(unit)


def tame_steps(x, size: int = 224, mask=None):
    import torch

    g = grey(x)
    m = _fov(x, mask)
    b = len(g)
    inside = g[:, m]
    if inside.shape[1]:
        lo, hi = percentiles(inside, [0.5, 99.5])
    else:
        lo = hi = torch.zeros(b, dtype=torch.float64, device=g.device)
    clipped = torch.minimum(torch.maximum(g.double(), lo[:, None, None]), hi[:, None, None])
    inside = clipped[:, m]
    if inside.shape[1]:
        low, span = inside.amin(dim=1), inside.amax(dim=1) - inside.amin(dim=1)
    else:
        low = span = torch.zeros(b, dtype=torch.float64, device=g.device)
    low, span = low[:, None, None], span[:, None, None]
    unit = torch.where(span > 0, (clipped - low) / span.clamp_min(1e-300), 0.0)
    unit = torch.where(m, unit, 0.0).float()
    rgb = torch.zeros((b, 3, size, size), dtype=torch.float32, device=g.device)
    rgb[:, 1] = resize(unit, size)
    return rgb


def tame(x, mask=None):
    """:func:`aurora_batch.model.recipes.tame` on a batch."""
    import torch

    mean = torch.from_numpy(IMAGENET_MEAN).to(x.device)[:, None, None]
    std = torch.from_numpy(IMAGENET_STD).to(x.device)[:, None, None]
    return (tame_steps(x, 224, mask) - mean) / std


def median3(x):
    """3×3 median of each ``(B, H, W)`` frame, edges padded by their nearest pixel (scipy's ``nearest``)."""
    import torch.nn.functional as F

    padded = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return padded.unfold(1, 3, 1).unfold(2, 3, 1).reshape(*x.shape, 9).median(dim=-1).values


def kvammen_steps(x, crop: int = 128):
    """As :func:`aurora_batch.model.recipes.kvammen_steps`: the transposed window, 3×3 median, 2×2 bin, centre crop."""
    rows, cols = x.shape[1:3]
    h, w = (cols // 2) * 2, (rows // 2) * 2
    if min(h, w) // 2 < crop:
        raise ImageError(f"image of {tuple(x.shape[1:])} is too small for a {crop}×{crop} crop after 2×2 binning")
    top, left = 2 * ((h // 2 - crop) // 2), 2 * ((w // 2 - crop) // 2)
    r0, r1 = max(top - 1, 0), min(top + 2 * crop + 1, cols)
    c0, c1 = max(left - 1, 0), min(left + 2 * crop + 1, rows)
    window = grey(x[:, c0:c1, r0:r1]).transpose(1, 2)
    med = median3(window)[:, top - r0 : top - r0 + 2 * crop, left - c0 : left - c0 + 2 * crop]
    return med.reshape(len(x), crop, 2, crop, 2).mean(dim=(2, 4))


def _three(x):
    return (x * 2.0 - 1.0)[:, None].expand(-1, 3, -1, -1).contiguous()


def kvammen(x, mask=None):
    """:func:`aurora_batch.model.recipes.kvammen` on a batch."""
    return _three(kvammen_steps(x) / _full_scale(x).reshape(-1, 1, 1))


def kvammen_stretch(x, mask=None):
    """:func:`aurora_batch.model.recipes.kvammen_stretch` on a batch."""
    import torch

    steps = kvammen_steps(x)
    return _three(robust_unit(steps, torch.ones(steps.shape[1:], dtype=torch.bool, device=x.device), 1.0, 99.5))


#: recipe name -> its torch twin: ``(B, H, W[, 3])`` frames and an ``(H, W)`` mask -> ``(B, 3, S, S)``
TORCH_RECIPES: dict[str, Callable] = {
    f.__name__: f for f in (lite128, oath, oath_stretch, tame, kvammen, kvammen_stretch)
}


def torch_recipe(recipe: Recipe) -> Callable:
    """The torch twin of ``recipe``."""
    try:
        return TORCH_RECIPES[recipe.name]
    except KeyError:
        raise KeyError(f"recipe {recipe.name!r} has no torch implementation; known: {sorted(TORCH_RECIPES)}") from None


def _same_mask(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b or (a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b))


class DeviceRecipe:
    """``recipe`` on ``device``: decoded frames (with their field-of-view masks) in, network input out.

    Consecutive frames of one shape and mask go to the device as one batch: 8-bit frames as
    they are (a quarter of the bytes), others as float32.
    """

    def __init__(self, recipe: Recipe, device: str):
        self.recipe, self.device, self.fn = recipe, device, torch_recipe(recipe)

    def __call__(self, frames: list[np.ndarray], masks: list[np.ndarray | None]):
        """``(N, 3, S, S)`` float32 on the device for ``N`` frames in order."""
        import torch

        out, start = [], 0
        for end in range(1, len(frames) + 1):
            if end < len(frames) and frames[end].shape == frames[start].shape and _same_mask(masks[end], masks[start]):
                continue
            group = np.stack(frames[start:end])
            group = group if group.dtype == np.uint8 else group.astype(np.float32, copy=False)
            x = torch.from_numpy(group).to(self.device, non_blocking=True).float()
            m = masks[start]
            mask = None if m is None else torch.from_numpy(m.copy()).to(self.device)
            out.append(self.fn(x, mask))
            start = end
        return torch.cat(out) if out else torch.empty((0, 3, self.recipe.size, self.recipe.size))
