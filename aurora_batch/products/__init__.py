"""Products: what users read and draw from published months.  Results (:mod:`.results`: open_station,
open_season), keograms, feature-space maps, the ridge to magnetometer perturbations, the report, the OATH
evaluation and classification of loose files (:mod:`.files`).

May import: every layer below (core … month).
"""
