"""int8 and bfloat16 against float32 on this CPU: plain inference rates, warm-up, and fidelity on SYNTHETIC and
real frames.

Prints, measured in this run, with the CPU model:

- plain inference of EfficientNet-Lite0 at 128 px, batch 16, on all cores: float32 eager, float32 in ONNX
  Runtime (the default), float32 compiled, int8 (``features.precision: int8``), and on CPUs with AMX or
  AVX-512 BF16 ``precision: bfloat16`` in OpenVINO (what ``auto`` picks) and in torch autocast; rounds
  interleaved, medians;
- what int8 costs a worker once: quantising (export, calibration; or loading the quantised program an earlier
  run cached) and the first batch (compilation);
- fidelity of each reduced precision to float32 eager: per-frame feature cosine, and 6-class label agreement of
  a ridge head (trained on float32 features of split 0; and of splits 1-4) on the SYNTHETIC OATH tree
  (``--per-class`` images a class) and on every frame of the real samples (``--data``: THEMIS PGM and CDF, TREx
  NIR, blueline, RGB, OATH crops).

Season steady state with int8 or bfloat16: ``season_throughput.py --int8 --bf16``.

Usage::

    python benchmarks/int8.py [--per-class 40] [--data ../shared/samples/asi ../shared/samples/oath]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import CORES, cpu_model

ROOT = Path(__file__).resolve().parents[1]


def _rate(extractor, batch: np.ndarray, seconds: float = 4.0) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        extractor.push(batch)
        n += len(batch)
    extractor.result()
    return n / (time.perf_counter() - t0)


def _real_inputs(folders: list[Path], recipe) -> tuple[np.ndarray, list[str]]:
    """Every frame of every image file in ``folders`` (the reader guessed from the name), through ``recipe``."""
    from aurora_batch.formats.files import read_file

    inputs, names = [], []
    for path in sorted(p for d in folders for p in d.iterdir() if p.is_file() and not p.name.endswith(".sav")):
        frames = read_file(path.read_bytes(), path.name, None, recipe.min_side).images
        inputs += [recipe(f) for f in frames if min(f.shape[:2]) >= recipe.smallest]
        names += [path.name] * len(frames)
    return np.stack(inputs), names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument(
        "--data", type=Path, nargs="+", default=[ROOT.parent / "shared" / "samples" / d for d in ("asi", "oath")]
    )
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    from aurora_batch.datasets.oath import read_oath, write_synthetic_oath
    from aurora_batch.formats.decode import decode
    from aurora_batch.model import runtimes
    from aurora_batch.model.features import FeatureExtractor, tune_process
    from aurora_batch.model.quantize import INT8_SCHEME
    from aurora_batch.model.recipes import get_recipe
    from aurora_batch.products.oath import train

    tune_process(CORES)
    print(f"int8 benchmark on {cpu_model()}, {CORES} cores; scheme {INT8_SCHEME}")
    recipe = get_recipe("lite128")
    batch = np.random.default_rng(0).random((16, 3, 128, 128), dtype=np.float32) * 2 - 1
    t0 = time.perf_counter()
    int8 = FeatureExtractor(device="cpu", precision="int8", recipe=recipe.name)
    quantised = time.perf_counter() - t0
    t0 = time.perf_counter()
    int8.push(batch)
    int8.result()
    print(
        f"  int8 warm-up: quantising (or loading the program cached by an earlier run) {quantised:.1f} s, first "
        f"batch (compilation) {time.perf_counter() - t0:.1f} s"
    )
    extractors = {
        "float32 eager": FeatureExtractor(device="cpu", runtime="torch"),
        "float32 default": FeatureExtractor(device="cpu", runtime="auto"),
        "float32 compiled": FeatureExtractor(device="cpu", runtime="torch", compile=True),
        "int8": int8,
    }
    if runtimes.bf16_units():
        for rt in ("openvino", "torch"):
            if runtimes.available(rt):
                extractors[f"bfloat16 {rt}"] = FeatureExtractor(device="cpu", precision="bfloat16", runtime=rt)
    else:
        print("  no bfloat16: this CPU has neither AMX nor AVX-512 BF16")
    print(f"  float32 default runs in {extractors['float32 default'].runtime}")
    for e in extractors.values():
        e.push(batch)
        e.result()
    rates = {k: [] for k in extractors}
    for _ in range(args.rounds):
        for k, e in extractors.items():
            rates[k].append(_rate(e, batch))
    eager = statistics.median(rates["float32 eager"])
    for k, v in rates.items():
        print(
            f"  {k}: {statistics.median(v):.1f} img/s (rounds {', '.join(f'{x:.0f}' for x in v)}): "
            f"{statistics.median(v) / eager:.2f} of float32 eager"
        )

    tmp = Path(tempfile.mkdtemp(prefix="aurora-int8-"))
    ds = read_oath(write_synthetic_oath(tmp / "oath", n_per_class=args.per_class, seed=3))
    synthetic = np.stack([recipe(decode(p.read_bytes(), str(p), recipe.min_side)) for p in ds.table["path"]])
    real, names = _real_inputs(args.data, recipe)
    feats = {}
    reduced = [k for k in extractors if not k.startswith("float32")]
    for label, x in (("synthetic", synthetic), ("real", real)):
        for k in ["float32 eager", *reduced]:
            extractors[k].push(x)
            feats[label, k] = extractors[k].result()
    heads = [train(ds, feats["synthetic", "float32 eager"], "ridge", split=split) for split in range(5)]
    for label, what in (
        ("synthetic", f"SYNTHETIC OATH tree, {len(synthetic)} images"),
        ("real", f"real samples, {len(real)} frames of {len(set(names))} files"),
    ):
        a = feats[label, "float32 eager"]
        for k in reduced:
            b = feats[label, k]
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            agree = [(head.predict(a) == head.predict(b)).mean() for head in heads]
            print(
                f"  {k}, {what}: feature cosine min {cosine.min():.4f}, median {np.median(cosine):.4f}; "
                f"6-class labels agree {agree[0]:.1%} (heads of splits 1-4: "
                f"{', '.join(f'{x:.1%}' for x in agree[1:])})"
            )


if __name__ == "__main__":
    main()
