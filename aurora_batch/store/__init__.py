"""Store: where an output keeps things.  URLs of its parts (:mod:`.layout`), staged Parquet parts
(:mod:`.parts`), month stores opened as Zarr or Icechunk (:mod:`.zarrs`, :mod:`.versions`), what a month was
built from (:mod:`.state`) and the catalog ledger (:mod:`.ledger`).

May import: core, formats, datasets, instruments, model.
"""

from aurora_batch._compat import PACKAGES, forward

__getattr__ = forward("store", PACKAGES["store"])  # old names of aurora_batch.store, for one release
