"""The streaming input pipeline: order, rejections, bounded read-ahead, storage outages."""

import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_job
from PIL import Image

from aurora_batch.core.fs import read_bytes
from aurora_batch.core.keys import WHOLE_FILE, PartitionKey, Status
from aurora_batch.datasets.synth import asim_name, render_colour_frame, render_frame
from aurora_batch.formats.decode import ImageError
from aurora_batch.formats.files import read_file
from aurora_batch.model.features import extract_features
from aurora_batch.model.recipes import get_recipe
from aurora_batch.partition.process import process_partition
from aurora_batch.partition.stream import StreamSettings, stream_files
from aurora_batch.store.layout import staging_url
from aurora_batch.store.parts import read_part

DATA = Path(__file__).parent / "data"
THEMIS = "20140310_0605_gill_themis19_full.pgm.gz"  # real, 3 frames


def test_stream_keeps_order_and_returns_file_faults():
    items = list(range(40))

    def fetch(i):
        time.sleep(0.002 * (i % 7))  # finish out of order
        if i == 5:
            raise FileNotFoundError(f"file {i} is gone")
        return bytes([i])

    def decode(data, i):
        if i == 9:
            raise ImageError(f"file {i}: cannot decode")
        return data[0] * 10

    got = list(stream_files(items, fetch, decode, settings=StreamSettings(8, 1 << 20, 3)))
    assert [i for i, _ in got] == items
    assert isinstance(got[5][1], FileNotFoundError) and isinstance(got[9][1], ImageError)
    assert all(r == i * 10 for i, r in got if i not in (5, 9))


def test_stream_raises_storage_errors_and_stops():
    fetched = []

    def fetch(i):
        fetched.append(i)
        if i == 3:
            raise ConnectionError("storage is down")
        return b"x"

    seen = []
    with pytest.raises(ConnectionError, match="storage is down"):
        for i, _result in stream_files(list(range(200)), fetch, lambda d, i: d, settings=StreamSettings(2, 1 << 20, 1)):
            seen.append(i)
    assert seen == [0, 1, 2]  # nothing after the failure is handed on, and no rejection is made of it
    time.sleep(0.2)
    assert len(fetched) < 200  # the rest was cancelled


def test_stream_bounds_bytes_read_ahead():
    """Listed bytes fetched but not yet consumed never exceed the budget (one big file may go alone)."""
    sizes = [10 << 20] * 12 + [100 << 20] + [10 << 20] * 5
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def fetch(i):
        with lock:
            state["now"] += sizes[i]
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.01)
        return b""

    budget = 35 << 20
    for i, _ in stream_files(
        list(range(len(sizes))), fetch, lambda d, i: i, size=lambda i: sizes[i], settings=StreamSettings(16, budget, 2)
    ):
        time.sleep(0.02)  # a slow consumer: the fetchers would run far ahead without the budget
        with lock:
            state["now"] -= sizes[i]
    assert state["peak"] == 100 << 20  # the oversized file, alone
    assert state["now"] == 0


def _mixed_partition(root: Path) -> pd.DataFrame:
    """One partition's rows: synthetic PNGs, a real THEMIS PGM, a large colour JPEG, and broken files."""
    rng = np.random.default_rng(5)
    t0 = pd.Timestamp("2010-12-01T01:00")
    rows = []

    def add(rel, data, t):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        rows.append(
            {
                "url": f"file://{path}",
                "station": "NYA",
                "time": t,
                "wavelength": 5577,
                "status": Status.PENDING,
                "detail": "",
                "sun_alt": -20.0,
                "moon_alt": -5.0,
                "moon_illumination": 0.3,
                "size": len(data) if data is not None else None,
            }
        )

    for k in range(9):
        t = t0 + pd.Timedelta(minutes=k)
        buf = io.BytesIO()
        Image.fromarray(render_frame(["arc", "cloudy", "clear"][k % 3], t, rng)).save(buf, format="PNG")
        add(asim_name("NYA", t), buf.getvalue(), t)
        if k == 2:
            add(asim_name("NYA", t + pd.Timedelta(seconds=10)), b"", t + pd.Timedelta(seconds=10))
        if k == 4:
            add(asim_name("NYA", t + pd.Timedelta(seconds=10)), buf.getvalue()[:500], t + pd.Timedelta(seconds=10))
        if k == 6:
            add(asim_name("NYA", t + pd.Timedelta(seconds=10)), None, t + pd.Timedelta(seconds=10))  # listed, gone
    add(THEMIS, (DATA / THEMIS).read_bytes(), t0 + pd.Timedelta(minutes=20))
    buf = io.BytesIO()
    Image.fromarray(render_colour_frame("discrete", t0, rng, 2832)).save(buf, format="JPEG", quality=90)
    add("NYA_20101201_013000.jpg", buf.getvalue(), t0 + pd.Timedelta(minutes=30))
    frame = pd.DataFrame(rows)
    frame["time"] = frame["time"].astype("datetime64[ns]")
    return frame.sample(frac=1, random_state=1).reset_index(drop=True)  # the partition sorts by time


