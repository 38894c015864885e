"""One typed, validated configuration model shared by the CLI, job specs and the Python API.

A job spec is YAML; only ``input``, ``output``, ``stations``, ``start`` and ``end`` are
required.  Every error names the field that is wrong::

    >>> JobConfig(input="file:///a", output="file:///b", stations=["XXX"],
    ...           start="2010-12-01", end="2010-12-02")  # doctest: +SKIP
    JobSpecError: stations: unknown station 'XXX' ...
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml

if TYPE_CHECKING:
    from aurora_batch.formats.names import Format

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class JobSpecError(ValueError):
    """A job spec that does not validate; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def seconds(duration: str) -> float:
    """A duration of the configuration (``"90s"``, ``"5min"``, ``"6h"``, ``"1D"``) in seconds."""
    import pandas as pd

    return pd.Timedelta(duration).total_seconds()


def _duration(value: str, positive: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time span: write it with its unit, like '60s', '5min' or '6h'")
    try:
        span = seconds(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time span like '60s', '5min' or '6h'") from None
    if span < 0 or (positive and span == 0):
        raise ValueError(f"{value!r} must be {'positive' if positive else 'zero or more'}")
    return value


#: every duration of the configuration is a pandas-style string with its unit: "30s", "5min", "6h", "1D"
Duration = Annotated[str, BeforeValidator(lambda v: _duration(v, positive=True))]
NonNegativeDuration = Annotated[str, BeforeValidator(lambda v: _duration(v, positive=False))]


def _renamed(data: Any, section: str, old: str, new: str) -> Any:
    """Accept an old float-seconds spelling (``timeout_s: 600``) as its duration (``timeout: "600s"``), warning."""
    if isinstance(data, dict) and old in data:
        data = dict(data)
        value = data.pop(old)
        if new in data:
            raise ValueError(f"give {new} only (the old {old} is the same setting)")
        warnings.warn(
            f"{section}.{old} is deprecated: write {section}.{new}: '{value:g}s' (durations are strings with a unit)",
            FutureWarning,
            stacklevel=2,
        )
        data[new] = f"{float(value):g}s"
    return data


class FilterConfig(_Strict):
    """Ephemeris thresholds, in degrees of apparent altitude."""

    sun_max_alt: float = Field(-12.0, ge=-90, le=90, description="drop images with the Sun above this (deg)")
    moon_max_alt: float | None = Field(
        0.0, ge=-90, le=90, description="drop images with the Moon above this (deg); null disables"
    )
    moon_min_illumination: float = Field(
        0.0, ge=0, le=1, description="the Moon only counts when its illuminated fraction exceeds this"
    )


class FeatureConfig(_Strict):
    """The CNN feature extractor and the preprocessing recipe that feeds it."""

    backbone: str = Field(
        "efficientnet-lite0",
        description="a shipped backbone, or a model file mapping (N, 3, S, S) "
        "to (N, D): TorchScript (.pt) or torch.export (.pt2); a file is code: trust its maker",
    )
    weights: str | None = Field(None, description="user weights file (state dict), loaded with weights_only=True")
    recipe: str = "lite128"
    batch_size: int | None = Field(
        None,
        ge=1,
        le=8192,
        description="images per forward pass; default: 16 on CPU, 512 on CUDA (halved on out-of-memory)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["float32", "float16", "bfloat16", "int8"] = Field(
        "float32",
        description="precision of the network: float16/bfloat16 autocast on GPUs; bfloat16 on CPUs with AMX "
        "or AVX-512 BF16 (refused on others: it would run slower), in OpenVINO's bf16 where installed "
        "(2.7-3.2x torch float32 on 2 cores, feature cosine >= 0.995), else torch autocast; or int8: the "
        "shipped backbone quantised for CPU workers (feature cosine >= 0.998 to float32, 10-20 s of "
        "warm-up a run); stored features stay float32",
    )
    runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="what runs the network: torch, or the network exported once to ONNX and run by ONNX "
        "Runtime or OpenVINO on CPU workers (float32, feature cosine to torch >= 0.99999; "
        "1.4-1.6x torch on 2 cores); auto: onnxruntime for float32 on CPU, openvino for bfloat16, "
        "else torch",
    )
    compile: bool = Field(
        False,
        description="torch.compile the backbone (warm-up 5-30 s a run; on 2 CPU cores "
        "plain inference gains 1.2-1.4x, seasons 0.92-1.37x)",
    )
    compile_cache: str | None = Field(
        None,
        description="Inductor's cache folder, shared by the worker processes "
        "and runs that can see it (a shared file system for a cluster); default "
        "$XDG_CACHE_HOME/aurora-batch/inductor",
    )
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per task; default: cores / workers")
    recipe_device: Literal["auto", "numpy", "torch"] = Field(
        "auto",
        description="where the recipe runs: numpy in the decoding threads, or torch on the network's device "
        "after decoding (equal within 1e-5); auto: torch on a GPU worker, numpy on CPU",
    )
    decode_threads: int | None = Field(
        None,
        ge=0,
        le=64,
        description="threads decoding and preprocessing per "
        "task (0: the task's own thread); default: 0 on CPU, the worker's cores "
        "less one on a GPU worker",
    )
    fetch_concurrency: int = Field(16, ge=1, le=256, description="file reads in flight per task")
    prefetch_mb: float = Field(256, gt=0, description="listed MB of files read ahead of the network per task")
    max_pixels: int = Field(
        64_000_000,
        ge=1,
        description="frames with more pixels are refused from their header, before decoding (status not_sky)",
    )
    min_elevation: float = Field(
        10.0,
        ge=0,
        lt=90,
        description="with a skymap, the field of view is the pixels at "
        "least this high (deg); without one, the inscribed circle",
    )

    @model_validator(mode="after")
    def _known_model(self) -> FeatureConfig:
        from aurora_batch.model.backbones import BACKBONES, MODEL_FILE_SUFFIXES, is_model_file
        from aurora_batch.model.recipes import RECIPES

        if self.backbone not in BACKBONES and not is_model_file(self.backbone):
            raise ValueError(
                f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}, or a model file "
                f"({', '.join(MODEL_FILE_SUFFIXES)})"
            )
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; known: {sorted(RECIPES)}")
        if self.precision == "int8" and self.device == "cuda":
            raise ValueError("precision int8 is for CPU workers; with device cuda use float16 or bfloat16")
        if self.precision == "int8" and self.backbone not in BACKBONES:
            raise ValueError(
                f"precision int8 is for the shipped backbones ({sorted(BACKBONES)}), whose layers it "
                f"knows; {self.backbone} runs in float32, float16 or bfloat16"
            )
        return self

    def check_files(self, head: str | None = None) -> None:
        """The checks that need files, run when a job starts (validation only checks shapes and values).

        Raises :class:`JobSpecError` naming the field: a head that is missing, unreadable, or
        trained on other features; a weights file that does not exist.
        """
        from aurora_batch.model.backbones import backbone_id, is_model_file

        problems = []
        f = self
        missing_model = is_model_file(f.backbone) and not Path(f.backbone).exists()
        if missing_model:
            problems.append(f"  features.backbone: model file {f.backbone} does not exist")
        if head and not missing_model:  # a missing model file has no identity to compare
            from aurora_batch.model.heads import load_head

            try:
                load_head(head).check_compatible(backbone_id(f.backbone), f.recipe, f.weights)
            except (OSError, ValueError) as err:
                problems.append(f"  classify.head: {err}")
        if f.weights and "://" not in f.weights and not Path(f.weights).exists():
            problems.append(f"  features.weights: {f.weights} does not exist")
        if problems:
            raise JobSpecError("\n".join(["invalid job:", *problems]))


