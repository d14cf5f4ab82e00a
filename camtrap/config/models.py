"""The config file's schema, validated strictly with pydantic: unknown keys, wrong types and
out-of-range values are errors that name the field path. Field names are a public contract."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from camtrap.config.base import Strict
from camtrap.config.crontab import crontab_fields
from camtrap.config.web import WebConfig

DEFAULT_MODEL = "flexivit_reg1_s16_rms_ls_dino-v2-il-all"
FLEXIVIT_PATCH_SIZES = (10, 12, 15, 16, 20, 24, 30, 40)
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Fraction, Fraction]

# An active-hours bound: "HH:MM" local time, or "sunrise"/"sunset" with an optional offset in
# minutes ("sunrise-30", "sunset + 45 min"). scheduler.parse_time_spec reads the same grammar.
TIME_SPEC_RE = re.compile(
    r"^\s*(?:(?P<hour>\d{1,2}):(?P<minute>\d{2})"
    r"|(?P<sun>sunrise|sunset)\s*(?:(?P<sign>[+-])\s*(?P<offset>\d{1,3})\s*(?:m|min)?)?)\s*$"
)


class ActiveHoursConfig(Strict):
    """When a camera decodes at all; outside the window it is paused."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _spec(cls, v: str) -> str:
        m = TIME_SPEC_RE.match(v)
        if m is None:
            raise ValueError(
                f"{v!r} is not a time: use HH:MM (local), sunrise or sunset, optionally "
                "with minutes, e.g. sunrise-30 or sunset+45"
            )
        if m["hour"] is not None and (int(m["hour"]) > 23 or int(m["minute"]) > 59):
            raise ValueError(f"{v!r} is not a time of day (00:00 to 23:59)")
        if m["offset"] is not None and int(m["offset"]) > 720:
            raise ValueError(f"{v!r}: the offset from {m['sun']} is at most 720 minutes")
        return v.strip()

    @property
    def uses_sun(self) -> bool:
        return any("sun" in v for v in (self.start, self.end))

    @model_validator(mode="after")
    def _not_empty(self) -> ActiveHoursConfig:
        if self.start.replace(" ", "") == self.end.replace(" ", ""):
            raise ValueError("start and end are the same: remove active_hours to run all day")
        return self


