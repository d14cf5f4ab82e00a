"""The web interface inside the running daemon: a visit seen by a real camera is reviewed over
HTTP and the review reaches SQLite and MQTT; the stop stays quick."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.daemon import Daemon, daemon_config
from tests.servers import Mosquitto, MqttRecorder, RtspServer, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as res:
        return json.loads(res.read())


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def test_a_visit_is_reviewed_in_the_running_daemon(
    tmp_path: Path, rtsp_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    port = free_port()
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto, web={"enabled": True, "port": port})
    base = f"http://127.0.0.1:{port}"
    with Daemon(cfg, tmp_path) as daemon:
        start = mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/events"
                                       and m.json()["type"] == "start", timeout=90).json()
        visits = wait_until(lambda: get_json(f"{base}/api/v1/visits?status=all")["visits"], 20,
                            "the visit in the API")
        assert start["visit_id"] in {v["visit_id"] for v in visits}
        with urllib.request.urlopen(f"{base}/", timeout=10) as res:
            assert res.status == 200 and b"camtrap" in res.read()
        other = next(name for name, _ in start["top_k"] if name != start["species"])
        mark = mqtt_recorder.mark()
        after = post_json(f"{base}/api/v1/visits/{start['visit_id']}/review",
                          {"action": "correct", "species": other})
        assert after["species"] == other and after["review"]["status"] == "corrected"
        review = mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/events"
                                        and m.json()["type"] == "review", since=mark,
                                        timeout=20).json()
        assert review["visit_id"] == start["visit_id"] and review["species"] == other
        assert get_json(f"{base}/healthz")["healthy"]
        rc, took = daemon.terminate()
        assert rc == 0 and took < 10
