"""The daemon: wires the stages together, owns the threads, signals and systemd notify.

Threads: one per camera, one for inference (visit logic runs on it, after each batch),
paho's network thread, the outbox pump, and this main thread, which ends quiet visits,
feeds the watchdog and waits for signals.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from camtrap.camera import CameraWorker
from camtrap.classifier import Classifier, CropQueue, InferenceWorker, Prediction
from camtrap.config import Config
from camtrap.homeassistant import Discovery
from camtrap.logs import mask_url
from camtrap.mqtt import MqttPublisher
from camtrap.payloads import (
    Topics,
    event_body,
    last_species_payload,
    to_json,
    visit_entity_payload,
)
from camtrap.store import Store
from camtrap.visits import VisitEvent, VisitTracker

log = logging.getLogger(__name__)

STOP_BUDGET_S = 8.0  # systemd's default stop timeout is 90 s; we promise 10


def sd_notify(message: str) -> bool:
    """Send one datagram to systemd's NOTIFY_SOCKET; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False


def local_zone(cfg: Config) -> tzinfo | None:
    return ZoneInfo(cfg.schedule.timezone) if cfg.schedule.timezone else None


@dataclass
class CameraState:
    """What Home Assistant sees per camera; re-derived from events."""

    open_visits: set[str] = field(default_factory=set)
    visits_today: int = 0
    last_visit: str | None = None


