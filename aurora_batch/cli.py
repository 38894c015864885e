"""The ``aurora-batch`` command line.  Every sub-command has ``--help``."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from . import __version__
from .config import JobSpecError, load_job
from .lock import LockHeld

__all__ = ["main"]


def _synth(args: argparse.Namespace) -> int:
    from .synth import write_archive

    labels = write_archive(args.output_url, args.stations.split(","), args.start, args.end,
                           cadence=args.cadence, seed=args.seed, wavelength=args.wavelength,
                           corrupt=args.corrupt)
    counts = labels["label"].value_counts().to_dict()
    print(f"wrote {len(labels)} SYNTHETIC frames (+{args.corrupt} corrupt files) to {args.output_url}")
    print("  classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def _season(args: argparse.Namespace) -> int:
    from .season import run_season

    job = load_job(args.job, **{"cluster.scheduler": args.scheduler, "cluster.n_workers": args.workers})
    summary = run_season(job, progress=not args.quiet)
    print(summary.format())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aurora-batch", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"aurora-batch {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a SYNTHETIC all-sky archive (demos, tests)",
                       description="Write a SYNTHETIC archive of ASIM-named 16-bit PNG frames with labels.csv.")
    s.add_argument("output_url", help="fsspec URL to write to, e.g. file:///tmp/archive")
    s.add_argument("--stations", default="NYA,LYR", help="comma-separated station codes (default NYA,LYR)")
    s.add_argument("--start", required=True, help="first frame time, UTC (e.g. 2010-12-01)")
    s.add_argument("--end", required=True, help="end time (exclusive), UTC")
    s.add_argument("--cadence", default="10min", help="pandas frequency between frames (default 10min)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--wavelength", type=int, default=5577, help="filter wavelength, Å (default 5577)")
    s.add_argument("--corrupt", type=int, default=0, help="extra broken files to exercise rejections")
    s.set_defaults(func=_synth)

    r = sub.add_parser("season", help="run a season job spec (YAML) on Dask",
                       description="Sweep an archive into monthly Zarr stores as the job spec says.")
    r.add_argument("job", help="job spec YAML (keys: input, output, stations, start, end, ...)")
    r.add_argument("--scheduler", help="tcp://host:port of an existing Dask scheduler (default: LocalCluster)")
    r.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per core)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_season)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # before distributed is imported: it configures its loggers from dask's config
        import dask

        dask.config.set({"logging.distributed": "warning"})
        logging.getLogger("distributed").setLevel(logging.WARNING)
    # skyfield-data's Earth-orientation file is stale; we use the built-in timescale, so it is irrelevant.
    warnings.filterwarnings("ignore", message="The file finals2000A.all has expired")
    try:
        return args.func(args)
    except JobSpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except LockHeld as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
