"""Listing a large prefix on a real S3 server (SeaweedFS on 127.0.0.1).

Writes N zero-byte objects in an ASIM-like tree (station/wavelength/year/day), then times
``aurora_batch.catalog.list_images`` (bulk ``find`` spread over prefixes) against a single
``find`` over the whole prefix, in the same process.  Usage::

    python benchmarks/listing.py [--objects 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=100_000)
    args = ap.parse_args()

    import pandas as pd
    from s3server import SeaweedServer

    from aurora_batch.datasets.synth import asim_name
    from aurora_batch.plan.catalog import list_images

    server = SeaweedServer(Path(tempfile.mkdtemp(prefix="aurora-listing-"))).start()
    try:
        fs = server.filesystem()
        fs.mkdir("listing")
        times = pd.date_range("2010-11-01", periods=args.objects // 2, freq="10s")
        names = [f"listing/archive/{asim_name(s, t)}" for s in ("NYA", "LYR") for t in times]
        t0 = time.perf_counter()
        for i in range(0, len(names), 2000):
            fs.pipe({n: b"" for n in names[i : i + 2000]})
        print(f"put {len(names)} objects in {time.perf_counter() - t0:.1f} s")
        fs.invalidate_cache()
        t0 = time.perf_counter()
        plain = fs.find("listing/archive")
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        listing = list_images("s3://listing/archive", server.storage_options)
        t_ours = time.perf_counter() - t0
        assert len(listing) == len(plain) == len(names), (len(listing), len(plain), len(names))
        print(f"single find(): {len(plain)} objects in {t_plain:.1f} s ({len(plain) / t_plain:,.0f} obj/s)")
        print(
            f"list_images (prefixes in parallel): {len(listing)} objects in {t_ours:.1f} s "
            f"({len(listing) / t_ours:,.0f} obj/s); ratio {t_plain / t_ours:.2f}x"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
