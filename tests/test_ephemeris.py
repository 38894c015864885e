import numpy as np
import pandas as pd
import pytest

from aurora_batch.core.ephemeris import _skyfield, annotate_catalog, sun_moon, sun_moon_multi, sun_moon_reasons


def _full_skyfield(times, lat, lon, alt):
    """The slow reference path: full topocentric observe() for every stamp."""
    from skyfield.api import wgs84

    ts, eph = _skyfield()
    site = eph["earth"] + wgs84.latlon(lat, lon, elevation_m=alt)
    t = ts.from_datetimes(pd.DatetimeIndex(times).tz_localize("UTC").to_pydatetime())
    obs = site.at(t)
    return (
        obs.observe(eph["sun"]).apparent().altaz()[0].degrees,
        obs.observe(eph["moon"]).apparent().altaz()[0].degrees,
    )


def test_chunked_matches_full_skyfield_within_arcsec():
    times = pd.date_range("2010-11-01", "2011-02-28", freq="9h17min")
    fast = sun_moon(times, 78.92, 11.93, 50.0, chunk_size=100)  # many chunks
    sun, moon = _full_skyfield(times, 78.92, 11.93, 50.0)
    assert np.abs(fast["sun_alt"] - sun).max() * 3600 < 1.0
    assert np.abs(fast["moon_alt"] - moon).max() * 3600 < 1.0


def test_interpolated_grid_matches_full_skyfield_over_decades():
    """Archive scale: random stamps over 20 years at three sites, within 1 arcsec of full Skyfield."""
    rng = np.random.default_rng(3)
    sites = {"NYA": (78.92, 11.93, 50.0), "GILL": (56.376, -94.64, 0.0), "SYO": (-69.0, 39.58, 20.0)}
    times = pd.to_datetime(rng.integers(pd.Timestamp("2005-01-01").value, pd.Timestamp("2025-01-01").value, 600))
    times = times.append(pd.DatetimeIndex(["2008-12-31T23:59:59", "2009-01-01T00:00:00"]))  # a leap second
    idx = rng.integers(0, len(sites), len(times))
    fast = sun_moon_multi(times, sites, idx, chunk_size=250)
    for k, (lat, lon, alt) in enumerate(sites.values()):
        sun, moon = _full_skyfield(times[idx == k], lat, lon, alt)
        assert np.abs(fast["sun_alt"][idx == k] - sun).max() * 3600 < 1.0
        assert np.abs(fast["moon_alt"][idx == k] - moon).max() * 3600 < 1.0


def test_leap_seconds_respected():
    # A stamp just after the 2008-12-31 leap second: UTC calendar time, not POSIX offset.
    times = pd.DatetimeIndex(["2009-01-01T00:00:00"])
    fast = sun_moon(times, 78.92, 11.93)
    sun, _ = _full_skyfield(times, 78.92, 11.93, 0.0)
    assert abs(fast["sun_alt"][0] - sun[0]) * 3600 < 1.0


def test_reference_values():
    # Winter solstice 2010 at Ny-Ålesund: noon Sun ≈ 90 - 78.92 - 23.44 = -12.36 deg.
    day = pd.date_range("2010-12-21", periods=24 * 60, freq="1min")
    sun = sun_moon(day, 78.92, 11.93)["sun_alt"]
    assert sun.max() == pytest.approx(-12.36, abs=0.1)
    # Local noon at 11.93 E is about 11:12 UTC.
    assert abs(day[sun.argmax()] - pd.Timestamp("2010-12-21T11:12")) < pd.Timedelta("10min")
    # Full Moon (total lunar eclipse) 2010-12-21 08:13 UTC; new Moon 2010-12-05 17:36 UTC.
    ill = sun_moon(pd.DatetimeIndex(["2010-12-21T08:13", "2010-12-05T17:36"]), 78.92, 11.93)["moon_illumination"]
    assert ill[0] > 0.99 and ill[1] < 0.01


def test_multi_site_equals_single_site():
    times = pd.date_range("2010-12-01", periods=50, freq="37min")
    idx = np.arange(50) % 2
    multi = sun_moon_multi(times, {"NYA": (78.92, 11.93, 50.0), "GILL": (56.376, -94.64, 0.0)}, idx, chunk_size=17)
    nya = sun_moon(times[idx == 0], 78.92, 11.93, 50.0)
    gill = sun_moon(times[idx == 1], 56.376, -94.64, 0.0)
    np.testing.assert_allclose(multi[idx == 0].to_numpy(), nya.to_numpy(), atol=1e-9)
    np.testing.assert_allclose(multi[idx == 1].to_numpy(), gill.to_numpy(), atol=1e-9)


def test_reasons():
    sun = np.array([-20, -5, -20, -20, -5])
    moon = np.array([-5, -5, 10, 10, 10])
    ill = np.array([0.5, 0.5, 0.5, 0.1, 0.5])
    assert list(sun_moon_reasons(sun, moon, ill, -12, 0.0)) == ["", "sun", "moon", "moon", "sun"]
    assert list(sun_moon_reasons(sun, moon, ill, -12, 0.0, 0.2)) == ["", "sun", "moon", "", "sun"]
    assert list(sun_moon_reasons(sun, moon, ill, -12, None)) == ["", "sun", "", "", "sun"]


def test_annotate_catalog_leaves_unparsed_rows():
    cat = pd.DataFrame(
        {
            "station": ["NYA", None],
            "time": pd.to_datetime(["2010-12-01", None]),
            "sun_alt": np.nan,
            "moon_alt": np.nan,
            "moon_illumination": np.nan,
        }
    )
    out = annotate_catalog(cat)
    assert out.loc[0, ["sun_alt", "moon_alt", "moon_illumination"]].notna().all()
    assert out.loc[1, ["sun_alt", "moon_alt", "moon_illumination"]].isna().all()
