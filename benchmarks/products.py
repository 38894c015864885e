"""The science products at archive scale, against the goals of their issue.  Prints the CPU model.

- ``report``: ``make_report`` over fabricated seasons of 1 M and 10 M frames (stations × 2 months × 18 nights of
  14,400 frames at 3 s; small features and keograms, since the report's cost follows rows), each in a fresh
  process: peak RSS (goal ≤ 2 GB at both) and seconds per million rows (goal: in proportion to rows).
  With the last season, keograms (night-PNGs per second drawn by 1 and 2 worker processes; goal: 2 ≥ 1.8 × 1)
  and :func:`aurora_batch.query` over the label table its commits wrote: one station-month (goal ≤ 1 s) and
  everything (goal ≤ 5 s).
- ``join``: one month's magnetometer join (find its files, read them) in a 10-year archive of 20 stations' daily
  1-minute IAGA-2002 files, against the same join given a folder of only that month's files (goal ≤ 1.2 ×).
  The other 72,000 files are hard links to a day's file of their station: listed, and counted if read.
- ``similar``: :func:`aurora_batch.similar` end to end on a station-month of 1,280-float features as commits
  write it: the first query, which loads the codes, and the next ones, which read the rerank's rows.
- ``similarity``: the month indexes (:mod:`aurora_batch.month.similarity`) over ``--vectors`` (default 10 M)
  1,280-float pooled-CNN-like vectors in 20 groups, built as commits build them (codes a station-night, loaded
  into the group's quantiser when searched): recall@10 against exact cosine over every vector, ms per query (a
  stored vector), index bytes against float32 features, and build CPU against the season's (8 ms of CPU a
  frame, measured by ``season_throughput.py``).

Usage::

    python benchmarks/products.py [--only report,join,similar,similarity] [--rows 1e6,1e7] [--vectors 1e7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FRAMES = 14_400  #: a THEMIS station-night at 3 s
MONTHS, NIGHTS = 2, 18  #: of a fabricated season
DIM, WIDTH = 16, 64  #: features and keogram pixels of a fabricated frame (the report's cost follows rows)
SEASON_CPU_PER_FRAME = 0.008  #: seconds of CPU a frame costs a season (season_throughput.py, 256² PNG, CPU)


# ---------------------------------------------------------------- a fabricated season (report, keograms, query)


def _stage(output: str, station: str, day: str, seed: int, features: np.ndarray | None = None) -> None:
    from aurora_batch.core.keys import PartitionKey, Status
    from aurora_batch.store.layout import staging_url
    from aurora_batch.store.parts import write_part

    rng = np.random.default_rng(seed)
    times = pd.Timestamp(day) + pd.Timedelta(hours=18) + pd.to_timedelta(np.arange(FRAMES) * 3, unit="s")
    rows = pd.DataFrame(
        {
            "url": [
                f"file:///nonexistent/asi/{station.lower()}/{t:%Y%m%d_%H%M%S}_{station.lower()}.pgm.gz" for t in times
            ],
            "station": station,
            "time": times,
            "wavelength": pd.array([None] * FRAMES, "Int64"),
            "format": "themis_pgm",
            "status": Status.KEPT,
            "detail": "",
            "sun_alt": rng.uniform(-40, -12, FRAMES),
            "moon_alt": rng.uniform(-30, 0, FRAMES),
            "moon_illumination": 0.3,
            "frame": np.int32(np.arange(FRAMES) % 20),
            "saturated": np.float32(0.0),
        }
    )
    logits = rng.normal(0, 2, (FRAMES, 6))
    proba = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    sky = np.sin(np.arange(FRAMES)[:, None] / 900 + np.arange(WIDTH)[None, :] / 9) * 1500 + 2500
    keogram = (sky + rng.integers(0, 8, (FRAMES, WIDTH))).astype(np.float32)
    arrays = {
        "features": np.maximum(rng.normal(0, 1, (FRAMES, DIM)), 0).astype(np.float32) if features is None else features,
        "proba": proba,
        "keogram_ns": keogram,
        "keogram_ew": keogram[:, ::-1].copy(),
    }
    write_part(staging_url(output, PartitionKey(station, None, pd.Timestamp(day).date())), rows, arrays)


def build_season(root: Path, stations: int) -> str:
    """``stations`` × 2 months × 18 nights of frames under ``root``, published as commits publish them (label
    table and indexes too); returns the job spec (JSON)."""
    from aurora_batch.config import JobConfig
    from aurora_batch.core.stations import station_table
    from aurora_batch.datasets.synth import write_instruments
    from aurora_batch.model.heads import fit_head
    from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs

    codes = list(station_table().query("network == 'THEMIS'").index[:stations])
    head = fit_head(
        np.random.default_rng(0).random((60, DIM)),
        np.arange(60) % 6,
        "logistic",
        meta={"backbone": "efficientnet-lite0", "recipe": "lite128", "weights": "shipped"},
    )
    head.save(root / "head.npz")
    days = [f"2014-{m + 1:02d}-{d + 1:02d}" for m in range(MONTHS) for d in range(NIGHTS)]
    inst = f"file://{root}/inst"
    minutes = pd.date_range(days[0], pd.Timestamp(days[-1]) + pd.Timedelta(days=1), freq="30min")
    sky = np.where(minutes.hour % 3, "cloudy", "arc")
    write_instruments(inst, pd.DataFrame({"station": codes[0], "time": minutes, "label": sky}), seed=2)
    join = {
        "ceilometer": [{"url": f"{inst}/ceilometer/*.tab", "format": "pangaea", "stations": {codes[0]: codes[0]}}],
        "magnetometer": [{"url": f"{inst}/magnetometer/*.min", "format": "iaga2002", "stations": {codes[0]: codes[0]}}],
    }
    job = JobConfig.from_dict(
        {
            "input": "file:///nonexistent/asi",
            "output": f"file://{root}/out",
            "stations": codes,
            "start": days[0],
            "end": pd.Timestamp(days[-1]) + pd.Timedelta(days=1),
            "join": join,
            "classify": {"head": str(root / "head.npz")},
        }
    )
    work = [(job.output, s, d, i) for i, (s, d) in enumerate((s, d) for s in codes for d in days)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_stage, *zip(*work)))
    for month in sorted({d[:7] for d in days}):
        build_month(job, month_inputs(job, month), common_attrs(job), join_fingerprint(job, month))
    return job.model_dump_json()


def _child(*args: str) -> dict:
    """Run this script with ``args`` in a fresh process; its last line of output, as JSON."""
    env = {**os.environ, "PYTHONPATH": f"{HERE.parent}:{HERE}"}
    done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_report(spec: str) -> dict:
    from aurora_batch.config import JobConfig
    from aurora_batch.products.report import make_report

    job = JobConfig.model_validate_json(spec)
    t0 = time.perf_counter()
    result = make_report(job, job.output.removeprefix("file://") + "-report", max_points=2000)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "images": result.numbers["images"],
        "keograms": len(result.keograms),
    }


def time_keograms(spec: str, workers: int, nights: int) -> dict:
    """Draw the first ``nights`` station-nights' keograms with ``workers`` processes (a fresh folder)."""
    from aurora_batch.config import JobConfig
    from aurora_batch.products.report import _draw_night  # what each process of the report's pool runs

    job = JobConfig.model_validate_json(spec)
    todo = [(s, pd.Timestamp(f"2014-01-{d + 1:02d}")) for s in job.stations for d in range(NIGHTS)][:nights]
    out = Path(tempfile.mkdtemp(prefix="keograms-"))
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(_noop, range(workers)))  # processes up before the clock starts
        t0 = time.perf_counter()
        args = (job.output, None, None, None)
        futures = [pool.submit(_draw_night, s, n, out / f"{s}_{n:%Y%m%d}.png", *args) for s, n in todo]
        for f in futures:
            f.result()
        seconds = time.perf_counter() - t0
    return {"nights": len(todo), "seconds": seconds}


