"""A few rows read straight from a month array's shards equal Zarr's own selection, on every kind of store, and
cost one request for each shard's index and one for each inner chunk holding a wanted row."""

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, LoggingStore

from aurora_batch.store.rows import read_rows
from aurora_batch.store.zarrs import zarr_store

ROWS = np.array([4999, 3, 3, 700, 64, 65, 130, 2100, 1023, 0])  # unsorted, repeated, across shards


def _write(store, name: str = "x", **kw) -> zarr.Array:
    """A 5,000 x 7 array of 256-row shards, 64-row inner chunks, with a shard and an inner chunk never written."""
    arr = zarr.create_array(store, name=name, shape=(5000, 7), dtype="float32", fill_value=np.nan, **kw)
    values = np.arange(5000 * 7, dtype=np.float32).reshape(5000, 7)
    arr[:512] = values[:512]  # shards 0-1
    arr[768:1024] = values[768:1024]  # shard 3; shard 2 never written
    arr[1024:1088] = values[1024:1088]  # shard 4: one inner chunk of four
    arr[2048:] = values[2048:]
    return arr


def _sharded(store, name: str = "x") -> zarr.Array:
    return _write(store, name, chunks=(64, 7), shards=(256, 7))


def _equal(arr: zarr.Array, rows: np.ndarray) -> None:
    got, want = read_rows(arr, rows), arr.get_orthogonal_selection((rows, slice(None)))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype


def test_rows_equal_zarrs_selection_with_fill_values_where_nothing_was_written(tmp_path):
    arr = _sharded(LocalStore(tmp_path / "s.zarr"))
    _equal(arr, ROWS)
    _equal(arr, np.array([600, 1100, 1030]))  # a shard never written, an inner chunk never written, one written
    assert np.isnan(read_rows(arr, np.array([600, 1100]))).all()
    _equal(arr, np.zeros(0, np.int64))
    _equal(_write(LocalStore(tmp_path / "u.zarr"), chunks=(256, 7)), ROWS)  # unsharded: read by Zarr


def test_strings_of_a_sharded_url_array(tmp_path):
    import xarray as xr

    urls = np.array([f"s3://asi/nya/2010/12/01/frame_{i:05d}.png" for i in range(3000)], dtype=object)
    encoding = {"url": {"chunks": (256,), "shards": (1024,)}}
    xr.Dataset({"url": ("time", urls)}).to_zarr(tmp_path / "m.zarr", encoding=encoding, zarr_format=3)
    arr = zarr.open_group(tmp_path / "m.zarr", mode="r")["url"]
    assert list(read_rows(arr, ROWS[ROWS < 3000])) == list(urls[ROWS[ROWS < 3000]])


def test_one_request_per_shard_index_and_per_inner_chunk(tmp_path):
    _sharded(LocalStore(tmp_path / "s.zarr"))
    logged = LoggingStore(LocalStore(tmp_path / "s.zarr", read_only=True))
    arr = zarr.open_array(logged, path="x", mode="r")
    logged.counter.clear()
    read_rows(arr, ROWS)
    written = ROWS[ROWS // 256 != 2]  # shard 2 has no index to read after its missing one
    assert logged.counter["get"] == len(np.unique(ROWS // 256)) + len(np.unique(written // 64))


@pytest.mark.parametrize("kind", ["icechunk", "s3"])
def test_rows_from_icechunk_and_object_storage(tmp_path, kind, request):
    if kind == "icechunk":
        import icechunk

        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
        session = repo.writable_session("main")
        _sharded(session.store)
        session.commit("rows")
        store = repo.readonly_session("main").store
    else:
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("bucket")
        store = zarr_store(f"s3://{bucket}/s.zarr", server.storage_options)
        _sharded(store)
    _equal(zarr.open_array(store, path="x", mode="r"), ROWS)
