"""Partition: the unit of work, one (station, wavelength, day), from file URLs to a staged part.  Streaming
reads (:mod:`.stream`), frames judged (:mod:`.frames`, :mod:`.sky`), the network fed (:mod:`.featurise`),
the part staged or resumed (:mod:`.process`) under its settings' fingerprint (:mod:`.fingerprint`).

May import: every layer below (core … plan).
"""

from aurora_batch._compat import PACKAGES, forward

__getattr__ = forward("partition", PACKAGES["partition"])  # old names of aurora_batch.partition, for one release