def _noop(_: int) -> None:
    import aurora_batch.products.report  # noqa: F401  (imported before timing, as a warm pool has)


def time_queries(spec: str) -> dict:
    from aurora_batch import query
    from aurora_batch.config import JobConfig

    job = JobConfig.model_validate_json(spec)
    one = dict(stations=[job.stations[0]], start="2014-01-01", end="2014-02-01")
    cond = "label = 'arc' AND aurora_proba > 0.8"
    out = {}
    for name, kwargs in (("one station-month", one), ("everything", {})):
        query(job.output, cond, **kwargs)  # first: the files' metadata cached, as a session's second query has
        t0 = time.perf_counter()
        hits = query(job.output, cond, **kwargs)
        out[name] = {"seconds": time.perf_counter() - t0, "hits": len(hits)}
    return out


def season_section(row_counts: list[int], keep: bool) -> None:
    for rows in row_counts:
        stations = max(1, round(rows / (MONTHS * NIGHTS * FRAMES)))
        root = Path(tempfile.mkdtemp(prefix=f"aurora-products-{stations}st-"))
        t0 = time.perf_counter()
        spec = _child("--build", str(root), str(stations))["spec"]
        built = time.perf_counter() - t0
        r = _child("--report", spec)
        n = r["images"]
        print(
            f"  report, {n / 1e6:.2f} M frames ({stations} stations x {MONTHS} months x {NIGHTS} nights, built in "
            f"{built:.0f} s): {r['seconds']:.1f} s ({r['seconds'] / n * 1e6:.1f} s per M rows), peak RSS "
            f"{r['peak_mib']:.0f} MiB (keogram processes {r['children_peak_mib']:.0f} MiB each), "
            f"{r['keograms']} keograms",
            flush=True,
        )
        if rows == row_counts[-1]:
            nights = min(40, stations * NIGHTS)
            one, two = (_child("--keograms", spec, str(w), str(nights)) for w in (1, 2))
            print(
                f"  keograms, {nights} station-nights: 1 process {one['nights'] / one['seconds']:.2f} nights/s, "
                f"2 processes {two['nights'] / two['seconds']:.2f} nights/s "
                f"({one['seconds'] / two['seconds']:.2f} x)",
                flush=True,
            )
            q = _child("--query", spec)
            for name, v in q.items():
                print(f"  query over {n / 1e6:.1f} M label rows, {name}: {v['seconds']:.3f} s ({v['hits']:,} hits)")
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the join window


