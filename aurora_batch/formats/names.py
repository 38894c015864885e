"""The registry of all-sky image formats, the Satpy way: a file-name pattern bound to a reader.

A :class:`Format` names one archive convention: a `trollsift <https://trollsift.readthedocs.io>`_
pattern that both parses and composes file names (fields ``station``, ``time`` and optionally
``wavelength``, ``microsecond``...), the reader that turns the file's bytes into frames, and
where the frames' times come from (the name, the PGM comments, the CDF epochs, the HDF5 time
stamps).  ``layout: auto`` tries every built-in format, in order.

Readers return frames in the file's own orientation and bit depth: row 0 is the first row
stored in the file.  (UCalgary's official readers flip stream0 images vertically for display;
:func:`read_file` does not.)  Times are UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from aurora_batch.formats.decode import COMPRESSIONS

if TYPE_CHECKING:
    import pandas as pd

#: the readers, and where each takes its frames' times (UTC) from
FRAME_TIMES = {
    "image": "the file name",
    "pgm": "each frame's 'Image request start' comment",
    "cdf": "the CDF_EPOCH variable <image>_epoch",
    "trex_h5": "the data/timestamp strings",
    "png_tar": "each member's name (microseconds)",
    "unsupported": "none: a product recognised by its name and recorded as unsupported, not read",
}
READERS = tuple(FRAME_TIMES)


@dataclasses.dataclass(frozen=True)
class ParsedName:
    station: str  #: upper-case station code
    time: dt.datetime  #: UTC, from the name
    wavelength: int | None  #: Å; None: unfiltered or unknown
    format: str  #: the :class:`Format` that matched


@dataclasses.dataclass(frozen=True)
class Format:
    """One archive convention.

    ``patterns`` are trollsift patterns over the base name without a ``.gz``/``.bz2`` suffix,
    tried in order; the first one composes names.  Literal text is matched as written, then
    against the lower-cased name (station codes are upper-cased either way).  ``reader`` is
    ``image`` (PNG, JPEG, TIFF, single-frame PGM), ``pgm`` (UCalgary stream0, many frames),
    ``cdf`` (THEMIS L1) or ``trex_h5`` (TREx RGB stream0).  ``span_s`` is how long after its
    name's time a file's frames may run (seconds), used to filter whole files safely.
    ``unsupported`` formats name products that are recognised but not read (``note`` says why
    and what to use instead): their files get the status ``unsupported_product``, with their
    station and time.
    ``folders``: the archive's folder layout below its root, a trollsift pattern per level
    (fields ``station``, ``time`` and any others), from which the listing dates folders exactly
    (:mod:`aurora_batch.plan.listing`).
    """

    name: str
    patterns: tuple[str, ...] | str  #: one pattern may be given as a str: __post_init__ makes it a 1-tuple
    reader: str = "image"
    network: str = ""
    default_wavelength: int | None = None
    span_s: float = 0.0
    example: str = ""
    folders: str | None = None
    note: str = ""  #: why an unsupported product is not read, and what to use instead

    def __post_init__(self):
        if isinstance(self.patterns, str):
            object.__setattr__(self, "patterns", (self.patterns,))
        if self.reader not in READERS:
            raise ValueError(f"format {self.name!r}: unknown reader {self.reader!r}; known: {list(READERS)}")
        for p in self.patterns:
            if "{station" not in p or "{time" not in p:
                raise ValueError(f"format {self.name!r}: pattern {p!r} needs the fields {{station}} and {{time:...}}")
        if self.example:
            parse_name(self.example, self)  # the example must parse: raises ValueError naming the format
        if self.folders is not None:
            import trollsift

            try:
                for level in self.folders.strip("/").split("/"):
                    trollsift.parser.regex_format(level)
            except ValueError as err:
                raise ValueError(f"format {self.name!r}: folders {self.folders!r}: {err}") from None

    def compose(self, station: str, time: dt.datetime, **fields) -> str:
        """The file name of ``station`` (written as given) at ``time`` (UTC), e.g. for synthetic archives."""
        import trollsift

        values = {"station": station, "time": time, "microsecond": time.microsecond, **fields}
        return trollsift.compose(self.patterns[0], values)

    @property
    def frame_times(self) -> str:
        """Where this format's frame times come from."""
        return FRAME_TIMES[self.reader]

    @property
    def extensions(self) -> tuple[str, ...]:
        exts = {p[p.rindex(".") :].lower() for p in self.patterns if "." in p.rsplit("}", 1)[-1]}
        return tuple(sorted(exts))


