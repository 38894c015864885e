"""The join command: join published months to the instruments again, without recomputing any feature."""

from __future__ import annotations

import dataclasses
import logging

from aurora_batch.config import JobConfig
from aurora_batch.core.fs import storage_errors
from aurora_batch.core.lock import OutputLock
from aurora_batch.month.build import build_month, common_attrs, join_fingerprint, month_inputs
from aurora_batch.month.join import month_sources

log = logging.getLogger(__name__)

# --- the join command ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class JoinSummary:
    stores: list[str]  #: month stores rebuilt
    unchanged: list[str]  #: month stores whose instruments and parts had not changed
    matched: dict[str, int]  #: instrument kind -> images with a partner
    images: int

    def format(self) -> str:
        if not self.stores:
            return (
                f"aurora-batch join: {len(self.unchanged)} store(s) already joined with these instrument files; "
                "nothing rebuilt"
            )
        parts = ", ".join(f"{k}: {v}/{self.images}" for k, v in sorted(self.matched.items()))
        return (
            f"aurora-batch join: {len(self.stores)} store(s) rebuilt, {len(self.unchanged)} unchanged, "
            f"{self.images} images; matched {parts}"
        )


def month_stores(job: JobConfig) -> list[tuple[str, str]]:
    """(month, store URL) of the published stores under ``job.output`` inside [start, end)."""
    from aurora_batch.products.results import month_stores as published

    return list(published(job.output, job.start, job.end, job.output_storage_options).items())


def run_join(job: JobConfig) -> JoinSummary:
    """Re-join the configured instruments: rebuild (staged, then published) every month whose join inputs changed.

    For instrument data that arrived after the images were processed.  A month whose
    instrument files and settings are unchanged is left as it is, chunk for chunk; a rebuilt
    month may not lose an image (:class:`~aurora_batch.month.commit.StoreShrinkError`), and a month
    without staged parts is refused rather than published empty.
    """
    if not (job.join.ceilometer or job.join.magnetometer):
        raise ValueError("join: the job spec names no ceilometer or magnetometer sources")
    job.check_files()
    attrs = common_attrs(job)
    rebuilt, unchanged, images = [], [], 0
    matched: dict[str, int] = {}
    with storage_errors(job.output, job.output_storage_options):
        lock = OutputLock(job.output, job.output_storage_options, purpose="join").acquire()
    try:
        for month, url in month_stores(job):
            sources = month_sources(job, month)
            fp = join_fingerprint(job, month, sources)
            inputs = month_inputs(job, month)
            build = build_month(job, inputs, attrs, fp, allow_shrink=False, command="join", sources=sources)
            if build is None:
                unchanged.append(url)
                continue
            rebuilt.append(url)
            images += sum(build.counts.values())
            for kind, n in build.matched.items():
                matched[kind] = matched.get(kind, 0) + n
    finally:
        lock.release()
    return JoinSummary(rebuilt, unchanged, matched, images)