def join_section(years: int = 10, stations: int = 20) -> None:
    from aurora_batch.config import JobConfig
    from aurora_batch.core.stations import station_table
    from aurora_batch.datasets import synth
    from aurora_batch.datasets.synth import write_instruments
    from aurora_batch.month.join import load_sources, month_sources

    codes = list(station_table().query("network == 'THEMIS'").index[:stations])
    iaga = {c: f"m{chr(97 + i // 26)}{chr(97 + i % 26)}".upper() for i, c in enumerate(codes)}  # 3 letters, as IAGA's
    synth.MAG_CODES.update(iaga)
    root = Path(tempfile.mkdtemp(prefix="aurora-join10y-"))
    month, first = "2015-01", pd.Timestamp("2014-12-31")  # the month, with a day either side for the tolerance
    minutes = pd.date_range(first, "2015-02-02", freq="30min", inclusive="left")
    labels = pd.concat([pd.DataFrame({"station": c, "time": minutes, "label": "arc"}) for c in codes])
    write_instruments(f"file://{root}/month", labels, seed=3)  # the month's real files: {root}/month/magnetometer
    archive = root / "archive"
    archive.mkdir()
    n = 0
    for code in codes:
        template = root / "month" / "magnetometer" / f"{iaga[code].lower()}{first:%Y%m%d}vmin.min"  # one a station
        for day in pd.date_range(f"{2010}-01-01", f"{2010 + years}-01-01", freq="D", inclusive="left"):
            name = f"{iaga[code].lower()}{day:%Y%m%d}vmin.min"
            real = root / "month" / "magnetometer" / name
            os.link(real if real.exists() else template, archive / name)
            n += 1

    def job(folder: Path) -> JobConfig:
        src = {"url": f"file://{folder}/*.min", "format": "iaga2002", "stations": iaga}
        spec = {"input": "file:///nonexistent/asi", "output": f"file://{root}/out", "stations": codes}
        return JobConfig.from_dict(
            {**spec, "start": "2015-01-01", "end": "2015-02-01", "join": {"magnetometer": [src]}}
        )

    def once(folder: Path) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        sources = month_sources(job(folder), month)
        frames = load_sources(sources)
        return time.perf_counter() - t0, sum(len(s.files) for s in sources), sum(len(f) for _, _, f in frames)

    timings: dict[str, list[float]] = {"archive": [], "month": []}
    for _ in range(3):  # interleaved
        for name, folder in (("archive", archive), ("month", root / "month" / "magnetometer")):
            seconds, files, rows = once(folder)
            timings[name].append(seconds)
            print(f"    {name}: {seconds:.2f} s, {files} files read, {rows:,} rows", flush=True)
    a, m = np.median(timings["archive"]), np.median(timings["month"])
    print(f"  join, one month of {stations} stations in {n:,} files ({years} years): {a:.2f} s; given only the month's "
          f"files: {m:.2f} s ({a / m:.2f} x)")  # fmt: skip


