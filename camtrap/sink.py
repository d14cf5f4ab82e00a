"""The event sink: visit events -> SQLite + outbox, the MQTT messages they make, and the
per-camera state Home Assistant shows, on a thread of its own behind a bounded queue.

The inference thread only hands events over (`put` never blocks), so a slow or failing disk
never stalls classification. When the database refuses a write (disk full, I/O error) the
event's messages are published live instead, the event is held in a bounded buffer, and the
buffer is written once the database takes writes again; the fault is logged once, not per
event, and shows in the status snapshot.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Protocol

from camtrap.comms.payloads import (
    Topics,
    event_body,
    last_species_payload,
    to_json,
    visit_entity_payload,
)
from camtrap.logs import name_os_thread
from camtrap.storage.store import Store
from camtrap.timeutil import local_day, midnight_before
from camtrap.visits.tracker import VisitEvent
from camtrap.web.reviewer import ReviewNotice

log = logging.getLogger(__name__)

QUEUE_EVENTS = 10_000  # waiting for the sink thread
HELD_EVENTS = 10_000  # not yet stored while the database refuses writes
RETRY_EVERY_S = 5.0
TICK_S = 0.5

Message = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


class Publisher(Protocol):
    connected: bool

    def set_retained(self, topic: str, payload: bytes) -> None: ...
    def publish_now(self, topic: str, payload: bytes, retain: bool = False) -> None: ...
    def wake(self) -> None: ...


@dataclass
class CameraState:
    """What Home Assistant sees per camera, re-derived from events."""

    open_visits: set[str] = field(default_factory=set)
    visits_today: int = 0


@dataclass
class _Held:
    event: VisitEvent
    messages: list[Message]
    published: bool  # its messages went out live: store it without queueing them again


class EventSink(threading.Thread):
    def __init__(
        self,
        store: Store,
        tz: tzinfo,
        node: str,
        cameras: list[str],
        publish_crops: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="sink", daemon=True)
        self.store = store
        self.tz = tz
        self.node = node
        self.publish_crops = publish_crops
        self.clock = clock
        self.publisher: Publisher | None = None
        self.topics: Topics | None = None  # with the publisher
        self.camera_state: dict[str, CameraState] = {}
        self.event_counts: Counter[str] = Counter()
        self.dropped = 0
        self.storage_error: str | None = None
        self._queue: queue.Queue[list[VisitEvent]] = queue.Queue(QUEUE_EVENTS)
        self._held: deque[_Held] = deque()
        self._lock = threading.Lock()  # camera_state, event_counts, counters, publisher
        self._stopping = threading.Event()
        self._day = local_day(clock(), tz)
        self._next_retry = 0.0
        self.last_progress = time.monotonic()
        for name in cameras:
            self.add_camera(name)

    # --- what other threads call ------------------------------------------------------

    def put(self, events: list[VisitEvent]) -> None:
        """Hand events over; never blocks. A full queue drops its oldest and counts them."""
        if not events:
            return
        while True:
            try:
                self._queue.put_nowait(events)
                return
            except queue.Full:
                try:
                    lost = self._queue.get_nowait()
                except queue.Empty:
                    continue
                with self._lock:
                    self.dropped += len(lost)
                log.error("sink queue full: dropped %d visit event(s)", len(lost))

    def use(self, publisher: Publisher | None, topics: Topics | None) -> None:
        """A new publisher (MQTT settings changed): re-send every camera's retained state."""
        with self._lock:
            self.publisher, self.topics = publisher, topics
            states = list(self.camera_state.items())
        for name, state in states:
            self._retain(name, "present", b"ON" if state.open_visits else b"OFF")
            self._retain(name, "visits_today", str(state.visits_today).encode())

    def add_camera(self, name: str) -> None:
        if name in self.camera_state:
            return
        since = midnight_before(self.clock(), self.tz)
        self.camera_state[name] = CameraState(visits_today=self._count(name, since))

    def on_review(self, notice: ReviewNotice) -> None:
        """A review in the web interface changed a camera's count or its latest species:
        its retained topics follow (called from a web thread)."""
        with self._lock:
            state = self.camera_state.get(notice.camera)
            if state is not None:
                state.visits_today = notice.visits_today
        self._retain(notice.camera, "visits_today", str(notice.visits_today).encode())
        if notice.species_payload is not None:
            self._retain(notice.camera, "species", notice.species_payload)

    def queued(self) -> int:
        return self._queue.qsize()

    def held(self) -> int:
        return len(self._held)

    def counts(self) -> tuple[dict[str, int], int]:
        with self._lock:
            return dict(self.event_counts), self.dropped

    def stop(self, timeout_s: float = 3.0) -> None:
        """Write what is queued (for up to `timeout_s`), then end."""
        self._stopping.set()
        self.join(timeout_s)

    # --- the thread -------------------------------------------------------------------

    def run(self) -> None:
        name_os_thread()
        while True:
            self.last_progress = time.monotonic()
            try:
                events = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                if self._stopping.is_set():
                    break
                events = []
            try:
                self.handle(events)
                self.tick()
            except Exception:
                log.exception("visit event sink failed; carrying on")

    def handle(self, events: list[VisitEvent]) -> None:
        for ev in events:
            self._record(ev, self._messages(ev))
            with self._lock:
                self.event_counts[ev.kind] += 1
            log.info("visit %s %s: %s at %s (score %.2f, %d hits)", ev.kind, ev.visit_id,
                     ev.species, ev.camera, ev.score, ev.hits)
            self._update_camera(ev)
        if events and self.publisher is not None:
            self.publisher.wake()

    def tick(self) -> None:
        """Housekeeping between events: the day's counters at midnight, held events."""
        today = local_day(self.clock(), self.tz)
        if today != self._day:
            self._day = today
            self._new_day()
        if self._held and time.monotonic() >= self._next_retry:
            self._write_held()

    # --- storing ------------------------------------------------------------------------

    def _messages(self, ev: VisitEvent) -> list[Message]:
        """The event, and the per-camera `visit` message Home Assistant's event entity fires
        on (start and end only)."""
        if self.publisher is None or self.topics is None:
            return []
        body = event_body(ev, self.tz, self.node)
        out: list[Message] = [(self.topics.events, to_json(body), 1, False)]
        if ev.kind in ("start", "end"):
            out.append((self.topics.camera(ev.camera, "visit"), visit_entity_payload(body), 1,
                        False))
        return out

    def _record(self, ev: VisitEvent, messages: list[Message]) -> None:
        if self._held:  # keep the order: nothing overtakes what is held
            self._hold(ev, messages)
            return
        try:
            self.store.record(ev, messages)
        except (OSError, sqlite3.Error) as exc:
            self._fault(exc)
            self._hold(ev, messages)

    def _hold(self, ev: VisitEvent, messages: list[Message]) -> None:
        published = self._publish_live(messages)
        if len(self._held) >= HELD_EVENTS:
            self._held.popleft()
            with self._lock:
                self.dropped += 1
        self._held.append(_Held(ev, messages, published))

    def _publish_live(self, messages: list[Message]) -> bool:
        pub = self.publisher
        if pub is None or not messages or not pub.connected:
            return False
        for topic, payload, _qos, retain in messages:
            pub.publish_now(topic, payload, retain)
        return True

    def _write_held(self) -> None:
        while self._held:
            item = self._held[0]
            try:
                self.store.record(item.event, [] if item.published else item.messages)
            except (OSError, sqlite3.Error) as exc:
                self._fault(exc)
                return
            self._held.popleft()
        log.warning("storage: writing again; every held visit event is stored")
        self.storage_error = None

    def _fault(self, exc: BaseException) -> None:
        self._next_retry = time.monotonic() + RETRY_EVERY_S
        if self.storage_error is None:
            log.error("storage: cannot write visit events to %s: %s; holding up to %d in "
                      "memory and retrying every %.0f s", self.store.path, exc, HELD_EVENTS,
                      RETRY_EVERY_S)
        self.storage_error = str(exc)

    def _count(self, camera: str, since_ts: float) -> int:
        try:
            stored = self.store.count_visits(camera, since_ts)
        except (OSError, sqlite3.Error):
            stored = 0
        held = sum(1 for h in self._held if h.event.kind == "start"
                   and h.event.camera == camera and h.event.start_ts >= since_ts)
        return stored + held

    # --- per-camera state ---------------------------------------------------------------

    def _update_camera(self, ev: VisitEvent) -> None:
        state = self.camera_state.setdefault(ev.camera, CameraState())
        if ev.kind == "start":
            state.open_visits.add(ev.visit_id)
            state.visits_today = self._count(ev.camera, midnight_before(self.clock(), self.tz))
            self._retain(ev.camera, "species", last_species_payload(ev, self.tz))
            self._retain(ev.camera, "visits_today", str(state.visits_today).encode())
        elif ev.kind == "end":
            state.open_visits.discard(ev.visit_id)
        if ev.kind != "end" and self.publish_crops and ev.crop_jpeg:
            self._retain(ev.camera, "crop", ev.crop_jpeg)
        self._retain(ev.camera, "present", b"ON" if state.open_visits else b"OFF")

    def _new_day(self) -> None:
        since = midnight_before(self.clock(), self.tz)
        for name, state in self.camera_state.items():
            state.visits_today = self._count(name, since)
            self._retain(name, "visits_today", str(state.visits_today).encode())

    def _retain(self, camera: str, leaf: str, payload: bytes) -> None:
        with self._lock:
            pub, topics = self.publisher, self.topics
        if pub is not None and topics is not None:
            pub.set_retained(topics.camera(camera, leaf), payload)
