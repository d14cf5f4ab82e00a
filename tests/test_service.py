"""The daemon under a systemd-like supervisor: notify, watchdog, reload, health, stop."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Daemon, daemon_config
from tests.servers import Mosquitto, MqttRecorder, RtspServer, free_port

pytestmark = pytest.mark.slow


class NotifySocket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.messages) if m == message]

    def wait(self, message: str, timeout: float = 90) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.times(message)
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise AssertionError(f"no {message!r}; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_ready_watchdog_status_stopping(
    tmp_path: Path, rtsp_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path, notify: NotifySocket,
) -> None:
    port = free_port()
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto, health={"enabled": True, "port": port})
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    with Daemon(cfg, tmp_path, env) as daemon:
        ready = notify.wait("READY=1")
        time.sleep(5)
        pings = [t for t in notify.times("WATCHDOG=1") if t > ready]
        assert len(pings) >= 3, notify.messages
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.7 <= g <= 1.6 for g in gaps), gaps  # about half of WatchdogSec=2 s
        assert any(m.startswith("STATUS=1/1 cameras up") for _, m in notify.messages)

        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        report = json.loads(body)
        assert report["healthy"] and report["cameras"]["feeder"]["connected"]

        mqtt_recorder.wait_for("camtrap/events", timeout=60)
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        frames = {s.labels["camera"]: s.value for s in families["camtrap_camera_frames"].samples
                  if s.name == "camtrap_camera_frames_total"}
        assert frames["feeder"] > 0
        latency = families["camtrap_inference_latency_seconds"]
        count = next(s.value for s in latency.samples if s.name.endswith("_count"))
        assert count >= 1
        assert families["camtrap_mqtt_connected"].samples[0].value == 1
        starts = [s.value for s in families["camtrap_visit_events"].samples
                  if s.labels.get("type") == "start"]
        assert starts and starts[0] >= 1

        mark = mqtt_recorder.mark()
        rc, took = daemon.terminate()
        assert rc == 0 and took < 10
        assert notify.times("STOPPING=1")
        mqtt_recorder.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"offline",
                               since=mark)


def test_stuck_inference_stops_watchdog(
    tmp_path: Path, rtsp_camera: RtspServer, checkpoint_path: Path, notify: NotifySocket,
) -> None:
    port = free_port()
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        health={"enabled": True, "port": port})
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
           "CAMTRAP_FAULT": "stall-inference"}
    with Daemon(cfg, tmp_path, env) as daemon:
        notify.wait("READY=1")
        time.sleep(12)  # the first batch wedges the inference thread; the limit is 5 s
        last_ping = max(notify.times("WATCHDOG=1"), default=0.0)
        assert time.monotonic() - last_ping > 4, "watchdog still fed by a stuck thread"
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 503
        assert json.loads(body)["inference"]["idle_s"] > 5
        rc, took = daemon.terminate()
        assert rc == 0 and took < 10  # a stuck classifier does not block the stop


def test_sighup_adds_a_camera_without_reloading_the_model(
    tmp_path: Path, rtsp_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path, notify: NotifySocket,
) -> None:
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto)
    env = {"NOTIFY_SOCKET": str(notify.path)}
    with RtspServer("live") as second, Daemon(cfg, tmp_path, env) as daemon:
        notify.wait("READY=1")
        mqtt_recorder.wait_for("camtrap/feeder/state", timeout=60)
        cfg["cameras"].append({"name": "ground", "url": second.url, "open_timeout_s": 3,
                               "read_timeout_s": 3})
        daemon.config_path.write_text(yaml.safe_dump(cfg))
        ready_count = len(notify.times("READY=1"))
        daemon.proc.send_signal(1)  # SIGHUP
        notify.wait("RELOADING=1", timeout=20)
        deadline = time.monotonic() + 20
        while len(notify.times("READY=1")) == ready_count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(notify.times("READY=1")) > ready_count
        state = mqtt_recorder.wait_for(
            lambda m: m.topic == "camtrap/ground/state" and m.json()["connected"], timeout=30)
        assert state.json()["state"] == "streaming"
        mqtt_recorder.wait_for("homeassistant/event/camtrap_ground/visit/config", timeout=10)
        daemon.wait_log("reload: starting camera ground")
        assert daemon.log.count("Loading model") == 1  # the model was not loaded again
        assert "reload: stopping camera feeder" not in daemon.log  # untouched camera kept
        assert daemon.terminate()[0] == 0


def test_sighup_with_invalid_file_keeps_running(
    tmp_path: Path, rtsp_camera: RtspServer, mosquitto: Mosquitto,
    mqtt_recorder: MqttRecorder, checkpoint_path: Path,
) -> None:
    cfg = daemon_config(tmp_path, camera_url=rtsp_camera.url, checkpoint=checkpoint_path,
                        broker=mosquitto)
    with Daemon(cfg, tmp_path) as daemon:
        mqtt_recorder.wait_for("camtrap/events", timeout=90)
        cfg["cameras"][0]["detect_fps"] = 0
        cfg["motion"] = {"bogus": 1}
        daemon.config_path.write_text(yaml.safe_dump(cfg))
        daemon.proc.send_signal(1)
        daemon.wait_log("is invalid, keeping the running config")
        assert "cameras[0].detect_fps: Input should be greater than 0" in daemon.log
        assert "motion.bogus: unknown key" in daemon.log
        # a valid file whose model cannot be loaded: the running model stays
        cfg["cameras"][0]["detect_fps"] = 5
        del cfg["motion"]
        cfg["model"]["path"] = str(tmp_path / "gone.pt")
        daemon.config_path.write_text(yaml.safe_dump(cfg))
        daemon.proc.send_signal(1)
        daemon.wait_log("reload failed, keeping the running config")
        assert "gone.pt" in daemon.log
        mark = mqtt_recorder.mark()
        mqtt_recorder.wait_for("camtrap/feeder/#", since=mark, timeout=40)  # still working
        assert daemon.proc.poll() is None
        assert daemon.terminate()[0] == 0
