"""Planning at archive scale: Sun/Moon (station, time) pairs per second on one core.

Compares :func:`aurora_batch.ephemeris.sun_moon_multi` (Skyfield on a coarse TT grid, numpy
per stamp) with the previous method run in the same process: Skyfield per stamp in chunks of
50,000, geocentric positions shared by the stations of a chunk, then each station's
observer offset and horizon rotation.  Also prints the largest difference from a full
topocentric Skyfield ``observe`` on a sample, and the per-file pattern of the workers (one
call per frame, in time order) with whole blocks of grid nodes against one node at a time.
Usage::

    OMP_NUM_THREADS=1 python benchmarks/ephemeris.py [--pairs 1000000] [--stations 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def per_stamp_skyfield(times: pd.DatetimeIndex, sites: dict, index: np.ndarray, chunk: int = 50_000) -> np.ndarray:
    """The previous method: (n, 2) Sun and Moon altitude (degrees)."""
    from skyfield.api import wgs84
    from skyfield.nutationlib import iau2000b_radians

    from aurora_batch.core.ephemeris import _skyfield

    ts, eph = _skyfield()
    tops = [wgs84.latlon(*site[:2], elevation_m=site[2]) for site in sites.values()]
    out = np.empty((len(times), 2))
    for start in range(0, len(times), chunk):
        part = times[start : start + chunk]
        t = ts.utc(
            part.year.values,
            part.month.values,
            part.day.values,
            part.hour.values,
            part.minute.values,
            part.second.values + part.microsecond.values / 1e6,
        )
        t._nutation_angles_radians = iau2000b_radians(t)
        geo = eph["earth"].at(t)
        bodies = [geo.observe(eph[b]).apparent().position.au for b in ("sun", "moon")]
        idx = index[start : start + chunk]
        for k in np.unique(idx):
            rows = np.flatnonzero(idx == k)
            tk = t[rows]
            tk._nutation_angles_radians = tuple(a[rows] for a in t._nutation_angles_radians)
            obs, rot = tops[k].at(tk).position.au, tops[k].rotation_at(tk)
            for j, vec in enumerate(bodies):
                h = np.einsum("ij...,j...->i...", rot, vec[:, rows] - obs)
                out[start + rows, j] = np.degrees(np.arcsin(h[2] / np.sqrt((h**2).sum(0))))
    return out


def full_skyfield(times: pd.DatetimeIndex, site: tuple) -> np.ndarray:
    from skyfield.api import wgs84

    from aurora_batch.core.ephemeris import _skyfield

    ts, eph = _skyfield()
    obs = (eph["earth"] + wgs84.latlon(site[0], site[1], elevation_m=site[2])).at(
        ts.from_datetimes(times.tz_localize("UTC").to_pydatetime())
    )
    return np.stack([obs.observe(eph[b]).apparent().altaz()[0].degrees for b in ("sun", "moon")], axis=1)


def per_file_ms(times: pd.DatetimeIndex, site: tuple, block: int) -> float:
    """ms per one-frame :func:`sun_moon` call over ``times`` in order, from a cold node cache."""
    from aurora_batch.core import ephemeris

    ephemeris._NODE_CACHE.clear()
    old, ephemeris._NODE_BLOCK = ephemeris._NODE_BLOCK, block
    try:
        t0 = time.perf_counter()
        for t in times:
            ephemeris.sun_moon(pd.DatetimeIndex([t]), *site)
        return (time.perf_counter() - t0) / len(times) * 1e3
    finally:
        ephemeris._NODE_BLOCK = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument("--baseline-pairs", type=int, default=200_000, help="pairs timed with the previous method")
    args = ap.parse_args()

    from aurora_batch.core.ephemeris import sun_moon_multi

    rng = np.random.default_rng(0)
    sites = {f"S{i}": (55.0 + 2.5 * i, -150.0 + 30.0 * i, 100.0) for i in range(args.stations)}
    # Every station has its own stamps (a season: Nov-Feb), in no particular order.
    times = pd.DatetimeIndex(
        rng.integers(pd.Timestamp("2010-11-01").value, pd.Timestamp("2011-03-01").value, args.pairs)
    )
    index = rng.integers(0, args.stations, args.pairs)
    sun_moon_multi(times[:1000], sites, index[:1000])  # loads DE421

    t0 = time.perf_counter()
    fast = sun_moon_multi(times, sites, index)
    fast_s = time.perf_counter() - t0
    n0 = min(args.baseline_pairs, args.pairs)
    t0 = time.perf_counter()
    slow = per_stamp_skyfield(times[:n0], sites, index[:n0])
    slow_s = time.perf_counter() - t0

    sample = rng.choice(args.pairs, 3000, replace=False)
    errors = []
    for k, site in enumerate(sites.values()):
        rows = sample[index[sample] == k]
        ref = full_skyfield(times[rows], site)
        errors.append(np.abs(fast[["sun_alt", "moon_alt"]].to_numpy()[rows] - ref).max(axis=0))
    err_sun, err_moon = np.max(errors, axis=0)
    agree = np.abs(fast[["sun_alt", "moon_alt"]].to_numpy()[:n0] - slow).max()
    print(
        f"grid + numpy:       {args.pairs:,} pairs, {args.stations} stations in {fast_s:.2f} s "
        f"-> {args.pairs / fast_s:,.0f} pairs/s"
    )
    print(f"per-stamp Skyfield: {n0:,} pairs in {slow_s:.2f} s -> {n0 / slow_s:,.0f} pairs/s")
    print(f"ratio: {(args.pairs / fast_s) / (n0 / slow_s):.1f}x")
    print(
        f"max |error| vs full topocentric Skyfield (3,000 pairs): Sun {err_sun * 3600:.2f} arcsec, "
        f"Moon {err_moon * 3600:.2f} arcsec ({max(err_sun, err_moon):.5f} deg); "
        f"vs previous method {agree * 3600:.2f} arcsec"
    )
    frames = pd.date_range("2010-12-01", "2010-12-04", freq="1min", inclusive="left")
    single, blocks = per_file_ms(frames, (78.9, 11.9, 10.0), 1), per_file_ms(frames, (78.9, 11.9, 10.0), 144)
    print(
        f"per-file calls ({len(frames):,} frames at 1 min): {single:.2f} ms each computing single nodes, "
        f"{blocks:.2f} ms with day blocks -> ratio {single / blocks:.1f}x"
    )


if __name__ == "__main__":
    main()
