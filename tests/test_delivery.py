"""No visit is lost: broker outages and a killed daemon, with real mosquitto and RTSP."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, daemon_config
from tests.servers import Mosquitto, MqttRecorder, RtspServer

pytestmark = pytest.mark.slow


@pytest.fixture
def blinking_camera() -> Iterator[RtspServer]:
    """The ball shows for 2 s and hides for 2 s: a visit starts and ends every 4 s."""
    with RtspServer("live", object_period=2.0) as camera:
        yield camera


def event_keys(recorder: MqttRecorder) -> set[tuple[str, str, int]]:
    return {(m.json()["visit_id"], m.json()["type"], m.json()["hits"])
            for m in recorder.messages("camtrap/events")}


def stored_events(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def test_broker_down_for_10s_loses_nothing(
    tmp_path: Path, blinking_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    # Short visits so several start and end while the broker is away.
    cfg = daemon_config(tmp_path, camera_url=blinking_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto, visits={"end_after_s": 0.5, "min_hits": 1})
    with Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/events", timeout=90)
        mosquitto.stop()
        time.sleep(10)
        pending = stored_events(tmp_path / "state" / "camtrap.sqlite3")
        mosquitto.start()
        assert pending > 0, "no event was produced while the broker was down"
        deadline = time.monotonic() + 60  # reconnect backoff: 1, 2, 4, 8 s ...
        while stored_events(tmp_path / "state" / "camtrap.sqlite3") and time.monotonic() < deadline:
            time.sleep(0.2)
        rc, _ = daemon.terminate(timeout=30)
        assert rc == 0
    mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"offline",
                           timeout=20)
    published = event_keys(mqtt_recorder)
    db = sqlite3.connect(tmp_path / "state" / "camtrap.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    # every visit in SQLite reached the subscriber with its start and its end
    visits = db.execute("SELECT visit_id FROM visits").fetchall()
    for (vid,) in visits:
        kinds = Counter(t for v, t, _ in published if v == vid)
        assert kinds["start"] >= 1 and kinds["end"] >= 1, (vid, kinds)
    assert "Traceback" not in daemon.log


def test_killed_daemon_delivers_pending_events_after_restart(
    tmp_path: Path, blinking_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    cfg = daemon_config(tmp_path, camera_url=blinking_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto, visits={"end_after_s": 0.5, "min_hits": 1})
    db_path = tmp_path / "state" / "camtrap.sqlite3"
    with Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/events", timeout=90)
        mosquitto.stop()
        deadline = time.monotonic() + 30
        while stored_events(db_path) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.kill()  # SIGKILL with events pending in the outbox
    pending = sqlite3.connect(db_path).execute(
        "SELECT payload FROM outbox WHERE topic = 'camtrap/events'").fetchall()
    assert pending, "nothing was pending when the daemon was killed"
    pending_keys = {(json.loads(p)["visit_id"], json.loads(p)["type"]) for (p,) in pending}

    mosquitto.start()
    mark = mqtt_recorder.mark()
    cfg["cameras"][0]["url"] = "rtsp://127.0.0.1:1/nothing"  # no new events this time
    with Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"online",
                               since=mark, timeout=90)
        deadline = time.monotonic() + 20
        while stored_events(db_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        got = {(m.json()["visit_id"], m.json()["type"])
               for m in mqtt_recorder.messages("camtrap/events", since=mark)}
        assert pending_keys <= got
        assert daemon.terminate()[0] == 0


def test_sigkill_publishes_offline_through_last_will(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    cfg = daemon_config(tmp_path, camera_url="rtsp://127.0.0.1:1/cam", checkpoint=checkpoint_path,
                        broker=mosquitto)
    with Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"online",
                               timeout=90)
        mark = mqtt_recorder.mark()
        daemon.kill()
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"offline",
                               since=mark, timeout=5)
