"""The daemon: wires the stages together, owns the threads, signals and systemd notify.

Threads: one per camera, one for inference (visit logic runs on it, after each batch),
paho's network thread, the outbox pump, and this main thread, which ends quiet visits,
feeds the watchdog, publishes camera state and handles signals (TERM: stop, HUP: reload).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from camtrap.comms.homeassistant import Discovery
from camtrap.comms.mqtt import MqttPublisher
from camtrap.comms.payloads import (
    Topics,
    event_body,
    last_species_payload,
    to_json,
    visit_entity_payload,
)
from camtrap.config.loader import load_config
from camtrap.config.models import CameraConfig, Config, ConfigError
from camtrap.inference.backend import Prediction
from camtrap.inference.checkpoint import ModelError
from camtrap.inference.queue import CropQueue
from camtrap.inference.torch_backend import Classifier
from camtrap.inference.worker import InferenceWorker
from camtrap.logs import mask_url, setup_logging
from camtrap.motion.regions import Crop
from camtrap.schedule.active import ActiveState
from camtrap.schedule.jobs import JobRunner
from camtrap.storage.store import Store
from camtrap.timeutil import resolve_tz
from camtrap.camera import CameraWorker
from camtrap.visits.tracker import VisitEvent, VisitTracker
from camtrap.web.health import HealthServer, Metrics

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0
STOP_BUDGET_S = 8.0  # the promise is 10 s from SIGTERM to exit
FAULT_ENV = "CAMTRAP_FAULT"  # "stall-inference": a test hook that wedges the inference thread


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _load_malloc_trim()


def trim_heap() -> None:
    """Hand freed heap pages back to the OS. Batches of varying size leave glibc's heap at
    its high-water mark: without this a long run's RSS climbs in steps (measured: +118 MB in
    35 min with cameras restarting); with it, +1.3 MB in 2 h, or +23.5 MB in 2 h of camera
    and broker restarts (bench/RESULTS.md)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


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


@dataclass
class CameraState:
    """What Home Assistant sees per camera; re-derived from events."""

    open_visits: set[str] = field(default_factory=set)
    visits_today: int = 0


