"""One status snapshot, with one set of field names, behind every view of the daemon's health:
`/healthz`, `/metrics`, `<prefix>/stats` and systemd's `STATUS=` line.

The names are those of the `<prefix>/stats` payload (a public contract, README); the other
views only add to it. The snapshot is taken under each component's own lock by
`camtrap.monitor`, so the views never iterate state that another thread is changing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CameraSnapshot:
    state: dict[str, Any]  # the `<prefix>/<camera>/state` payload (`CameraStatus.as_dict`)
    frames: int  # read from the stream since start
    reconnects: int  # since start
    crops: int  # sent to the classifier since start
    drops: int  # crops dropped by a full queue since start
    active: bool  # inside its active hours
    active_until: str | None  # when that changes (ISO 8601), if it has a window
    stuck: bool  # its thread made no progress for longer than the watchdog allows

    @property
    def connected(self) -> bool:
        return bool(self.state.get("connected"))

    @property
    def fps(self) -> float:
        return float(self.state.get("processed_fps") or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.state,
            "fps": self.fps,
            "drops": self.drops,
            "active": self.active,
            "active_until": self.active_until,
            "frames": self.frames,
            "reconnects": self.reconnects,
            "crops": self.crops,
            "stuck": self.stuck,
        }


@dataclass(frozen=True)
class InferenceSnapshot:
    backend: str  # e.g. "torch cpu fp32 patch 16"
    alive: bool
    idle_s: float  # since the inference thread last turned
    batches: int
    crops: int
    errors: int
    failed_crops: int
    queued: int
    drops: dict[str, int]  # per camera
    latency_p50_s: float | None
    latency_p95_s: float | None
    last_latency_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "alive": self.alive,
            "idle_s": round(self.idle_s, 2),
            "batches": self.batches,
            "crops": self.crops,
            "errors": self.errors,
            "failed_crops": self.failed_crops,
            "latency_ms_p50": _ms(self.latency_p50_s),
            "latency_ms_p95": _ms(self.latency_p95_s),
            "last_latency_ms": _ms(self.last_latency_s),
        }


@dataclass(frozen=True)
class StorageSnapshot:
    ok: bool  # the last write to the database succeeded
    error: str | None  # the fault while not ok
    outbox: int  # messages not yet acknowledged by the broker
    outbox_dropped: int  # dropped by a full outbox since start
    crop_write_failures: int  # best crops that could not be written, since start
    unstored: int  # visit events held in memory until the database takes them again
    sink_queued: int  # visit events waiting for the sink thread
    sink_dropped: int  # visit events dropped by a full sink queue or held buffer

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "outbox_dropped": self.outbox_dropped,
            "crop_write_failures": self.crop_write_failures,
            "unstored": self.unstored,
            "sink_queued": self.sink_queued,
            "sink_dropped": self.sink_dropped,
        }


MQTT_STATES = ("connecting", "connected", "unreachable", "no_answer", "tls_error", "refused",
               "denied")


@dataclass(frozen=True)
class MqttSnapshot:
    """The broker link as the operator needs it: which fault, in words, and what it holds.

    `state` is one of MQTT_STATES: every state but `connected` means the daemon is retrying
    with backoff; `denied` is connected, but the broker refuses messages on some topic (ACL).
    """

    state: str
    error: str | None  # the fault in words, naming the broker's URL; None while connected
    protocol: str  # "5" or "3.1.1" (a broker without MQTT 5)
    held: int  # outbox messages the broker refused, kept for a retry

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "error": self.error, "protocol": self.protocol,
                "held": self.held}


@dataclass(frozen=True)
class StatusSnapshot:
    uptime_s: float
    healthy: bool  # every thread progresses: what feeds the systemd watchdog
    cameras: dict[str, CameraSnapshot]
    inference: InferenceSnapshot
    storage: StorageSnapshot
    mqtt_connected: bool | None  # None: MQTT is switched off
    visits_open: int
    visit_events: dict[str, int] = field(default_factory=dict)  # start/update/end since start
    mqtt: MqttSnapshot | None = None  # None: MQTT is switched off

    def as_dict(self) -> dict[str, Any]:
        """The body of `<prefix>/stats` (less `schema` and `time`) and of `/healthz`."""
        drops = self.inference.drops
        return {
            "uptime_s": round(self.uptime_s),
            "healthy": self.healthy,
            "cameras": {name: cam.as_dict() for name, cam in sorted(self.cameras.items())},
            "queue": {"depth": self.inference.queued, "drops": sum(drops.values())},
            "inference": self.inference.as_dict(),
            "outbox": self.storage.outbox,
            "storage": self.storage.as_dict(),
            "mqtt_connected": self.mqtt_connected,
            "mqtt": None if self.mqtt is None else self.mqtt.as_dict(),
            "visits": {"open": self.visits_open, "events": dict(sorted(self.visit_events.items()))},
        }

    def status_line(self) -> str:
        """systemd's STATUS=: what `systemctl status` shows in one line."""
        up = sum(1 for c in self.cameras.values() if c.connected)
        fps = sum(c.fps for c in self.cameras.values())
        line = (f"{up}/{len(self.cameras)} cameras up, {fps:.1f} fps, "
                f"{self.visit_events.get('start', 0)} visits, outbox {self.storage.outbox}")
        if not self.storage.ok:
            line += f", storage fault ({self.storage.unstored} events held)"
        if self.mqtt_connected is False:
            line += ", broker disconnected"
            if self.mqtt is not None and self.mqtt.state != "connecting":
                line += f" ({self.mqtt.state})"
        elif self.mqtt is not None and self.mqtt.state == "denied":
            line += f", broker denies messages ({self.mqtt.held} held)"
        return line


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