# ---------------------------------------------------------------- similarity


def _vectors(block: int, rows: int, centres: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    """Block ``block`` of pooled-CNN-like vectors: ReLU of a latent mixture (sky types) seen through a mixing
    matrix, plus noise: non-negative, correlated and clustered as a CNN's pooled features are."""
    rng = np.random.default_rng(1000 + block)
    z = centres[rng.integers(0, len(centres), rows)] + rng.standard_normal((rows, centres.shape[1]), np.float32)
    x = z @ mixing + 0.5 * rng.standard_normal((rows, mixing.shape[1]), np.float32)
    return np.maximum(x, 0, out=x)


RERANKS = (10, 20, 40)  #: candidates ranked again by exact cosine, whose recall the similarity section compares


def similarity_section(vectors: int, groups: int = 20, dim: int = 1280, queries: int = 50) -> None:
    import faiss

    from aurora_batch.month import similarity as sim
    from aurora_batch.products.similar import NPROBE

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (400, 48)).astype(np.float32)
    mixing = (rng.normal(0, 1, (48, dim)) / 7).astype(np.float32)
    per_group = vectors // groups
    parts = -(-per_group // FRAMES)
    asked = [(int(g), int(r)) for g, r in zip(rng.integers(0, groups, queries), rng.integers(0, per_group, queries))]
    # the query vectors: rows of the groups' blocks (block = group × parts + part)
    qv = np.stack([_vectors(g * parts + r // FRAMES, FRAMES, centres, mixing)[r % FRAMES] for g, r in asked])
    qn = sim.normalised(qv)
    exact_sims = np.full((queries, 10), -np.inf, np.float32)
    exact_ids = np.zeros((queries, 10, 2), np.int64)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    build_cpu, indexes, index_bytes = 0.0, [], 0
    for g in range(groups):
        t = time.process_time()
        empty = sim.train_quantiser(sim.normalised(_vectors(g * parts, sim.TRAIN_ROWS, centres, mixing)), per_group)
        index_bytes += len(faiss.serialize_index(empty))
        build_cpu += time.process_time() - t
        group_codes = []
        for p in range(parts):
            rows = min(FRAMES, per_group - p * FRAMES)
            x = sim.normalised(_vectors(g * parts + p, FRAMES, centres, mixing)[:rows])
            t = time.process_time()
            group_codes.append(empty.sa_encode(x))  # as written, one file of codes a station-night
            index_bytes += group_codes[-1].nbytes + 128  # with the .npy header
            build_cpu += time.process_time() - t
            cos = qn @ x.T  # the exact reference, block by block
            top = np.argpartition(-cos, 9, axis=1)[:, :10]
            both = np.concatenate([exact_sims, np.take_along_axis(cos, top, 1)], 1)
            ids = np.concatenate([exact_ids, np.stack([np.full_like(top, g), top + p * FRAMES], -1)], 1)
            keep = np.argsort(-both, 1, kind="stable")[:, :10]
            exact_sims, exact_ids = np.take_along_axis(both, keep, 1), np.take_along_axis(ids, keep[..., None], 1)
        t = time.process_time()
        merged = faiss.clone_index(empty)  # as a search loads the group
        sim.fill(merged, np.concatenate(group_codes), np.arange(per_group, dtype=np.int64))
        del group_codes
        build_cpu += time.process_time() - t
        indexes.append(merged)
        print(f"    group {g + 1}/{groups}: {merged.ntotal:,} vectors, {time.perf_counter() - wall0:.0f} s", flush=True)
    total_cpu = time.process_time() - cpu0
    # a search as aurora_batch.similar runs it: every group's index, the best 4k candidates across all of them
    # (their exact features are then read from the stores; here they are regenerated, outside the clock)
    k, ask = 10, 40
    results = {}
    for nprobe in sorted({16, NPROBE}):
        found, times = [], []
        for qi in range(queries):
            t0 = time.perf_counter()
            scores, keys = [], []
            for g, index in enumerate(indexes):
                index.nprobe = nprobe
                s, i = index.search(qn[qi : qi + 1], ask)
                scores.append(s[0])
                keys += [(g, int(r)) for r in i[0]]
            best = np.argsort(-np.concatenate(scores), kind="stable")[:ask]
            times.append(time.perf_counter() - t0)
            found.append([keys[b] for b in best])
        results[nprobe] = found, times
    wanted: dict[int, set[int]] = {}  # the candidates' exact vectors, each block generated once
    for found, _ in results.values():
        for cand in found:
            for g, r in cand:
                wanted.setdefault(g * parts + r // FRAMES, set()).add(r % FRAMES)
    exact: dict[tuple[int, int], np.ndarray] = {}
    for block, rows in wanted.items():
        x = _vectors(block, FRAMES, centres, mixing)
        exact.update({(block // parts, block % parts * FRAMES + r): x[r].copy() for r in rows})  # not views
    features = vectors * dim * 4
    print(
        f"  similarity, {vectors / 1e6:.0f} M vectors of {dim} floats in {groups} groups of {indexes[0].nlist} lists "
        f"({parts} parts each, {sim.QUANTISER}): index {index_bytes / 2**30:.2f} GiB = {index_bytes / features:.1%} "
        f"of the features, build CPU {build_cpu:.0f} s = {build_cpu / (vectors * SEASON_CPU_PER_FRAME):.2%} of the "
        f"season's (bench total {total_cpu:.0f} s)"
    )
    for nprobe, (found, times) in results.items():
        recall: dict[int, list[float]] = {n: [] for n in RERANKS}
        for qi, cand in enumerate(found):
            truth = {(int(g), int(r)) for g, r in exact_ids[qi]}
            for n in RERANKS:  # the best n candidates by the index, ranked again by their exact cosine
                top = cand[:n]
                order = np.argsort(-(sim.normalised(np.stack([exact[c] for c in top])) @ qn[qi]), kind="stable")[:k]
                recall[n].append(len({top[o] for o in order} & truth) / k)
        print(
            f"    nprobe {nprobe}{' (default)' if nprobe == NPROBE else ''}: recall@10 "
            + ", ".join(f"{np.mean(r):.3f} (min {min(r):.2f}) after the exact rerank of {n}" for n, r in recall.items())
            + f"; {np.median(times) * 1e3:.1f} ms per query (p90 {np.percentile(times, 90) * 1e3:.1f}) over the "
            f"{groups} groups"
        )


def similar_section(nights: int = 5, queries: int = 20) -> None:
    """``aurora_batch.similar`` end to end on a station-month of 1,280-float features as commits write it: the
    first query (loading the codes) and the next ones (the search and the exact rerank's reads from the store)."""
    from aurora_batch import similar
    from aurora_batch.config import JobConfig
    from aurora_batch.model.heads import fit_head
    from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs

    root = Path(tempfile.mkdtemp(prefix="aurora-similar-"))
    meta = {"backbone": "efficientnet-lite0", "recipe": "lite128", "weights": "shipped"}
    fit_head(np.random.default_rng(0).random((60, 1280)), np.arange(60) % 6, "logistic", meta=meta).save(root / "h.npz")
    days = [f"2014-01-{d + 1:02d}" for d in range(nights)]
    spec = {"input": "file:///nonexistent/asi", "output": f"file://{root}/out", "stations": ["GILL"]}
    job = JobConfig.from_dict(
        {**spec, "start": days[0], "end": "2014-02-01", "classify": {"head": str(root / "h.npz")}}
    )
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (400, 48)).astype(np.float32)
    mixing = (rng.normal(0, 1, (48, 1280)) / 7).astype(np.float32)
    for i, day in enumerate(days):
        _stage(job.output, "GILL", day, i, features=_vectors(i, FRAMES, centres, mixing))
    t0 = time.perf_counter()
    build_month(job, month_inputs(job, "2014-01"), common_attrs(job), join_fingerprint(job, "2014-01"))
    built = time.perf_counter() - t0
    asked = pd.Timestamp(days[0]) + pd.Timedelta(hours=18) + pd.to_timedelta(rng.integers(0, FRAMES, queries) * 3, "s")
    times = []
    for t in asked:
        t0 = time.perf_counter()
        hits = similar(job.output, ("GILL", t), k=10)
        times.append(time.perf_counter() - t0)
        assert hits["time"].iloc[0].tz_localize(None) == t  # a stored frame finds itself first
    print(
        f"  similar() on one station-month of {nights * FRAMES:,} frames x 1,280 floats (month built with its "
        f"label table and index in {built:.0f} s): first query {times[0] * 1e3:.0f} ms (loads the codes), then "
        f"{np.median(times[1:]) * 1e3:.0f} ms median (p90 {np.percentile(times[1:], 90) * 1e3:.0f}), with the "
        f"stored frame's features, the exact rerank and the hits' URLs read from the store"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="report,join,similar,similarity")
    ap.add_argument("--rows", default="1e6,1e7")
    ap.add_argument("--vectors", type=float, default=1e7)
    ap.add_argument("--keep", action="store_true", help="keep the fabricated seasons")
    ap.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    ap.add_argument("--keograms", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--query", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.build:
        print(json.dumps({"spec": build_season(Path(args.build[0]), int(args.build[1]))}))
    elif args.report:
        print(json.dumps(time_report(args.report)))
    elif args.keograms:
        print(json.dumps(time_keograms(args.keograms[0], int(args.keograms[1]), int(args.keograms[2]))))
    elif args.query:
        print(json.dumps(time_queries(args.query)))
    else:
        from _common import cpu_model

        only = set(args.only.split(","))
        print(f"products at archive scale on {cpu_model()}, {os.cpu_count()} cores", flush=True)
        if "report" in only:
            season_section([int(float(r)) for r in args.rows.split(",")], args.keep)
        if "join" in only:
            join_section()
        if "similar" in only:
            similar_section()
        if "similarity" in only:
            similarity_section(int(args.vectors))


if __name__ == "__main__":
    main()
