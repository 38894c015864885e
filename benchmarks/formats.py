"""Real formats at full speed: decoders compared, and what per-frame judgement costs on top of reading.

Part 1 times each candidate decoder on the same bytes (Pillow, imagecodecs, OpenCV ``IMREAD_UNCHANGED``
when installed) and prints the ratio to Pillow and whether the decoder keeps the file's bit depth: a
16-bit RGB PNG (the real OATH image), a 16-bit grey PNG (ASIM-like), an 8-bit RGB PNG (the real TREx
RGB frame), and a 2832² colour JPEG at full and at reduced scale.

Part 2 reads every real sample in ``tests/data`` with :func:`aurora_batch.formats.read_file` and then
judges its frames (per-frame Sun and Moon, not-sky checks, saturation, the recipe) with
:func:`aurora_batch.partition.judge_frames`, and prints frames/s of both and their ratio: the price of
per-frame filtering over plain reading plus the recipe.  One thread.  Usage::

    OMP_NUM_THREADS=1 python benchmarks/formats.py [--repeat 20] [--data ../shared/samples/asi]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def _best(fn, repeat: int) -> float:
    """Best-of-``repeat`` seconds of ``fn()`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decoders(repeat: int) -> None:
    import imagecodecs
    import pandas as pd
    from PIL import Image

    from aurora_batch.datasets.synth import render_colour_frame, render_frame
    from aurora_batch.formats.decode import decode

    rng = np.random.default_rng(0)
    grey16 = imagecodecs.png_encode(render_frame("arc", pd.Timestamp("2010-12-01"), rng))
    buf = io.BytesIO()
    Image.fromarray(render_colour_frame("arc", pd.Timestamp("2010-12-01"), rng, 2832)).save(
        buf, format="JPEG", quality=90
    )
    samples = {
        "OATH 16-bit RGB PNG 256²": (DATA / "oath_00001.png").read_bytes(),
        "ASIM-like 16-bit grey PNG 256²": grey16,
        "TREx 8-bit RGB PNG 553×480": (DATA / "20200508_060500_122643_gill_rgb-04_320ms_full.png").read_bytes(),
        "sky JPEG 2832² (full scale)": buf.getvalue(),
    }

    def pillow(data):
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)

    candidates = {"pillow": pillow, "imagecodecs": lambda d: np.asarray(imagecodecs.imread(d))}
    try:
        import cv2

        candidates["opencv"] = lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED)
    except ImportError:
        print("(opencv not installed: pip install opencv-python-headless to compare it)")
    print(f"{'image':34s} {'decoder':12s} {'ms':>8s} {'vs pillow':>10s}  dtype, shape")
    for label, data in samples.items():
        base = None
        for name, fn in candidates.items():
            try:
                arr = fn(data)
                ms = _best(lambda: fn(data), repeat) * 1e3
            except Exception as err:  # a decoder that cannot read this format
                print(f"{label:34s} {name:12s} {'-':>8s} {'-':>10s}  {type(err).__name__}")
                continue
            base = base or ms
            print(f"{label:34s} {name:12s} {ms:8.2f} {ms / base:10.2f}  {arr.dtype}, {arr.shape}")
        ours = decode(data, label, min_side=256)
        ms = _best(lambda: decode(data, label, min_side=256), repeat) * 1e3
        print(
            f"{label:34s} {'ours(256)':12s} {ms:8.2f} {ms / base:10.2f}  {ours.dtype}, {ours.shape}  "
            "<- aurora_batch.formats.decode for lite128"
        )


def judged(repeat: int, data_dir: Path = DATA) -> None:
    import pandas as pd

    from aurora_batch.config import FilterConfig
    from aurora_batch.core.stations import get_station
    from aurora_batch.formats.files import read_file
    from aurora_batch.formats.names import FORMATS, get_formats, match_name
    from aurora_batch.model.recipes import get_recipe
    from aurora_batch.partition.frames import judge_frames

    recipe = get_recipe("lite128")
    flt = FilterConfig(sun_max_alt=90, moon_max_alt=None)  # judge every frame: none is dropped before the recipe
    names = [
        "20140310_0605_gill_themis19_full.pgm.gz",
        "20220307_0601_gill_nir-216_8446.pgm.gz",
        "20220308_0601_gill_blue-814_full.pgm.gz",
        "20200508_060500_122643_gill_rgb-04_320ms_full.png",
        "thg_l1_asf_gako_2011010617_v01.cdf",
    ]
    print(f"\n{'file':52s} {'format':13s} {'read fr/s':>10s} {'read+recipe':>12s} {'judged':>9s} {'ratio':>6s}")
    for name in names:
        if not (data_dir / name).exists():
            name = name.replace("_full.pgm.gz", "_full.pgm") if "themis" in name else name
        data = (data_dir / name).read_bytes()
        p = match_name(name, get_formats(["auto"]))
        fmt = FORMATS[p.format]
        s = get_station(p.station)
        row = {"url": name, "time": pd.Timestamp(p.time), "station": p.station}
        frames = read_file(data, name, fmt, recipe.min_side)
        n = len(frames.images)

        def plain():
            return [recipe(img) for img in read_file(data, name, fmt, recipe.min_side).images]

        def full():
            return judge_frames(
                read_file(data, name, fmt, recipe.min_side), row, recipe, (s.latitude, s.longitude, s.altitude_m), flt
            )

        t_read = _best(lambda: read_file(data, name, fmt, recipe.min_side), repeat)
        t_plain, t_full = _best(plain, repeat), _best(full, repeat)
        print(
            f"{name:52s} {p.format:13s} {n / t_read:10.0f} {n / t_plain:12.0f} {n / t_full:9.0f} "
            f"{t_plain / t_full:6.2f}"
        )
    print("ratio: frames/s judged (ephemeris + checks + recipe) / frames/s of read + recipe alone")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument(
        "--data",
        type=Path,
        default=DATA,
        help="folder of the real samples (default tests/data, "
        "trimmed to 1-3 frames a file; ../shared/samples/asi has the whole files)",
    )
    args = ap.parse_args()
    decoders(args.repeat)
    judged(args.repeat, args.data)


if __name__ == "__main__":
    main()
