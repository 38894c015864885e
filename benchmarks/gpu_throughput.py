"""End-to-end season images/s on one GPU worker, against plain GPU inference of the same batches.

Writes a SYNTHETIC archive of 256² 16-bit PNGs on local disk, starts a LocalCluster with one
worker that offers ``GPU=1`` (partitions then run there, on CUDA), and for each number of
decode threads in ``--decode-threads`` runs the season and prints images/s, the ratio to
plain inference of the same batch shape on the same device, and the GPU utilisation sampled
with ``nvidia-smi`` during the run.  Needs a CUDA device (``--device cpu`` runs the same
script without one, for a smoke test).  Usage::

    python benchmarks/gpu_throughput.py [--images 20000] [--decode-threads 1,2,4,8,14]
                                        [--precision float32] [--recipe lite128] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time

from _common import CORES, plain_inference_rate, run_season_on_local_cluster, season_job, write_synthetic_archive


class GpuSampler:
    """GPU utilisation (%) sampled every ``interval_s`` by ``nvidia-smi`` while the block runs."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s, self.samples, self._stop = interval_s, [], threading.Event()

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _run(self):
        while not self._stop.wait(self.interval_s):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out:
                self.samples.append(float(out[0]))

    def summary(self) -> str:
        if not self.samples:
            return "GPU utilisation: not sampled (no nvidia-smi)"
        s = sorted(self.samples)
        return f"GPU utilisation: mean {sum(s) / len(s):.0f} %, median {s[len(s) // 2]:.0f} % ({len(s)} samples)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--decode-threads", default="1,2,4,8,14", help="comma-separated; one season each")
    ap.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--recipe", default="lite128")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    from aurora_batch.model.recipes import get_recipe

    tmp = tempfile.mkdtemp(prefix="aurora-gpu-")
    t0 = time.perf_counter()
    start, end, _ = write_synthetic_archive(f"file://{tmp}/archive", "NYA", "2010-12-10", args.images, args.days)
    print(f"synthetic archive: {args.images} frames in {time.perf_counter() - t0:.1f} s")
    size = get_recipe(args.recipe).size
    plain = plain_inference_rate(size, args.batch_size, CORES, compile=args.compile, device=args.device)
    print(f"plain inference on {args.device}: {plain:.0f} img/s (batch {args.batch_size}, {size} px)")
    resources = {"GPU": 1} if args.device.startswith("cuda") else None
    for i, threads in enumerate(int(t) for t in args.decode_threads.split(",")):
        job = season_job(
            f"file://{tmp}/archive",
            f"file://{tmp}/out-{i}",
            "NYA",
            start.to_pydatetime(),
            end.to_pydatetime(),
            device=args.device,
            recipe=args.recipe,
            precision=args.precision,
            batch_size=args.batch_size,
            decode_threads=threads,
            compile=args.compile,
        )
        job = job.model_copy(update={"features": job.features.model_copy(update={"torch_threads": None})})
        with GpuSampler() as gpu:
            summary, peak = run_season_on_local_cluster(job, 1, threads_per_worker=1, resources=resources)
        rate = summary.images / summary.seconds
        inside = summary.images / summary.timings["partitions"] if summary.timings.get("partitions") else float("nan")
        print(
            f"decode_threads {threads:2d}: {rate:7.0f} img/s end to end ({inside:.0f} inside the partition phase), "
            f"ratio to plain {rate / plain:.2f}, worker peak RSS {peak:.0f} MB; {gpu.summary()}"
        )
        # where the time went: the run's phases and the partitions' CPU seconds per stage
        print(
            "\n".join(line for line in summary.format().splitlines() if line.lstrip().startswith(("time", "partition")))
        )


if __name__ == "__main__":
    main()
