"""Instruments: ceilometer and magnetometer readers (:mod:`.readers`) and the chunked nearest-time join
(:mod:`.join`), exact across chunk borders.

May import: core, formats, datasets.
"""
