"""Object storage with latency: the same season read from S3 directly and with every request delayed.

Starts SeaweedFS on 127.0.0.1 (a real S3 server), writes a SYNTHETIC archive of 256² PNGs
into it, and puts a TCP proxy in front that delays every request by ``--latency-ms``
(a cloud bucket has 10–100 ms).  Runs the same season twice, reading the input directly
and through the proxy, and prints both rates and their ratio (goal ≥ 0.9).  Usage::

    python benchmarks/object_store_latency.py [--images 2000] [--latency-ms 30] [--fetch-concurrency 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import CORES, run_season_on_local_cluster, season_job, write_synthetic_archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--fetch-concurrency", type=int, default=16, help="features.fetch_concurrency")
    ap.add_argument("--workers", type=int, default=CORES)
    args = ap.parse_args()

    from latency_proxy import LatencyProxy
    from s3server import SeaweedServer

    tmp = Path(tempfile.mkdtemp(prefix="aurora-s3-bench-"))
    server = SeaweedServer(tmp / "seaweed").start()
    proxy = LatencyProxy(server.port, latency_s=args.latency_ms / 1000)
    try:
        server.filesystem().mkdir("archive")
        t0 = time.perf_counter()
        start, end, _ = write_synthetic_archive(
            "s3://archive/asim", "NYA", "2010-12-10", args.images, args.days, storage_options=server.storage_options
        )
        print(f"synthetic archive: {args.images} frames on SeaweedFS in {time.perf_counter() - t0:.1f} s")
        rates = {}
        for name, endpoint in (("direct", server.endpoint), (f"+{args.latency_ms:g} ms", proxy.endpoint)):
            options = {**server.storage_options, "client_kwargs": {"endpoint_url": endpoint}}
            job = season_job(
                "s3://archive/asim",
                f"file://{tmp}/out-{len(rates)}",
                "NYA",
                start.to_pydatetime(),
                end.to_pydatetime(),
                storage_options=options,
                fetch_concurrency=args.fetch_concurrency,
            )
            summary, _ = run_season_on_local_cluster(job, args.workers)
            rates[name] = summary.images / summary.seconds
            print(
                f"season, input {name:>8s}: {summary.images} images in {summary.seconds:.1f} s "
                f"-> {rates[name]:.1f} img/s"
            )
        direct, delayed = rates.values()
        print(
            f"ratio delayed/direct: {delayed / direct:.2f} ({proxy.requests} requests went through the proxy, "
            f"fetch_concurrency {args.fetch_concurrency})"
        )
    finally:
        proxy.close()
        server.stop()


if __name__ == "__main__":
    main()