class LocationConfig(Strict):
    """Where the cameras are, for sunrise and sunset."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    elevation_m: float = Field(default=0.0, ge=-500, le=9000)


class CameraConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]{1,32}$")
    url: str
    detect_url: str | None = None  # low-resolution stream for motion; crops come from `url`
    transport: Literal["tcp", "udp"] = "tcp"
    detect_fps: float = Field(default=5.0, gt=0, le=60)
    open_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=5.0, gt=0, le=120)
    stale_after_s: float = Field(default=10.0, gt=0, le=600)
    reconnect_min_s: float = Field(default=1.0, gt=0, le=600)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    ffmpeg_options: str | None = None  # OpenCV's "key;value|key;value"; None: fast RTSP open
    loop: bool = True
    masks: list[list[Point]] = Field(default_factory=list)
    motion: MotionConfig | None = None  # per-camera overrides of the `motion` section
    regions: RegionsConfig | None = None  # per-camera overrides of the `regions` section
    enabled: bool = True
    active_hours: ActiveHoursConfig | None = None  # None: always on

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url.isdigit():
            return url  # V4L2 device index
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "":
            return url  # a video file path
        if scheme not in SOURCE_SCHEMES:
            raise ValueError(
                f"unsupported scheme {scheme!r} (use rtsp://, http(s)://, a file path "
                "or a device index)"
            )
        if scheme != "file" and not parts.hostname:
            raise ValueError("has no host")
        return url

    @field_validator("detect_url")
    @classmethod
    def _detect_scheme(cls, url: str | None) -> str | None:
        return None if url is None else cls._known_scheme(url)

    @field_validator("masks")
    @classmethod
    def _polygons(cls, masks: list[list[Point]]) -> list[list[Point]]:
        for i, poly in enumerate(masks):
            if len(poly) < 3:
                raise ValueError(f"mask {i} needs at least 3 points, got {len(poly)}")
        return masks

    @model_validator(mode="after")
    def _backoff_range(self) -> CameraConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed "
                f"reconnect_max_s ({self.reconnect_max_s})"
            )
        return self


class MotionConfig(Strict):
    height: int = Field(default=144, ge=60, le=480)
    blur: int = Field(default=5, ge=1, le=31)
    threshold: int = Field(default=22, ge=1, le=255)
    alpha: float = Field(default=0.05, gt=0, le=1)
    min_area: float = Field(default=0.0008, ge=0, le=1)
    max_changed: float = Field(default=0.35, gt=0, le=1)
    dilate: int = Field(default=2, ge=0, le=10)
    contrast: bool = True  # stretch luma between its 4th and 96th percentiles
    absorb_after_s: float = Field(default=15.0, gt=0, le=86400)

    @field_validator("blur")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v


class RegionsConfig(Strict):
    scale: float = Field(default=1.3, ge=1.0, le=3.0)
    min_size: int = Field(default=96, ge=16, le=4096)
    max_per_frame: int = Field(default=4, ge=1, le=32)
    merge_gap: float = Field(default=0.02, ge=0, le=0.5)


class TracksConfig(Strict):
    """Regions followed across frames (one id per bird) and sampled for the classifier: a
    track's first looks go at once, later ones only when better or as a refresh."""

    enabled: bool = True
    max_gap_s: float = Field(default=3.0, gt=0, le=60)  # a track survives this long unseen
    max_jump: float = Field(default=1.0, gt=0, le=10)  # centre moved, in region sides
    min_iou: float = Field(default=0.1, ge=0, le=1)  # or overlaps its prediction this much
    first_looks: int = Field(default=3, ge=1, le=100)  # classified at once, frame by frame
    refresh_s: float = Field(default=2.0, gt=0, le=3600)  # then a look at least this often,
    refresh_max_s: float = Field(default=10.0, gt=0, le=3600)  # doubling up to this
    better_interval_s: float = Field(default=1.0, ge=0, le=3600)  # a better look, at most
    larger: float = Field(default=1.25, ge=1, le=10)  # better: this much larger (side),
    sharper: float = Field(default=1.5, ge=1, le=100)  # or this much sharper (Laplacian)
    max_offset: float = Field(default=0.25, ge=0, le=1)  # bird off its region's centre
    agree: float = Field(default=0.6, gt=0, le=1)  # votes a track's species needs

    @model_validator(mode="after")
    def _refresh_range(self) -> TracksConfig:
        if self.refresh_s > self.refresh_max_s:
            raise ValueError(
                f"refresh_s ({self.refresh_s}) must not exceed refresh_max_s "
                f"({self.refresh_max_s})"
            )
        return self


class TorchBackendConfig(Strict):
    """birder's network in torch (the reference engine, CPU or CUDA); its options are the
    model-level keys device, precision, compile and threads, as before backends existed."""

    type: Literal["torch"] = "torch"


class OpenVINOBackendConfig(Strict):
    """Intel OpenVINO: the fastest CPU engine measured (bench/RESULTS.md), also Intel iGPUs.

    precision: fp32 is exact against birder; bf16 where the CPU has it natively (AVX512-BF16,
    AMX), else fp32 with a warning; auto is bf16 where native, else fp32.
    int8: opt-in only, post-training quantised; check it with `camtrap evaluate` first.
    hint: throughput runs independent single-thread streams (a batch is split across them),
    which also holds up best beside other busy processes; latency uses every core on one
    request.
    """

    type: Literal["openvino"]
    device: str = "CPU"
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    int8: bool = False
    hint: Literal["throughput", "latency"] = "throughput"
    threads: int = Field(default=0, ge=0, le=256)  # 0: the hint's choice

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip().upper()
            if not re.fullmatch(r"CPU|GPU(\.\d+)?|AUTO", v):
                raise ValueError(f"must be CPU, GPU, GPU.N or AUTO, got {v!r}")
        return v


class OnnxRuntimeBackendConfig(Strict):
    """ONNX Runtime on the CPU: a smaller dependency than OpenVINO, fp32 only."""

    type: Literal["onnxruntime"]
    precision: Literal["fp32"] = "fp32"
    threads: int = Field(default=0, ge=0, le=256)  # 0: one per physical core


