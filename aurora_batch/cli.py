"""The ``aurora-batch`` command line.  Every sub-command has ``--help``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aurora_batch._version import __version__
from aurora_batch.config import JobSpecError, load_job
from aurora_batch.core.fs import StorageError
from aurora_batch.core.lock import LockHeld


def _synth(args: argparse.Namespace) -> int:
    from aurora_batch.datasets.synth import write_archive

    labels = write_archive(
        args.output_url,
        args.stations.split(","),
        args.start,
        args.end,
        cadence=args.cadence,
        seed=args.seed,
        wavelength=args.wavelength,
        corrupt=args.corrupt,
    )
    if args.instruments:
        from aurora_batch.datasets.synth import write_instruments

        written = write_instruments(args.instruments, labels, seed=args.seed)
        print(f"wrote {len(written)} SYNTHETIC instrument files to {args.instruments}")
    counts = labels["label"].value_counts().to_dict()
    print(f"wrote {len(labels)} SYNTHETIC frames (+{args.corrupt} corrupt files) to {args.output_url}")
    print("  classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def _season(args: argparse.Namespace) -> int:
    from aurora_batch.runner.season import run_season

    job = load_job(
        args.job,
        **{"cluster.scheduler": args.scheduler, "cluster.n_workers": args.workers, "cluster.kind": args.cluster},
    )
    summary = run_season(job, progress=not args.quiet, rebuild=args.rebuild)
    print(summary.format())
    return 0


def _nightly(args: argparse.Namespace) -> int:
    from aurora_batch.runner.nightly import run_nightly

    job = load_job(args.job, **{"cluster.scheduler": args.scheduler})
    summary = run_nightly(job, progress=not args.quiet)
    print(summary.line())
    if summary.status != "ok":
        print(f"error: {summary.error}", file=sys.stderr)
        return {"LockHeld": 3, "StorageError": 4}.get(summary.error.split(":", 1)[0], 1)
    return 0


def _join(args: argparse.Namespace) -> int:
    from aurora_batch.runner.joins import run_join

    print(run_join(load_job(args.job)).format())
    return 0


def _labels(args: argparse.Namespace) -> int:
    from aurora_batch.month.build import update_labels
    from aurora_batch.runner.joins import month_stores

    job = load_job(args.job)
    for month, _ in month_stores(job):
        rows = update_labels(job, month)
        done = "no recorded state (rebuild it: season --rebuild)" if rows is None else f"{rows} rows written"
        print(f"{month}: {done}")
    return 0


def _query(args: argparse.Namespace) -> int:
    from aurora_batch.products.files import write_table
    from aurora_batch.products.query import query

    job = load_job(args.job)
    stations = args.stations.split(",") if args.stations else None
    hits = query(
        job.output,
        args.where,
        stations,
        args.start or job.start,
        args.end or job.end,
        job.output_storage_options,
        table=args.table,
        order_by=args.order_by,
        limit=args.limit,
    )
    if args.out:
        print(f"wrote {write_table(hits, args.out)}: {len(hits)} rows")
    else:
        print(hits.to_string(max_rows=40))
    return 0


def _similar(args: argparse.Namespace) -> int:
    from aurora_batch.products.files import write_table
    from aurora_batch.products.similar import contact_sheet, similar

    job = load_job(args.job)
    if args.image is None and not (args.station and args.time):
        raise JobSpecError("similar: give --image FILE, or --station and --time of a stored frame")
    query = args.image if args.image else (args.station.upper(), args.time)
    stations = args.stations.split(",") if args.stations else None
    hits = similar(
        job.output,
        query,
        args.k,
        stations,
        args.start or job.start,
        args.end or job.end,
        args.where,
        job.output_storage_options,
    )
    print(write_table(hits, args.out) if args.out else hits.to_string())
    if args.sheet:
        print(f"wrote {contact_sheet(hits, args.sheet, job.storage_options)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from aurora_batch.products.report import make_report

    job = load_job(args.job)
    out = args.out or "report"
    result = make_report(job, out, max_points=args.max_points, progress=not args.quiet)
    for k, v in result.numbers.items():
        print(f"  {k}: {v:.4g}")
    for n in result.notes:
        print(f"  note: {n}")
    print(
        f"wrote {result.html}: {len(result.figures)} figures, {len(result.embeddings)} embedding maps, "
        f"{len(result.keograms)} keograms"
    )
    return 0


def _oath_features(args: argparse.Namespace):
    from aurora_batch.datasets.oath import read_oath
    from aurora_batch.products.oath import oath_features

    ds = read_oath(args.oath_dir, rotated=args.rotated)
    feats = oath_features(ds, args.backbone, args.recipe, args.weights, args.cache, batch_size=args.batch_size)
    return ds, feats


def _evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from aurora_batch.products.oath import evaluate, format_table, plot_scores

    ds, feats = _oath_features(args)
    scores = evaluate(ds, feats, args.head, alpha=args.alpha, c=args.C)
    scores.update(backbone=args.backbone, recipe=args.recipe, rotated=args.rotated, oath_dir=str(args.oath_dir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    plot_scores(scores, out / "scores.png")
    print(format_table(scores))
    print(f"wrote {out / 'scores.json'} and {out / 'scores.png'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from aurora_batch.model.backbones import backbone_id
    from aurora_batch.products.oath import train

    ds, feats = _oath_features(args)
    split = None if args.split < 0 else args.split
    head = train(
        ds,
        feats,
        args.head,
        split=split,
        alpha=args.alpha,
        c=args.C,
        meta={
            "backbone": backbone_id(args.backbone),
            "recipe": args.recipe,
            "weights": Path(args.weights).name if args.weights else "shipped",
            "rotated": args.rotated,
        },
    )
    sidecar = head.save(args.out)
    synth = " (SYNTHETIC data: a demo head, not for science)" if ds.synthetic else ""
    scores = head.meta.get("scores")
    tail = (
        (
            f"; split {split} test accuracy {100 * scores['accuracy6']:.1f} % (6 classes), "
            f"{100 * scores['accuracy2']:.1f} % (2 classes)"
        )
        if scores
        else ""
    )
    print(f"wrote head {sidecar.with_suffix('.npz')} and {sidecar}{synth}{tail}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from aurora_batch.products.files import classify_files, describe, write_table

    if args.features and not (args.out and args.out.endswith((".parquet", ".npz"))):
        raise ValueError("--features needs --out TABLE.parquet or TABLE.npz (1,280 columns do not belong in a CSV)")
    table = classify_files(
        args.files,
        args.head,
        recipe=args.recipe,
        backbone=args.backbone,
        device=args.device,
        features=args.features,
        progress=not args.quiet,
    )
    if args.out:
        print(f"wrote {write_table(table, args.out)}")
    else:
        cols = [c for c in ("url", "frame", "time", "status", "label", "aurora_proba") if c in table]
        print(table[cols].to_string(index=False, max_rows=40))
    print(describe(table))
    return 0


def _keogram(args: argparse.Namespace) -> int:
    from aurora_batch.products.keogram import open_night, plot_keogram

    job = load_job(args.job)
    station = args.station.upper()
    ds = open_night(
        job.output, station, args.night, wavelength=args.wavelength, storage_options=job.output_storage_options
    )
    out = Path(args.out or f"keogram_{station}_{args.night}.png")
    plot_keogram(ds, out, title=f"{station} night of {args.night} ({ds.sizes['time']} frames)")
    print(f"wrote {out}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from aurora_batch.products.results import month_stores, store_history

    job = load_job(args.job)
    months = [args.month] if args.month else list(month_stores(job.output, storage_options=job.output_storage_options))
    for month in months:
        table = store_history(job.output, month, job.output_storage_options)
        print(f"{month}: {len(table)} version(s), newest first")
        if len(table):
            shown = table.assign(
                time=table["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), fingerprint=table["fingerprint"].str.slice(0, 40)
            )
            print(shown[["id", "time", "command", "images", "message"]].to_string(index=False))
    return 0


def _synth_oath(args: argparse.Namespace) -> int:
    from aurora_batch.datasets.oath import write_synthetic_oath

    root = write_synthetic_oath(args.output_dir, args.per_class, args.seed)
    print(f"wrote a SYNTHETIC OATH-format tree ({6 * args.per_class} images) to {root}")
    return 0


def _add_oath_args(p: argparse.ArgumentParser) -> None:
    from aurora_batch.model.heads import HEAD_KINDS

    p.add_argument("oath_dir", help="unpacked oath_v1.1 tree (classifications/, images/)")
    p.add_argument("--head", choices=HEAD_KINDS, default="ridge", help="linear head (default ridge, alpha 0.03)")
    p.add_argument("--recipe", default="oath", help="preprocessing recipe (default oath)")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--weights", help="user backbone weights (state dict)")
    p.add_argument("--rotated", action="store_true", help="use images/cropped_scaled_rotated")
    p.add_argument("--alpha", type=float, default=0.03, help="ridge penalty (OATH: 0.03)")
    p.add_argument("--C", type=float, default=1.0, help="SVM/logistic inverse penalty")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "aurora-batch"),
        help="folder for the feature cache (a Zarr store per backbone and recipe)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aurora-batch", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"aurora-batch {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="let errors raise, with their tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_synth,
        _add_season,
        _add_nightly,
        _add_join,
        _add_labels,
        _add_query,
        _add_similar,
        _add_report,
        _add_evaluate,
        _add_train,
        _add_classify,
        _add_keogram,
        _add_history,
        _add_synth_oath,
    ):
        add(sub)
    return p


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a SYNTHETIC all-sky archive (demos, tests)",
        description="Write a SYNTHETIC archive of ASIM-named 16-bit PNG frames with labels.csv.",
    )
    p.add_argument("output_url", help="fsspec URL to write to, e.g. file:///tmp/archive")
    p.add_argument("--stations", default="NYA,LYR", help="comma-separated station codes (default NYA,LYR)")
    p.add_argument("--start", required=True, help="first frame time, UTC (e.g. 2010-12-01)")
    p.add_argument("--end", required=True, help="end time (exclusive), UTC")
    p.add_argument("--cadence", default="10min", help="pandas frequency between frames (default 10min)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--wavelength", type=int, default=5577, help="filter wavelength, Å (default 5577)")
    p.add_argument("--corrupt", type=int, default=0, help="extra broken files to exercise rejections")
    p.add_argument("--instruments", help="also write SYNTHETIC ceilometer and magnetometer files under this URL")
    p.set_defaults(func=_synth)


def _add_season(sub) -> None:
    p = sub.add_parser(
        "season",
        help="run a season job spec (YAML) on Dask",
        description="Sweep an archive into monthly Zarr stores as the job spec says.",
    )
    p.add_argument("job", help="job spec YAML (keys: input, output, stations, start, end, ...)")
    p.add_argument("--scheduler", help="tcp://host:port of an existing Dask scheduler (default: LocalCluster)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per core)")
    p.add_argument("--cluster", choices=["local", "slurm", "kubernetes"], help="cluster kind (default: job spec)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the window's months whole from their staged parts (default: append what changed)",
    )
    p.set_defaults(func=_season)


def _add_nightly(sub) -> None:
    p = sub.add_parser(
        "nightly",
        help="process only files newer than the last run (idempotent, locked)",
        description="Incremental run: files since the watermark minus the look-back. Prints one "
        "key=value summary line; exits 3 when another run holds the lock, 1 on failure.",
    )
    p.add_argument("job", help="job spec YAML (nightly.lookback sets the look-back, default 6h)")
    p.add_argument("--scheduler", help="tcp://host:port of an existing Dask scheduler")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (default in nightly)")
    p.set_defaults(func=_nightly)


def _add_join(sub) -> None:
    p = sub.add_parser(
        "join",
        help="join ceilometer and magnetometer series into the month stores",
        description="Attach the nearest instrument samples (job spec 'join:') to every image.",
    )
    p.add_argument("job", help="job spec YAML with a 'join:' section")
    p.set_defaults(func=_join)


def _add_labels(sub) -> None:
    p = sub.add_parser(
        "labels",
        help="write the label tables of published months (those written before the tables existed)",
        description="Bring {output}/labels and {output}/labels_10min up to every published month in the "
        "window; month commits keep them up to date themselves.",
    )
    p.add_argument("job", help="job spec YAML (its output holds the stores)")
    p.set_defaults(func=_labels)


def _add_query(sub) -> None:
    p = sub.add_parser(
        "query",
        help="frames of the label table matching an SQL condition",
        description="Run an SQL condition over the label table (DuckDB), reading only the months and "
        "stations asked for, e.g. --where \"label = 'arc' AND aurora_proba > 0.8 AND cloud_detected = 0\".",
    )
    p.add_argument("job", help="job spec YAML (its output holds the label table)")
    p.add_argument("--where", help="SQL condition over the table's columns (default: every row)")
    p.add_argument("--stations", help="comma-separated station codes (default: all)")
    p.add_argument("--start", help="first time, UTC (default: the job's start)")
    p.add_argument("--end", help="end time (exclusive), UTC (default: the job's end)")
    p.add_argument("--table", default="labels", choices=["labels", "labels_10min"])
    p.add_argument(
        "--order-by", default="station, time", help="SQL sort, e.g. 'confidence DESC' (default: %(default)s)"
    )
    p.add_argument("--limit", type=int, help="at most this many rows (default: all)")
    p.add_argument("--out", help="table to write: .csv or .parquet (default: print it)")
    p.set_defaults(func=_query)


def _add_similar(sub) -> None:
    p = sub.add_parser(
        "similar",
        help="the stored frames most like an image or a stored frame",
        description="Nearest neighbours by feature cosine over the window's month indexes, e.g. --station GILL "
        "--time 2014-01-05T06:12:03, or --image FILE (featurised with the stores' backbone and recipe).",
    )
    p.add_argument("job", help="job spec YAML (its output holds the stores)")
    p.add_argument("--image", help="an image file or URL")
    p.add_argument("--station", help="station of a stored frame")
    p.add_argument("--time", help="time (UTC) of a stored frame")
    p.add_argument("-k", type=int, default=10, help="frames to return (default %(default)s)")
    p.add_argument("--stations", help="comma-separated station codes to search (default: all)")
    p.add_argument("--start", help="first time, UTC (default: the job's start)")
    p.add_argument("--end", help="end time (exclusive), UTC (default: the job's end)")
    p.add_argument("--where", help='SQL condition over the label table (e.g. "cloud_detected = 0")')
    p.add_argument("--out", help="table to write: .csv or .parquet (default: print it)")
    p.add_argument("--sheet", help="also a contact sheet PNG of the hits, re-read from their URLs")
    p.set_defaults(func=_similar)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="TAME's figures, feature maps and keograms from the stores, as one HTML page",
        description="Cloud coverage, cloud ROC, magnetometer ridge, class occurrence, a t-SNE map "
        "per station and month, and a keogram per station-night.",
    )
    p.add_argument("job", help="job spec YAML")
    p.add_argument("--out", help="folder for report.html and the PNGs (default ./report)")
    p.add_argument("--max-points", type=int, default=1000, help="frames per embedding map (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_report)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="the OATH 5-split protocol: accuracy table, confusion, figure",
        description="Fit a linear head on each of OATH's 5 fixed splits and score it.",
    )
    _add_oath_args(p)
    p.add_argument("--out", required=True, help="folder for scores.json and scores.png")
    p.set_defaults(func=_evaluate)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fit a linear head on OATH features and save it",
        description="Fit a head on one OATH split (or all images) and save HEAD.npz + HEAD.json.",
    )
    _add_oath_args(p)
    p.add_argument("--out", required=True, help="head file to write (.npz; a .json sidecar goes beside it)")
    p.add_argument("--split", type=int, default=0, help="split to train on (0-4; -1: all images)")
    p.set_defaults(func=_train)


def _add_classify(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify image files in this process (no job spec, no cluster)",
        description="One row per frame: url, frame, station, time, status, Sun and Moon, class "
        "probabilities, label and aurora probability (features with --features).",
    )
    p.add_argument("files", nargs="+", help="files, globs or folders (any fsspec URL)")
    p.add_argument("--head", help="head file (.npz with its .json sidecar) from 'aurora-batch train'")
    p.add_argument("--recipe", help="preprocessing recipe (default: the head's, else lite128)")
    p.add_argument("--backbone", help="shipped backbone or model file (default: the head's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="table to write: .csv, .parquet or .npz (default: print it)")
    p.add_argument("--features", action="store_true", help="also the feature vectors (into .parquet or .npz)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_classify)


def _add_keogram(sub) -> None:
    p = sub.add_parser(
        "keogram",
        help="draw one station-night's keogram from the stores as a PNG",
        description="The north-south line through zenith of every stored frame of a night "
        "(local solar noon to noon), over the class timeline.",
    )
    p.add_argument("job", help="job spec YAML (its output holds the stores)")
    p.add_argument("--station", required=True)
    p.add_argument("--night", required=True, help="date of the evening the night begins, e.g. 2010-12-05")
    p.add_argument("--wavelength", type=int, help="wavelength subgroup (Å) where a station has several")
    p.add_argument("--out", help="PNG path (default keogram_<STATION>_<NIGHT>.png)")
    p.set_defaults(func=_keogram)


def _add_history(sub) -> None:
    p = sub.add_parser(
        "history",
        help="the versions of each month store (store.format: icechunk)",
        description="One row per commit of a month: id (open it with version=), time, command, images, message.",
    )
    p.add_argument("job", help="job spec YAML (its output holds the stores)")
    p.add_argument("--month", help="YYYY-MM (default: every month)")
    p.set_defaults(func=_history)


def _add_synth_oath(sub) -> None:
    p = sub.add_parser(
        "synth-oath",
        help="write a SYNTHETIC tree in the OATH v1.1 format",
        description="Write a SYNTHETIC OATH-format tree from the sky model (demos, tests).",
    )
    p.add_argument("output_dir")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth_oath)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # before distributed is imported: it configures its loggers from dask's config
        import dask

        dask.config.set({"logging.distributed": "warning"})
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except JobSpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except LockHeld as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except StorageError as err:
        print(f"error: {err} (--debug for the traceback)", file=sys.stderr)
        return 4
    except (FileNotFoundError, KeyError, LookupError, ValueError, RuntimeError, IndexError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # anything else: one line, and the traceback on request
        print(f"error: {type(err).__name__}: {err} (--debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
