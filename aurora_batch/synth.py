"""A SYNTHETIC all-sky archive for demos and tests — not real data.

Frames are drawn by a small sky model: a circular fisheye field of view, a star field that
turns with sidereal time, sky background brightening towards the horizon, sensor noise, and
one of six sky states (the OATH classes): auroral arcs, diffuse patches, discrete curls,
clouds, moonlight, or a clear sky.  Files use the UiO ASIM names and tree
(``nya4/5577/2010/20101201/nya4_20101201_000000_5577_cal.png``) and are 16-bit grey PNGs.
The true class of each frame is written to ``labels.csv`` beside them.
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .fs import filesystem, join_url

__all__ = ["CLASSES", "SkyModel", "render_frame", "write_archive", "asim_name"]

CLASSES = ("arc", "diffuse", "discrete", "cloudy", "moon", "clear")  #: OATH class6 order
SIDEREAL_DAY_S = 86164.0905


@dataclasses.dataclass(frozen=True)
class SkyModel:
    size: int = 256  #: image side, pixels
    background: float = 900.0  #: counts at zenith
    noise: float = 40.0  #: counts, 1 sigma
    n_stars: int = 160


def _grid(size: int):
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dx, dy = xx - c, yy - c
    r = np.hypot(dx, dy) / (size / 2)  # 0 at zenith, 1 at horizon
    return dx, dy, r


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _band(dx, dy, rng, width, curl=0.0):
    """A roughly east-west band across the sky, optionally folded into curls."""
    angle = rng.uniform(-0.4, 0.4)
    offset = rng.uniform(-0.5, 0.5) * dx.shape[0] / 2
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle) - offset
    bend = 0.0015 * rng.uniform(-1, 1) * u**2
    if curl:
        bend = bend + curl * np.sin(u / rng.uniform(6, 14) + rng.uniform(0, 6.3))
    return np.exp(-0.5 * ((v - bend) / width) ** 2)


def render_frame(cls: str, t: pd.Timestamp, rng: np.random.Generator, model: SkyModel = SkyModel(),
                 star_field: np.ndarray | None = None) -> np.ndarray:
    """One uint16 frame of sky state ``cls`` at time ``t``."""
    size = model.size
    dx, dy, r = _grid(size)
    fov = r <= 0.95
    sky = model.background * (1 + 0.8 * r**2)
    stars = np.zeros((size, size), np.float32)
    field = star_field if star_field is not None else np.random.default_rng(0).random((model.n_stars, 3))
    theta = field[:, 0] * 2 * np.pi + 2 * np.pi * (t.timestamp() % SIDEREAL_DAY_S) / SIDEREAL_DAY_S
    rad = np.sqrt(field[:, 1]) * 0.9 * size / 2
    xs = np.clip(np.round(size / 2 + rad * np.cos(theta)).astype(int), 0, size - 1)
    ys = np.clip(np.round(size / 2 + rad * np.sin(theta)).astype(int), 0, size - 1)
    stars[ys, xs] = 400 + 2500 * field[:, 2] ** 3
    light = np.zeros((size, size), np.float32)
    if cls == "arc":
        for _ in range(rng.integers(1, 3)):
            light += rng.uniform(2500, 6000) * _band(dx, dy, rng, rng.uniform(3, 7))
    elif cls == "diffuse":
        light += rng.uniform(800, 2000) * _smooth_noise(rng, size, 4) ** 2
    elif cls == "discrete":
        for _ in range(rng.integers(1, 4)):
            light += rng.uniform(5000, 12000) * _band(dx, dy, rng, rng.uniform(2, 4), curl=rng.uniform(8, 25))
    elif cls == "cloudy":
        cover = np.clip(_smooth_noise(rng, size, 6) * 1.6 - 0.2, 0, 1)
        stars *= 1 - cover
        light += rng.uniform(600, 1500) * cover
    elif cls == "moon":
        mr, ma = rng.uniform(0.3, 0.85) * size / 2, rng.uniform(0, 2 * np.pi)
        d = np.hypot(dx - mr * np.cos(ma), dy - mr * np.sin(ma))
        light += 20000 * np.exp(-0.5 * (d / 4) ** 2) + rng.uniform(3000, 8000) * np.exp(-d / (size / 5))
        stars *= 0.3
    elif cls != "clear":
        raise ValueError(f"unknown class {cls!r}; expected one of {CLASSES}")
    img = sky + stars + light + rng.normal(0, model.noise, (size, size))
    img = np.where(fov, img, rng.normal(100, 10, (size, size)))
    return np.clip(img, 0, 65535).astype(np.uint16)


def asim_name(station: str, t: pd.Timestamp, wavelength: int = 5577, camera: int = 4) -> str:
    """UiO ASIM relative path: ``nya4/5577/2010/20101207/nya4_20101207_233450_5577_cal.png``."""
    loc = f"{station.lower()}{camera}"
    return f"{loc}/{wavelength}/{t:%Y}/{t:%Y%m%d}/{loc}_{t:%Y%m%d_%H%M%S}_{wavelength}_cal.png"


def _png16(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_archive(url: str, stations: Sequence[str], start, end, cadence: str = "10min", seed: int = 1,
                  wavelength: int = 5577, corrupt: int = 0, storage_options: dict | None = None,
                  model: SkyModel = SkyModel(), persistence: float = 0.85) -> pd.DataFrame:
    """Write a SYNTHETIC ASIM archive under ``url``; returns (and writes) its labels table.

    Sky states follow a Markov chain per station (stay with probability ``persistence``).
    While the Moon is up (Skyfield, at the station's site) the state is ``moon`` most of
    the time.  ``corrupt`` extra files exercise the rejection paths: an empty PNG, a
    truncated PNG and a file whose name fits no layout, in turn.
    """
    from .ephemeris import sun_moon
    from .stations import get_station

    rng = np.random.default_rng(seed)
    fs, root = filesystem(url, storage_options)
    times = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=cadence, inclusive="left")
    rows = []
    for station in stations:
        site = get_station(station)
        moon_up = sun_moon(times, site.latitude, site.longitude, site.altitude_m)["moon_alt"].to_numpy() > 0
        star_field = rng.random((model.n_stars, 3))
        state = int(rng.integers(len(CLASSES)))
        batch: dict[str, bytes] = {}
        for t, up in zip(times, moon_up):
            if rng.random() > persistence:
                state = int(rng.integers(len(CLASSES)))
            cls = "moon" if up and rng.random() < 0.8 else CLASSES[state]
            rel = asim_name(station, t, wavelength)
            batch[f"{root}/{rel}"] = _png16(render_frame(cls, t, rng, model, star_field))
            rows.append((rel, station.upper(), t, wavelength, CLASSES.index(cls), cls))
            if len(batch) >= 256:
                fs.pipe(batch)
                batch = {}
        if batch:
            fs.pipe(batch)
    labels = pd.DataFrame(rows, columns=["file", "station", "time", "wavelength", "class6", "label"])
    if corrupt:
        _write_corrupt(fs, root, labels, corrupt)
    out = labels.assign(time=labels["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    fs.pipe_file(f"{root}/labels.csv", out.to_csv(index=False).encode())
    fs.pipe_file(f"{root}/README.txt", (
        "SYNTHETIC all-sky archive written by `aurora-batch synth`. These are not real observations.\n"
        "labels.csv gives the true sky state of each frame (OATH class6: "
        + ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)) + ").\n").encode())
    return labels


def _write_corrupt(fs, root: str, labels: pd.DataFrame, n: int) -> None:
    good = fs.cat_file(f"{root}/{labels['file'].iloc[0]}")
    last = labels["time"].max()
    station = labels["station"].iloc[0].lower()
    for i in range(n):
        t = last - pd.Timedelta(seconds=i + 1)  # a free time stamp inside the range
        kind = i % 3
        if kind == 0:
            fs.pipe_file(f"{root}/{asim_name(station, t)}", b"")
        elif kind == 1:
            fs.pipe_file(f"{root}/{asim_name(station, t)}", good[: len(good) // 3])
        else:
            fs.pipe_file(f"{root}/broken/{station}4_notadate_{i}.png", good)