class AutoBackendConfig(Strict):
    """The fastest engine available for the device, chosen at start and logged: torch on
    CUDA (with model.precision); on a CPU openvino if importable, else onnxruntime, else
    torch, at `precision` (fp32, bf16 or auto as for openvino)."""

    type: Literal["auto"]
    precision: Literal["fp32", "bf16", "auto"] = "fp32"


BACKEND_TYPES = ("torch", "openvino", "onnxruntime", "auto")  # "remote" will join them


def _backend_tag(v: object) -> str | None:
    """The union member for a `model.backend` value. Tags are bracketed so that error paths
    read model.backend.<option> (the loader drops bracketed parts of a location)."""
    kind = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return f"[{kind}]" if kind in BACKEND_TYPES else None


BackendConfig = Annotated[
    Annotated[TorchBackendConfig, Tag("[torch]")]
    | Annotated[OpenVINOBackendConfig, Tag("[openvino]")]
    | Annotated[OnnxRuntimeBackendConfig, Tag("[onnxruntime]")]
    | Annotated[AutoBackendConfig, Tag("[auto]")],
    Discriminator(
        _backend_tag,
        custom_error_type="backend_type",
        custom_error_message=f"needs a type: one of {', '.join(BACKEND_TYPES)}",
    ),
]
# The model-level keys only the torch engine reads, with the values that mean "not set".
TORCH_ONLY_DEFAULTS: dict[str, tuple[object, ...]] = {
    "device": ("auto", "cpu"), "precision": ("auto", "fp32"), "compile": (False,),
    "threads": (0,),
}


class ModelConfig(Strict):
    name: str = DEFAULT_MODEL
    path: Path | None = None
    models_dir: Path = Path("models")
    download_url: str | None = None
    download_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    patch_size: int = 16
    input_size: int = Field(default=240, ge=32, le=1024)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    threads: int = Field(default=0, ge=0, le=256)
    top_k: int = Field(default=5, ge=1, le=20)
    embedding: bool = True  # stored with each visit: the web interface's similar visits
    # Last: its validator reads the torch keys above (a validator sees the fields before it).
    backend: BackendConfig = TorchBackendConfig()

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_shorthand(cls, v: object) -> object:
        """`backend: openvino` is `backend: {type: openvino}` with every option defaulted."""
        if isinstance(v, str):
            v = {"type": v}
        kind = v.get("type") if isinstance(v, dict) else None
        if kind is not None and kind not in BACKEND_TYPES:
            raise ValueError(f"unknown type {kind!r}: one of {', '.join(BACKEND_TYPES)}")
        return v

    @field_validator("backend")
    @classmethod
    def _torch_keys_stay_torch(cls, v: BackendConfig, info: ValidationInfo) -> BackendConfig:
        """model.device/precision/compile/threads are the torch engine's: set for an engine
        that would ignore them, they are an error rather than a silent no-op."""
        if v.type not in ("openvino", "onnxruntime"):
            return v
        data = info.data
        ignored = [
            f"model.{key} is {data[key]!r}" for key, default in TORCH_ONLY_DEFAULTS.items()
            if key in data and data[key] not in default
        ]
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)}: the torch engine's option, ignored by {v.type}; "
                f"remove it (the {v.type} options are under model.backend)"
            )
        return v

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, v: int) -> int:
        if v not in FLEXIVIT_PATCH_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, FLEXIVIT_PATCH_SIZES))}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v


class BatchingConfig(Strict):
    max_size: int = Field(default=16, ge=1, le=1024)
    max_wait_ms: float = Field(default=30.0, ge=0, le=5000)
    queue_size: int = Field(default=64, ge=1, le=100_000)


class UnknownConfig(Strict):
    enabled: bool = True
    floor: Fraction = 0.2
    label: str = "Unknown bird"


