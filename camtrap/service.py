"""The daemon: wires the stages in data-path order and runs the main loop.

cameras -> crop queue -> inference thread -> visit tracker -> event sink (SQLite + outbox)
-> MQTT publisher and Home Assistant; the scheduled jobs; the health endpoint.
The main thread ends quiet visits, feeds systemd, publishes camera state, applies reloads
and handles signals (TERM: stop, HUP: reload).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from camtrap.camera import CameraWorker
from camtrap.comms.homeassistant import Discovery
from camtrap.comms.mqtt import MqttPublisher
from camtrap.comms.payloads import Topics, to_json
from camtrap.config.models import CameraConfig, Config
from camtrap.inference.backend import Backend, Prediction
from camtrap.inference.queue import CropQueue
from camtrap.inference.worker import InferenceWorker
from camtrap.logs import mask_url, setup_logging
from camtrap.monitor import Parts, take_snapshot
from camtrap.reload import Changes, LoadBackend, Prepared, Reloader, prepare
from camtrap.schedule.active import ActiveState
from camtrap.schedule.jobs import JobRunner
from camtrap.sink import EventSink
from camtrap.status import StatusSnapshot
from camtrap.storage.store import Store
from camtrap.systemd import Heartbeat, reloading, sd_notify
from camtrap.timeutil import resolve_tz
from camtrap.visits.tracker import VisitTracker
from camtrap.web.app import WebDeps, WebServer, create_app
from camtrap.web.exports import Site
from camtrap.web.health import HealthServer
from camtrap.web.metrics import Metrics
from camtrap.web.queries import Reader
from camtrap.web.reviewer import Reviewer

log = logging.getLogger(__name__)

EXIT_RUNTIME_FAULT = 1
STOP_BUDGET_S = 8.0  # the promise is 10 s from SIGTERM to exit
STATE_EVERY_S = 30  # retained `<prefix>/<camera>/state` at least this often
FAULT_ENV = "CAMTRAP_FAULT"  # "stall-inference": a test hook that wedges the inference thread


class Service:
    def __init__(self, cfg: Config, backend: Backend, load_backend: LoadBackend,
                 config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.load_backend = load_backend
        self.started = time.monotonic()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.reloader = Reloader(config_path)
        self.tz = resolve_tz(cfg.schedule.timezone)
        self.store = Store(cfg.storage.state_dir, cfg.mqtt.outbox_max, cfg.storage.save_crops,
                           tz=self.tz)
        self.queue = CropQueue(cfg.batching.queue_size)
        self.inference = InferenceWorker(backend, self.queue, cfg.batching, self._on_predictions)
        self.tracker = VisitTracker(cfg.visits, backend.labels, cfg.storage.jpeg_quality,
                                    cfg.tracks)
        self._visits_lock = threading.Lock()  # the tracker: inference thread and main thread
        self.sink = EventSink(self.store, self.tz, socket.gethostname(),
                              [c.name for c in cfg.cameras], cfg.mqtt.publish_crops)
        self.topics = Topics(cfg.mqtt.prefix)
        self.publisher: MqttPublisher | None = None
        self.discovery: Discovery | None = None
        self.cameras: list[CameraWorker] = []
        self.jobs: JobRunner | None = None
        self.files_lock = threading.Lock()  # summary files: the jobs and reviews take turns
        self._active: dict[str, ActiveState] = {}
        self.metrics = Metrics(self.snapshot)
        self.health: HealthServer | None = None
        self.web: WebServer | None = None
        self.reviewer: Reviewer | None = None
        self._published_state: dict[str, tuple[object, ...]] = {}
        self._stall = os.environ.get(FAULT_ENV) == "stall-inference"

    # --- the data path ----------------------------------------------------------------

    def _make_camera(self, cam: CameraConfig) -> CameraWorker:
        worker = CameraWorker(cam, self.cfg.motion, self.cfg.regions, self.backend.input_size,
                              self.queue.put, self.cfg.tracks)
        state = self._active.get(cam.name)
        if state is not None:
            worker.set_active(state.active, state.describe())
        return worker

    def _on_predictions(self, predictions: list[Prediction]) -> None:
        self.metrics.observe_batch(len(predictions), self.inference.last_latency_s)
        while self._stall:  # test hook: a wedged forward pass, as a hung GPU would cause
            time.sleep(1)
        with self._visits_lock:
            self.sink.put([ev for p in predictions for ev in self.tracker.observe(p)])

    def _end_quiet_visits(self, now: float) -> None:
        """A visit ends `end_after_s` after its last sighting *as far as classified*: while
        the classifier is behind, crops still queued may belong to it."""
        pending = self.inference.pending_since()
        horizon = now if pending is None else min(now, pending)
        with self._visits_lock:
            self.sink.put(self.tracker.tick(horizon))

    def _flush_visits(self, tracker: VisitTracker | None = None) -> None:
        """End every open visit, optionally switching to a new tracker."""
        with self._visits_lock:
            self.sink.put(self.tracker.flush())
            if tracker is not None:
                self.tracker = tracker

    # --- MQTT and Home Assistant ----------------------------------------------------------

    def _build_publisher(self, cfg: Config, topics: Topics
                         ) -> tuple[MqttPublisher | None, Discovery | None]:
        """Both built, not started: building checks TLS files and the like."""
        disc = Discovery(cfg, cfg.storage.state_dir, topics) if cfg.homeassistant.enabled else None
        if not cfg.mqtt.enabled:
            return None, disc
        pub = MqttPublisher(cfg.mqtt, self.store, topics)
        if disc is not None:
            pub.on_connect(self._announce)
            pub.subscribe(f"{cfg.homeassistant.discovery_prefix}/status", self._on_ha_status)
        return pub, disc

    def _use_publisher(self, pub: MqttPublisher | None, disc: Discovery | None) -> None:
        self.publisher, self.discovery = pub, disc
        self.sink.use(pub, self.topics)
        self._published_state.clear()
        if pub is not None:
            pub.start()

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

    def _publish_scheduled(self, topic: str, payload: bytes, retain: bool) -> None:
        pub = self.publisher
        if pub is None:
            return
        if retain:
            pub.set_retained(topic, payload)  # digest, summary, summary image
        else:
            pub.publish_now(topic, payload)  # stats: a lost one is replaced a minute later

    def _publish_camera_states(self, now: float) -> None:
        """Retained `<prefix>/<camera>/state`: on a change of state, else every 30 s."""
        pub = self.publisher
        if pub is None:
            return
        for cam in list(self.cameras):
            st = cam.status
            key = (st.state, st.connected, int(now // STATE_EVERY_S))
            if self._published_state.get(cam.camera.name) != key:
                self._published_state[cam.camera.name] = key
                pub.set_retained(self.topics.camera(cam.camera.name, "state"),
                                 to_json(st.as_dict()))

    # --- scheduled jobs -----------------------------------------------------------------

    def _start_jobs(self) -> None:
        self._active.clear()
        self.jobs = JobRunner(self.cfg, self.store, self.topics, publish=self._publish_scheduled,
                              stats=self.snapshot, on_active=self._on_active_hours,
                              files_lock=self.files_lock)
        self.jobs.start()

    def _on_active_hours(self, camera: str, state: ActiveState) -> None:
        self._active[camera] = state
        for worker in list(self.cameras):
            if worker.camera.name == camera:
                worker.set_active(state.active, state.describe())

    # --- status -------------------------------------------------------------------------

    def snapshot(self) -> StatusSnapshot:
        parts = Parts(cameras=self.cameras, inference=self.inference, sink=self.sink,
                      store=self.store, tracker=self.tracker, publisher=self.publisher,
                      active=lambda: dict(self._active))
        return take_snapshot(parts, self.started)

    # --- the web interface ----------------------------------------------------------------

    def _web_deps(self) -> WebDeps:
        cfg, cams = self.cfg, [c.name for c in self.cfg.cameras]
        unknown = cfg.visits.unknown
        reader = Reader(cfg.storage.state_dir, self.tz,
                        unknown_label=unknown.label if unknown.enabled else None)
        self.reviewer = reviewer = Reviewer(
            self.store, reader, self.tz, topics=self.topics if cfg.mqtt.enabled else None,
            node=socket.gethostname(), cameras=cams, jpeg_quality=cfg.storage.jpeg_quality,
            files_lock=self.files_lock, on_review=self.sink.on_review)
        loc = cfg.location
        site = Site(latitude=loc.latitude, longitude=loc.longitude) if loc else None
        return WebDeps(cfg=cfg.web, state_dir=cfg.storage.state_dir, tz=self.tz,
                       reader=reader, reviewer=reviewer, snapshot=self.snapshot,
                       metrics=self.metrics, labels=list(self.backend.labels), cameras=cams,
                       site=site)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Everything that reads input (TLS files, the state folder, the port) is checked
        here, before READY: a problem is bad input and ends the start."""
        pub, disc = self._build_publisher(self.cfg, self.topics)
        if self.cfg.health.enabled:
            self.health = HealthServer(self.snapshot, self.metrics, self.cfg.health.host,
                                       self.cfg.health.port)
        for cam in self.cfg.cameras:
            log.info("camera %s: %s", cam.name, mask_url(cam.url))
        self.sink.start()
        self._use_publisher(pub, disc)
        self.inference.start()
        self.cameras = [self._make_camera(c) for c in self.cfg.cameras if c.enabled]
        self._start_jobs()  # pauses cameras outside their active hours before they open
        if self.cfg.web.enabled:  # a port in use is bad input: it ends the start
            self.web = WebServer(create_app(self._web_deps()), self.cfg.web.host,
                                 self.cfg.web.port)
        for cam in self.cameras:
            cam.start()
        if self.health is not None:
            self.health.start()
        if self.web is not None:
            self.web.start()
        sd_notify("READY=1")
        log.info("camtrap running: %d camera(s), model: %s", len(self.cameras),
                 self.backend.describe())

    def run_forever(self) -> None:
        """The main loop. A fault in one turn is logged and the loop goes on: at run time
        nothing ends the daemon but a signal."""
        heartbeat = Heartbeat()
        while not self.stop_requested.wait(0.25):
            try:
                self._turn(heartbeat)
            except Exception:
                log.exception("main loop: unexpected error; carrying on")

    def _turn(self, heartbeat: Heartbeat) -> None:
        finished, prepared = self.reloader.poll()
        if finished:
            if prepared is not None:
                self.apply(prepared)
            sd_notify("READY=1")
        if self.reload_requested.is_set() and not self.reloader.busy:
            self.reload_requested.clear()  # a SIGHUP during a reload reads the file again
            self._request_reload()
        self._end_quiet_visits(time.monotonic())
        now = time.monotonic()
        self._publish_camera_states(now)
        heartbeat.beat(now, healthy=lambda: self.snapshot().healthy,
                       status=lambda: self.snapshot().status_line())

    # --- reload (SIGHUP) -----------------------------------------------------------------

    def _request_reload(self) -> None:
        reloading()
        cfg, labels = self.cfg, self.backend.labels
        self.reloader.request(lambda path: prepare(path, cfg, labels, self.load_backend,
                                                   build=self._build_parts))

    def _build_parts(self, new: Config, changes: Changes) -> dict[str, Any]:
        if not changes.publisher:
            return {}
        topics = Topics(new.mqtt.prefix)
        pub, disc = self._build_publisher(new, topics)
        return {"topics": topics, "publisher": pub, "discovery": disc}

    def apply(self, p: Prepared) -> None:
        """Swap in what the reload prepared. Nothing here reads input or can fail on it."""
        new, ch = p.cfg, p.changes
        for section in ch.kept:
            log.warning("reload: %s changed; restart the service to apply it", section)
        self.cfg = new
        self.topics = p.extra.get("topics", self.topics)
        if ch.logging:
            setup_logging(new.logging)
        if p.backend is not None or ch.batching:
            if p.backend is not None:
                log.info("reload: model or batch size changed; using %s", p.backend.describe())
                self.backend = p.backend
            self.queue.resize(new.batching.queue_size)
            self.inference.use(self.backend, new.batching)
        if p.tracker is not None:
            self._flush_visits(p.tracker)
        self._restart_cameras(ch)
        self.tz = resolve_tz(new.schedule.timezone)
        if ch.jobs and self.jobs is not None:
            self.jobs.shutdown()
            self._start_jobs()
        if ch.publisher:
            if self.publisher is not None:
                self.publisher.stop(flush_timeout_s=1.0)
            self._use_publisher(p.extra["publisher"], p.extra["discovery"])
        elif ch.announce and self.discovery is not None:
            self.discovery = Discovery(new, new.storage.state_dir, self.topics)
            self._announce()  # new cameras' entities appear, removed ones' are cleared
        log.info("reloaded %s%s", self.reloader.path, "" if ch.anything or ch.kept
                 else " (nothing changed)")

    def _restart_cameras(self, ch: Changes) -> None:
        stop = set(ch.cameras_stop)
        keep = [w for w in self.cameras if w.camera.name not in stop]
        for worker in self.cameras:
            if worker.camera.name in stop:
                log.info("reload: stopping camera %s", worker.camera.name)
                worker.stop()
        for cam in ch.cameras_start:
            log.info("reload: starting camera %s: %s", cam.name, mask_url(cam.url))
            self.sink.add_camera(cam.name)
            worker = self._make_camera(cam)
            worker.start()
            keep.append(worker)
        self.cameras = keep

    # --- stop ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop capture, classify what is queued, end open visits, store and flush them, go
        offline."""
        started = time.monotonic()
        sd_notify("STOPPING=1")
        log.info("stopping")
        if self.jobs is not None:
            self.jobs.shutdown()
        if self.web is not None:
            self.web.stop()  # no review writes while the rest is flushed
        if self.reviewer is not None:
            self.reviewer.close(2.0)
        for cam in self.cameras:
            cam.stop()
        if not self._stall and self.inference.stop(drain_timeout_s=2.0):
            self.backend.close()  # only once no forward can still be running on it
        self._flush_visits()
        self.sink.stop(timeout_s=2.0)
        if self.publisher is not None:
            left = STOP_BUDGET_S - (time.monotonic() - started)
            self.publisher.stop(flush_timeout_s=max(0.5, min(3.0, left - 1.0)))
        if self.health is not None:
            self.health.stop()
        for cam in self.cameras:
            cam.join(timeout=max(0.0, STOP_BUDGET_S - (time.monotonic() - started)) / 4)
        self.store.close()
        log.info("stopped in %.1f s", time.monotonic() - started)


def run_daemon(cfg: Config, backend: Backend, load_backend: LoadBackend,
               config_path: Path | None = None) -> int:
    """Build and start the service (a problem here is bad input: it raises), then run until
    a signal. Returns 0 after a clean stop."""
    service = Service(cfg, backend, load_backend, config_path)

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
        code = _stop(service)
    return code


def _stop(service: Service) -> int:
    try:
        service.shutdown()
    except Exception:  # a fault at run time: a status systemd restarts on, never 2
        log.exception("stopping failed")
        return EXIT_RUNTIME_FAULT
    return 0
