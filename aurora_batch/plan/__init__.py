"""Plan: what a run will do, before any image is read.  The pruned listing (:mod:`.listing`), the catalog of
input files (:mod:`.catalog`) and the pure planner (:mod:`.planner`): names parsed, whole files filtered by
the Sun and Moon, partitions formed.  Dask tasks that run it on workers live in :mod:`aurora_batch.runner`.

May import: every layer below (core … config).
"""