class VisitsConfig(Strict):
    threshold: Fraction = 0.6
    species_thresholds: dict[str, Fraction] = Field(default_factory=dict)
    min_hits: int = Field(default=2, ge=1, le=100)
    window_s: float = Field(default=10.0, gt=0, le=3600)
    end_after_s: float = Field(default=30.0, gt=0, le=86400)
    update_interval_s: float = Field(default=5.0, ge=0, le=3600)
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    unknown: UnknownConfig = UnknownConfig()

    @model_validator(mode="after")
    def _floor_below_threshold(self) -> VisitsConfig:
        if self.unknown.enabled and self.unknown.floor > self.threshold:
            raise ValueError(
                f"unknown.floor ({self.unknown.floor}) must not exceed threshold ({self.threshold})"
            )
        return self


class TlsConfig(Strict):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class MqttConfig(Strict):
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    prefix: str = Field(default="camtrap", pattern=r"^[^#+]+$")
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls: TlsConfig = TlsConfig()
    outbox_max: int = Field(default=10_000, ge=10, le=10_000_000)
    publish_crops: bool = True

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v.startswith("/") or v.endswith("/"):
            raise ValueError(f"must not start or end with '/', got {v!r}")
        return v


class HomeAssistantConfig(Strict):
    enabled: bool = True
    discovery_prefix: str = "homeassistant"


class RetentionConfig(Strict):
    """Ages in whole days before today; null keeps forever. Daily rollups are kept forever
    (they are tiny), so first-ever and first-this-year flags survive deleted visits."""

    visits_days: int | None = Field(default=365, ge=1, le=36500)
    crops_days: int | None = Field(default=90, ge=1, le=36500)
    summaries_days: int | None = Field(default=None, ge=1, le=36500)


class StorageConfig(Strict):
    state_dir: Path = Path("state")
    save_crops: bool = True
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    retention: RetentionConfig = RetentionConfig()


class JobConfig(Strict):
    enabled: bool = True
    cron: str | None = None
    interval_min: float | None = Field(default=None, gt=0, le=1440)

    @field_validator("cron")
    @classmethod
    def _crontab(cls, v: str | None) -> str | None:
        if v is not None:
            from datetime import UTC

            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger(**crontab_fields(v), timezone=UTC)
            except ValueError as exc:
                raise ValueError(f"bad crontab {v!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_trigger(self) -> JobConfig:
        if self.enabled and (self.cron is None) == (self.interval_min is None):
            raise ValueError("set exactly one of cron and interval_min")
        return self


class ScheduleConfig(Strict):
    timezone: str | None = None
    digest: JobConfig = JobConfig(interval_min=15)
    summary: JobConfig = JobConfig(cron="55 23 * * *")
    stats: JobConfig = JobConfig(interval_min=1)
    retention: JobConfig = JobConfig(cron="30 3 * * *")
    # At start, days with visits but no summary file, back this many days, are summarised.
    catch_up_days: int = Field(default=31, ge=0, le=3650)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}") from None
        return v


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingConfig(Strict):
    level: LogLevel = "INFO"
    modules: dict[str, LogLevel] = Field(default_factory=dict)


class HealthConfig(Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9107, ge=1, le=65535)


class Config(Strict):
    cameras: list[CameraConfig] = Field(min_length=1)
    motion: MotionConfig = MotionConfig()
    regions: RegionsConfig = RegionsConfig()
    tracks: TracksConfig = TracksConfig()
    model: ModelConfig = ModelConfig()
    batching: BatchingConfig = BatchingConfig()
    visits: VisitsConfig = VisitsConfig()
    mqtt: MqttConfig = MqttConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
    web: WebConfig = WebConfig()
    # Where the cameras are, for active hours relative to sunrise/sunset.
    location: LocationConfig | None = Field(default=None, validate_default=True)

    @field_validator("location")
    @classmethod
    def _sun_needs_location(
        cls, v: LocationConfig | None, info: ValidationInfo
    ) -> LocationConfig | None:
        if v is None:
            for i, cam in enumerate(info.data.get("cameras") or []):
                if cam.active_hours is not None and cam.active_hours.uses_sun:
                    raise ValueError(
                        f"needed by cameras[{i}].active_hours (sunrise/sunset): set latitude "
                        "and longitude"
                    )
        return v

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cams: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for cam in cams:
            if cam.name in seen:
                raise ValueError(f"camera name {cam.name!r} is used twice")
            seen.add(cam.name)
        return cams