def strip_compression(base: str) -> str:
    for suffix in COMPRESSIONS:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def parse_name(name: str, fmt: Format) -> ParsedName:
    """Parse a file's base name with ``fmt``; raises ``ValueError`` saying why it does not fit."""
    import trollsift

    base = name.rsplit("/", 1)[-1]
    stem = strip_compression(base)
    for pattern in fmt.patterns:
        tail = pattern.rsplit("}", 1)[-1].lower()  # the literal ending, e.g. "_full.pgm": a cheap first test
        if not stem.lower().endswith(tail):
            continue
        for candidate in dict.fromkeys((stem, stem.lower())):
            try:
                fields = trollsift.parse(pattern, candidate)
            except ValueError:
                continue
            return _parsed(fields, fmt, base)
    raise ValueError(f"{base!r} does not match the {fmt.name!r} format ({fmt.patterns[0]})")


def _parsed(fields: dict, fmt: Format, base: str) -> ParsedName:
    time = fields["time"]
    if not isinstance(time, dt.datetime):
        raise ValueError(f"{base!r}: format {fmt.name!r} must give {{time}} a strftime format")
    if isinstance(fields.get("date"), dt.datetime):  # {date:%Y%m%d}_{time:%H%M%S}
        time = dt.datetime.combine(fields["date"].date(), time.time())
    if "microsecond" in fields:
        time = time.replace(microsecond=int(fields["microsecond"]))
    station = str(fields["station"]).strip().upper()
    if not station.isalnum():
        raise ValueError(f"{base!r}: station {station!r} is not a station code")
    wl = fields.get("wavelength")
    try:
        wavelength = int(wl) if wl not in (None, "") else fmt.default_wavelength
    except ValueError:
        raise ValueError(f"{base!r}: wavelength {wl!r} is not a number of angstroms") from None
    return ParsedName(station, time, wavelength, fmt.name)


def match_name(name: str, formats: Sequence[Format]) -> ParsedName:
    """The first of ``formats`` that parses ``name``; ``ValueError`` listing them when none does."""
    for fmt in formats:
        try:
            return parse_name(name, fmt)
        except ValueError:
            continue
    base = name.rsplit("/", 1)[-1]
    raise ValueError(f"{base!r} matches none of the formats {[f.name for f in formats]}")


