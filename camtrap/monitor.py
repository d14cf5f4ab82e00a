"""Takes the status snapshot from the running parts and judges health.

Each figure is read through its owner's own lock or copy (`InferenceWorker.snapshot`,
`EventSink.counts`), and the camera list is copied first, so a
scrape never iterates a dict that a camera thread or a reload is changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from camtrap.status import CameraSnapshot, StatusSnapshot, StorageSnapshot
from camtrap.systemd import stall_limit_s

if TYPE_CHECKING:
    from camtrap.camera import CameraWorker
    from camtrap.comms.mqtt import MqttPublisher
    from camtrap.inference.worker import InferenceWorker
    from camtrap.schedule.active import ActiveState
    from camtrap.sink import EventSink
    from camtrap.storage.store import Store
    from camtrap.visits.tracker import VisitTracker


@dataclass
class Parts:
    """What the snapshot is read from; the service keeps it current across reloads."""

    cameras: list[CameraWorker]
    inference: InferenceWorker
    sink: EventSink
    store: Store
    tracker: VisitTracker
    publisher: MqttPublisher | None
    active: Callable[[], dict[str, ActiveState]]


def camera_stuck(cam: CameraWorker, now: float, limit_s: float) -> bool:
    if not cam.is_alive():
        return True
    if cam.status.state != "streaming":
        return False  # waiting to reconnect is progress: the wait is bounded
    cfg = cam.camera
    return now - cam.last_progress > 2 * (cfg.read_timeout_s + cfg.stale_after_s) + limit_s


def take_snapshot(parts: Parts, started: float) -> StatusSnapshot:
    now = time.monotonic()
    limit = stall_limit_s()
    inference = parts.inference.snapshot(limit)
    active = parts.active()
    cameras: dict[str, CameraSnapshot] = {}
    for cam in list(parts.cameras):
        name = cam.camera.name
        window = active.get(name)
        cameras[name] = CameraSnapshot(
            state=cam.status.as_dict(),
            frames=cam.status.frames_seen,
            reconnects=cam.status.reconnects,
            crops=cam.crops_emitted,
            drops=inference.drops.get(name, 0),
            active=True if window is None else window.active,
            active_until=None if window is None or window.until is None
            else window.until.isoformat(),
            stuck=camera_stuck(cam, now, limit),
        )
    sink_alive = parts.sink.is_alive() and now - parts.sink.last_progress < limit
    events, sink_dropped = parts.sink.counts()
    store = parts.store
    storage = StorageSnapshot(
        ok=parts.sink.storage_error is None,
        error=parts.sink.storage_error,
        outbox=_outbox_len(store),
        outbox_dropped=store.outbox_dropped,
        crop_write_failures=store.crop_write_failures,
        unstored=parts.sink.held(),
        sink_queued=parts.sink.queued(),
        sink_dropped=sink_dropped,
    )
    healthy = (inference.alive and sink_alive
               and not any(c.stuck for c in cameras.values()))
    pub = parts.publisher
    return StatusSnapshot(
        uptime_s=now - started,
        healthy=healthy,
        cameras=cameras,
        inference=inference,
        storage=storage,
        mqtt_connected=None if pub is None else pub.connected,
        visits_open=parts.tracker.open_visits,
        visit_events=events,
        mqtt=None if pub is None else pub.health(),
    )


def _outbox_len(store: Store) -> int:
    try:
        return store.outbox_len()
    except Exception:  # a broken database must not break the health report
        return -1
