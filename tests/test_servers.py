"""The test infrastructure itself is real and does what the other tests assume:
the RTSP camera streams motion of a bird-sized object over noise that stays under a motion
threshold, faults are real faults, the broker enforces passwords and TLS and comes back on
its own port, and the sample clip has visits and quiet stretches where it says.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from tests.servers import (
    CLIP_CYCLE_S,
    CLIP_VISIT_S,
    Mosquitto,
    MqttRecorder,
    RtspServer,
    free_port,
    iter_frames,
    make_clip,
    make_video,
    open_capture,
)

THRESHOLD = 20  # luma difference that counts as motion, after a 5x5 Gaussian blur


def grey(frame: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)


def motion(prev: np.ndarray, cur: np.ndarray) -> tuple[int, tuple[int, int] | None, int]:
    """(changed pixels, (w, h) of the changed region, max background diff away from it)."""
    diff = cv2.absdiff(grey(prev), grey(cur))
    changed = diff > THRESHOLD
    n = int(changed.sum())
    near = cv2.dilate((diff > 8).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    background_max = int(diff[~near].max()) if (~near).any() else 0
    if n == 0:
        return 0, None, background_max
    ys, xs = np.nonzero(changed)
    return n, (int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)), background_max


def read_frames(cap: Any, n: int) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        ok, frame = cap.read()
        assert ok, f"read {i} of {n} failed"
        frames.append(frame)
    return frames


# ---------------------------------------------------------------- RTSP camera


def test_live_camera_streams_a_moving_bird_sized_object(rtsp_camera: RtspServer) -> None:
    cap = open_capture(rtsp_camera.url)
    try:
        assert cap.isOpened(), rtsp_camera.stderr
        frames = read_frames(cap, 16)
    finally:
        cap.release()
    assert frames[0].shape == (360, 640, 3)
    stats = [motion(a, b) for a, b in itertools.pairwise(frames)]
    for n, box, background_max in stats:
        # The 40 px ball moves a few px per frame: two crescents, never the whole frame.
        assert 150 <= n <= 2500, stats
        assert box is not None and box[0] <= 100 and box[1] <= 100, stats
        # Sensor noise and the texture stay well under the threshold.
        assert background_max < THRESHOLD // 2, stats


def test_live_camera_object_comes_and_goes() -> None:
    with RtspServer("live", object_period=1.0) as camera:
        cap = open_capture(camera.url)
        try:
            frames = read_frames(cap, 36)  # 2.4 s: shown 1 s, hidden 1 s, shown again
        finally:
            cap.release()
    counts = [motion(a, b)[0] for a, b in itertools.pairwise(frames)]
    quiet = sum(c == 0 for c in counts)
    assert 8 <= quiet <= 20, counts
    assert sum(c > 150 for c in counts) >= 10, counts


def test_two_clients_share_the_stream(rtsp_camera: RtspServer) -> None:
    a, b = open_capture(rtsp_camera.url), open_capture(rtsp_camera.url)
    try:
        read_frames(a, 5)
        read_frames(b, 5)
        read_frames(a, 2)
    finally:
        a.release()
        b.release()


def test_kill_ends_the_stream_and_restart_serves_on_the_same_port(
    rtsp_camera: RtspServer,
) -> None:
    url, port = rtsp_camera.url, rtsp_camera.port
    cap = open_capture(url)
    try:
        read_frames(cap, 3)
        rtsp_camera.kill()
        assert not rtsp_camera.running
        t0 = time.monotonic()
        reads = 0
        while cap.read()[0]:
            reads += 1  # frames already in buffers
            assert time.monotonic() - t0 < 2.0, "reads still succeed 2 s after SIGKILL"
        assert time.monotonic() - t0 < 1.0
        assert reads <= 3
    finally:
        cap.release()

    rtsp_camera.restart()
    assert rtsp_camera.port == port and rtsp_camera.url == url
    cap = open_capture(url)
    try:
        assert cap.isOpened(), rtsp_camera.stderr
        read_frames(cap, 3)
    finally:
        cap.release()


def rtsp_options(port: int, timeout: float) -> bytes:
    """One raw RTSP OPTIONS request: b'' if no answer within timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(f"OPTIONS rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        s.settimeout(timeout)
        try:
            return s.recv(1024)
        except TimeoutError:
            return b""


def test_pause_hangs_the_camera_with_its_port_open(rtsp_camera: RtspServer) -> None:
    assert rtsp_options(rtsp_camera.port, 2.0).startswith(b"RTSP/1.0 200 OK")
    rtsp_camera.pause()
    try:
        # The kernel still accepts the TCP connection, but nobody answers: a hung camera.
        assert rtsp_options(rtsp_camera.port, 0.5) == b""
    finally:
        rtsp_camera.resume()
    assert rtsp_options(rtsp_camera.port, 2.0).startswith(b"RTSP/1.0 200 OK")


def test_server_start_failure_reports_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with 2 before serving"):
        RtspServer("file", file=tmp_path / "missing.mp4").start()


def test_file_mode_serves_the_sample_clip(sample_clip: Path) -> None:
    with RtspServer("file", file=sample_clip) as camera:
        cap = open_capture(camera.url)
        try:
            frames = read_frames(cap, 5)
        finally:
            cap.release()
    assert frames[0].shape == (360, 640, 3)


def test_make_video_h264_round_trips_and_is_servable(tmp_path: Path) -> None:
    frames = []
    for i in range(20):
        f = np.full((120, 160, 3), 150, np.uint8)
        cv2.rectangle(f, (10 + 5 * i, 40), (30 + 5 * i, 60), (30, 30, 30), -1)
        frames.append(f)
    path = make_video(tmp_path / "truth.mp4", frames, fps=10)
    back = list(iter_frames(path))
    assert len(back) == 20
    for original, decoded in zip(frames, back, strict=True):
        assert np.abs(original.astype(int) - decoded.astype(int)).mean() < 1.0
    with RtspServer("file", file=path) as camera:
        cap = open_capture(camera.url)
        try:
            assert read_frames(cap, 2)[0].shape == (120, 160, 3)
        finally:
            cap.release()


def test_make_video_mp4v(tmp_path: Path) -> None:
    frames = [np.full((48, 64), v, np.uint8) for v in (0, 100, 200)]
    back = list(iter_frames(make_video(tmp_path / "grey.mp4", frames, fps=5, codec="mp4v")))
    assert [round(float(f.mean()) / 10) for f in back] == [0, 10, 20]


# ---------------------------------------------------------------- sample clip


def test_sample_clip_has_visits_and_quiet_stretches(sample_clip: Path) -> None:
    cap = cv2.VideoCapture(str(sample_clip))
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    cap.release()
    assert abs(count - 300) <= 2
    frames = list(iter_frames(sample_clip))
    assert abs(len(frames) - 300) <= 2
    assert frames[0].shape == (360, 640, 3)
    moving, still = [], []
    for i, (a, b) in enumerate(itertools.pairwise(frames)):
        n, box, background_max = motion(a, b)
        assert background_max < THRESHOLD // 2
        t = (i + 1) / 15 % CLIP_CYCLE_S
        if n:
            assert box is not None and box[0] <= 120 and box[1] <= 100, (i, box)
            assert CLIP_VISIT_S[0] <= t <= CLIP_VISIT_S[1] + 0.1, (i, t, n)
            moving.append(i)
        else:
            still.append(i)
    assert len(moving) >= 120  # about 2 x 5 s x 15 fps
    assert len(still) >= 140


def test_make_clip_takes_size_and_rate(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "small.mp4", seconds=3, width=320, height=180, fps=10)
    frames = list(iter_frames(path))
    assert len(frames) == 30
    assert frames[0].shape == (180, 320, 3)


# ---------------------------------------------------------------- mosquitto


def connect_result(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    timeout: float = 5.0,
) -> mqtt.ReasonCode:
    """The CONNACK reason code a fresh paho 2.x client gets."""
    done = threading.Event()
    result: list[mqtt.ReasonCode] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: mqtt.ReasonCode, _p: Any) -> None:
        result.append(rc)
        done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = on_connect
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    client.connect(host, port)
    client.loop_start()
    try:
        assert done.wait(timeout), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_password_broker_rejects_wrong_and_anonymous_accepts_right() -> None:
    with Mosquitto(username="cam", password="s3cret") as broker:
        wrong = connect_result(broker.host, broker.port, username="cam", password="nope")
        assert wrong.is_failure and wrong.value in (134, 135), wrong
        anonymous = connect_result(broker.host, broker.port)
        assert anonymous.is_failure, anonymous
        right = connect_result(broker.host, broker.port, username="cam", password="s3cret")
        assert not right.is_failure, right