class ClassifyConfig(_Strict):
    """An optional linear head (``aurora-batch train``) applied to every kept image."""

    head: str | None = Field(None, description="path of a head file (.npz with its .json sidecar)")


class InstrumentSource(_Strict):
    """Files of one instrument kind to join to the images (``aurora-batch join``)."""

    url: str = Field(description="fsspec URL or glob of the files")
    format: str = Field(description="iaga2002 | image-column (magnetometer); pangaea | cl51 (ceilometer)")
    stations: dict[str, str] = Field(description="image station -> instrument station code, e.g. {NYA: NAL}")
    tolerance: Duration = Field("60s", description="largest time difference accepted, e.g. '60s' or '5min'")
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("stations")
    @classmethod
    def _upper(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.upper(): v.upper() for k, v in value.items()}


class JoinConfig(_Strict):
    """Instrument series joined to every image by nearest time."""

    ceilometer: list[InstrumentSource] = Field(default_factory=list)
    magnetometer: list[InstrumentSource] = Field(default_factory=list)
    cloud_max_cbh: float = Field(2000.0, gt=0, description="ceilometer 'cloudy' when a base is below this (m)")

    @model_validator(mode="after")
    def _formats(self) -> JoinConfig:
        from aurora_batch.instruments.readers import CEILOMETER_READERS, MAGNETOMETER_READERS

        for kind, known in (("ceilometer", CEILOMETER_READERS), ("magnetometer", MAGNETOMETER_READERS)):
            for i, src in enumerate(getattr(self, kind)):
                if src.format not in known:
                    raise ValueError(f"{kind}[{i}].format: {src.format!r} is not one of {sorted(known)}")
                if kind == "ceilometer" and len(src.stations) != 1:
                    raise ValueError(
                        f"{kind}[{i}].stations: a {src.format} file holds one site; map exactly one image station to it"
                    )
        return self


