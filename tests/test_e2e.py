"""End to end: a live RTSP camera, a broker and the daemon as a subprocess."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.daemon import Daemon, daemon_config
from tests.servers import Mosquitto, MqttRecorder, RtspServer

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def readme_fields(heading: str) -> list[str]:
    """The backticked names in the first column of the field table under `heading`."""
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


def test_readme_documents_event_fields() -> None:
    fields = readme_fields("### `<prefix>/events`")
    assert {"visit_id", "type", "species", "score", "top_k", "start_time", "schema"} <= set(fields)


def test_camera_to_mqtt_and_sqlite(
    tmp_path: Path,
    rtsp_camera: RtspServer,
    mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder,
    checkpoint_path: Path,
) -> None:
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto)
    with Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"online",
                               timeout=90)
        start = mqtt_recorder.wait_for(
            lambda m: m.topic == "camtrap/events" and m.json()["type"] == "start", timeout=60
        ).json()
        for field in readme_fields("### `<prefix>/events`"):
            assert field in start, f"README documents {field!r}; the event lacks it: {start}"
        assert start["camera"] == "feeder"
        assert start["schema"] == 1
        assert re.fullmatch(r"[0-9a-f]{16}", start["visit_id"])
        assert re.search(r"[+-]\d\d:\d\d$", start["start_time"])  # ISO 8601 with offset
        assert start["end_time"] is None
        assert start["frame"] == {"width": 640, "height": 360}
        assert 0 < start["score"] <= 1 and start["hits"] >= 2

        species = mqtt_recorder.wait_for("camtrap/feeder/species").json()
        assert species["visit_id"] == start["visit_id"]
        assert mqtt_recorder.wait_for("camtrap/feeder/crop").payload[:2] == b"\xff\xd8"
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/feeder/present"
                               and m.payload == b"ON")
        visit = mqtt_recorder.wait_for("camtrap/feeder/visit").json()
        assert visit["event_type"] == "visit_start" and visit["visit_id"] == start["visit_id"]
        state = mqtt_recorder.wait_for("camtrap/feeder/state").json()
        assert state["connected"] is True

        # Home Assistant discovery, and again when HA says it is back online
        mqtt_recorder.wait_for("homeassistant/event/camtrap_feeder/visit/config")
        with MqttRecorder.for_broker(mosquitto, "homeassistant/#") as late:  # sees retained
            disc = late.wait_for("homeassistant/event/camtrap_feeder/visit/config")
        assert disc.retain and json.loads(disc.payload)["unique_id"] == "camtrap_feeder_visit"
        mark = mqtt_recorder.mark()
        mqtt_recorder.publish("homeassistant/status", "online")
        mqtt_recorder.wait_for("homeassistant/event/camtrap_feeder/visit/config", since=mark)
        mark = mqtt_recorder.mark()

        rc, took = daemon.terminate()
        assert rc == 0, daemon.log[-3000:]
        assert took < 10
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"offline",
                               since=mark)
        end = mqtt_recorder.wait_for(
            lambda m: m.topic == "camtrap/events" and m.json()["visit_id"] == start["visit_id"]
            and m.json()["type"] == "end", since=mark)
        assert end.json()["end_time"] is not None

    db = sqlite3.connect(tmp_path / "state" / "camtrap.sqlite3")
    row = db.execute("SELECT camera, species, end_ts, crop_file, context_file, embedding"
                     " FROM visits WHERE visit_id = ?", (start["visit_id"],)).fetchone()
    assert row is not None, "the visit published on MQTT is missing from SQLite"
    assert row[0] == "feeder" and row[1] == start["species"] and row[2] is not None
    assert (tmp_path / "state" / row[3]).read_bytes()[:2] == b"\xff\xd8"
    assert (tmp_path / "state" / row[4]).read_bytes()[:2] == b"\xff\xd8"  # context frame
    assert len(row[5]) == 384 * 4  # the best crop's embedding, float32
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0  # all acknowledged
    assert "Traceback" not in daemon.log
