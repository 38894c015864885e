"""Listing what can hold a job's files, and nothing else: a pruned walk of the input tree.

Real archives name their folders by what they hold: dates (``2014/03/10/``, ``20140310/``,
``2014-03-10/``, ``ut06/``) and stations or imagers (``nya4/``, ``gill_themis19/``).  The walk
reads each folder's name before it descends, and does not descend into one that cannot hold a
file of the job's stations in its window:

- a format may **declare** its folder layout (:attr:`aurora_batch.formats.names.Format.folders`, a
  trollsift pattern such as ``{time:%Y}/{time:%m}/{time:%d}/{station}_{imager}/ut{time:%H}``):
  folders that match it are dated exactly, and where every format of the job declares one, the
  walk **composes** the window's folders (``2014/03/10``) instead of listing their parents;
- any other folder is judged by its **shape**: a year (1950-2100), a month under a year, a day
  under a month, ``YYYYMMDD``, ``YYYY-MM-DD``, ``YYYYMM``, a day of the year, ``utHH``; or a
  name that starts with a station code of the station table (``nya4``, ``gill_themis19``,
  ``KIR``).  A folder dated by shape is listed when it lies within ``margin`` (a day) of the
  window, for archives dated by local time.

Folders whose names say nothing are listed as before, so nothing the job should see is skipped;
a folder whose time and station are settled is listed whole (one ``find``: a request per 1,000
objects on S3).  The walk runs breadth-first with many requests in flight, and can stop at a
budget (files, requests) and hand its pending folders on: the planner runs the rest as Dask
tasks (:mod:`aurora_batch.plan.planner`).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

_FIELDS = ("Y", "m", "d", "H", "j")  #: year, month, day, hour, day of year: what a folder name can date


@dataclasses.dataclass(frozen=True)
class Window:
    """The files a job can use: each station's [start, end) in UTC (stations have their own starts in
    nightly runs); ``margin`` widens it for folders dated by their shape, not by a declared layout."""

    starts: Mapping[str, dt.datetime]
    end: dt.datetime
    margin: dt.timedelta = dt.timedelta(days=1)

    def span(self, station: str | None, exact: bool) -> tuple[dt.datetime, dt.datetime]:
        """The [start, end) a folder of ``station`` (None: any) must meet to be listed."""
        start = self.starts[station] if station is not None and station in self.starts else min(self.starts.values())
        pad = dt.timedelta(0) if exact else self.margin
        return start - pad, self.end + pad

    @property
    def stations(self) -> frozenset[str]:
        return frozenset(self.starts)


@dataclasses.dataclass(frozen=True)
class FolderLayout:
    """A format's declared folder layout: one trollsift pattern per folder level, from the layout's root."""

    segments: tuple[str, ...]

    @classmethod
    def of(cls, pattern: str) -> FolderLayout:
        return cls(tuple(s for s in pattern.strip("/").split("/") if s))

    def parse(self, index: int, name: str) -> dict | None:
        """Fields of folder ``name`` at level ``index`` (``Y``... and ``station``), or None when it does not fit."""
        return _segment(self.segments[index]).parse(name)

    def composable(self, index: int) -> bool:
        """Whether level ``index`` holds only time fields (so its names can be composed from the window)."""
        import trollsift

        if index >= len(self.segments):
            return False
        specs = trollsift.parser.get_convert_dict(self.segments[index])
        return bool(specs) and set(specs) == {"time"} and "%" in specs["time"]

    def compose(self, index: int, t: dt.datetime) -> str:
        import trollsift

        return trollsift.compose(self.segments[index], {"time": t})


_DIRECTIVE_DIGITS = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "j": 3}


@dataclasses.dataclass(frozen=True)
class _Segment:
    """One level of a declared layout, compiled: trollsift's regular expression, then each field's value."""

    regex: re.Pattern
    times: dict  #: datetime field -> a regular expression of its directives (None: strptime with its spec)
    specs: dict  #: field -> trollsift format spec
    ints: frozenset  #: integer fields (trollsift converts them with int())

    def parse(self, name: str) -> dict | None:
        for text in dict.fromkeys((name, name.lower())):
            m = self.regex.match(text)
            if m is None:
                continue
            values = m.groupdict()
            try:
                for field in self.ints:
                    int(values[field] or "0")
                fields: dict = {}
                for field, rx in self.times.items():
                    fields.update(self._time(values[field], field, rx))
            except ValueError:
                continue
            if not _valid(fields):
                continue
            if "station" in values:
                if (code := _station_code(values["station"])) is None:
                    return None
                fields["station"] = code
            return fields if "Y" not in fields or _PLAUSIBLE_YEARS[0] <= fields["Y"] <= _PLAUSIBLE_YEARS[1] else None
        return None

    def _time(self, value: str, field: str, rx: re.Pattern | None) -> dict:
        if rx is not None:
            m = rx.match(value)
            if m is None:
                raise ValueError(value)
            return {k: int(v) for k, v in m.groupdict().items() if k in _FIELDS}
        t = dt.datetime.strptime(value, self.specs[field])
        found = set(re.findall(r"%(.)", self.specs[field])) & set(_FIELDS)
        return {d: {"Y": t.year, "m": t.month, "d": t.day, "H": t.hour, "j": t.timetuple().tm_yday}[d] for d in found}


@functools.lru_cache(maxsize=256)
def _segment(segment: str) -> _Segment:
    import trollsift.parser as tp

    specs = tp.get_convert_dict(segment)
    times, ints = {}, set()
    for field, spec in specs.items():
        if "%" in spec:
            parts = re.split(r"%(.)", spec)  # literal, directive, literal, ...
            numeric = all(d in _DIRECTIVE_DIGITS for d in parts[1::2])
            times[field] = (
                re.compile(
                    "^"
                    + "".join(
                        re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d{{{_DIRECTIVE_DIGITS[p]}}})"
                        for i, p in enumerate(parts)
                    )
                    + "$"
                )
                if numeric and len(set(parts[1::2])) == len(parts[1::2])
                else None
            )
        else:
            m = tp.fmt_spec_regex.match(spec)
            assert m is not None  # all its groups are optional: it matches every spec
            if m.group("type") in ("d", "x", "X", "o", "b"):
                ints.add(field)
    return _Segment(re.compile("^" + tp.regex_format(segment) + "$"), times, specs, frozenset(ints))


@dataclasses.dataclass(frozen=True)
class Folder:
    """A folder to visit and what its path says: the time fields and station it dates, and the declared
    layouts it follows from the input root (``chains``: (layout, next level) pairs)."""

    path: str
    time: tuple = (None,) * len(_FIELDS)
    station: str | None = None
    chains: tuple[tuple[int, int], ...] = ()
    exact: bool = False
    unknown: int = 0  #: levels in a row whose names told nothing
    compose: bool = True  #: may compose its children (False once its composed children were all missing)
    origin: str | None = None  #: the composed folder it was composed under

    def fields(self) -> dict:
        return {k: v for k, v in zip(_FIELDS, self.time) if v is not None}


def folder_time_span(fields: Mapping[str, int]) -> tuple[dt.datetime, dt.datetime] | None:
    """The [start, end) UTC a folder dated by ``fields`` covers; None without a year."""
    if "Y" not in fields:
        return None
    y = fields["Y"]
    try:
        if "j" in fields and "m" not in fields:
            lo = dt.datetime(y, 1, 1) + dt.timedelta(days=fields["j"] - 1)
            step = dt.timedelta(days=1)
        elif "m" not in fields:
            return dt.datetime(y, 1, 1), dt.datetime(y + 1, 1, 1)
        elif "d" not in fields:
            lo = dt.datetime(y, fields["m"], 1)
            return lo, dt.datetime(y + (fields["m"] == 12), fields["m"] % 12 + 1, 1)
        else:
            lo, step = dt.datetime(y, fields["m"], fields["d"]), dt.timedelta(days=1)
    except ValueError:
        return None
    if "H" in fields:
        return lo + dt.timedelta(hours=fields["H"]), lo + dt.timedelta(hours=fields["H"] + 1)
    return lo, lo + step


# --- what a folder's name says -----------------------------------------------------------------------

_PLAUSIBLE_YEARS = (1950, 2100)  #: a four-digit folder name outside these is no year (5577 is a wavelength)
_YEAR = r"(19[5-9]\d|20\d\d|2100)"
_SHAPES: list[tuple[re.Pattern, tuple[str, ...], Callable[[Mapping[str, int]], bool]]] = [
    (re.compile(rf"^{_YEAR}$"), ("Y",), lambda have: True),
    (re.compile(rf"^{_YEAR}[-_.]?(\d\d)[-_.]?(\d\d)$"), ("Y", "m", "d"), lambda have: True),
    (re.compile(rf"^{_YEAR}[-_.]?(\d\d)$"), ("Y", "m"), lambda have: True),
    (re.compile(rf"^{_YEAR}[-_.]?(\d\d\d)$"), ("Y", "j"), lambda have: True),
    (re.compile(r"^(\d\d)$"), ("m",), lambda have: "Y" in have and "m" not in have and "j" not in have),
    (re.compile(r"^(\d\d)$"), ("d",), lambda have: "m" in have and "d" not in have),
    (re.compile(r"^(\d\d\d)$"), ("j",), lambda have: "Y" in have and "m" not in have and "j" not in have),
    (re.compile(r"^ut(\d\d)$", re.IGNORECASE), ("H",), lambda have: ("d" in have or "j" in have) and "H" not in have),
]
_LEADING_LETTERS = re.compile(r"^([A-Za-z]+)(?![A-Za-z])")


def _station_code(text: str) -> str | None:
    """The station code a folder name starts with (``nya4`` -> NYA), if it is in the station table."""
    from aurora_batch.core.stations import station_table

    m = _LEADING_LETTERS.match(text.strip())
    code = m.group(1).upper() if m else None
    return code if code in station_table().index else None


def _shape_fields(name: str, have: Mapping[str, int]) -> dict | None:
    """Time fields a folder name shows by its shape, given those of its parents; None when it shows none."""
    for rx, keys, applies in _SHAPES:
        m = rx.match(name)
        if m and applies(have):
            fields = dict(zip(keys, map(int, m.groups())))
            merged = {**have, **fields} if keys[0] != "Y" else fields
            if folder_time_span(merged) is not None and _valid(merged):
                return fields
    return None


def _valid(fields: Mapping[str, int]) -> bool:
    """Whether time fields name a real month, day (of the year) and hour."""
    if "m" in fields and not 1 <= fields["m"] <= 12:
        return False
    if "d" in fields:
        last = calendar.monthrange(fields.get("Y", 2000), fields["m"])[1] if "m" in fields else 31
        if not 1 <= fields["d"] <= last:
            return False
    if "j" in fields and not 1 <= fields["j"] <= 365 + calendar.isleap(fields.get("Y", 2000)):
        return False
    return "H" not in fields or 0 <= fields["H"] <= 23


# --- the walk -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Listing:
    """What a walk found, and where it stopped."""

    files: list[tuple[str, int]] = dataclasses.field(default_factory=list)  #: (path, size in bytes)
    direct: set[str] = dataclasses.field(default_factory=set)  #: folders whose own files were listed
    subtrees: set[str] = dataclasses.field(default_factory=set)  #: folders listed with all below them
    pending: list[tuple[str, Folder]] = dataclasses.field(default_factory=list)  #: operations not done
    calls: int = 0  #: listing requests (``ls`` or ``find``; pages of them not counted)
    pruned: int = 0  #: folders not entered
    #: listed folders whose names date them: path -> the UTC span they claim (checked against their files)
    dated: dict[str, tuple[dt.datetime, dt.datetime]] = dataclasses.field(default_factory=dict)

    def covers(self, folder: str) -> bool:
        """Whether every file directly in ``folder`` was listed (the ledger replaces what it knew there)."""
        if folder in self.direct:
            return True
        parts = folder.split("/")
        return any("/".join(parts[:i]) in self.subtrees for i in range(1, len(parts) + 1))

    def folder_span(self, folder: str) -> tuple[dt.datetime, dt.datetime] | None:
        """The dates (UTC span) the nearest listed dated folder at or above ``folder`` claims, if any."""
        parts = folder.split("/")
        for i in range(len(parts), 0, -1):
            if (span := self.dated.get("/".join(parts[:i]))) is not None:
                return span
        return None


@dataclasses.dataclass
class _Walker:
    fs: Any  #: an fsspec filesystem
    window: Window
    layouts: Sequence[FolderLayout]
    extensions: tuple[str, ...]
    prune: bool = True
    compose_all: bool = False  #: every format of the job declares a layout: compose where it can
    root: str = ""  #: the input root, where every declared layout starts

    def __post_init__(self):
        from aurora_batch.core.fs import is_local

        self.local = is_local(self.fs)

    def child(self, parent: Folder, path: str) -> Folder | None:
        """The folder ``path`` under ``parent``, dated by its name; None when it cannot hold a file of the job."""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        chains = parent.chains if parent.path != self.root else tuple((li, 0) for li in range(len(self.layouts)))
        matches = [
            ((li, si + 1), fields)
            for li, si in chains
            if si < len(self.layouts[li].segments) and (fields := self.layouts[li].parse(si, name)) is not None
        ]
        if matches:
            found, exact = dict(matches[0][1]), True
        else:
            found = (_shape_fields(name, parent.fields()) or {}) if self.prune else {}
            code = _station_code(name) if self.prune and not found else None
            found, exact = ({"station": code} if code else found), False
        station = found.pop("station", parent.station)
        time = found if "Y" in found else {**parent.fields(), **found}
        folder = Folder(
            path.rstrip("/"),
            tuple(time.get(k) for k in _FIELDS),
            station,
            tuple(c for c, _ in matches),
            exact if found else parent.exact,
            0 if (found or matches or station != parent.station) else parent.unknown + 1,
        )
        return folder if not self.prune or self.wanted(folder) else None

    def wanted(self, folder: Folder) -> bool:
        if folder.station is not None and folder.station not in self.window.stations:
            return False
        span = folder_time_span(folder.fields())
        if span is None:
            return True
        lo, hi = self.window.span(folder.station, folder.exact)
        return span[0] < hi and span[1] > lo

    def operation(self, folder: Folder) -> tuple[str, Folder]:
        """``find`` (everything below) once nothing below can be pruned, and the folder holds at most a day
        (so work still splits by day); ``compose`` where a declared layout allows; else ``ls`` (one level)."""
        if not self.prune:
            return "find", folder
        span = folder_time_span(folder.fields())
        lo, hi = self.window.span(folder.station, folder.exact)
        settled = span is not None and lo <= span[0] and span[1] <= hi
        daily = span is not None and span[1] - span[0] <= dt.timedelta(days=1)
        if (settled and (folder.unknown >= 1 or daily and folder.station is not None)) or folder.unknown >= 4:
            return "find", folder
        if folder.compose and folder.origin is None and self.compose_all and self._composable(folder):
            return "compose", folder
        return "ls", folder

    def _chains(self, folder: Folder) -> tuple[tuple[int, int], ...]:
        """The declared levels ``folder``'s children would be at (the root: the first level of every layout)."""
        return folder.chains if folder.path != self.root else tuple((li, 0) for li in range(len(self.layouts)))

    def _composable(self, folder: Folder) -> bool:
        chains = self._chains(folder)
        return bool(chains) and all(self.layouts[li].composable(si) for li, si in chains)

    def composed(self, folder: Folder) -> list[Folder]:
        """The window's folders below ``folder``: each layout's levels of time fields, composed in turn."""
        out: dict[str, Folder] = {}
        for li, si in self._chains(folder):
            layout, level, done, first = self.layouts[li], [dataclasses.replace(folder, chains=((li, si),))], [], True
            while level:
                deeper = []
                for node in level:
                    index = node.chains[0][1]
                    if not layout.composable(index) or (not first and self.operation(node)[0] == "find"):
                        done.append(node)  # a level to list, or a folder settled enough to list whole
                        continue
                    for name in self._names(layout, index, node):
                        child = self.child(node, f"{node.path}/{name}")
                        mine = tuple(c for c in child.chains if c[0] == li) if child is not None else ()
                        if child is not None and mine:
                            deeper.append(dataclasses.replace(child, chains=mine, origin=folder.path))
                level, first = deeper, False
            for node in done:
                known = out.get(node.path)
                out[node.path] = (
                    node
                    if known is None
                    else dataclasses.replace(known, chains=tuple(dict.fromkeys(known.chains + node.chains)))
                )
        return list(out.values())

    def _names(self, layout: FolderLayout, index: int, node: Folder) -> list[str]:
        """The names of level ``index`` that fall in the window, within ``node``'s time span."""
        import trollsift

        lo, hi = self.window.span(node.station, True)
        span = folder_time_span(node.fields())
        if span is not None:
            lo, hi = max(lo, span[0]), min(hi, span[1])
        hourly = "%H" in trollsift.parser.get_convert_dict(layout.segments[index])["time"]
        t = lo.replace(minute=0, second=0, microsecond=0) if hourly else dt.datetime(lo.year, lo.month, lo.day)
        step = dt.timedelta(hours=1) if hourly else dt.timedelta(days=1)
        names = []
        while t < hi:
            names.append(layout.compose(index, t))
            t += step
        return list(dict.fromkeys(names))

    def run(self, op: tuple[str, Folder]) -> tuple[list[tuple[str, int]], list[str] | list[Folder], bool]:
        """Do one operation: (files found, subfolder paths to visit (a ``compose``: the composed folders), whether
        the folder existed)."""
        kind, folder = op
        if kind == "compose":
            return [], self.composed(folder), True
        if self.local:
            return _scan(folder.path, kind == "find", self.extensions)
        try:
            if kind == "find":
                entries = list(self.fs.find(folder.path, detail=True).values())
            else:
                entries = self.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            return [], [], False
        files: list[tuple[str, int]] = []
        folders: list[str] = []
        for e in entries:
            name = e["name"]
            if e.get("type") == "directory":
                if name.rstrip("/") != folder.path.rstrip("/"):
                    folders.append(name)
            elif name.lower().endswith(self.extensions):
                files.append((name, int(e.get("size") or 0)))
        return files, folders, bool(entries)