def test_tls_broker_accepts_a_client_with_the_ca() -> None:
    with Mosquitto(tls=True) as broker:
        assert broker.ca_file is not None and broker.tls_port is not None
        rc = connect_result(broker.host, broker.tls_port, ca_file=broker.ca_file)
        assert not rc.is_failure, rc
        # Without our CA the certificate does not verify.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.tls_set()
        with pytest.raises(ssl.SSLCertVerificationError):
            client.connect(broker.host, broker.tls_port)
        # A recorder on the TLS port sees what is published on the plain one.
        with MqttRecorder.for_broker(broker, "t/#", tls=True) as tls_rec:
            with MqttRecorder.for_broker(broker) as plain:
                plain.publish("t/x", b"over tls")
            assert tls_rec.wait_for("t/x", 5).payload == b"over tls"


def test_broker_restart_on_same_port_and_recorder_reconnects(
    mosquitto: Mosquitto, mqtt_recorder: MqttRecorder
) -> None:
    port = mosquitto.port
    mqtt_recorder.publish("camtrap/test", b"before")
    mqtt_recorder.wait_for(lambda m: m.payload == b"before", 5)

    mosquitto.restart(down_for=0.2)
    assert mosquitto.port == port and mosquitto.running
    mqtt_recorder.wait_ready(10)
    assert mqtt_recorder.connects == 2

    with MqttRecorder.for_broker(mosquitto, "unused/#") as publisher:
        publisher.publish("camtrap/test", b"after", retain=True)
    got = mqtt_recorder.wait_for(lambda m: m.payload == b"after", 5)
    assert got.topic == "camtrap/test" and got.retain is False  # live delivery, not retained
    assert [m.text for m in mqtt_recorder.messages("camtrap/+")] == ["before", "after"]


