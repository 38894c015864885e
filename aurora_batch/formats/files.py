"""Reading one input file into its frames, whatever its container: a single image, a PGM stream, a THEMIS CDF,
a TREx HDF5 file or a tar of PNGs (:func:`read_file`), with each frame's time (UTC) where the file states it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from typing import IO, cast

import numpy as np

from aurora_batch.formats.decode import ImageError, decode, decompress, image_shape, read_pgm, reduce_to
from aurora_batch.formats.names import FORMATS, Format, parse_name, strip_compression

# --- readers ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileFrames:
    """The frames of one file, in the file's own dtype and orientation."""

    times: list[dt.datetime | None]  #: UTC per frame; None: only the name's time is known
    images: list[np.ndarray]
    site: tuple[float, float] | None = None  #: (latitude, longitude) in degrees, where the file states them


def read_file(
    data: bytes, name: str, fmt: Format | None = None, min_side: int | None = None, max_pixels: int | None = None
) -> FileFrames:
    """Decode one file of ``fmt`` (guessed from the name when None) into frames.

    ``min_side``: the smallest side the consumer needs; larger frames come back reduced (see
    :func:`~aurora_batch.formats.decode.decode`).  ``max_pixels``: frames larger than this are refused
    from their header, before any pixel is decoded (:class:`ImageError`).
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    reader = fmt.reader if fmt else _guess_reader(name)
    data = decompress(data, name)
    if reader == "pgm":
        frames, keys = read_pgm(data, name, max_pixels)
        return FileFrames([t for t, _ in frames], [_reduce(img, min_side) for _, img in frames], _pgm_site(keys))
    if reader == "cdf":
        return _read_cdf(data, name, min_side)
    if reader == "trex_h5":
        return _read_trex_h5(data, name, min_side)
    if reader == "png_tar":
        return _read_png_tar(data, name, min_side, max_pixels)
    if reader == "unsupported":
        assert fmt is not None  # only a format names this reader, never a guess from the name
        raise ImageError(f"{name}: {fmt.note}")
    if max_pixels:
        h, w = image_shape(data, name)
        if h * w > max_pixels:
            raise ImageError(f"{name}: {w}×{h} pixels is more than the limit of {max_pixels} (features.max_pixels)")
    return FileFrames([None], [decode(data, name, min_side)])


def _pgm_site(keys: dict[str, str]) -> tuple[float, float] | None:
    """The site position a stream0 frame states: ``Geodetic latitude`` (THEMIS) or ``Geographic latitude`` (TREx)."""
    lower = {k.lower(): v for k, v in keys.items()}
    for kind in ("geodetic", "geographic"):
        lat, lon = lower.get(f"{kind} latitude"), lower.get(f"{kind} longitude")
        if lat and lon:
            try:
                return float(lat.split()[0]), float(lon.split()[0])
            except ValueError:
                return None
    return None


def _guess_reader(name: str) -> str:
    stem = strip_compression(name.rsplit("/", 1)[-1]).lower()
    if stem.endswith(".cdf"):
        return "cdf"
    if stem.endswith(".h5"):
        return "trex_h5"
    if stem.endswith(".pgm"):
        return "pgm"
    return "image"


def _reduce(img: np.ndarray, min_side: int | None) -> np.ndarray:
    return reduce_to(img, min_side) if min_side else img


def _read_cdf(data: bytes, name: str, min_side: int | None) -> FileFrames:
    """THEMIS L1 ``thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf``: ``thg_asf_<site>`` (N, 256, 256) with CDF_EPOCH stamps."""
    import tempfile

    import cdflib

    with tempfile.NamedTemporaryFile(suffix=".cdf") as tmp:  # cdflib reads from a path
        tmp.write(data)
        tmp.flush()
        try:
            cdf = cdflib.CDF(tmp.name)
            names = cdf.cdf_info().zVariables
            image_var = next((v for v in names if v.startswith("thg_asf_") and v.count("_") == 2), None)
            if image_var is None:
                raise ImageError(f"{name}: no thg_asf_<site> image variable (variables: {names})")
            images = np.asarray(cdf.varget(image_var))
            epochs = cdf.varget(f"{image_var}_epoch")
        except ImageError:
            raise
        except Exception as err:  # cdflib raises bare exceptions for damaged files
            raise ImageError(f"{name}: cannot read CDF ({type(err).__name__}: {err})") from None
    if images.ndim == 2:
        images = images[None]
    stamps = cdflib.cdfepoch.to_datetime(np.atleast_1d(epochs))
    if len(stamps) != len(images):
        raise ImageError(f"{name}: {len(images)} images but {len(stamps)} epochs")
    times: list[dt.datetime | None] = [
        dt.datetime.fromisoformat(str(np.datetime_as_string(t, unit="us"))) for t in stamps
    ]
    return FileFrames(times, [_reduce(img, min_side) for img in images])


def _read_png_tar(data: bytes, name: str, min_side: int | None, max_pixels: int | None) -> FileFrames:
    """A TREx RGB burst minute (``…_burst.png.tar``): its PNG members in name order, each at its name's time."""
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
            # the members are regular files, for which extractfile never gives None
            contents = [(m.name.rsplit("/", 1)[-1], cast(IO[bytes], tar.extractfile(m)).read()) for m in members]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ImageError(f"{name}: cannot read the tar file ({err})") from None
    if not contents:
        raise ImageError(f"{name}: the tar file holds no frames")
    times: list[dt.datetime | None] = []
    images = []
    for member, content in contents:
        try:
            times.append(parse_name(member, FORMATS["trex_rgb_burst"]).time)
        except ValueError:
            raise ImageError(f"{name}: member {member!r} is not a TREx RGB burst frame name") from None
        images.append(read_file(content, member, FORMATS["trex_rgb_burst"], min_side, max_pixels).images[0])
    return FileFrames(times, images)


def _read_trex_h5(data: bytes, name: str, min_side: int | None) -> FileFrames:
    """TREx RGB stream0 HDF5: ``data/images`` (H, W, 3, N) uint8 and ``data/timestamp`` strings (UTC)."""
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            images = np.asarray(f["data/images"])
            stamps = [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(f["data/timestamp"])]
    except (OSError, KeyError, ValueError) as err:
        raise ImageError(f"{name}: cannot read TREx RGB HDF5 ({err})") from None
    if images.ndim != 4 or images.shape[-1] != len(stamps):
        raise ImageError(f"{name}: data/images has shape {images.shape} for {len(stamps)} time stamps")
    try:
        times: list[dt.datetime | None] = [
            dt.datetime.strptime(s.strip().removesuffix("UTC").strip(), "%Y-%m-%d %H:%M:%S.%f") for s in stamps
        ]
    except ValueError as err:
        raise ImageError(f"{name}: bad time stamp ({err})") from None
    return FileFrames(times, [_reduce(np.ascontiguousarray(images[..., i]), min_side) for i in range(len(times))])
