"""aurora-batch: turn seasons of auroral all-sky images into analysis-ready Zarr stores."""
__version__ = "0.1.0"

from .config import JobConfig, JobSpecError, load_job  # noqa: E402

__all__ = ["JobConfig", "JobSpecError", "load_job", "run_season", "__version__"]


def run_season(job, **kwargs):
    """Run a season job (see :func:`aurora_batch.season.run_season`)."""
    from .season import run_season as _run

    return _run(job, **kwargs)
