"""aurora-batch: turn seasons of auroral all-sky images into analysis-ready Zarr stores."""

from aurora_batch import _compat
from aurora_batch._version import __version__
from aurora_batch.config import JobConfig, JobSpecError, load_job

__all__ = [
    "JobConfig",
    "JobSpecError",
    "load_job",
    "run_season",
    "open_station",
    "open_season",
    "store_history",
    "classify_files",
    "query",
    "similar",
    "__version__",
]


def run_season(job, **kwargs):
    """Run a season job (see :func:`aurora_batch.runner.season.run_season`)."""
    from aurora_batch.runner.season import run_season as _run

    return _run(job, **kwargs)


def open_station(output, station, start=None, end=None, **kwargs):
    """One station over many months, lazily (see :func:`aurora_batch.products.results.open_station`)."""
    from aurora_batch.products.results import open_station as _open

    return _open(output, station, start, end, **kwargs)


def open_season(output, start=None, end=None, **kwargs):
    """Every station as an ``xarray.DataTree`` (see :func:`aurora_batch.products.results.open_season`)."""
    from aurora_batch.products.results import open_season as _open

    return _open(output, start, end, **kwargs)


def store_history(output, month, storage_options=None):
    """The versions of one month store (see :func:`aurora_batch.products.results.store_history`)."""
    from aurora_batch.products.results import store_history as _history

    return _history(output, month, storage_options)


def query(output, where=None, stations=None, start=None, end=None, storage_options=None, **kwargs):
    """Frames of the label table matching an SQL condition (see :func:`aurora_batch.products.query.query`)."""
    from aurora_batch.products.query import query as _query

    return _query(output, where, stations, start, end, storage_options, **kwargs)


def similar(output, query, k=10, stations=None, start=None, end=None, where=None, storage_options=None):
    """The frames most like ``query`` (see :func:`aurora_batch.products.similar.similar`)."""
    from aurora_batch.products.similar import similar as _similar

    return _similar(output, query, k, stations, start, end, where, storage_options)


def classify_files(urls, head=None, **kwargs):
    """Classify files in this process, no cluster (see :func:`aurora_batch.products.files.classify_files`)."""
    from aurora_batch.products.files import classify_files as _classify

    return _classify(urls, head, **kwargs)


_compat.install()  # old module paths (aurora_batch.join, aurora_batch.keogram, ...) for one release
