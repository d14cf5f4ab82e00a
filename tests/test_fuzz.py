"""Bad input everywhere, generated: a config file never gives a traceback (it is accepted or
refused with field paths), and no MQTT message the daemon subscribes to can break it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camtrap.config.base import ConfigError
from camtrap.config.loader import parse_config
from camtrap.config.models import Config
from tests.daemon import Daemon, daemon_config
from tests.servers import Mosquitto, MqttRecorder, RtspServer

SECTIONS = list(Config.model_fields)
KEYS = sorted({k for s in SECTIONS for k in (getattr(Config.model_fields[s].annotation,
                                                      "model_fields", None) or {})} | {
    "name", "url", "detect_fps", "threshold", "cron", "interval_min", "host", "port", "path"})

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["rtsp://u:p@h/x", "${NOPE}", "${X:-1}", "file:a.mp4",
                                     "55 23 * * *", "sunrise-30", "Asia/Jerusalem", "auto"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8),
                                            inner, max_size=4)),
    max_leaves=20,
)
documents = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), values,
                            max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_config_is_accepted_or_refused_with_field_paths(doc: dict) -> None:
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    try:
        parse_config(text, env={"X": "2"})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_as_a_config_file_is_accepted_or_refused(text: str) -> None:
    try:
        parse_config(text, env={})
    except ConfigError as exc:
        assert exc.problems


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(documents)
def test_camtrap_check_exits_0_or_2_never_a_traceback(tmp_path_factory, doc: dict) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "camtrap.yaml"
    try:
        path.write_text(yaml.safe_dump(doc))
    except yaml.YAMLError:
        return
    res = subprocess.run([sys.executable, "-m", "camtrap", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode in (0, 2), res.stderr
    assert "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def listening_daemon(tmp_path_factory: pytest.TempPathFactory, checkpoint_path: Path,
                     ) -> Iterator[tuple[Daemon, Mosquitto, MqttRecorder]]:
    tmp = tmp_path_factory.mktemp("fuzz-daemon")
    with Mosquitto() as broker, RtspServer("live") as camera:
        cfg = daemon_config(tmp, camera_url=camera.url, checkpoint=checkpoint_path,
                            broker=broker)
        with MqttRecorder.for_broker(broker) as rec, Daemon(cfg, tmp) as daemon:
            rec.wait_for("homeassistant/#", timeout=60)
            yield daemon, broker, rec


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=200) | st.sampled_from([b"online", b" online\n", b"off"]),
                min_size=10, max_size=30))
def test_whatever_arrives_on_homeassistant_status_the_daemon_carries_on(
    listening_daemon: tuple[Daemon, Mosquitto, MqttRecorder], payloads: list[bytes],
) -> None:
    daemon, broker, rec = listening_daemon
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish("homeassistant/status", payload, qos=1).wait_for_publish(5)
        mark = rec.mark()
        client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        rec.wait_for("homeassistant/+/+/+/config", since=mark, timeout=20)  # still answering
    finally:
        client.loop_stop()
        client.disconnect()
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert "Traceback" not in daemon.log
