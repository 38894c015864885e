"""Sun and Moon altitude and Moon illumination for many (station, time) pairs.

Everything here is offline: the JPL DE421 ephemeris ships with ``skyfield-data`` and the
leap-second and ΔT tables are Skyfield's built-in ones.

Cost model (measured on 2 cores): one Skyfield ``Time`` array of 500,000 stamps with the
default settings takes about 50 s and 10 GB, and even chunked per-stamp Skyfield runs at
about 87,000 pairs/s.  A billion-frame archive needs more, so Skyfield is evaluated only on
a coarse grid of Terrestrial Time (every :data:`GRID_STEP_S` seconds, only where stamps
fall): the geocentric apparent Sun and Moon in the true equator and equinox of date, and
Greenwich apparent sidereal time.  Each stamp then interpolates those (linearly: over ten
minutes the Moon's geocentric path bends by micro-degrees), rotates into the Earth-fixed
frame, subtracts its site's position and rotates into the local horizon, in plain numpy.
Against a full topocentric Skyfield ``observe`` per stamp the result differs by less than
1 arcsec (tested), far below any filtering threshold, at well over 500,000 pairs/s.

Altitudes are geometric apparent altitudes in degrees (no atmospheric refraction), in the
horizon of the WGS84 geodetic vertical; times are UTC.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

DEFAULT_CHUNK_SIZE = 1_000_000  #: stamps per vectorised step (about 150 MB of float64 temporaries)
GRID_STEP_S = 600.0  #: spacing of the Terrestrial Time grid on which Skyfield is evaluated (s)
_DAY_S = 86400.0
_NS_PER_DAY = 86_400_000_000_000


@functools.lru_cache(maxsize=1)
def _skyfield():
    """Load the timescale and DE421 from installed packages; never touches the network.

    Only ``de421.bsp`` is taken from ``skyfield-data`` (its folder found directly: the package's
    own path function warns about every file it ships, and its Earth-orientation table
    ``finals2000A.all`` has expired but is not read: see docs/design.md, Ephemeris).
    """
    from importlib.resources import files

    from skyfield.api import Loader

    load = Loader(str(files("skyfield_data") / "data"), verbose=False)
    ts = load.timescale(builtin=True)
    eph = load("de421.bsp")
    return ts, eph


_MIDNIGHT_TT: dict[int, float] = {}  #: UTC day number -> TT Julian day of its midnight (leap seconds included)


def _tt_days(times: pd.DatetimeIndex) -> np.ndarray:
    """Terrestrial Time of UTC ``times`` as Julian days.

    Each UTC calendar day is converted once by Skyfield (leap seconds included: POSIX
    offsets would be 24 s off in 2010); the time within the day is added as elapsed seconds.
    """
    ts, _ = _skyfield()
    ns = times.asi8
    day, within = np.divmod(ns, _NS_PER_DAY)
    days, inverse = np.unique(day, return_inverse=True)
    missing = [int(d) for d in days if int(d) not in _MIDNIGHT_TT]
    if missing:
        midnights = pd.DatetimeIndex(np.asarray(missing) * _NS_PER_DAY)
        tt = ts.utc(midnights.year.values, midnights.month.values, midnights.day.values).tt
        _MIDNIGHT_TT.update(zip(missing, np.atleast_1d(tt).tolist()))
    tt_midnight = np.array([_MIDNIGHT_TT[int(d)] for d in days])
    return tt_midnight[inverse] + within / (_NS_PER_DAY)


def _nodes(tt_nodes: np.ndarray):
    """Geocentric apparent Sun and Moon (au, true equator and equinox of date) and GAST (rad)."""
    from skyfield.functions import mxv
    from skyfield.nutationlib import iau2000b_radians

    ts, eph = _skyfield()
    t = ts.tt_jd(tt_nodes)
    t._nutation_angles_radians = iau2000b_radians(t)
    geo = eph["earth"].at(t)
    sun = mxv(t.M, geo.observe(eph["sun"]).apparent().position.au)
    moon = mxv(t.M, geo.observe(eph["moon"]).apparent().position.au)
    return sun, moon, np.asarray(t.gast) * (np.pi / 12.0)


_NODE_CACHE: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, float]] = {}
_NODE_CACHE_MAX = 20_000  #: grid nodes kept (about four months at 10 min): per-file calls reuse them
_NODE_BLOCK = 144  #: nodes computed together when one is missing (a day at 10 min: 9 ms, as much as 2 nodes)


def _cached_nodes(nodes: np.ndarray, step_days: float):
    """:func:`_nodes` at ``nodes * step_days``, computing only nodes not seen before in this process.

    Workers evaluate the ephemeris per file, for its frames' own times.  A missing node of a
    call that spans at most two blocks of :data:`_NODE_BLOCK` nodes brings its whole blocks, in
    one Skyfield call that costs about what one node does: Skyfield then runs about once a
    day per worker, not once per file.  Larger calls compute exactly the nodes they miss.
    """
    requested = [int(k) for k in nodes]
    missing = [k for k in requested if (step_days, k) not in _NODE_CACHE]
    if missing:
        blocks = np.unique(np.asarray(missing) // _NODE_BLOCK)
        if len(blocks) <= 2:
            missing = (blocks[:, None] * _NODE_BLOCK + np.arange(_NODE_BLOCK)).ravel().tolist()
        if len(_NODE_CACHE) + len(missing) > _NODE_CACHE_MAX:
            _NODE_CACHE.clear()
            missing = sorted(set(missing) | set(requested))
        sun, moon, gast = _nodes(np.asarray(missing, dtype=float) * step_days)
        for i, k in enumerate(missing):
            _NODE_CACHE[(step_days, k)] = (sun[:, i], moon[:, i], float(gast[i]))
    values = [_NODE_CACHE[(step_days, k)] for k in requested]
    return (
        np.stack([v[0] for v in values], axis=1),
        np.stack([v[1] for v in values], axis=1),
        np.array([v[2] for v in values]),
    )


def _sites(sites: dict[str, tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Earth-fixed positions (3, k; au) and local zenith unit vectors (3, k) of WGS84 sites."""
    from skyfield.api import wgs84

    xyz, up = [], []
    for lat, lon, alt in sites.values():
        xyz.append(wgs84.latlon(lat, lon, elevation_m=alt).itrs_xyz.au)
        p, lam = np.radians(lat), np.radians(lon)  # the geodetic vertical
        up.append([np.cos(p) * np.cos(lam), np.cos(p) * np.sin(lam), np.sin(p)])
    return np.array(xyz, dtype=float).T, np.array(up, dtype=float).T