class NameParser:
    """Parse many file names at once, exactly as :func:`match_name` parses each: same formats, order and fields.

    Each pattern becomes trollsift's own regular expression, run by pyarrow (RE2) over a whole
    array, and its fields are converted there (dates by ``strptime``, checked by a round trip
    through ``strftime``; integers as ``int()`` accepts them).  What the fast path cannot vouch
    for (names that are not printable ASCII, a date that does not round-trip, a pattern RE2
    cannot run) goes through trollsift and :func:`parse_name`'s checks, one name at a time.
    """

    def __init__(self, formats: Sequence[Format]):
        self.formats = list(formats)
        self._compiled = [[_Compiled.of(p) for p in f.patterns] for f in self.formats]

    def parse(self, names: Sequence[str]) -> pd.DataFrame:
        """Per name, in order: ``station``, ``time`` (UTC, datetime64[us]), ``wavelength`` (Å, Int64) and
        ``format`` (None where no format fits, and then ``detail`` says so)."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        names = names if isinstance(names, list) else list(names)
        n = len(names)
        out = _Values.empty(n)
        fmt_of = np.full(n, -1, dtype=np.int32)
        base = (
            pc.extract_regex(pa.array(names, pa.string()), r"(?P<b>[^/]*)$").field("b")
            if n
            else pa.array([], pa.string())
        )
        stem = pc.replace_substring_regex(base, _COMPRESSED, "")
        lower = pc.utf8_lower(stem)
        fast = pc.match_substring_regex(base, r"^[ -~]*$").to_numpy(zero_copy_only=False).astype(bool)
        for i in np.flatnonzero(~fast):  # Python's own rules for unusual text
            try:
                p = match_name(names[i], self.formats)
            except ValueError:
                continue
            out.set(i, p.station, p.time, p.wavelength)
            fmt_of[i] = [f.name for f in self.formats].index(p.format)
        undecided = np.flatnonzero(fast)
        for k, (fmt, patterns) in enumerate(zip(self.formats, self._compiled)):
            alive = undecided  # names this format may still parse
            for pat in patterns:
                cand = alive[pc.ends_with(pc.take(lower, alive), pat.tail).to_numpy(zero_copy_only=False)]
                for form in (stem, lower):  # as written, then lower-cased (parse_name's order)
                    if not len(cand):
                        break
                    hit, values = pat.match(pc.take(form, cand), fmt)
                    ok = hit & values.ok
                    out.put(cand[ok], values, ok)
                    fmt_of[cand[ok]] = k
                    alive = np.setdiff1d(alive, cand[hit], assume_unique=True)  # decided, or failed this format
                    cand = cand[~hit]
            undecided = undecided[fmt_of[undecided] < 0]
        detail = np.full(n, "", dtype=object)
        names_of = [f.name for f in self.formats]
        for i in np.flatnonzero(fmt_of < 0):
            detail[i] = f"{base[i].as_py()!r} matches none of the formats {names_of}"
        return pd.DataFrame(
            {
                "station": pd.Series(out.station, dtype=object),
                "time": out.time,
                "wavelength": pd.array(out.wavelength, dtype="Int64"),
                "format": pd.Series(np.array(names_of + [None], dtype=object)[fmt_of], dtype=object),
                "detail": pd.Series(detail, dtype=object),
            }
        )


_COMPRESSED = "(?i)(" + "|".join(re.escape(c) for c in COMPRESSIONS) + ")$"
_INT_TEXT = r"^ *[+-]?[0-9]+(?:_[0-9]+)* *$"  #: what int() accepts, in printable ASCII
_DATE_DIRECTIVES = frozenset("YmdHMS")  #: strftime directives that pyarrow parses and formats as Python does


@dataclasses.dataclass
class _Values:
    """Parsed fields of many names (``ok``: the format's checks passed)."""

    ok: np.ndarray
    station: np.ndarray
    time: np.ndarray
    wavelength: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Values:
        return cls(
            np.zeros(n, bool),
            np.full(n, None, dtype=object),
            np.full(n, np.datetime64("NaT"), "datetime64[us]"),
            np.full(n, np.nan),
        )

    def set(self, i: int | np.integer, station: str, time: dt.datetime, wavelength: int | None) -> None:
        self.ok[i], self.station[i], self.time[i] = True, station, np.datetime64(time, "us")
        self.wavelength[i] = np.nan if wavelength is None else wavelength

    def put(self, idx: np.ndarray, other: _Values, mask: np.ndarray) -> None:
        self.ok[idx], self.station[idx], self.time[idx] = True, other.station[mask], other.time[mask]
        self.wavelength[idx] = other.wavelength[mask]


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """One trollsift pattern, prepared for :class:`NameParser`."""

    pattern: str
    regex: str
    tail: str  #: lower-case literal ending: a cheap first test
    ints: tuple[str, ...]  #: integer fields (trollsift converts them with int())
    dates: dict[str, str]  #: datetime fields and their strftime formats
    vectorised: bool  #: False: every candidate goes through trollsift

    @classmethod
    def of(cls, pattern: str) -> _Compiled:
        import trollsift.parser as tp

        regex = "^" + tp.regex_format(pattern) + "$"
        specs = tp.get_convert_dict(pattern)
        ints, dates, vectorised = [], {}, "(?P=" not in regex
        for field, spec in specs.items():
            if "%" in spec:
                dates[field] = spec
                directives = set(re.findall(r"%(.)", spec))
                complete = {"Y", "m", "d"} <= directives or (field == "time" and "date" in specs)
                vectorised &= directives <= _DATE_DIRECTIVES and complete
                continue
            m = tp.fmt_spec_regex.match(spec)
            assert m is not None  # all its groups are optional: it matches every spec
            g = m.groupdict()
            plain = not any(g[k] for k in ("align", "sign", "pound", "zero", "comma", "precision"))
            vectorised &= plain and g["type"] in ("", "s", "d")
            if g["type"] == "d":
                ints.append(field)
        return cls(pattern, regex, pattern.rsplit("}", 1)[-1].lower(), tuple(ints), dates, vectorised)

    def match(self, form, fmt: Format) -> tuple[np.ndarray, _Values]:
        """Which stems of ``form`` trollsift would parse with this pattern (``hit``), and their values.

        A hit whose values fail the format's checks (a station code, a wavelength in Å, a
        microsecond) has ``ok`` False: it fails the whole format, as in :func:`parse_name`.
        """
        import pyarrow.compute as pc

        n = len(form)
        values = _Values.empty(n)
        if not self.vectorised:
            return self._one_by_one(form, fmt, np.ones(n, bool), np.zeros(n, bool), values)
        struct = pc.extract_regex(form, self.regex)
        hit = struct.is_valid().to_numpy(zero_copy_only=False).astype(bool)
        columns = {f.name: struct.field(f.name) for f in struct.type}
        slow = np.zeros(n, bool)
        times = {}
        for name, spec in self.dates.items():
            times[name], doubtful = _dates(columns[name], spec)
            slow |= hit & doubtful
        numbers = {}
        for name in self.ints:
            text = pc.utf8_trim(columns[name], characters=" ")
            valid = pc.or_(pc.equal(text, ""), pc.match_substring_regex(text, _INT_TEXT)).fill_null(False)
            hit &= valid.to_numpy(zero_copy_only=False).astype(bool)
            numbers[name] = text
        hit &= ~slow
        ok = hit.copy()
        code = pc.utf8_upper(pc.utf8_trim(columns["station"], characters=" "))
        ok &= pc.match_substring_regex(code, "^[A-Z0-9]+$").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        values.station[ok] = np.asarray(code.to_numpy(zero_copy_only=False), dtype=object)[ok]
        if "time" not in times:
            ok[:] = False  # {time} without a strftime format: the format never parses a name
        else:
            time = times["time"]
            if "date" in times:
                time = times["date"].astype("datetime64[D]") + (time - time.astype("datetime64[D]"))
            if "microsecond" in columns:
                micro = _integers(numbers.get("microsecond", columns["microsecond"]), ok)
                ok &= (micro >= 0) & (micro <= 999_999)
                time = time.astype("datetime64[s]").astype("datetime64[us]") + np.where(ok, micro, 0).astype(
                    "timedelta64[us]"
                )
            values.time[ok] = time[ok]
        if fmt.default_wavelength is not None:
            values.wavelength[:] = fmt.default_wavelength
        if "wavelength" in columns:
            text = numbers.get("wavelength")
            if text is None:  # a string field: int() of it, unless empty
                text = pc.utf8_trim(columns["wavelength"], characters=" ")
                given = pc.not_equal(text, "").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
                valid = pc.match_substring_regex(text, _INT_TEXT).fill_null(False).to_numpy(zero_copy_only=False)
                ok &= ~given | valid.astype(bool)
            else:  # an integer field: trollsift gives 0 for an empty one
                given = np.ones(n, bool)
            wl = _integers(text, ok & given)
            values.wavelength[ok & given] = wl[ok & given]
        values.ok = ok
        return self._one_by_one(form, fmt, slow, hit, values)

    def _one_by_one(
        self, form, fmt: Format, which: np.ndarray, hit: np.ndarray, values: _Values
    ) -> tuple[np.ndarray, _Values]:
        """trollsift and :func:`_parsed` for the stems in ``which``."""
        import trollsift

        for i in np.flatnonzero(which):
            stem = form[i].as_py()
            try:
                fields = trollsift.parse(self.pattern, stem)
            except ValueError:
                continue
            hit[i] = True
            try:
                p = _parsed(fields, fmt, stem)
            except ValueError:
                continue
            values.set(i, p.station, p.time, p.wavelength)
        return hit, values


def _integers(text, where: np.ndarray) -> np.ndarray:
    """int() of integer texts (spaces and underscores allowed) where ``where``, else 0."""
    import pyarrow as pa
    import pyarrow.compute as pc

    clean = pc.replace_substring(pc.utf8_trim(text, characters=" "), "_", "")
    clean = pc.if_else(pa.array(where), clean, "0").fill_null("0")
    clean = pc.if_else(pc.equal(clean, ""), "0", pc.utf8_ltrim(clean, characters="+"))
    try:
        return pc.cast(clean, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # beyond int64, or a sign arrow refuses
        return np.array([int(t) if w else 0 for t, w in zip(clean.to_pylist(), where)], dtype=object)


def _dates(column, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """``column`` parsed with ``spec`` (datetime64[us]), and where that parse cannot be trusted.

    pyarrow rolls impossible dates over (30 February becomes 2 March, second 60 the next
    minute) where Python refuses them, so a value counts only when it formats back to its text.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    parsed = pc.strptime(column, format=spec, unit="us", error_is_null=True)
    back = pc.strftime(pc.cast(parsed, pa.timestamp("s")), format=spec)
    same = pc.and_(pc.equal(back, column), pc.greater_equal(pc.year(parsed), 1000)).fill_null(False)
    values = parsed.to_numpy(zero_copy_only=False).astype("datetime64[us]")
    return values, ~same.to_numpy(zero_copy_only=False).astype(bool)


def extensions(formats: Sequence[Format]) -> tuple[str, ...]:
    """File-name endings to list for ``formats``, with their compressed variants."""
    exts = {e for f in formats for e in f.extensions}
    return tuple(sorted(exts | {e + c for e in exts for c in COMPRESSIONS}))


_UCALGARY = "{time:%Y%m%d_%H%M}_{station:4s}"
#: UCalgary's stream0 tree (data.phys.ucalgary.ca/sort_by_project/<project>/<instrument>/stream0/), as asilib and
#: UCalgary's own download code walk it: 2014/03/10/gill_themis19/ut06/20140310_0601_gill_themis19_full.pgm.gz
_UCALGARY_FOLDERS = "{time:%Y}/{time:%m}/{time:%d}/{station}_{imager}/ut{time:%H}"
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "asim",
            (
                "{station}{camera:1d}_{time:%Y%m%d_%H%M%S}_{wavelength:4d}_cal.png",
                "{station}{camera:1d}_{time:%Y%m%d_%H%M%S}_{wavelength:4d}.png",
            ),
            network="ASIM",
            example="nya4_20101207_233450_5577_cal.png",
            folders="{station}{camera:1d}/{wavelength:4d}/{time:%Y}/{time:%Y%m%d}",
        ),
        Format(
            "themis",
            f"{_UCALGARY}_themis{{camera:2d}}_full.pgm",
            "pgm",
            "THEMIS",
            span_s=60,
            example="20140310_0601_gill_themis19_full.pgm.gz",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "rego",
            f"{_UCALGARY}_rego-{{camera:3d}}_{{wavelength:4d}}.pgm",
            "pgm",
            "REGO",
            6300,
            span_s=60,
            example="20141216_0600_gill_rego-652_6300.pgm.gz",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "trex_nir",
            f"{_UCALGARY}_nir-{{camera:3d}}_{{wavelength:4d}}.pgm",
            "pgm",
            "TREx",
            8446,
            span_s=60,
            example="20220307_0601_gill_nir-216_8446.pgm.gz",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "trex_blue",
            f"{_UCALGARY}_blue-{{camera:3d}}_full.pgm",
            "pgm",
            "TREx",
            4861,
            span_s=60,
            example="20220308_0601_gill_blue-814_full.pgm.gz",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "trex_rgb_h5",
            f"{_UCALGARY}_rgb-{{camera:2d}}_full.h5",
            "trex_h5",
            "TREx",
            span_s=60,
            example="20210205_0600_gill_rgb-04_full.h5",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "trex_rgb_png",
            "{time:%Y%m%d_%H%M%S}_{microsecond:6d}_{station:4s}_rgb-{camera:2d}_{exposure:d}ms_full.png",
            network="TREx",
            example="20200508_060500_122643_gill_rgb-04_320ms_full.png",
            folders=_UCALGARY_FOLDERS,
        ),
        # stream0.burst: 3 Hz frames, one PNG each, and whole minutes of them as tar files (read_trex_rgb reads both)
        Format(
            "trex_rgb_burst",
            "{time:%Y%m%d_%H%M%S}_{microsecond:6d}_{station:4s}_rgb-{camera:2d}_{exposure:d}ms_burst.png",
            network="TREx",
            example="20211030_060000_333466_gill_rgb-04_320ms_burst.png",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "trex_rgb_burst_tar",
            f"{_UCALGARY}_rgb-{{camera:2d}}_burst.png.tar",
            "png_tar",
            "TREx",
            span_s=60,
            example="20211030_0600_gill_rgb-04_burst.png.tar",
            folders=_UCALGARY_FOLDERS,
        ),
        Format(
            "trex_rgb_pgm",
            f"{_UCALGARY}_rgb-{{camera:2d}}_full.pgm",
            "unsupported",
            "TREx",
            span_s=60,
            example="20191030_0600_gill_rgb-04_full.pgm.gz",
            folders=_UCALGARY_FOLDERS,
            note="TREx RGB stream0 PGM (single-channel raw frames, as recorded before 2020) is not supported: "
            "use the stream0 HDF5 files or the stream0.colour PNGs of the same minutes",
        ),
        Format(
            "themis_cdf",
            "thg_l1_asf_{station:4s}_{time:%Y%m%d%H}_v{version:2d}.cdf",
            "cdf",
            "THEMIS",
            span_s=3600,
            example="thg_l1_asf_gako_2011010617_v01.cdf",  # themis.ssl.berkeley.edu/data/themis/thg/l1/asi/
            folders="{station}/{time:%Y}/{time:%m}",
        ),
        Format(
            "themis_ast",
            "thg_l1_ast_{station:4s}_{time:%Y%m%d}_v{version:2d}.cdf",
            "unsupported",
            "THEMIS",
            span_s=86400,
            example="thg_l1_ast_gako_20110505_v01.cdf",
            folders="{station}/{time:%Y}/{time:%m}",
            note="THEMIS ASI thumbnails (thg_ast_<site>: 32x32 pixels, one file a day) are not supported: the "
            "full-resolution images are the hourly thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf files",
        ),
        Format(
            "nascam",
            "{time:%Y%m%d_%H%M%S}_{station}_{imager}_{wavelength:d}_{exposure:d}ms.png",
            example="20101205_221500_nya_nascam_5577_2000ms.png",
        ),
        Format(
            "kiruna",
            (
                "{station:3s}_{time:%Y%m%d_%H%M%S}.jpg",
                "{station:3s}_{time:%Y%m%d_%H%M%S}.jpeg",
                "{station:3s}_{time:%Y%m%d_%H%M%S}_{tag}.jpg",
                "{station:3s}{time:%Y%m%d%H%M%S}.jpg",
            ),
            network="IRF",
            example="KIR_20101201_221500.jpg",
        ),
    )
}


def get_formats(names: Sequence[str]) -> list[Format]:
    """Built-in formats by name; ``auto`` expands to all of them."""
    out: list[Format] = []
    for name in names:
        if name == "auto":
            out += list(FORMATS.values())
        elif name in FORMATS:
            out.append(FORMATS[name])
        else:
            raise KeyError(f"unknown format {name!r}; known: auto, {', '.join(FORMATS)}")
    return list({f.name: f for f in out}.values())