def _scan(path: str, recursive: bool, extensions: tuple[str, ...]) -> tuple[list[tuple[str, int]], list[str], bool]:
    """``ls`` (or ``find``) of a local folder with ``os.scandir``: what fsspec's local listing gives, 3x faster
    (it follows links to folders, as fsspec does)."""
    files: list[tuple[str, int]] = []
    folders: list[str] = []
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.is_dir():
                        (pending if recursive else folders).append(e.path)
                    elif e.name.lower().endswith(extensions):
                        try:
                            files.append((e.path, e.stat().st_size))
                        except OSError:  # a dangling link: listed, and rejected when it is read
                            files.append((e.path, 0))
        except (FileNotFoundError, NotADirectoryError):
            if folder == path:  # the folder itself is not there; a subfolder that vanished meanwhile is skipped
                return [], [], False
    return files, folders, True


def walk(
    fs,
    root: str,
    window: Window,
    layouts: Sequence[FolderLayout] = (),
    extensions: Sequence[str] = (),
    prune: bool = True,
    compose: bool = False,
    concurrency: int = 32,
    ops: Iterable[tuple[str, Folder]] = (),
    max_files: float = float("inf"),
    max_calls: float = float("inf"),
    max_pending: float = float("inf"),
) -> Listing:
    """List the files under ``root`` (an fsspec path of ``fs``) that the window can use; or continue ``ops``.

    ``compose``: every format of the job declares a folder layout, so levels of only time fields
    are composed from the window, not listed (a composed folder none of whose children exists is
    listed after all).  Stops once ``max_files`` files were found or ``max_calls`` requests
    made, with the rest in :attr:`Listing.pending` (to continue with ``ops=``).
    """
    walker = _Walker(fs, window, list(layouts), tuple(e.lower() for e in extensions), prune, compose, root)
    concurrency = min(concurrency, 2) if walker.local else concurrency  # a local disk: stat calls, 2 threads is best
    out = Listing()
    queue = list(ops) or [walker.operation(Folder(root))]
    composed: dict[str, list] = {}  #: composed folder -> [children not yet listed, whether any existed, folder]
    with ThreadPoolExecutor(concurrency) as pool:
        while queue and len(out.files) < max_files and out.calls < max_calls and len(queue) < max_pending:
            batch, queue = queue[:concurrency], queue[concurrency:]
            for (kind, folder), (files, children, existed) in zip(batch, pool.map(walker.run, batch)):
                if kind == "compose":
                    composed[folder.path] = [len(children), False, folder]
                    queue += [walker.operation(c) for c in cast(list[Folder], children)]
                    if not children:
                        queue.append(("ls", dataclasses.replace(folder, compose=False)))
                    continue
                out.calls += 1
                if not existed and folder.path == root and not fs.exists(root):
                    raise FileNotFoundError(f"input {fs.unstrip_protocol(root)} does not exist")
                out.files += files
                if existed:
                    (out.direct if kind == "ls" else out.subtrees).add(folder.path)
                    if prune and (span := folder_time_span(folder.fields())) is not None:
                        out.dated[folder.path] = span
                subs = [c for c in (walker.child(folder, p) for p in cast(list[str], children)) if c is not None]
                out.pruned += len(children) - len(subs)
                queue += [walker.operation(c) for c in subs]
                if folder.origin is not None and (state := composed.get(folder.origin)) is not None:
                    state[0] -= 1
                    state[1] |= existed
                    if state[0] <= 0 and not composed.pop(folder.origin)[1]:
                        queue.append(("ls", dataclasses.replace(state[2], compose=False)))
    out.pending = queue
    return out