def test_wait_for_timeout_lists_what_arrived(mqtt_recorder: MqttRecorder) -> None:
    mqtt_recorder.publish("a/b", b"hello")
    mqtt_recorder.wait_for("a/b", 5)
    with pytest.raises(AssertionError, match=r"(?s)received 1.*a/b qos1: hello"):
        mqtt_recorder.wait_for("x/#", 0.2)


def test_killed_broker_refuses_connections_until_restart(mosquitto: Mosquitto) -> None:
    mosquitto.kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((mosquitto.host, mosquitto.port), timeout=1).close()
    mosquitto.start()
    assert not connect_result(mosquitto.host, mosquitto.port).is_failure


def test_broker_on_a_taken_port_fails_loudly() -> None:
    """Readiness means mosquitto logged "running", not just that the port answers."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = Mosquitto(port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="Address already in use"):
            broker.start()
        broker.close()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_loop_mode_repeats_the_clip_and_marks_appearances(tmp_path: Path) -> None:
    """The pipeline benchmark's cameras: a file served forever, appearance times logged."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=4)
    marks = tmp_path / "marks.txt"
    extra = ["--loop", "--start-at", "1", "--mark", "2", "--marks", str(marks)]
    with RtspServer("file", file=clip, extra_args=extra) as cam:
        cap = open_capture(cam.url)
        started, frames = time.time(), 0
        while time.time() - started < 7.0:  # longer than the 4 s file: it must loop
            ok, _ = cap.read()
            assert ok, f"read failed after {frames} frames"
            frames += 1
        cap.release()
    assert frames >= 7 * 15 * 0.9
    walls = [float(line.split()[2]) for line in marks.read_text().splitlines()]
    # starting at 1 s, the 2 s frame is due 1 s after the start, then every 4 s
    assert len(walls) == 2 and abs(walls[1] - walls[0] - 4.0) < 0.05
    assert abs(walls[0] - started - 1.0) < 0.5
