"""Shared checks for end-to-end tests."""

import numpy as np
import pandas as pd
import xarray as xr

from aurora_batch.core.keys import Status
from aurora_batch.store.layout import month_url
from aurora_batch.store.ledger import read_catalog
from aurora_batch.store.parts import PART_COLUMNS
from aurora_batch.store.zarrs import zarr_store


def part_rows(station: str, wavelength, times, urls=None, statuses=None) -> pd.DataFrame:
    """A staged part's rows as a partition stages them: ``times`` of ``station`` at ``wavelength`` (Å or None),
    kept unless ``statuses`` says otherwise, at fixed Sun and Moon altitudes."""
    n = len(times)
    urls = urls or [f"file:///in/{station}_{t:%Y%m%d_%H%M%S}.png" for t in times]
    return pd.DataFrame(
        {
            "url": urls,
            "station": station,
            "time": pd.DatetimeIndex(times),
            "wavelength": pd.array([wavelength] * n, dtype="Int64"),
            "status": statuses or [Status.KEPT] * n,
            "detail": "",
            "format": "asim",
            "sun_alt": -20.0,
            "moon_alt": -5.0,
            "moon_illumination": 0.5,
            "frame": 0,
            "saturated": np.float32(0.01),
        }
    )[PART_COLUMNS]


def open_group(output, month, group, storage_options=None, **kw):
    """One group of a published month, whichever its format (a plain Zarr tree or an Icechunk repository)."""
    url = month_url(output, month, storage_options)
    assert url is not None, f"no month {month} under {output}"
    return xr.open_zarr(zarr_store(url, storage_options, **kw), group=group, chunks=None)


def check_season(summary, job, n_inputs, stations=("NYA", "LYR"), broken=True, month="2010-12"):
    """The season invariants: every input once, kept == stored, filters respected.

    ``summary`` may be None (a job run in another process): the stores are found from the job.
    """
    opts = job.output_storage_options
    cat = read_catalog(job.output, opts)
    assert cat["url"].is_unique
    assert len(cat) == n_inputs
    counts = cat["status"].value_counts().to_dict()
    assert Status.PENDING not in counts
    if broken:
        assert counts[Status.UNREADABLE] == 2 and counts[Status.UNPARSEABLE] == 1
    kept = cat[cat["status"] == Status.KEPT]
    assert (kept["sun_alt"] <= job.filter.sun_max_alt).all()
    if job.filter.moon_max_alt is not None:
        assert (kept["moon_alt"] <= job.filter.moon_max_alt).all()
    rows = 0
    for station in stations:
        ds = open_group(job.output, month, station, opts)
        rows += ds.sizes["time"]
        assert ds.attrs["station"] == station and ds.attrs["backbone"] == job.features.backbone
        assert (ds["sun_alt"].to_numpy() <= job.filter.sun_max_alt).all()
        assert ds["features"].dtype == np.float32 and ds.sizes["feature"] == 1280
        assert (np.diff(ds["time"].to_numpy()) > np.timedelta64(0)).all()
        assert set(ds["url"].to_numpy()) == set(kept.loc[kept["station"] == station, "url"])
    assert rows == kept["frames"].sum()
    if summary is not None:
        assert rows == summary.images and len(kept) == summary.kept
    return cat


def store_snapshot(job, stations=("NYA", "LYR"), month="2010-12"):
    """The stores' content, for comparing runs."""
    opts = job.output_storage_options or None
    return {s: open_group(job.output, month, s, opts).load() for s in stations}


def assert_same_stores(a, b):
    assert a.keys() == b.keys()
    for k in a:
        xr.testing.assert_allclose(a[k].drop_vars("features"), b[k].drop_vars("features"))
        np.testing.assert_allclose(a[k]["features"].to_numpy(), b[k]["features"].to_numpy(), rtol=1e-4, atol=1e-4)
        assert a[k].attrs == b[k].attrs
