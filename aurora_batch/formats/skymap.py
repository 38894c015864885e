"""UCalgary skymaps: per-pixel elevation of an imager, and the field-of-view mask it gives.

A skymap is an IDL save file (``themis_skymap_gako_20110305-+_vXX.sav``, read with
``scipy.io.readsav``) holding, per pixel, the elevation and azimuth (degrees) of the line of
sight, the site position (longitude 0–360 east) and the interval it is valid for
(``VALID_INTERVAL_START``/``STOP`` as ``YYYYMMDDHH``, ``+`` for open-ended).  Its arrays are in
the orientation of the raw stream0 file (row 0 is the first row stored), the same as
:func:`aurora_batch.formats.files.read_file`: UCalgary's readers (pyucalgarysrs) flip THEMIS images and
skymaps alike, north-south, for display (REGO's east-west too), so un-flipped frames and
un-flipped skymaps align as theirs do (tested).  Against THEMIS L1 CDF frames the orientation is
not verified on a matched pair (docs/design.md, Formats).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aurora_batch.core.fs import filesystem, read_bytes
from aurora_batch.formats.decode import COMPRESSIONS, decompress


@dataclasses.dataclass(frozen=True, eq=False)
class Skymap:
    site: str  #: upper-case site code
    url: str
    valid_start: dt.datetime  #: UTC, inclusive
    valid_end: dt.datetime | None  #: UTC, exclusive; None: open-ended
    latitude: float  #: site, degrees north
    longitude: float  #: site, degrees east in -180..180 (the file says 0–360)
    elevation: np.ndarray  #: (H, W) degrees; NaN outside the optics

    def covers(self, time: dt.datetime) -> bool:
        return self.valid_start <= time and (self.valid_end is None or time < self.valid_end)

    @functools.cached_property
    def zenith(self) -> tuple[int, int]:
        """(row, column) of the pixel closest to zenith (computed once: every kept frame asks for it)."""
        el = np.where(np.isfinite(self.elevation), self.elevation, -np.inf)
        row, col = np.unravel_index(np.argmax(el), el.shape)
        return int(row), int(col)


def _stamp(value: Any) -> dt.datetime | None:
    text = (value.decode() if isinstance(value, bytes) else str(value)).strip()
    if text in ("", "+", "-"):
        return None
    return dt.datetime.strptime(text[:10].ljust(10, "0"), "%Y%m%d%H")


def read_skymap(url: str, storage_options: Mapping[str, Any] | None = None) -> Skymap:
    """Read one skymap ``.sav`` from any fsspec URL; ``ValueError`` naming the file when it is not one."""
    from scipy.io import readsav

    data = decompress(read_bytes(url, dict(storage_options or {})), url)
    with tempfile.NamedTemporaryFile(suffix=".sav") as tmp:  # readsav reads from a path
        tmp.write(data)
        tmp.flush()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Not able to verify number of bytes from header"
                sav = readsav(tmp.name)
            sk = sav["skymap"]
            info = sk["GENERATION_INFO"][0]
            start = _stamp(info["VALID_INTERVAL_START"][0])
            end = _stamp(info["VALID_INTERVAL_STOP"][0])
            site = sk["SITE_UID"][0]
            lat, lon = float(sk["SITE_MAP_LATITUDE"][0]), float(sk["SITE_MAP_LONGITUDE"][0])
            elevation = np.asarray(sk["FULL_ELEVATION"][0], dtype=np.float32)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ValueError(f"{url}: not a UCalgary skymap ({type(err).__name__}: {err})") from None
    if start is None:
        raise ValueError(f"{url}: skymap has no valid interval start")
    site = (site.decode() if isinstance(site, bytes) else str(site)).strip().upper()
    return Skymap(site, url, start, end, lat, (lon + 180.0) % 360.0 - 180.0, elevation)


@functools.lru_cache(maxsize=64)
def _cached(url: str, options_json: str) -> Skymap:
    return read_skymap(url, json.loads(options_json))


def find_skymaps(
    spec: str | Mapping[str, str], station: str, storage_options: Mapping[str, Any] | None = None
) -> list[Skymap]:
    """The skymaps of ``station``: from a folder (searched for ``*_skymap_<site>_*.sav[.gz]``), a file, or a
    mapping of stations to either.

    Read once per process (cached by URL).
    """
    url = spec if isinstance(spec, str) else spec.get(station.upper())
    if not url:
        return []
    options = dict(storage_options or {})
    fs, path = filesystem(url, options)
    if path.lower().endswith((".sav", *(".sav" + c for c in COMPRESSIONS))):
        urls = [url]
    else:
        urls = sorted(fs.unstrip_protocol(p) for p in fs.glob(f"{path}/**/*_skymap_{station.lower()}_*.sav*"))
    maps = [_cached(u, json.dumps(options, sort_keys=True, default=str)) for u in urls]
    for m in maps:
        if m.site != station.upper():
            raise ValueError(f"{m.url}: a skymap of site {m.site}, given for station {station.upper()}")
    return maps


def skymap_for(skymaps: Sequence[Skymap], time: dt.datetime) -> Skymap | None:
    """The skymap valid at ``time`` (the latest starting one when several are)."""
    valid = [s for s in skymaps if s.covers(time)]
    return max(valid, key=lambda s: s.valid_start) if valid else None


def elevation_mask(skymap: Skymap, shape: tuple[int, int], min_elevation: float) -> np.ndarray:
    """Boolean field of view, ``elevation >= min_elevation`` (degrees), at an image's ``shape``.

    An image decoded at reduced resolution gets the mask sampled at its pixel centres.
    """
    mask = np.isfinite(skymap.elevation) & (np.nan_to_num(skymap.elevation, nan=-90.0) >= min_elevation)
    if mask.shape == shape:
        return mask
    rows = ((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(int)
    return mask[np.ix_(np.minimum(rows, mask.shape[0] - 1), np.minimum(cols, mask.shape[1] - 1))]