class SlurmConfig(_Strict):
    """dask-jobqueue ``SLURMCluster`` settings: each SLURM job runs one Dask worker."""

    jobs: int = Field(2, ge=1, description="SLURM jobs (workers) to start")
    cores: int = Field(1, ge=1, description="cores per job")
    memory: str = Field("4GB", description="memory per job")
    queue: str | None = Field(None, description="partition")
    account: str | None = None
    walltime: str = "02:00:00"
    gpus: int = Field(0, ge=0, description="GPUs per job (--gres=gpu:N); workers get the Dask resource GPU")
    job_extra_directives: list[str] = Field(default_factory=list)
    python: str | None = Field(None, description="python on the compute nodes (default: this one)")
    local_directory: str | None = None
    log_directory: str | None = None


class KubernetesConfig(_Strict):
    """dask-kubernetes operator ``KubeCluster`` settings."""

    name: str = "aurora-batch"
    namespace: str | None = None
    image: str = "ghcr.io/aurora-batch/aurora-batch:cpu"
    n_workers: int = Field(2, ge=1)
    resources: dict[str, Any] = Field(default_factory=lambda: {"requests": {"cpu": "2", "memory": "8Gi"}})
    env: dict[str, str] = Field(default_factory=dict)


class ClusterConfig(_Strict):
    """Where the Dask graph runs: an embedded LocalCluster (default), an existing scheduler,
    SLURM (dask-jobqueue) or Kubernetes (dask-kubernetes operator)."""

    kind: Literal["local", "slurm", "kubernetes"] = "local"
    scheduler: str | None = Field(None, description="tcp://host:port of an existing scheduler (overrides kind)")
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:0"
    processes: bool | None = Field(
        None, description="LocalCluster worker processes (default) or threads; memory:// URLs force threads"
    )
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    timeout: Duration = Field("10min", description="how long to wait for the first worker")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data: Any) -> Any:
        return _renamed(data, "cluster", "timeout_s", "timeout")


