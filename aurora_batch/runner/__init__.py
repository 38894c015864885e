"""Runner: the Dask wiring, kept thin.  Seasons (:mod:`.season`), nightly runs (:mod:`.nightly`), the join
command (:mod:`.joins`), planning tasks on workers (:mod:`.planning`), clusters (:mod:`.cluster`) and the
worker plugin (:mod:`.worker`).

May import: every layer below.
"""
