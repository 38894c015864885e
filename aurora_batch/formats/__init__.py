"""Formats: the input files.  File names (:mod:`.names`: :class:`~.names.Format`, the registry, the
array-at-a-time :class:`~.names.NameParser`), decoders of single images (:mod:`.decode`: PNG, JPEG, TIFF, PGM),
multi-frame containers (:mod:`.files`: PGM, THEMIS CDF, TREx HDF5 and tar) and UCalgary skymaps.

May import: core.
"""

from aurora_batch._compat import PACKAGES, forward

__getattr__ = forward("formats", PACKAGES["formats"])  # old names of aurora_batch.formats, for one release