def _sequential_reference(rows: pd.DataFrame, recipe_name: str):
    """The plain path: one file after another, decode, recipe, then the network on everything."""
    recipe = get_recipe(recipe_name)
    out, tensors = [], []
    for row in rows.sort_values("time").to_dict("records"):
        try:
            frames = read_file(read_bytes(row["url"]), row["url"], min_side=recipe.min_side)
            xs = [recipe(img) for img in frames.images]
        except (ImageError, FileNotFoundError) as err:
            out.append((row["url"], Status.UNREADABLE, str(err), WHOLE_FILE, row["time"]))
            continue
        for i, (t, x) in enumerate(zip(frames.times, xs)):
            out.append((row["url"], Status.KEPT, "", i, pd.Timestamp(t or row["time"])))
            tensors.append(x)
    return out, extract_features(np.stack(tensors), device="cpu")


@pytest.mark.parametrize("recipe", ["lite128", "kvammen"])
@pytest.mark.parametrize("fetch, decode, prefetch_mb", [(1, 1, 256), (8, 3, 1.5)])
def test_pipelined_partition_matches_sequential_path(tmp_path, recipe, fetch, decode, prefetch_mb):
    rows = _mixed_partition(tmp_path / "in")
    job = make_job(
        f"file://{tmp_path}/in",
        f"file://{tmp_path}/out",
        features={
            "recipe": recipe,
            "fetch_concurrency": fetch,
            "decode_threads": decode,
            "prefetch_mb": prefetch_mb,
            "batch_size": 4,
        },
        filter={"moon_max_alt": None, "sun_max_alt": 90},
    )  # the real PGM is from March at Gillam
    result = process_partition(job, PartitionKey.parse("NYA_5577_20101201"), rows)
    staged, arrays = read_part(staging_url(job.output, PartitionKey.parse("NYA_5577_20101201")))
    expected, features = _sequential_reference(rows, recipe)
    got = list(staged[["url", "status", "detail", "frame", "time"]].itertuples(index=False, name=None))
    assert got == expected
    np.testing.assert_allclose(arrays["features"], features, rtol=1e-4, atol=1e-4)
    details = staged.loc[staged["status"] == Status.UNREADABLE, "detail"]
    assert len(details) == 3 and any("empty file" in d for d in details)
    assert any("No such file" in d for d in details)
    assert result.images == 9 + 3 + 1 and result.statuses == {Status.KEPT: 11, Status.UNREADABLE: 3}


@pytest.mark.slow
def test_storage_outage_during_prefetch_fails_the_task(s3_server, bucket, tmp_path, monkeypatch):
    """The S3 connection is cut mid-partition: the task fails, nothing is staged, nothing is rejected."""
    import s3fs
    from latency_proxy import LatencyProxy

    # s3fs retries a dropped connection 5 times with back-off (about 4 s a read, measured); once is enough here.
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)

    rows = _mixed_partition(tmp_path / "in")
    fs = s3_server.filesystem()
    rows = rows[~rows["url"].str.endswith(".jpg")].copy()  # small files only: many requests
    for i, row in rows.iterrows():
        local = row["url"].removeprefix("file://")
        key = f"{bucket}/in/{local.rsplit('/', 1)[-1]}"
        if Path(local).exists():
            fs.put_file(local, key)
        rows.loc[i, "url"] = f"s3://{key}"
    proxy = LatencyProxy(s3_server.port, latency_s=0.02, cut_after_requests=4)
    opts = {
        **s3_server.storage_options,
        "client_kwargs": {"endpoint_url": proxy.endpoint},
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }  # fail fast
    job = make_job(
        f"s3://{bucket}/in",
        f"file://{tmp_path}/out",
        storage_options=opts,
        features={"fetch_concurrency": 4, "decode_threads": 2},
        filter={"moon_max_alt": None, "sun_max_alt": 90},
    )  # the real PGM is from March at Gillam
    try:
        with pytest.raises(Exception) as info:
            process_partition(job, PartitionKey.parse("NYA_5577_20101201"), rows)
    finally:
        proxy.close()
    assert not isinstance(info.value, ImageError | FileNotFoundError)
    assert not Path(staging_url(job.output, PartitionKey.parse("NYA_5577_20101201")).removeprefix("file://")).exists()
    # Storage back: the same partition stages every file, with only the truly broken ones rejected.
    healthy = job.model_copy(update={"storage_options": s3_server.storage_options})
    result = process_partition(healthy, PartitionKey.parse("NYA_5577_20101201"), rows)
    assert result.statuses == {Status.KEPT: 10, Status.UNREADABLE: 3}
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