def _altitude_deg(x, y, z, obs: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Altitude of Earth-fixed geocentric vectors seen from ``obs`` (3, n) with zenith ``up`` (3, n)."""
    x, y, z = x - obs[0], y - obs[1], z - obs[2]
    r = np.sqrt(x * x + y * y + z * z)
    return np.degrees(np.arcsin((x * up[0] + y * up[1] + z * up[2]) / r))


def _chunk(tt: np.ndarray, obs: np.ndarray, up: np.ndarray, step_days: float) -> np.ndarray:
    """(n, 3) sun_alt, moon_alt, moon_illumination for TT days ``tt`` at sites ``obs``/``up``."""
    k = np.floor(tt / step_days).astype(np.int64)
    nodes, where = np.unique(np.concatenate([k, k + 1]), return_inverse=True)
    i0, i1 = where[: len(k)], where[len(k) :]
    sun, moon, gast = _cached_nodes(nodes, step_days)
    w = tt / step_days - k
    out = np.empty((len(tt), 3))

    def lerp(a):
        return a[..., i0] + w * (a[..., i1] - a[..., i0])

    turn = np.mod(gast[i1] - gast[i0], 2 * np.pi)  # +2.5 deg per 10 min, whatever the wrap
    g = gast[i0] + w * turn
    cos_g, sin_g = np.cos(g), np.sin(g)
    (sx, sy, sz), (mx, my, mz) = lerp(sun), lerp(moon)
    for column, (x, y, z) in enumerate(((sx, sy, sz), (mx, my, mz))):
        # True-of-date -> Earth-fixed: rotate by -GAST about the pole.
        out[:, column] = _altitude_deg(cos_g * x + sin_g * y, cos_g * y - sin_g * x, z, obs, up)
    # Illuminated fraction from the phase angle at the Moon (geocentric): (1 + cos(phase)) / 2.
    ex, ey, ez = -mx, -my, -mz
    px, py, pz = sx - mx, sy - my, sz - mz
    cos_phase = (ex * px + ey * py + ez * pz) / np.sqrt((ex * ex + ey * ey + ez * ez) * (px * px + py * py + pz * pz))
    out[:, 2] = (1.0 + cos_phase) / 2.0
    return out


def sun_moon(
    times: pd.DatetimeIndex | np.ndarray,
    latitude: float,
    longitude: float,
    altitude_m: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> pd.DataFrame:
    """Sun altitude, Moon altitude (degrees) and Moon illuminated fraction (0–1) at one site.

    ``times`` are UTC; latitude and longitude are geodetic WGS84 degrees (east positive),
    ``altitude_m`` metres above the ellipsoid.  Returns a frame with columns ``sun_alt``,
    ``moon_alt`` and ``moon_illumination`` in the order of ``times``.
    """
    return sun_moon_multi(
        pd.DatetimeIndex(times), {"_": (latitude, longitude, altitude_m)}, np.zeros(len(times), dtype=int), chunk_size
    )


def sun_moon_multi(
    times: pd.DatetimeIndex,
    sites: dict[str, tuple[float, float, float]],
    site_index: np.ndarray,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    grid_step_s: float = GRID_STEP_S,
) -> pd.DataFrame:
    """Like :func:`sun_moon` for rows that belong to different sites.

    ``sites`` maps a key to (latitude deg, longitude deg, altitude m); ``site_index[i]`` is
    the position in ``sites`` of row ``i``.  Rows need no order; memory is bounded by
    ``chunk_size`` rows at a time.
    """
    times = pd.DatetimeIndex(times)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    times = times.as_unit("ns")
    n = len(times)
    result = np.full((n, 3), np.nan)
    if n:
        site_xyz, site_up = _sites(sites)
        site_index = np.asarray(site_index)
        for start in range(0, n, chunk_size):
            sl = slice(start, min(start + chunk_size, n))
            idx = site_index[sl]
            result[sl] = _chunk(_tt_days(times[sl]), site_xyz[:, idx], site_up[:, idx], grid_step_s / _DAY_S)
    return pd.DataFrame(result, columns=["sun_alt", "moon_alt", "moon_illumination"])


def annotate_catalog(catalog: pd.DataFrame, chunk_size: int = DEFAULT_CHUNK_SIZE) -> pd.DataFrame:
    """Fill ``sun_alt``, ``moon_alt`` and ``moon_illumination`` for rows with a station and time.

    Works chunk by chunk over the whole catalog, all stations of a chunk sharing one
    geocentric computation; memory stays bounded by ``chunk_size``.
    """
    from aurora_batch.core.stations import get_station

    catalog = catalog.copy()
    has = catalog["station"].notna() & catalog["time"].notna()
    if not has.any():
        return catalog
    sub = catalog.loc[has, ["station", "time"]]
    codes = sorted(sub["station"].unique())
    sites = {}
    for c in codes:
        s = get_station(c)
        sites[c] = (s.latitude, s.longitude, s.altitude_m)
    index = sub["station"].map({c: i for i, c in enumerate(codes)}).to_numpy()
    values = sun_moon_multi(pd.DatetimeIndex(sub["time"]), sites, index, chunk_size)
    for col in values.columns:
        catalog.loc[has, col] = values[col].to_numpy()
    return catalog


def sun_moon_reasons(
    sun_alt: np.ndarray,
    moon_alt: np.ndarray,
    moon_illumination: np.ndarray,
    sun_max_alt: float | np.ndarray,  # one for all rows, or one per row
    moon_max_alt: float | np.ndarray | None,
    moon_min_illumination: float = 0.0,
) -> np.ndarray:
    """Per row: ``"sun"``, ``"moon"`` or ``""`` (kept).

    The Sun wins when both are up.  The Moon only counts when it is above ``moon_max_alt``
    (degrees; ``None`` disables the Moon test) *and* more than ``moon_min_illumination``
    of its disc is lit.
    """
    reasons = np.full(len(sun_alt), "", dtype=object)
    if moon_max_alt is not None:
        moon = (np.asarray(moon_alt) > moon_max_alt) & (np.asarray(moon_illumination) > moon_min_illumination)
        reasons[moon] = "moon"
    reasons[np.asarray(sun_alt) > sun_max_alt] = "sun"
    return reasons
