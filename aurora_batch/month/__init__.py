"""Month: staged parts → one published month store.  Which rows a commit writes (:mod:`.increment`), the
month's arrays (:mod:`.dataset`), the commit and its publication (:mod:`.commit`), the instrument join
(:mod:`.join`) and the build that ties them (:mod:`.build`).

May import: every layer below (core … partition).
"""

from aurora_batch._compat import PACKAGES, forward

__getattr__ = forward("month", PACKAGES["month"])  # old names of aurora_batch.month, for one release