class FormatConfig(_Strict):
    """A user-declared archive format: trollsift patterns over file names, and a reader."""

    name: str = "custom"
    pattern: str | list[str] = Field(
        description="trollsift pattern(s) with {station} and {time:<strftime>}, "
        "optionally {wavelength:d}, e.g. 'cam-{station}-{time:%Y%m%dT%H%M%S}.jpg'"
    )
    reader: Literal["image", "pgm", "cdf", "trex_h5", "png_tar"] = "image"
    default_wavelength: int | None = None
    span: NonNegativeDuration = Field("0s", description="how long after its name's time a file's frames run")
    folders: str | None = Field(
        None,
        description="the folders the files sit in, below input, as a trollsift "
        "pattern, e.g. '{time:%Y}/{time:%m}/{time:%d}/{station}_{imager}': the listing "
        "then lists only the window's folders",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data: Any) -> Any:
        return _renamed(data, "layout", "span_s", "span")

    @field_validator("pattern")
    @classmethod
    def _not_regex(cls, value: str | list[str]) -> str | list[str]:
        for p in [value] if isinstance(value, str) else value:
            if "(?P<" in p:
                raise ValueError(
                    f"{p!r} is a regular expression; formats take trollsift patterns such as "
                    "'cam-{station}-{time:%Y%m%dT%H%M%S}.jpg'"
                )
        return value

    @model_validator(mode="after")
    def _compiles(self) -> FormatConfig:
        self.to_format()  # raises ValueError naming the problem
        return self

    def to_format(self) -> Format:
        from aurora_batch.formats.names import Format

        patterns = (self.pattern,) if isinstance(self.pattern, str) else tuple(self.pattern)
        return Format(
            self.name,
            patterns,
            self.reader,
            default_wavelength=self.default_wavelength,
            span_s=seconds(self.span),
            folders=self.folders,
        )


#: an archive's format: auto, a built-in name, a user format, or a list of those, tried in order
Layout = str | FormatConfig | list[str | FormatConfig]


def layout_formats(layout: Layout) -> list[Format]:
    """The :class:`~aurora_batch.formats.names.Format` list of a ``layout``, in order; ``ValueError`` naming an
    unknown built-in format."""
    from aurora_batch.formats.names import FORMATS, get_formats

    out = []
    for item in layout if isinstance(layout, list) else [layout]:
        if isinstance(item, str) and item != "auto" and item not in FORMATS:
            raise ValueError(f"unknown format {item!r}; known: auto, {', '.join(FORMATS)}, or a mapping with a pattern")
        out += get_formats([item]) if isinstance(item, str) else [item.to_format()]
    return list({f.name: f for f in out}.values())


class PlanningConfig(_Strict):
    """How a run finds its files: which folders it lists, and where names are parsed and filtered."""

    prune: bool = Field(
        True,
        description="skip folders whose names (dates, station codes, a format's declared "
        "folders) show they hold no file of the job's stations and window; false: list everything",
    )
    folder_margin: NonNegativeDuration = Field(
        "1D",
        description="a folder dated by its name's shape (not a declared layout) "
        "is listed when within this of the window (archives dated in local time)",
    )
    where: Literal["auto", "driver", "workers"] = Field(
        "auto",
        description="auto: the driver plans small listings itself and hands large ones to the workers "
        "as Dask tasks; driver or workers: always there",
    )
    driver_max_files: int = Field(
        20_000, ge=0, description="auto: files the driver lists before it hands the rest of the listing to the workers"
    )
    driver_max_requests: int = Field(
        400, ge=1, description="auto: listing requests the driver makes before it hands the rest to the workers"
    )
    concurrency: int = Field(32, ge=1, le=256, description="listing requests in flight per process")
    task_max_files: int = Field(
        100_000, ge=1, description="workers: files one planning task lists before it hands the rest of its folders on"
    )
    task_max_requests: int = Field(
        256,
        ge=1,
        description="workers: listing requests of one planning task (beyond "
        "the folders it was given) before it hands on",
    )
    task_spread: int = Field(
        64,
        ge=1,
        description="workers: folders a planning task finds to list, beyond those it "
        "was given, before it hands them on",
    )


