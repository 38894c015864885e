"""The nearest-time merge equals pandas.merge_asof(nearest) on the whole data, at every border."""

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from aurora_batch.instruments.join import nearest


def _data(tolerance, seed=0, days=6):
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2010-12-01")
    borders = [t0 + pd.Timedelta(days=d) for d in range(1, days)]  # the day partitions' borders
    tol = pd.Timedelta(tolerance)
    # Rows deliberately on both sides of every border, within and just beyond the tolerance.
    near = [
        b + pd.Timedelta(seconds=s)
        for b in borders
        for s in (-1.5 * tol.total_seconds(), -tol.total_seconds(), -3, -0.5, 0, 0.5, 3, tol.total_seconds() * 0.99)
    ]
    lt = list(t0 + pd.to_timedelta(rng.uniform(0, days * 86400, 3000), unit="s")) + near * 2
    rt = list(t0 + pd.to_timedelta(rng.uniform(0, days * 86400, 4000), unit="s")) + [
        b + pd.Timedelta(seconds=s) for b in borders for s in (-2, 1, 40, -70)
    ]
    left = pd.DataFrame({"time": lt, "station": rng.choice(["NYA", "LYR", "KIR"], len(lt)), "i": np.arange(len(lt))})
    left = left.sample(frac=1, random_state=1).reset_index(drop=True)  # original order is not time order
    right = pd.DataFrame({"time": rt, "station": rng.choice(["NYA", "LYR"], len(rt)), "x": rng.normal(size=len(rt))})
    return left, right


def _reference(left, right, tolerance):
    r = right.assign(rt=right["time"]).sort_values("time")
    ref = pd.merge_asof(
        left.sort_values("time"), r, on="time", by="station", tolerance=pd.Timedelta(tolerance), direction="nearest"
    )
    return ref.set_index("i").loc[left["i"]]


@pytest.mark.parametrize("tolerance", ["60s", "1D"])
def test_dask_equals_pandas_merge_asof_at_every_border(tolerance):
    left, right = _data(tolerance)
    ref = _reference(left, right, tolerance)
    # Left partitioned by day (≥ 5 partitions), right by other borders entirely.
    day = left["time"].dt.floor("D")
    parts = [dd.from_pandas(g, npartitions=1, sort=False) for _, g in left.groupby(day)]
    dleft = dd.concat(parts)
    assert dleft.npartitions >= 5
    dright = dd.from_pandas(right, npartitions=7, sort=False)
    with dask.config.set(scheduler="sync"):
        out = nearest(dleft, dright, tolerance=tolerance).compute()
    expected_order = pd.concat([g for _, g in left.groupby(day)])["i"].to_numpy()
    assert (out["i"].to_numpy() == expected_order).all()  # left rows in their original order
    got = out.set_index("i").loc[left["i"]]
    np.testing.assert_array_equal(got["x"].to_numpy(), ref["x"].to_numpy())
    np.testing.assert_array_equal(got["dt"].to_numpy(), (ref["rt"] - ref["time"]).to_numpy())
    # Something matched and something did not, near the borders too.
    assert got["x"].notna().any() and (tolerance == "1D" or got["x"].isna().any())


def test_pandas_path_and_semantics():
    left = pd.DataFrame(
        {
            "time": pd.to_datetime(["2010-12-01T23:59:59", "2010-12-02T00:10:00", "2010-12-01T23:00:00"]),
            "station": ["NYA", "NYA", "LYR"],
        }
    )
    right = pd.DataFrame(
        {
            "time": pd.to_datetime(["2010-12-02T00:00:20", "2010-12-01T23:00:30"]),
            "station": ["NYA", "NYA"],
            "cbh": [900.0, 500.0],
        }
    )
    out = nearest(left, right, tolerance="60s")
    # Across midnight: found (TAME's per-day loop missed it). Far away or other station: NaN, not a far sample.
    assert out["cbh"].tolist()[0] == 900.0 and np.isnan(out["cbh"].tolist()[1]) and np.isnan(out["cbh"].tolist()[2])
    assert out["dt"].iloc[0] == pd.Timedelta("21s") and pd.isna(out["dt"].iloc[1])
    assert list(out.columns) == ["time", "station", "cbh", "dt"]
    with pytest.raises(ValueError, match="direction"):
        nearest(left, right, tolerance="60s", direction="sideways")


@pytest.mark.parametrize("tolerance", ["60s", "1D"])
def test_time_indexed_path_equals_pandas(tolerance):
    left, right = _data(tolerance, seed=5)
    ref = _reference(left, right, tolerance)
    by_time = left.sort_values("time")
    dleft = dd.from_pandas(by_time.set_index(pd.DatetimeIndex(by_time["time"], name="time")), npartitions=6, sort=True)
    dright = dd.from_pandas(
        right.set_index(pd.DatetimeIndex(right["time"], name="time")).sort_index(), npartitions=5, sort=True
    )
    assert dleft.known_divisions and dright.known_divisions and dleft.npartitions >= 5
    with dask.config.set(scheduler="sync"):
        out = nearest(dleft, dright, tolerance=tolerance).compute()
    got = out.set_index("i").loc[left["i"]]
    np.testing.assert_array_equal(got["x"].to_numpy(), ref["x"].to_numpy())
    np.testing.assert_array_equal(got["dt"].to_numpy(), (ref["rt"] - ref["time"]).to_numpy())
