"""The config file's schema, validated strictly with pydantic: unknown keys, wrong types and
out-of-range values are errors that name the field path. Field names are a public contract."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from camtrap.config.crontab import crontab_fields

DEFAULT_MODEL = "flexivit_reg1_s16_rms_ls_dino-v2-il-all"
FLEXIVIT_PATCH_SIZES = (10, 12, 15, 16, 20, 24, 30, 40)
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
class ConfigError(Exception):
    """A config that cannot be used; `problems` are lines like `cameras[1].url: reason`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    model: ModelConfig = ModelConfig()
    batching: BatchingConfig = BatchingConfig()
    visits: VisitsConfig = VisitsConfig()
    mqtt: MqttConfig = MqttConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
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