class Service:
    def __init__(self, cfg: Config, classifier: Classifier, config_path: Path | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.classifier = classifier
        self.tz = resolve_tz(cfg.schedule.timezone)
        self.node = socket.gethostname()
        self.topics = Topics(cfg.mqtt.prefix)
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.tracker = VisitTracker(cfg.visits, classifier.labels, cfg.storage.jpeg_quality)
        self.store = Store(cfg.storage.state_dir, cfg.mqtt.outbox_max, cfg.storage.save_crops)
        self.queue = CropQueue(cfg.batching.queue_size)
        self.inference = InferenceWorker(classifier, self.queue, cfg.batching, self._on_predictions)
        self.publisher: MqttPublisher | None = None
        self.discovery: Discovery | None = None
        self.cameras: list[CameraWorker] = []
        self.camera_state: dict[str, CameraState] = {}
        self.event_counts: Counter[str] = Counter()
        self.metrics = Metrics(self)
        self.health: HealthServer | None = None
        self._visits_lock = threading.Lock()
        self._published_state: dict[str, tuple[object, ...]] = {}
        self._stall = os.environ.get(FAULT_ENV) == "stall-inference"
        self.jobs: JobRunner | None = None
        self._active: dict[str, ActiveState] = {}

    # --- wiring that a reload redoes -----------------------------------------------------

    def _make_camera(self, cam: CameraConfig) -> CameraWorker:
        worker = CameraWorker(cam, self.cfg.motion, self.cfg.regions,
                              self.classifier.input_size, self._emit)
        state = self._active.get(cam.name)
        if state is not None:
            worker.set_active(state.active, state.describe())
        return worker

    def _emit(self, crop: Crop) -> None:
        self.queue.put(crop)  # via self: survives a reload that replaces the queue

    def _make_publisher(self) -> MqttPublisher | None:
        if not self.cfg.mqtt.enabled:
            return None
        pub = MqttPublisher(self.cfg.mqtt, self.store)
        if self.discovery is not None:
            pub.on_connect(self._announce)
            pub.subscribe(f"{self.cfg.homeassistant.discovery_prefix}/status",
                          self._on_ha_status)
        return pub

    def _start_publisher(self) -> None:
        self.topics = Topics(self.cfg.mqtt.prefix)
        ha = self.cfg.homeassistant.enabled
        self.discovery = Discovery(self.cfg, self.cfg.storage.state_dir) if ha else None
        self.publisher = self._make_publisher()
        for name, state in self.camera_state.items():
            self._set_retained(name, "present", b"ON" if state.open_visits else b"OFF")
            self._set_retained(name, "visits_today", str(state.visits_today).encode())
        self._published_state.clear()
        if self.publisher is not None:
            self.publisher.start()

    def _set_retained(self, camera: str, leaf: str, payload: bytes) -> None:
        if self.publisher is not None:
            self.publisher.set_retained(self.topics.camera(camera, leaf), payload)

    # --- scheduled jobs (digest, summary, stats, retention, active hours) ------------------

    def _start_jobs(self) -> None:
        self.jobs = JobRunner(self.cfg, self.store, publish=self._publish_scheduled,
                              stats=self.stats_snapshot, on_active=self._on_active_hours)
        self.jobs.start()

    def _publish_scheduled(self, topic: str, payload: bytes, retain: bool) -> None:
        pub = self.publisher
        if pub is None:
            return
        if retain:
            pub.set_retained(topic, payload)  # digest, summary, summary image
        else:
            pub.publish_now(topic, payload)  # stats: a lost one is replaced a minute later

    def stats_snapshot(self) -> dict[str, Any]:
        return {
            "cameras": {c.camera.name: c.status.as_dict() for c in self.cameras},
            "inference": self.inference.stats(),
            "outbox": self.store.outbox_len(),
        }

    def _on_active_hours(self, camera: str, state: ActiveState) -> None:
        self._active[camera] = state
        for worker in self.cameras:
            if worker.camera.name == camera:
                worker.set_active(state.active, state.describe())

    # --- Home Assistant -------------------------------------------------------------------

    def _announce(self) -> None:
        pub, disc = self.publisher, self.discovery
        if pub is None or disc is None:
            return
        for topic, payload in disc.messages():
            pub.publish_now(topic, payload, retain=True)
        disc.mark_announced()

    def _on_ha_status(self, payload: bytes) -> None:
        if payload.strip() == b"online":
            log.info("homeassistant: online again; re-sending discovery")
            self._announce()

    # --- events -------------------------------------------------------------------------

    def _on_predictions(self, predictions: list[Prediction]) -> None:
        self.metrics.observe_batch(len(predictions), self.inference.last_latency_s)
        while self._stall:  # test hook: a wedged forward pass, as a hung GPU would cause
            time.sleep(1)
        with self._visits_lock:
            events = [ev for p in predictions for ev in self.tracker.observe(p)]
            self._handle(events)

    def _tick(self, now: float) -> None:
        # A visit ends `end_after_s` after its last sighting *as far as classified*: while
        # the classifier is behind, crops still queued may belong to it.
        pending = self.inference.pending_since()
        horizon = now if pending is None else min(now, pending)
        with self._visits_lock:
            self._handle(self.tracker.tick(horizon))

    def _handle(self, events: list[VisitEvent]) -> None:
        for ev in events:
            self.store.record(ev, self._messages(ev))
            self.event_counts[ev.kind] += 1
            log.info("visit %s %s: %s at %s (score %.2f, %d hits)", ev.kind, ev.visit_id,
                     ev.species, ev.camera, ev.score, ev.hits)
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
        state = self.camera_state.setdefault(ev.camera, CameraState())
        if ev.kind == "start":
            state.open_visits.add(ev.visit_id)
            state.visits_today = self.store.count_visits(ev.camera, self._midnight())
            self._set_retained(ev.camera, "species", last_species_payload(ev, self.tz))
            self._set_retained(ev.camera, "visits_today", str(state.visits_today).encode())
        elif ev.kind == "end":
            state.open_visits.discard(ev.visit_id)
        if ev.kind != "end" and self.cfg.mqtt.publish_crops and ev.crop_jpeg:
            self._set_retained(ev.camera, "crop", ev.crop_jpeg)
        self._set_retained(ev.camera, "present", b"ON" if state.open_visits else b"OFF")

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        midnight = self._midnight()
        for cam in self.cfg.cameras:
            log.info("camera %s: %s", cam.name, mask_url(cam.url))
            self.camera_state[cam.name] = CameraState(
                visits_today=self.store.count_visits(cam.name, midnight))
        self._start_publisher()
        self.inference.start()
        self.cameras = [self._make_camera(c) for c in self.cfg.cameras if c.enabled]
        self._start_jobs()  # pauses cameras outside their active hours before they open
        for cam in self.cameras:
            cam.start()
        if self.cfg.health.enabled:
            self.health = HealthServer(self, self.metrics, self.cfg.health.host,
                                       self.cfg.health.port)
            self.health.start()
        sd_notify("READY=1")
        log.info("camtrap running: %d camera(s), model on %s", len(self.cameras),
                 self.classifier.device)

    def status_line(self) -> str:
        up = sum(1 for c in self.cameras if c.status.connected)
        fps = sum(c.status.processed_fps for c in self.cameras)
        outbox = self.store.outbox_len()
        return (f"{up}/{len(self.cameras)} cameras up, {fps:.1f} fps, "
                f"{self.event_counts['start']} visits, outbox {outbox}")

    def stall_limit_s(self) -> float:
        """How long a thread may show no progress before the watchdog stops being fed."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        return max(5.0, usec / 2e6) if usec else 60.0

    def _camera_stuck(self, cam: CameraWorker, now: float) -> bool:
        if not cam.is_alive():
            return True
        if cam.status.state != "streaming":
            return False  # waiting to reconnect is progress: the wait is bounded
        limit = 2 * (cam.camera.read_timeout_s + cam.camera.stale_after_s) + self.stall_limit_s()
        return now - cam.last_progress > limit

    def health_report(self) -> dict[str, Any]:
        now = time.monotonic()
        inference_ok = (self.inference.is_alive()
                        and now - self.inference.last_progress < self.stall_limit_s())
        cams = {c.camera.name: {**c.status.as_dict(), "stuck": self._camera_stuck(c, now)}
                for c in self.cameras}
        return {
            "healthy": inference_ok and not any(c["stuck"] for c in cams.values()),
            "inference": {"alive": self.inference.is_alive(),
                          "idle_s": round(now - self.inference.last_progress, 2)},
            "cameras": cams,
            "mqtt_connected": self.publisher is not None and self.publisher.connected,
            "outbox": self.store.outbox_len(),
        }

    def run_forever(self) -> None:
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        ping_every = watchdog_usec / 2e6 if watchdog_usec else None
        last_ping = last_status = last_trim = 0.0
        while not self.stop_requested.wait(0.25):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            self._tick(time.time())
            now = time.monotonic()
            self._publish_camera_states(now)
            due = ping_every is not None and now - last_ping >= ping_every
            if due and self.health_report()["healthy"]:
                sd_notify("WATCHDOG=1")
                last_ping = now
            if now - last_status >= 10:
                sd_notify(f"STATUS={self.status_line()}")
                last_status = now
            if now - last_trim >= TRIM_EVERY_S:
                trim_heap()
                last_trim = now

    def _publish_camera_states(self, now: float) -> None:
        """Retained `<prefix>/<camera>/state`: on a change of state, else every 30 s."""
        for cam in self.cameras:
            st = cam.status
            key = (st.state, st.connected, int(now // 30))
            if self._published_state.get(cam.camera.name) != key:
                self._published_state[cam.camera.name] = key
                self._set_retained(cam.camera.name, "state", to_json(st.as_dict()))

    # --- reload (SIGHUP) -----------------------------------------------------------------

    def reload(self) -> bool:
        """Apply a changed config file; an invalid one is logged and the old one stays."""
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            if self.config_path is None:
                raise ConfigError("(no file)", ["the daemon was not started from a file"])
            new = load_config(self.config_path)
            self.apply(new)
            log.info("reloaded %s", self.config_path)
            return True
        except ConfigError as exc:
            log.error("reload: %s is invalid, keeping the running config:\n  %s", exc.source,
                      "\n  ".join(exc.problems))
        except (ValueError, OSError, ModelError) as exc:
            log.error("reload failed, keeping the running config: %s", exc)
        finally:
            sd_notify("READY=1")
        return False

    def apply(self, new: Config) -> None:
        """Restart only what changed. The model is reloaded only if its settings changed."""
        old = self.cfg
        fixed = [name for name in ("storage",) if getattr(new, name) != getattr(old, name)]
        if fixed:
            log.warning("reload: %s changed; restart the service to apply it", ", ".join(fixed))
            new = new.model_copy(update={name: getattr(old, name) for name in fixed})
        classifier = self.classifier
        if new.model != old.model or new.batching.max_size != old.batching.max_size:
            log.info("reload: model or batch size changed; loading the model again")
            # may raise: nothing has changed yet
            classifier = Classifier(new.model, max_batch=new.batching.max_size)
            classifier.warm_up(classifier.buckets)
        tracker = None
        if new.visits != old.visits or classifier is not self.classifier:
            tracker = VisitTracker(new.visits, classifier.labels, new.storage.jpeg_quality)
        self.cfg = new
        if new.logging != old.logging:
            setup_logging(new.logging)
        if classifier is not self.classifier or new.batching != old.batching:
            self.inference.stop(drain_timeout_s=2.0)
            self.classifier = classifier
            self.queue = CropQueue(new.batching.queue_size)
            self.inference = InferenceWorker(classifier, self.queue, new.batching,
                                             self._on_predictions)
            self.inference.start()
        if tracker is not None:
            with self._visits_lock:
                self._handle(self.tracker.flush())
                self.tracker = tracker
        self._restart_cameras(old, new)
        self.tz = resolve_tz(new.schedule.timezone)
        jobs_inputs = ("schedule", "storage", "location", "cameras", "mqtt")
        if any(getattr(new, k) != getattr(old, k) for k in jobs_inputs) and self.jobs:
            self.jobs.shutdown()
            self._active.clear()
            self._start_jobs()
        if (new.mqtt, new.homeassistant) != (old.mqtt, old.homeassistant):
            with self._visits_lock:
                if self.publisher is not None:
                    self.publisher.stop(flush_timeout_s=1.0)
                self._start_publisher()
        elif new.cameras != old.cameras and self.discovery is not None:
            self.discovery = Discovery(new, new.storage.state_dir)
            self._announce()  # new cameras' entities appear, removed ones' are cleared

    def _restart_cameras(self, old: Config, new: Config) -> None:
        shared_changed = (new.motion, new.regions) != (old.motion, old.regions)
        old_by_name = {c.camera.name: c for c in self.cameras}
        wanted = {c.name: c for c in new.cameras if c.enabled}
        keep: list[CameraWorker] = []
        for name, worker in old_by_name.items():
            if name in wanted and wanted[name] == worker.camera and not shared_changed:
                keep.append(worker)
            else:
                log.info("reload: stopping camera %s", name)
                worker.stop()
        kept = {w.camera.name for w in keep}
        for name, cam in wanted.items():
            if name not in kept:
                log.info("reload: starting camera %s: %s", name, mask_url(cam.url))
                worker = self._make_camera(cam)
                worker.start()
                keep.append(worker)
                self.camera_state.setdefault(name, CameraState(
                    visits_today=self.store.count_visits(name, self._midnight())))
        self.cameras = keep

    # --- stop ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop capture, classify what is queued, end open visits, flush MQTT, go offline."""
        started = time.monotonic()
        sd_notify("STOPPING=1")
        log.info("stopping")
        if self.jobs is not None:
            self.jobs.shutdown()
        for cam in self.cameras:
            cam.stop()
        if not self._stall:
            self.inference.stop(drain_timeout_s=2.0)
        with self._visits_lock:
            self._handle(self.tracker.flush())
        if self.publisher is not None:
            left = STOP_BUDGET_S - (time.monotonic() - started)
            self.publisher.stop(flush_timeout_s=max(0.5, min(3.0, left - 1.0)))
        if self.health is not None:
            self.health.stop()
        for cam in self.cameras:
            cam.join(timeout=max(0.0, STOP_BUDGET_S - (time.monotonic() - started)) / 4)
        self.store.close()
        log.info("stopped in %.1f s", time.monotonic() - started)


def run_daemon(cfg: Config, classifier: Classifier, config_path: Path | None = None) -> int:
    service = Service(cfg, classifier, config_path)

    def on_stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        service.stop_requested.set()

    def on_hup(_signum: int, _frame: object) -> None:
        log.info("received SIGHUP: reloading %s", config_path)
        service.reload_requested.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    service.start()
    try:
        service.run_forever()
    finally:
        service.shutdown()
    return 0
