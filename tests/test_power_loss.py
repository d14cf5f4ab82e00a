"""Power loss under load: the daemon SIGKILLed at random moments while visits and reviews are
being written, 50 times over. The database always opens, the outbox stays consistent, and
every event that reached the broker names a visit that is stored, with one content per id."""

from __future__ import annotations

import json
import random
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from tests.daemon import Daemon, daemon_config
from tests.servers import Mosquitto, MqttRecorder, RtspServer, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ROUNDS = 50


def review_one(port: int, rng: random.Random) -> None:
    """Best effort: a review racing the kill is the point."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/visits?status=all&limit=5",
                                    timeout=2) as res:
            visits = json.loads(res.read())["visits"]
        if not visits:
            return
        visit = rng.choice(visits)
        body = json.dumps({"action": rng.choice(["confirm", "reject", "keep", "delete",
                                                 "restore"])}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/visits/{visit['visit_id']}/review", data=body,
            method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=2).close()
    except OSError:
        pass


def check_database(db_path: Path) -> set[str]:
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in db.execute("SELECT visit_id FROM visits")]
        assert len(ids) == len(set(ids))
        for topic, payload in db.execute("SELECT topic, payload FROM outbox"):
            assert topic.startswith(("camtrap/", "homeassistant/")), topic
            if topic == "camtrap/events":
                assert json.loads(payload)["visit_id"] in ids  # a queued event has its row
        return set(ids)
    finally:
        db.close()


def test_fifty_power_losses_lose_nothing_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    rng = random.Random(13)
    port = free_port()
    db_path = tmp_path / "state" / "camtrap.sqlite3"
    with RtspServer("live", object_period=1.0) as camera:
        cfg = daemon_config(tmp_path, camera_url=camera.url, checkpoint=checkpoint_path,
                            broker=mosquitto, visits={"end_after_s": 0.5, "min_hits": 1},
                            web={"enabled": True, "port": port})
        daemon = Daemon(cfg, tmp_path)
        for _ in range(ROUNDS):
            daemon.start()
            deadline = time.monotonic() + rng.uniform(1.0, 5.0)
            while time.monotonic() < deadline:
                if rng.random() < 0.3:
                    review_one(port, rng)
                time.sleep(0.1)
            daemon.kill()
            daemon._log.close()
            if db_path.exists():
                check_database(db_path)
        before = daemon.log.count("camtrap running")
        daemon.start()  # a last clean run delivers what the kills left in the outbox
        wait_until(lambda: daemon.log.count("camtrap running") > before, 60, "the last start")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(1)
            db = sqlite3.connect(db_path)
            left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            db.close()
            if left == 0:
                break
        rc, _ = daemon.terminate(timeout=30)
        daemon._log.close()
        assert rc == 0
    stored = check_database(db_path)
    contents: dict[str, tuple[str, str, str]] = {}
    for m in mqtt_recorder.messages("camtrap/events"):
        ev = m.json()
        assert ev["visit_id"] in stored, f"published but not stored: {ev}"
        key = (ev["camera"], ev.get("model_species") or ev["species"], ev["start_time"])
        if ev["type"] != "review":
            assert contents.setdefault(ev["visit_id"], key) == key, ev
    assert contents, "no visit was published in 50 rounds"
    assert "Traceback" not in daemon.log
