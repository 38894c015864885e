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
import functools
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from aurora_batch.core.classes import CLASSES6
from aurora_batch.core.fs import filesystem
from aurora_batch.formats.names import FORMATS

CLASSES = CLASSES6  #: OATH class6 order
SIDEREAL_DAY_S = 86164.0905


@dataclasses.dataclass(frozen=True)
class SkyModel:
    size: int = 256  #: image side, pixels
    background: float = 900.0  #: counts at zenith
    noise: float = 40.0  #: counts, 1 sigma
    n_stars: int = 160


@functools.lru_cache(maxsize=4)
def _grid(size: int):
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dx, dy = xx - c, yy - c
    r = np.hypot(dx, dy) / (size / 2)  # 0 at zenith, 1 at horizon
    for a in (dx, dy, r):
        a.flags.writeable = False
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


def render_frame(
    cls: str,
    t: pd.Timestamp,
    rng: np.random.Generator,
    model: SkyModel = SkyModel(),
    star_field: np.ndarray | None = None,
) -> np.ndarray:
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


#: colour of each sky state's light in a colour camera (R, G, B weights): green aurora, grey cloud
_TINT = {
    "arc": (0.35, 1.0, 0.45),
    "diffuse": (0.35, 1.0, 0.45),
    "discrete": (0.5, 1.0, 0.5),
    "cloudy": (0.8, 0.8, 0.85),
    "moon": (0.9, 0.9, 1.0),
    "clear": (0.4, 0.5, 0.9),
}


