"""The event sink on its own thread: a real SQLite store, a real broker, a real full disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from camtrap.comms.mqtt import MqttPublisher
from camtrap.comms.payloads import Topics
from camtrap.config.models import MqttConfig
from camtrap.sink import EventSink
from camtrap.storage.store import Store
from camtrap.visits.tracker import VisitEvent
from tests.disks import fill, small_tmpfs
from tests.servers import Mosquitto, MqttRecorder
from tests.waiting import wait_until

TZ = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, t: datetime) -> None:
        self.ts = t.timestamp()

    def __call__(self) -> float:
        return self.ts


def event(kind: str, n: int, ts: float, camera: str = "feeder", jpeg: bytes = b"") -> VisitEvent:
    return VisitEvent(kind, f"{n:016x}", camera, "Great Tit", False, 0.9, 2, ts, ts,  # type: ignore[arg-type]
                      ts if kind == "end" else None, (("Great Tit", 0.9),), (0, 0, 10, 10),
                      (640, 360), jpeg)


def publisher(broker: Mosquitto, store: Store) -> MqttPublisher:
    cfg = MqttConfig(host=broker.host, port=broker.port, prefix="camtrap")
    pub = MqttPublisher(cfg, store, Topics(cfg.prefix))
    pub.start()
    assert wait_until(lambda: pub.connected, 10, "the publisher connects")
    return pub


def retained(rec: MqttRecorder, topic: str) -> list[bytes]:
    return [m.payload for m in rec.messages(topic)]


@pytest.fixture
def sink_parts(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[Store, MqttPublisher]]:
    store = Store(tmp_path / "state", tz=TZ)
    pub = publisher(mosquitto, store)
    yield store, pub
    pub.stop(flush_timeout_s=1)
    store.close()


def test_visits_today_falls_to_zero_at_local_midnight(
    sink_parts: tuple[Store, MqttPublisher], mqtt_recorder: MqttRecorder,
) -> None:
    store, pub = sink_parts
    clock = Clock(datetime(2026, 5, 14, 23, 59, 0, tzinfo=TZ))
    sink = EventSink(store, TZ, "node", ["feeder"], publish_crops=False, clock=clock)
    sink.use(pub, Topics("camtrap"))
    sink.start()
    try:
        sink.put([event("start", 1, clock.ts), event("end", 1, clock.ts + 5)])
        topic = "camtrap/feeder/visits_today"
        wait_until(lambda: retained(mqtt_recorder, topic)[-1:] == [b"1"], 10,
                   "visits_today 1 after a visit")
        assert sink.camera_state["feeder"].visits_today == 1
        clock.ts = datetime(2026, 5, 15, 0, 0, 1, tzinfo=TZ).timestamp()
        wait_until(lambda: retained(mqtt_recorder, topic)[-1:] == [b"0"], 10,
                   "visits_today back to 0 after midnight, with no new visit")
        assert sink.camera_state["feeder"].visits_today == 0
    finally:
        sink.stop()


def test_a_slow_store_never_blocks_the_caller(
    sink_parts: tuple[Store, MqttPublisher],
) -> None:
    """`put` returns at once even while the sink thread is stuck in a write."""
    store, pub = sink_parts
    sink = EventSink(store, TZ, "node", ["feeder"], publish_crops=False)
    sink.use(pub, Topics("camtrap"))
    with store._lock:  # the store's writer lock held: every write waits
        sink.start()
        started = time.monotonic()
        for n in range(200):
            sink.put([event("start", n, 1e9 + n)])
        assert time.monotonic() - started < 0.5
    wait_until(lambda: sink.counts()[0].get("start") == 200, 20, "all 200 events handled")
    sink.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


def test_full_disk_holds_events_publishes_them_live_and_stores_them_later(
    tiny_disk: Path, mosquitto: Mosquitto, mqtt_recorder: MqttRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(tiny_disk / "state", tz=TZ)
    pub = publisher(mosquitto, store)
    sink = EventSink(store, TZ, "node", ["feeder"], publish_crops=False)
    sink.use(pub, Topics("camtrap"))
    sink.start()
    try:
        filler = fill(tiny_disk)
        jpeg = bytes(2_000)
        for n in range(30):
            sink.put([event("start", n, 1e9 + n, jpeg=jpeg)])
        wait_until(lambda: sink.storage_error is not None, 10, "the sink notices the full disk")
        wait_until(lambda: len(mqtt_recorder.messages("camtrap/events")) >= 30, 10,
                   "every event published live while the disk is full")
        assert sink.held() > 0
        faults = [r for r in caplog.records if "cannot write visit events" in r.getMessage()]
        assert len(faults) == 1, "the fault is logged once, not per event"
        filler.unlink()
        wait_until(lambda: (sink.storage_error, sink.held()) == (None, 0), 20,
                   "held events written once space returns")
        ids = {r["visit_id"] for r in store._db.execute("SELECT visit_id FROM visits")}
        assert len(ids) == 30
        published = [m.json()["visit_id"] for m in mqtt_recorder.messages("camtrap/events")]
        assert sorted(published) == sorted(ids), "no event published twice or lost"
    finally:
        sink.stop()
        pub.stop(flush_timeout_s=1)
        store.close()
