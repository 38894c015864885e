"""Nightly incremental runs: process only what arrived since the last run, idempotently.

A small ledger next to the stores, ``{output}/_nightly.json``, keeps a watermark per
station: the latest file time fully committed.  A run lists and processes, for each station,
the whole UTC days of [watermark − lookback, job.end) — the look-back catches files that
arrive late; a station without a watermark starts at ``job.start`` — and reuses every staged
partition whose files did not change, so a run with nothing new writes nothing to the stores.
Month stores are never allowed to shrink.  The output lock stops two runs from overlapping; a
stale lock (expired, or its process gone) is taken over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import pandas as pd

from aurora_batch.config import JobConfig
from aurora_batch.core.fs import StorageError, filesystem, join_url, storage_errors, write_bytes_atomic
from aurora_batch.runner.season import SeasonSummary, run_season


@dataclasses.dataclass
class NightlySummary:
    status: str
    window_start: pd.Timestamp
    season: SeasonSummary | None
    watermarks: dict[str, str]
    seconds: float
    error: str = ""

    def line(self) -> str:
        """One ``key=value`` line for monitoring systems."""
        s = self.season
        fields: dict[str, str | int] = {
            "status": self.status,
            "window_start": f"{self.window_start:%Y-%m-%dT%H:%M:%SZ}",
        }
        if s is not None:
            fields.update(
                new_partitions=s.partitions - s.resumed_partitions,
                files=s.seen,
                kept=s.kept,
                images=s.images,
                frames_computed=s.computed,
                frames_reused=s.reused,
                stores_written=len(s.stores),
            )
            fields.update({f"dropped_{k}": v for k, v in sorted(s.dropped.items())})
        fields["seconds"] = f"{self.seconds:.1f}"
        if self.error:
            fields["error"] = json.dumps(self.error)
        return "aurora-batch nightly: " + " ".join(f"{k}={v}" for k, v in fields.items())


def _ledger_url(job: JobConfig) -> str:
    return join_url(job.output, "_nightly.json")


def read_watermarks(job: JobConfig) -> dict[str, str]:
    """Station → ISO time of the latest committed file (UTC); empty before the first run."""
    fs, path = filesystem(_ledger_url(job), job.output_storage_options)
    with storage_errors(job.output, job.output_storage_options):
        try:
            return json.loads(fs.cat_file(path)).get("watermarks", {})
        except FileNotFoundError:
            return {}


def run_nightly(job: JobConfig, client=None, progress: bool = False, now: dt.datetime | None = None) -> NightlySummary:
    """Process what is new since the watermarks; move them only after every month committed."""
    t0 = time.perf_counter()
    try:
        marks = read_watermarks(job)
    except StorageError as err:  # the output cannot be reached: still one status line for monitoring
        return NightlySummary(
            "failed", pd.Timestamp(job.start), None, {}, time.perf_counter() - t0, f"{type(err).__name__}: {err}"
        )
    lookback = pd.Timedelta(job.nightly.lookback)
    # Each station from its own watermark, less the look-back; a station without one from job.start.
    starts = {
        s: max(pd.Timestamp(job.start), pd.Timestamp(marks[s]) - lookback) if s in marks else pd.Timestamp(job.start)
        for s in job.stations
    }
    start = min(starts.values())
    end = pd.Timestamp(now) if now is not None else pd.Timestamp(job.end)
    end = min(end, pd.Timestamp(job.end))
    window = job.model_copy(update={"start": start.to_pydatetime(), "end": end.to_pydatetime()})
    try:
        season = run_season(
            window, client=client, progress=progress, allow_shrink=False, lock_purpose="nightly", starts=starts
        )
    except Exception as err:
        return NightlySummary("failed", start, None, marks, time.perf_counter() - t0, f"{type(err).__name__}: {err}")
    new_marks = dict(marks)
    for station, last in season.last_time.items():
        if station not in new_marks or pd.Timestamp(new_marks[station]) < last:
            new_marks[station] = last.isoformat()
    if new_marks != marks:
        record = {
            "watermarks": new_marks,
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "lookback": job.nightly.lookback,
        }
        write_bytes_atomic(_ledger_url(job), json.dumps(record, indent=2).encode(), job.output_storage_options)
    return NightlySummary("ok", start, season, new_marks, time.perf_counter() - t0)