def render_colour_frame(
    cls: str,
    t: pd.Timestamp,
    rng: np.random.Generator,
    size: int = 2832,
    star_field: np.ndarray | None = None,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 frame like a modern colour all-sky camera's (DSLR/mirrorless).

    The sky model is drawn at a quarter of the size, upsampled, tinted by the sky state,
    and overlaid with full-resolution sensor noise (``noise``: a ``(size, size, 3)`` int8
    field, shifted at random each frame), so that JPEG sizes are realistic (about 1 MB at
    quality 90 for 2832²).
    """
    small = render_frame(cls, t, rng, SkyModel(size=size // 4), star_field).astype(np.float32)
    grey = np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    unit = np.clip((grey - 100.0) / 9000.0, 0, 1) ** 0.6 * 235.0
    if noise is None:
        noise = _noise_field(rng, size)
    shift = rng.integers(0, size, 2)
    rgb = unit[..., None] * np.asarray(_TINT[cls], np.float32) + 8.0
    rgb += np.roll(noise, tuple(shift), axis=(0, 1))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _noise_field(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.clip(rng.normal(0, 4.0, (size, size, 3)), -127, 127).astype(np.int8)


def colour_name(station: str, t: pd.Timestamp) -> str:
    """Relative path in the ``kiruna`` layout: ``LYR/2010/20101201/LYR_20101201_221500.jpg``."""
    return f"{station.upper()}/{t:%Y}/{t:%Y%m%d}/" + FORMATS["kiruna"].compose(station.upper(), t)


def write_colour_archive(
    url: str,
    station: str,
    start,
    end,
    cadence: str = "1min",
    seed: int = 1,
    size: int = 2832,
    quality: int = 90,
    storage_options: dict | None = None,
) -> pd.DataFrame:
    """Write a SYNTHETIC archive of ``size``² colour JPEGs (``kiruna`` layout); returns its labels."""
    rng = np.random.default_rng(seed)
    fs, root = filesystem(url, storage_options)
    times = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=cadence, inclusive="left")
    star_field = rng.random((SkyModel().n_stars, 3))
    noise = _noise_field(rng, size)
    rows, state = [], int(rng.integers(len(CLASSES)))
    for t in times:
        if rng.random() > 0.85:
            state = int(rng.integers(len(CLASSES)))
        buf = io.BytesIO()
        Image.fromarray(render_colour_frame(CLASSES[state], t, rng, size, star_field, noise)).save(
            buf, format="JPEG", quality=quality
        )
        rel = colour_name(station, t)
        fs.pipe_file(f"{root}/{rel}", buf.getvalue())
        rows.append((rel, station.upper(), t, CLASSES[state], buf.tell()))
    return pd.DataFrame(rows, columns=["file", "station", "time", "label", "bytes"])


def asim_name(station: str, t: pd.Timestamp, wavelength: int = 5577, camera: int = 4) -> str:
    """UiO ASIM relative path: ``nya4/5577/2010/20101207/nya4_20101207_233450_5577_cal.png``."""
    name = FORMATS["asim"].compose(station.lower(), t, camera=camera, wavelength=wavelength)
    return f"{station.lower()}{camera}/{wavelength}/{t:%Y}/{t:%Y%m%d}/{name}"


def _png16(img: np.ndarray) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.png_encode(img, level=1))  # 4 ms a 256² frame; Pillow 7 ms


def write_archive(
    url: str,
    stations: Sequence[str],
    start,
    end,
    cadence: str = "10min",
    seed: int = 1,
    wavelength: int = 5577,
    corrupt: int = 0,
    storage_options: dict | None = None,
    model: SkyModel = SkyModel(),
    persistence: float = 0.85,
) -> pd.DataFrame:
    """Write a SYNTHETIC ASIM archive under ``url``; returns (and writes) its labels table.

    Sky states follow a Markov chain per station (stay with probability ``persistence``).
    While the Moon is up (Skyfield, at the station's site) the state is ``moon`` most of
    the time.  ``corrupt`` extra files exercise the rejection paths: an empty PNG, a
    truncated PNG and a file whose name fits no layout, in turn.
    """
    from aurora_batch.core.ephemeris import sun_moon
    from aurora_batch.core.stations import get_station

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
    fs.pipe_file(
        f"{root}/README.txt",
        (
            "SYNTHETIC all-sky archive written by `aurora-batch synth`. These are not real observations.\n"
            "labels.csv gives the true sky state of each frame (OATH class6: "
            + ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES))
            + ").\n"
        ).encode(),
    )
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


#: SYNTHETIC magnetometer response (nT, on X) to each sky state: stronger for brighter, sharper aurora.
MAG_RESPONSE = {"arc": -150.0, "diffuse": -60.0, "discrete": -350.0, "cloudy": 0.0, "moon": 0.0, "clear": 0.0}
MAG_CODES = {"NYA": "NAL", "LYR": "LYR"}  #: magnetometer codes at the image stations


def _state_per_minute(labels: pd.DataFrame, station: str, minutes: pd.DatetimeIndex) -> np.ndarray:
    frames = labels[labels["station"] == station].sort_values("time")
    idx = np.searchsorted(frames["time"].to_numpy(), minutes.to_numpy(), side="right") - 1
    return frames["label"].to_numpy()[np.clip(idx, 0, len(frames) - 1)]


def write_instruments(url: str, labels: pd.DataFrame, seed: int = 1, storage_options: dict | None = None) -> list[str]:
    """SYNTHETIC ceilometer (PANGAEA tab) and magnetometer (IAGA-2002, 1-min) files that follow the sky.

    The ceilometer sees a cloud base (400–1,800 m) while the sky state is ``cloudy`` and
    reports 32767 ("no cloud") otherwise, with 3 % of readings flipped and a few -1 (missing).
    The magnetometer's X drops by :data:`MAG_RESPONSE` during aurora, plus noise; a few
    samples are 99999 (missing).  Files go to ``{url}/ceilometer`` and ``{url}/magnetometer``.
    """
    from aurora_batch.core.stations import get_station

    rng = np.random.default_rng(seed)
    fs, root = filesystem(url, storage_options)
    labels = labels.assign(time=pd.to_datetime(labels["time"]))
    start, end = labels["time"].min().floor("D"), labels["time"].max().floor("D") + pd.Timedelta(days=1)
    minutes = pd.date_range(start, end, freq="1min", inclusive="left")
    written = []
    for station in sorted(labels["station"].unique()):
        state = _state_per_minute(labels, station, minutes)
        cloudy = (state == "cloudy") ^ (rng.random(len(minutes)) < 0.03)
        cbh = np.where(cloudy, rng.uniform(400, 1800, len(minutes)).round(), 32767).astype(int)
        cbh[rng.random(len(minutes)) < 0.01] = -1
        rows = "\n".join(f"{t:%Y-%m-%dT%H:%M}\t{h}" for t, h in zip(minutes, cbh))
        text = (
            "/* DATA DESCRIPTION:\nCitation:\tSYNTHETIC ceilometer written by aurora-batch (not real data)\n"
            f"Event(s):\t{station}\nParameter(s):\tDATE/TIME (Date/Time)\n\tCloud base height (CBH) [m]\n*/\n"
            f"Date/Time\tCBH [m]\n{rows}\n"
        )
        path = f"{root}/ceilometer/{station.lower()}_cbh.tab"
        fs.pipe_file(path, text.encode())
        written.append(path)
        code = MAG_CODES.get(station, station)
        site = get_station(station)
        drop = np.array([MAG_RESPONSE[s] for s in state]) * rng.uniform(0.7, 1.3, len(minutes))
        drop = np.convolve(drop, np.ones(5) / 5, mode="same")  # currents build up over minutes
        x = 10400 + drop + rng.normal(0, 3, len(minutes))
        y = 800 + 0.3 * drop + rng.normal(0, 3, len(minutes))
        z = 52000 - 0.5 * drop + rng.normal(0, 3, len(minutes))
        f = np.sqrt(x**2 + y**2 + z**2)
        for arr in (x, y, z, f):
            arr[rng.random(len(minutes)) < 0.002] = 99999.0
        for day in pd.date_range(start, end, freq="D", inclusive="left"):
            sel = (minutes >= day) & (minutes < day + pd.Timedelta(days=1))
            path = f"{root}/magnetometer/{code.lower()}{day:%Y%m%d}vmin.min"
            fs.pipe_file(path, _iaga2002(code, site, minutes[sel], x[sel], y[sel], z[sel], f[sel]).encode())
            written.append(path)
    return written


def _iaga2002(code, site, times, x, y, z, f) -> str:
    def rec(label, value):
        return f" {label:<22} {value:<44}|"

    head = [
        rec("Format", "IAGA-2002"),
        rec("Source of Data", "SYNTHETIC (aurora-batch), not real data"),
        rec("Station Name", site.name),
        rec("IAGA CODE", code),
        rec("Geodetic Latitude", f"{site.latitude:.3f}"),
        rec("Geodetic Longitude", f"{site.longitude % 360:.3f}"),
        rec("Elevation", f"{site.altitude_m:.0f}"),
        rec("Reported", "XYZF"),
        rec("Sensor Orientation", "XYZ"),
        rec("Digital Sampling", "1 second"),
        rec("Data Interval Type", "1-minute"),
        rec("Data Type", "variation"),
        " # SYNTHETIC magnetometer series following the synthetic sky.".ljust(69) + "|",
        f"DATE       TIME         DOY     {code}X      {code}Y      {code}Z      {code}F   |",
    ]
    rows = [
        f"{t:%Y-%m-%d %H:%M:%S}.000 {t.day_of_year:03d}   {a:10.2f}{b:10.2f}{c:10.2f}{d:10.2f}"
        for t, a, b, c, d in zip(times, x, y, z, f)
    ]
    return "\n".join(head + rows) + "\n"
