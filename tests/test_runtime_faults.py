"""Faults at run time never stop the daemon for good; a reload is applied whole or not at all
and never starves the watchdog. The daemon is a real subprocess; the faults are real."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.daemon import Daemon, daemon_config
from tests.disks import fill, small_tmpfs
from tests.servers import Mosquitto, MqttRecorder, RtspServer, free_port
from tests.test_service import NotifySocket
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as res:
            return json.loads(res.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        yield disk


def visit_rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM visits").fetchone()[0]
    finally:
        con.close()


def test_a_full_state_disk_is_survived_and_visits_keep_flowing(
    tmp_path: Path, small_disk: Path, mosquitto: Mosquitto, mqtt_recorder: MqttRecorder,
    checkpoint_path: Path,
) -> None:
    """It used to exit 2 within seconds ('[Errno 28] No space left on device'), and the
    unit's RestartPreventExitStatus=2 kept systemd from ever restarting it."""
    port = free_port()
    with RtspServer("live", object_period=2.0) as camera:
        cfg = daemon_config(tmp_path, camera_url=camera.url, checkpoint=checkpoint_path,
                            broker=mosquitto, health={"enabled": True, "port": port},
                            visits={"end_after_s": 0.5, "min_hits": 1},
                            storage={"state_dir": str(small_disk / "state")})
        with Daemon(cfg, tmp_path) as daemon:
            mqtt_recorder.wait_for("camtrap/events", timeout=90)
            filler = fill(small_disk)
            wait_until(lambda: not healthz(port)["storage"]["ok"], 30,
                       "health reports the storage fault")
            mark = mqtt_recorder.mark()
            mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/events"
                                   and m.json()["type"] == "start", since=mark, timeout=30)
            assert daemon.proc.poll() is None, daemon.log[-3000:]
            report = healthz(port)
            assert report["healthy"], "a full disk is no reason for the watchdog to kill it"
            assert report["storage"]["unstored"] > 0
            assert daemon.log.count("cannot write visit events") == 1  # once, not per event
            filler.unlink()
            wait_until(lambda: healthz(port)["storage"]["ok"], 30, "storage recovers")
            assert healthz(port)["storage"]["unstored"] == 0
            rc, _ = daemon.terminate(timeout=30)
            assert rc == 0
    published = {m.json()["visit_id"] for m in mqtt_recorder.messages("camtrap/events")}
    assert visit_rows(small_disk / "state" / "camtrap.sqlite3") == len(published)


def test_a_reload_that_fails_late_changes_nothing(
    tmp_path: Path, rtsp_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    """A new camera and a TLS file that does not exist: the old reload started the camera,
    stopped the publisher, failed on the CA file, and ran on without MQTT while its log said
    the old config was kept."""
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto)
    with RtspServer("live") as second, Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for("camtrap/feeder/state", timeout=60)
        cfg["cameras"].append({"name": "ground", "url": second.url})
        cfg["mqtt"]["tls"] = {"enabled": True, "ca_file": str(tmp_path / "missing-ca.pem")}
        daemon.config_path.write_text(yaml.safe_dump(cfg))
        mark = mqtt_recorder.mark()
        daemon.proc.send_signal(1)  # SIGHUP
        daemon.wait_log("reload failed, keeping the running config")
        assert "missing-ca.pem" in daemon.log
        time.sleep(2)
        assert "starting camera ground" not in daemon.log
        assert not mqtt_recorder.messages("camtrap/status", since=mark) or \
            mqtt_recorder.messages("camtrap/status", since=mark)[-1].payload == b"online"
        mqtt_recorder.wait_for("camtrap/feeder/#", since=mark, timeout=40)  # still publishing
        assert daemon.terminate()[0] == 0


def test_the_watchdog_is_fed_while_a_reload_loads_a_model(
    tmp_path: Path, rtsp_camera: RtspServer, full_checkpoint_path: Path, notify: NotifySocket,
) -> None:
    """A model load and warm-up used to run on the thread that feeds the watchdog."""
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=full_checkpoint_path,
                        batching={"max_size": 16})
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    with Daemon(cfg, tmp_path, env) as daemon:
        ready = notify.wait("READY=1", timeout=120)
        time.sleep(2)
        cfg["model"]["patch_size"] = 24  # a new model: load, set the patch size, warm up
        daemon.config_path.write_text(yaml.safe_dump(cfg))
        daemon.proc.send_signal(1)
        reloading = notify.wait("RELOADING=1", timeout=20)
        daemon.wait_log("reloaded", timeout=120)
        time.sleep(1)
        pings = [t for t in notify.times("WATCHDOG=1") if t > ready]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.5, f"watchdog starved for {max(gaps):.1f} s during the reload"
        assert any(t > reloading for t in pings)
        assert daemon.log.count("Loading model") == 2
        assert daemon.terminate()[0] == 0


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()
