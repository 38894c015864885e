"""Datasets: SYNTHETIC archives and instruments for demos and tests (:mod:`.synth`, never real data) and the
OATH tree (:mod:`.oath`: read, and a SYNTHETIC one written in its layout).

May import: core, formats.
"""