class Service:
    def __init__(self, cfg: Config, classifier: Classifier) -> None:
        self.cfg = cfg
        self.classifier = classifier
        self.tz = local_zone(cfg)
        self.node = socket.gethostname()
        self.topics = Topics(cfg.mqtt.prefix)
        self.stop_requested = threading.Event()
        self.tracker = VisitTracker(cfg.visits, classifier.labels, cfg.storage.jpeg_quality)
        self.store = Store(cfg.storage.state_dir, cfg.mqtt.outbox_max, cfg.storage.save_crops)
        self.queue = CropQueue(cfg.batching.queue_size)
        self.inference = InferenceWorker(classifier, self.queue, cfg.batching, self._on_predictions)
        self.publisher = MqttPublisher(cfg.mqtt, self.store) if cfg.mqtt.enabled else None
        self.cameras = [
            CameraWorker(cam, cfg.motion, cfg.regions, classifier.input_size, self.queue.put)
            for cam in cfg.cameras
            if cam.enabled
        ]
        self.camera_state = {cam.name: CameraState() for cam in cfg.cameras}
        self._visits_lock = threading.Lock()
        self.events_total = 0
        ha = cfg.homeassistant.enabled
        self.discovery = Discovery(cfg, cfg.storage.state_dir) if ha else None
        if self.publisher is not None and self.discovery is not None:
            self.publisher.on_connect(self._announce)
            self.publisher.subscribe(f"{cfg.homeassistant.discovery_prefix}/status",
                                     self._on_ha_status)

    # --- Home Assistant -------------------------------------------------------------------

    def _announce(self) -> None:
        assert self.publisher is not None and self.discovery is not None
        for topic, payload in self.discovery.messages():
            self.publisher.publish_now(topic, payload, retain=True)
        self.discovery.mark_announced()

    def _on_ha_status(self, payload: bytes) -> None:
        if payload.strip() == b"online":
            log.info("homeassistant: online again; re-sending discovery")
            self._announce()

    # --- events -------------------------------------------------------------------------

    def _on_predictions(self, predictions: list[Prediction]) -> None:
        with self._visits_lock:
            events = [ev for p in predictions for ev in self.tracker.observe(p)]
            self._handle(events)

    def _tick(self, now: float) -> None:
        with self._visits_lock:
            self._handle(self.tracker.tick(now))

    def _handle(self, events: list[VisitEvent]) -> None:
        for ev in events:
            self.store.record(ev, self._messages(ev))
            self.events_total += 1
            log.info(
                "visit %s %s: %s at %s (score %.2f, %d hits)",
                ev.kind,
                ev.visit_id,
                ev.species,
                ev.camera,
                ev.score,
                ev.hits,
            )
            self._update_camera_state(ev)
        if events and self.publisher is not None:
            self.publisher.wake()

    def _messages(self, ev: VisitEvent) -> list[tuple[str, bytes, int, bool]]:
        """What goes through the outbox for one event: the event, and the per-camera
        `visit` message that Home Assistant's event entity fires on."""
        if self.publisher is None:
            return []
        body = event_body(ev, self.tz, self.node)
        out = [(self.topics.events, to_json(body), 1, False)]
        if ev.kind in ("start", "end"):
            out.append((self.topics.camera(ev.camera, "visit"), visit_entity_payload(body), 1,
                        False))
        return out

    def _midnight(self) -> float:
        now = datetime.now(self.tz).astimezone(self.tz)
        return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def _update_camera_state(self, ev: VisitEvent) -> None:
        state = self.camera_state[ev.camera]
        if ev.kind == "start":
            state.open_visits.add(ev.visit_id)
            state.visits_today = self.store.count_visits(ev.camera, self._midnight())
            state.last_visit = ev.visit_id
        elif ev.kind == "end":
            state.open_visits.discard(ev.visit_id)
        pub = self.publisher
        if pub is None:
            return
        topic = self.topics.camera
        if ev.kind == "start":
            pub.set_retained(topic(ev.camera, "species"), last_species_payload(ev, self.tz))
            pub.set_retained(topic(ev.camera, "visits_today"), str(state.visits_today).encode())
        if ev.kind != "end" and self.cfg.mqtt.publish_crops and ev.crop_jpeg:
            pub.set_retained(topic(ev.camera, "crop"), ev.crop_jpeg)
        present = b"ON" if state.open_visits else b"OFF"
        pub.set_retained(topic(ev.camera, "present"), present)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        for cam in self.cfg.cameras:
            log.info("camera %s: %s", cam.name, mask_url(cam.url))
        for name, state in self.camera_state.items():
            state.visits_today = self.store.count_visits(name, self._midnight())
            if self.publisher is not None:
                self.publisher.set_retained(self.topics.camera(name, "present"), b"OFF")
                self.publisher.set_retained(
                    self.topics.camera(name, "visits_today"), str(state.visits_today).encode()
                )
        if self.publisher is not None:
            self.publisher.start()
        self.inference.start()
        for cam in self.cameras:
            cam.start()
        sd_notify("READY=1")
        log.info(
            "camtrap running: %d camera(s), model on %s", len(self.cameras), self.classifier.device
        )

    def status_line(self) -> str:
        up = sum(1 for c in self.cameras if c.status.connected)
        fps = sum(c.status.processed_fps for c in self.cameras)
        outbox = self.store.outbox_len()
        return (
            f"{up}/{len(self.cameras)} cameras up, {fps:.1f} fps, "
            f"{self.events_total} visit events, outbox {outbox}"
        )

    def healthy(self, now: float) -> bool:
        """Progress everywhere: the inference loop turns and every camera thread is alive."""
        if not self.inference.is_alive() or now - self.inference.last_progress > 30:
            return False
        return all(c.is_alive() for c in self.cameras)

    def run_forever(self) -> None:
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        ping_every = watchdog_usec / 2e6 if watchdog_usec else None
        last_ping = last_status = 0.0
        published: dict[str, tuple[object, ...]] = {}
        while not self.stop_requested.wait(0.5):
            self._tick(time.time())
            now = time.monotonic()
            self._publish_camera_states(published, now)
            if ping_every and now - last_ping >= ping_every and self.healthy(now):
                sd_notify("WATCHDOG=1")
                last_ping = now
            if now - last_status >= 10:
                sd_notify(f"STATUS={self.status_line()}")
                last_status = now

    def _publish_camera_states(self, last: dict[str, tuple[object, ...]], now: float) -> None:
        """Retained `<prefix>/<camera>/state`: on a change of state, else every 30 s."""
        if self.publisher is None:
            return
        for cam in self.cameras:
            st = cam.status
            key = (st.state, st.connected, int(now // 30))
            if last.get(cam.camera.name) != key:
                last[cam.camera.name] = key
                self.publisher.set_retained(self.topics.camera(cam.camera.name, "state"),
                                            to_json(st.as_dict()))

    def shutdown(self) -> None:
        """Stop capture, classify what is queued, end open visits, flush MQTT, go offline."""
        started = time.monotonic()
        sd_notify("STOPPING=1")
        log.info("stopping")
        for cam in self.cameras:
            cam.stop()
        self.inference.stop(drain_timeout_s=2.0)
        with self._visits_lock:
            self._handle(self.tracker.flush())
        if self.publisher is not None:
            left = STOP_BUDGET_S - (time.monotonic() - started)
            self.publisher.stop(flush_timeout_s=max(0.5, min(3.0, left - 1.0)))
        for cam in self.cameras:
            cam.join(timeout=max(0.0, STOP_BUDGET_S - (time.monotonic() - started)) / 4)
        self.store.close()
        log.info("stopped in %.1f s", time.monotonic() - started)


def run_daemon(cfg: Config, classifier: Classifier) -> int:
    service = Service(cfg, classifier)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        service.stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(
        signal.SIGHUP,
        lambda *_: log.warning(
            "SIGHUP: live reload is not implemented yet; restart the service to apply changes"
        ),
    )
    service.start()
    try:
        service.run_forever()
    finally:
        service.shutdown()
    return 0
