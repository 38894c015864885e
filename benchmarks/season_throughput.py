"""Season throughput at steady state, apart from what every run pays once, against the CPU roof.

Writes a SYNTHETIC archive of one station, ``--small`` frames a day (256² 16-bit PNGs one a minute, or
``--kind jpeg``: 2832² colour JPEGs; every frame kept: Sun and Moon tests off), and runs seasons of
``--small`` and ``--large`` frames (one day and, by default, four: a run's window is whole UTC days),
``aurora-batch season`` on each as a user would (a fresh process, the embedded LocalCluster).
Prints, measured in this run, with the CPU model:

- the **steady-state** rate: the marginal rate between the two seasons, (large - small) / (T_large - T_small),
  and the same between their partition phases only (free of the fixed phases' run-to-run noise);
- the **whole-run** rate of each, and its **fixed cost**: the run's time less its frames at the steady
  rate, with the phases the run reports (cluster start, worker setup, planning, partitions, months
  after the last partition, shutdown; the rest is the process: imports, the job spec, the lock);
- the **CPU time per stage** of the partitions (fetch, decode, checks, recipe, keogram lines, network,
  staging, model load);
- the **CPU roof**: decoding + recipe alone and the fastest plain inference alone (torch eager, ONNX Runtime,
  OpenVINO where installed; at the mode's precision) on all cores, 1 / (1/d + 1/n);
- the seasons with torch eager (``features.runtime: torch``, the baseline) and with the default settings
  (``runtime: auto``: ONNX Runtime on CPU), side by side;
- ``--compile``: the same with ``features.compile: true``, eager and compiled side by side, the compiled
  seasons with a warm Inductor cache (``features.compile_cache``), after a first run that fills it (its
  extra time is the cold-cache cost); ``--int8``: the same with ``features.precision: int8``; ``--bf16``:
  ``features.precision: bfloat16`` (OpenVINO's bf16 where installed; CPUs with AMX or AVX-512 BF16 only).

Usage::

    python benchmarks/season_throughput.py [--small 1440] [--large 5760] [--compile] [--int8] [--bf16] [--kind png|jpeg]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CORES, cpu_model, cpu_roof, decoding_rate, plain_inference_rate, write_synthetic_archive

KINDS = {"png": ("asim", "NYA", "256² 16-bit PNG"), "jpeg": ("kiruna", "LYR", "2832² colour JPEG (~1 MB)")}


def season_cli(tmp: Path, name: str, archive: str, station: str, layout: str, start, end, **features) -> dict:
    """One ``aurora-batch season`` run in a fresh process: wall seconds, images, and what the run reports."""
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"input: {archive}\noutput: file://{tmp}/out-{name}\nstations: [{station}]\nlayout: {layout}\n"
        f"start: {start:%Y-%m-%dT%H:%M:%S}\nend: {end:%Y-%m-%dT%H:%M:%S}\n"
        f"filter: {{sun_max_alt: 90, moon_max_alt: null}}\nfeatures: {json.dumps(features)}\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "aurora_batch.cli", "season", str(spec), "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall = time.perf_counter() - t0
    images = int(re.search(r"\((\d+) images\)", out).group(1))

    def pairs(label: str) -> dict[str, float]:
        line = next((x for x in out.splitlines() if x.strip().startswith(label)), "")
        return {k: float(v) for k, v in re.findall(r"([a-z][a-z ]*?) ([\d.]+) s", line.split(":", 1)[-1])}

    partitions = int(re.search(r"partitions: (\d+)", out).group(1))
    return {
        "wall": wall,
        "images": images,
        "phases": pairs("time:"),
        "cpu": pairs("partition CPU:"),
        "partitions": partitions,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--small",
        type=int,
        default=1440,
        help="frames of the small season: one day (1440: one a minute; a run's window is whole UTC days)",
    )
    ap.add_argument("--large", type=int, default=5760, help="frames of the large season")
    ap.add_argument("--kind", choices=list(KINDS), default="png")
    ap.add_argument("--compile", action="store_true", help="also the seasons with features.compile: true")
    ap.add_argument("--int8", action="store_true", help="also the seasons with features.precision: int8")
    ap.add_argument("--bf16", action="store_true", help="also the seasons with features.precision: bfloat16")
    args = ap.parse_args()
    import pandas as pd

    layout, station, what = KINDS[args.kind]
    tmp = Path(tempfile.mkdtemp(prefix="aurora-throughput-"))
    start = pd.Timestamp("2010-12-10")
    t0 = time.perf_counter()
    days = args.large / args.small
    kind = "colour" if args.kind == "jpeg" else "asim"
    write_synthetic_archive(f"file://{tmp}/archive", station, start, args.large, days, kind=kind)
    print(
        f"season throughput on {cpu_model()}, {CORES} cores: SYNTHETIC {what}, {args.small} a day "
        f"({args.large} written in {time.perf_counter() - t0:.0f} s)"
    )

    files = sorted((tmp / "archive").rglob("*.png" if args.kind == "png" else "*.jpg"))
    decoding = decoding_rate(files[: min(len(files), 600)])
    from aurora_batch.model import runtimes

    precisions = ["float32"] + (["bfloat16"] if args.bf16 else [])
    rates = {
        (rt, p): {n: plain_inference_rate(128, 16, n, runtime=rt, precision=p) for n in (1, CORES)}
        for p in precisions
        for rt in runtimes.RUNTIMES
        if runtimes.available(rt) and (rt == "torch" or p in runtimes.PRECISIONS[rt])
    }
    torch32 = rates["torch", "float32"]
    for (rt, p), by_threads in rates.items():
        print(
            f"  plain inference, {rt} {p}: "
            + ", ".join(
                f"{n} thread(s) {r:.1f} img/s ({r / torch32[n]:.2f} x torch float32)" for n, r in by_threads.items()
            )
        )
    roofs = {}
    for p in precisions:
        fastest = max((k for k in rates if k[1] == p), key=lambda k: rates[k][CORES])
        roofs[p] = cpu_roof(decoding, rates[fastest][CORES])
        print(
            f"  roof, {p}: decode + lite128 {decoding:.1f} img/s, plain network {rates[fastest][CORES]:.1f} img/s "
            f"({fastest[0]}, batch 16): {roofs[p]:.1f} img/s together"
        )
    steady = {}
    cache = {"compile_cache": str(tmp / "inductor")}  # empty: the first compiled run compiles cold
    modes = (
        [("eager", {"runtime": "torch"}), ("default", {})]
        + ([("compiled", {"compile": True, **cache})] if args.compile else [])
        + ([("int8", {"precision": "int8", **cache})] if args.int8 else [])
        + ([("bfloat16", {"precision": "bfloat16"})] if args.bf16 else [])
    )
    for mode, features in modes:
        runs = {}
        seasons = (("small", args.small), ("large", args.large))
        if cache.items() <= features.items():  # a first, cold-cache run; the measured ones find the graphs compiled
            seasons = (("cold", args.small),) + seasons
        for name, frames in seasons:
            end = start + pd.Timedelta(days=frames / args.small)
            runs[name] = season_cli(
                tmp, f"{mode}-{name}", f"file://{tmp}/archive", station, layout, start, end, **features
            )
        a, b = runs["small"], runs["large"]
        rate = (b["images"] - a["images"]) / (b["wall"] - a["wall"])
        inside = (b["images"] - a["images"]) / (b["phases"]["partitions"] - a["phases"]["partitions"])
        steady[mode] = rate
        roof = roofs.get(features.get("precision", "float32"), roofs["float32"])  # int8: the float32 roof
        print(
            f"  {mode}: steady state {rate:.1f} img/s ({rate / roof:.2f} of the roof); between the two runs' "
            f"partition phases alone (no fixed phase's noise) {inside:.1f} img/s ({inside / roof:.2f})"
        )
        if "cold" in runs:
            print(
                f"    a cold Inductor cache costs {runs.pop('cold')['wall'] - a['wall']:.1f} s more than a warm "
                f"one (the small season, first run with an empty features.compile_cache)"
            )
        for name, r in runs.items():
            fixed = r["wall"] - r["images"] / rate
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items() if k != "partitions")
            print(
                f"    {name} ({r['images']} images, {r['partitions']} partitions): whole run {r['wall']:.1f} s = "
                f"{r['images'] / r['wall']:.1f} img/s; fixed cost {fixed:.1f} s (phases: {phases}; "
                f"partitions {r['phases'].get('partitions', 0):.1f} s)"
            )
        cpu = b["cpu"]
        per_image = {k: 1000 * v / b["images"] for k, v in cpu.items()}
        print(
            "    CPU per image (ms, the large season's partitions): "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_image.items(), key=lambda kv: -kv[1]))
        )
    for mode in steady.keys() - {"eager"}:
        print(f"  {mode} / eager steady state: {steady[mode] / steady['eager']:.2f}")


if __name__ == "__main__":
    main()
