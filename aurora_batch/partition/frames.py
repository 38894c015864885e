"""Judging one file's frames: the Sun and Moon filter per frame, sky checks, the stated site against the station
table, and the network input of the frames kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from aurora_batch.config import FilterConfig
from aurora_batch.core.ephemeris import sun_moon, sun_moon_reasons
from aurora_batch.core.keys import Status
from aurora_batch.formats.files import FileFrames
from aurora_batch.formats.skymap import Skymap, elevation_mask, skymap_for
from aurora_batch.model.recipes import Recipe
from aurora_batch.partition.clock import untimed
from aurora_batch.partition.sky import keogram_lines, range_fraction, saturated_fraction, sky_problem

log = logging.getLogger(__name__)

SITE_TOLERANCE_DEG = 0.05  #: a file's stated site position may differ this much from the station table
LOW_RANGE = 0.10  #: warn when a container-scaled recipe's input spans less than this share of its range


@dataclasses.dataclass
class Judged:
    """One file's frames, judged: a row per frame and the network input of the kept ones."""

    rows: list[dict]
    inputs: list[np.ndarray]
    keograms: list[np.ndarray] = dataclasses.field(default_factory=list)  #: (2, KEOGRAM_PIXELS) per input
    #: with a recipe run later on the network's device: each input is the decoded frame, and this its field of view
    masks: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    site_offset: float | None = None  #: degrees between the file's stated site and the station table
    low_range: bool = False  #: a container-scaled recipe's input spans < LOW_RANGE of its range


def _zenith(skymap: Skymap | None, shape: tuple[int, int]) -> tuple[float, float] | None:
    """The skymap's zenith pixel at an image's ``shape`` (a reduced decode scales it), or None."""
    if skymap is None:
        return None
    (row, col), (h, w) = skymap.zenith, skymap.elevation.shape
    return (row + 0.5) * shape[0] / h - 0.5, (col + 0.5) * shape[1] / w - 0.5


def site_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Largest of the latitude and (wrapped) longitude differences between two sites, degrees."""
    return max(abs(a[0] - b[0]), abs((a[1] - b[1] + 180) % 360 - 180))


def judge_frames(
    frames: FileFrames,
    row: dict,
    recipe: Recipe,
    site: tuple[float, float, float] | None,
    flt: FilterConfig,
    skymaps: Sequence[Skymap] = (),
    min_elevation: float = 10.0,
    clock: Callable = untimed,
    defer_recipe: bool = False,
) -> Judged:
    """Per frame: Sun and Moon at the frame's own time, the filter's verdict, the not-sky checks and the input.

    ``row`` is the file's catalog row (its ``time`` stands in for frames without a stamp);
    ``site`` is (latitude deg, longitude deg, altitude m), or None for a file of no known
    station (no Sun or Moon then, NaN).  Kept frames are preprocessed by ``recipe`` over the
    field of view of the skymap valid at their time (elevation at least ``min_elevation``
    degrees), else the recipe's own; their keogram lines go through that skymap's zenith, else
    the image centre.  With ``defer_recipe`` kept frames are left as decoded, with their masks, for the
    recipe's torch twin on the network's device (:class:`~aurora_batch.model.torch_recipes.DeviceRecipe`).
    """
    times = pd.DatetimeIndex([t or row["time"] for t in frames.times]).as_unit("ns")
    if site is None:
        sun = moon = illumination = np.full(len(times), np.nan)
    elif frames.times == [None] and np.isfinite(row.get("sun_alt", np.nan)):  # at the name's time: planned already
        sun, moon, illumination = (np.array([row[c]]) for c in ("sun_alt", "moon_alt", "moon_illumination"))
    else:
        with clock("ephemeris"):
            sun, moon, illumination = sun_moon(times, *site).to_numpy().T
    reasons = sun_moon_reasons(sun, moon, illumination, flt.sun_max_alt, flt.moon_max_alt, flt.moon_min_illumination)
    judged = Judged([], [])
    for i, (t, img) in enumerate(zip(times, frames.images)):
        status, detail, saturated = Status.KEPT, "", np.nan
        if reasons[i] == "sun":
            status, detail = Status.SUN, f"Sun above {flt.sun_max_alt} deg"
        elif reasons[i] == "moon":
            status, detail = Status.MOON, f"Moon above {flt.moon_max_alt} deg"
        else:
            with clock("checks"):
                problem = sky_problem(img, recipe)
                saturated = saturated_fraction(img) if problem is None else np.nan
            if problem is not None:
                status, detail = Status.NOT_SKY, problem
            else:
                skymap = skymap_for(skymaps, t.to_pydatetime()) if skymaps else None
                with clock("recipe"):
                    mask = elevation_mask(skymap, img.shape[:2], min_elevation) if skymap else None
                    if defer_recipe:
                        judged.masks.append(mask)
                    judged.inputs.append(img if defer_recipe else recipe(img, mask))
                with clock("keogram"):
                    judged.keograms.append(keogram_lines(img, _zenith(skymap, img.shape[:2])))
                judged.low_range |= bool(recipe.stretch_variant) and range_fraction(img) < LOW_RANGE
        judged.rows.append(
            {
                **row,
                "time": t,
                "status": status,
                "detail": detail,
                "frame": i,
                "sun_alt": sun[i],
                "moon_alt": moon[i],
                "moon_illumination": illumination[i],
                "saturated": saturated,
            }
        )
    if frames.site is not None and site is not None:
        judged.site_offset = site_distance(frames.site, site[:2])
    return judged