class StoreConfig(_Strict):
    """How month stores are published."""

    format: Literal["auto", "icechunk", "zarr"] = Field(
        "auto",
        description="icechunk: each month an Icechunk repository, every change one atomic, versioned commit; "
        "zarr: plain Zarr trees replaced in place; auto: icechunk on object storage, zarr on "
        "local disks (where the old tree is renamed away)",
    )
    keep_versions: int | None = Field(
        None,
        ge=1,
        description="icechunk: versions kept per month (older snapshots expired, their chunks deleted); null: all",
    )
    keep_staging: bool | None = Field(
        None,
        description="keep each staged part whole after its month is published (true), or keep only its ledger "
        "rows, the month holding its features (false: each feature vector stored once); null: "
        "false on object storage, true on local disks",
    )


class NightlyConfig(_Strict):
    """Incremental runs (``aurora-batch nightly``)."""

    lookback: NonNegativeDuration = Field("6h", description="re-list this far behind the watermark, for late files")
    lock_ttl: Duration = Field("5min", description="lock expiry, refreshed while the run is alive")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data: Any) -> Any:
        return _renamed(data, "nightly", "lock_ttl_s", "lock_ttl")


class JobConfig(_Strict):
    """A season job: sweep ``input`` for ``stations`` in [start, end) into stores under ``output``."""

    input: str = Field(description="fsspec URL of the image archive")
    output: str = Field(description="fsspec URL under which the stores and the catalog are written")
    stations: list[str] = Field(min_length=1)
    start: dt.datetime = Field(description="first time included, UTC (rounded down to midnight: whole days)")
    end: dt.datetime = Field(description="first time excluded, UTC (rounded up to midnight: whole days)")
    layout: Layout = Field(
        "auto",
        description="the archive's format: auto (every built-in one), a built-in name, a user format "
        "(mapping with a pattern), or a list of those, tried in order",
    )
    skymaps: str | dict[str, str] | None = Field(
        None,
        description="UCalgary skymap .sav files: a folder URL searched for *_skymap_<site>_*.sav, or "
        "station -> file or folder URL; the field of view is then elevation >= "
        "features.min_elevation",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, repr=False, description="fsspec options for input (endpoint, credentials)"
    )
    output_storage_options: dict[str, Any] = Field(
        default_factory=dict, repr=False, description="fsspec options for output"
    )
    filter: FilterConfig = Field(default_factory=FilterConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    join: JoinConfig = Field(default_factory=JoinConfig)
    nightly: NightlyConfig = Field(default_factory=NightlyConfig)
    planning: PlanningConfig = Field(default_factory=PlanningConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _memory_is_process_local(self) -> JobConfig:
        uses_memory = any(u.startswith("memory://") for u in (self.input, self.output))
        if uses_memory and self.cluster.scheduler:
            raise ValueError(
                "cluster.scheduler: memory:// URLs live in one process and cannot be "
                "shared with a remote cluster; use file://, s3:// or gs://"
            )
        if uses_memory and self.cluster.processes is None:
            self.cluster.processes = False
        return self

    @model_validator(mode="before")
    @classmethod
    def _stations_mapping(cls, data: Any) -> Any:
        """``stations: {GILL: {skymap: URL}}`` is ``stations: [GILL]`` plus ``skymaps: {GILL: URL}``."""
        if isinstance(data, dict) and isinstance(data.get("stations"), dict):
            data = dict(data)
            table = data.pop("stations")
            skymaps = dict(data.get("skymaps") or {}) if not isinstance(data.get("skymaps"), str) else {}
            for code, opts in table.items():
                opts = opts or {}
                unknown = set(opts) - {"skymap"}
                if unknown:
                    raise ValueError(f"stations.{code}: unknown option(s) {sorted(unknown)}; known: skymap")
                if opts.get("skymap"):
                    skymaps[str(code).upper()] = opts["skymap"]
            data["stations"] = list(table)
            if skymaps:
                data["skymaps"] = skymaps
        return data

    @field_validator("stations", mode="before")
    @classmethod
    def _split_stations(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [s for s in value.split(",") if s.strip()]
        return value

    @field_validator("skymaps")
    @classmethod
    def _skymap_codes(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        return {k.upper(): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("stations")
    @classmethod
    def _known_stations(cls, value: list[str]) -> list[str]:
        from aurora_batch.core.stations import station_table

        codes = [s.strip().upper() for s in value]
        unknown = [c for c in codes if c not in station_table().index]
        if unknown:
            raise ValueError(f"unknown station(s) {unknown}; see aurora_batch/data/stations.csv")
        return codes

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    @field_validator("input", "output")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty fsspec URL or path")
        return value.rstrip("/")

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, value: Layout) -> Layout:
        layout_formats(value)  # raises ValueError naming an unknown format
        return value

    def store_format(self) -> str:
        """``icechunk`` or ``zarr``: ``store.format``, with ``auto`` resolved by where the output is."""
        if self.store.format != "auto":
            return self.store.format
        protocol = self.output.split("://", 1)[0] if "://" in self.output else "file"
        return "zarr" if protocol in ("file", "local", "memory") else "icechunk"

    def keep_staging(self) -> bool:
        """``store.keep_staging``, with null resolved by where the output is (kept on local disks)."""
        if self.store.keep_staging is not None:
            return self.store.keep_staging
        protocol = self.output.split("://", 1)[0] if "://" in self.output else "file"
        return protocol in ("file", "local", "memory")

    def formats(self) -> list[Format]:
        """The :class:`~aurora_batch.formats.names.Format` list this job parses names with, in order."""
        return layout_formats(self.layout)

    def feature_runtime(self) -> str:
        """``features.runtime`` as this process's workers run it (``auto`` resolved:
        :func:`aurora_batch.model.runtimes.resolve_runtime`)."""
        from aurora_batch.model.backbones import BACKBONES
        from aurora_batch.model.features import pick_device
        from aurora_batch.model.runtimes import resolve_runtime

        f = self.features
        device = "cuda" if f.device == "cuda" else pick_device(f.device)
        return resolve_runtime(f.runtime, device, f.precision, f.compile, f.backbone in BACKBONES)

    def check_files(self) -> None:
        """The checks that need files or this host, run when a job starts (:meth:`FeatureConfig.check_files`,
        then a runtime or precision this host cannot run: :func:`~aurora_batch.model.runtimes.resolve_runtime`)."""
        self.features.check_files(self.classify.head)
        try:
            self.feature_runtime()
        except ValueError as err:
            raise JobSpecError(str(err)) from None

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: dt.datetime, info: ValidationInfo) -> dt.datetime:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"end ({value}) must be after start ({start})")
        return value

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "job spec") -> JobConfig:
        """Validate a mapping, raising :class:`JobSpecError` that names every bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise JobSpecError(_describe(err, source)) from None


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and e["loc"]:
            msg += _did_you_mean(str(e["loc"][-1]), _field_names(JobConfig, e["loc"][:-1]))
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """The fields of the model found by following ``loc`` (field names, list indices) from ``model``."""
    import typing

    for part in loc:
        if not isinstance(part, str):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        stack, found = [field.annotation], None
        while stack and found is None:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                found = ann
            else:
                stack += list(typing.get_args(ann))
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else (f"; known: {', '.join(known)}" if known else "")


def load_job(path: str | Path, **overrides: Any) -> JobConfig:
    """Read a YAML job spec, apply dotted ``overrides`` (``cluster.scheduler=...``), validate."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise JobSpecError(f"job spec {path} does not exist") from None
    except yaml.YAMLError as err:
        raise JobSpecError(f"job spec {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise JobSpecError(f"job spec {path} must be a mapping of fields, got {type(data).__name__}")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return JobConfig.from_dict(data, source=f"job spec {path}")
