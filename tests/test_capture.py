"""Capture against real sources: GStreamer's RTSP server (killed, SIGSTOPped, restarted),
a port that accepts and never answers, an MJPEG HTTP server, generated video files (a 4K
main stream beside a 640x360 detect stream). Timeouts are short (1-2 s) to keep this fast.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from camtrap.camera import CameraWorker
from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig
from camtrap.motion.frames import FrameProcessor
from camtrap.motion.regions import Crop, contains, cut_crop
from camtrap.video.capture import Capture, Frame
from camtrap.video.stream import Backoff, CaptureError, ffmpeg_options, open_capture, source_kind
from tests.servers import RtspServer, iter_frames, make_video
from tests.test_motion import texture
from tests.waiting import wait_until

FAST = {"open_timeout_s": 1.0, "read_timeout_s": 1.0, "stale_after_s": 1.0,
        "reconnect_min_s": 0.5, "reconnect_max_s": 2.0}


def cam(url: str, name: str = "cam", **kw: Any) -> CameraConfig:
    return CameraConfig(name=name, url=url, **{**FAST, **kw})


class Consumer:
    """Runs `Capture.frames()` on a thread like a camera worker, recording what arrives;
    `work_s` makes each frame's processing take that long (a slow consumer)."""

    def __init__(self, cfg: CameraConfig, work_s: float = 0.0) -> None:
        self.stop = threading.Event()
        self.capture = Capture(cfg, self.stop)
        self.work_s = work_s
        self.got: list[tuple[float, Frame]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for frame in self.capture.frames():
            self.got.append((time.monotonic(), frame))
            if self.work_s:
                time.sleep(self.work_s)

    def wait_frames(self, n: int, timeout: float) -> float:
        """Seconds until `n` more frames arrived (fails after `timeout`)."""
        start, target = time.monotonic(), len(self.got) + n
        while len(self.got) < target:
            assert time.monotonic() - start < timeout, (
                f"no frames for {timeout} s: {self.capture.status.as_dict()}")
            time.sleep(0.02)
        return time.monotonic() - start

    def __enter__(self) -> Consumer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "the camera thread did not stop"


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung camera)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


# ---- pure parts ------------------------------------------------------------------------


def test_backoff_doubles_to_the_maximum_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, jitter=0.2)
    delays = [b.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    b.reset()
    assert 0.8 <= b.next_delay() <= 1.2


def test_sources_and_ffmpeg_options() -> None:
    assert [source_kind(u) for u in ("0", "/v/a.mp4", "file:///v/a.mp4", "rtsp://h/x",
                                     "http://h/x.mjpg")] == [
        "device", "file", "file", "stream", "stream"]
    assert ffmpeg_options("rtsp://h/x", "udp", None) == (
        "rtsp_transport;udp|analyzeduration;0|probesize;32")
    assert ffmpeg_options("rtsps://h/x", "tcp", None).startswith("rtsp_transport;tcp")
    assert ffmpeg_options("http://h/x.mjpg", "tcp", None) is None
    assert ffmpeg_options("rtsp://h/x", "tcp", "stimeout;1") == "stimeout;1"
    assert ffmpeg_options("rtsp://h/x", "tcp", "") is None


def test_missing_device_or_file_in_replay_raises() -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        next(Capture(cam("/nonexistent/clip.mp4"), threading.Event(), realtime=False).frames())


# ---- files: replay (as fast as possible) and realtime ---------------------------------


def test_small_object_in_4k_is_cropped_from_the_4k_frame(tmp_path: Path) -> None:
    """Motion on a 640x360 detect stream, the crop cut from the 3840x2160 main stream: it
    shows detail the detect stream cannot have (a 2-pixel pattern on the bird)."""
    bg = cv2.resize(texture(640, 360, seed=20), (3840, 2160), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:100, 0:150]
    inside = ((xx - 75) / 75) ** 2 + ((yy - 50) / 50) ** 2 <= 1
    checker = np.where((xx // 2 + yy // 2) % 2, 90, 15).astype(np.uint8)
    mains, truth = [], []
    for i in range(7):
        frame = bg.copy()
        if i >= 2:
            x, y = 1500 + 60 * i, 1100 - 20 * i
            patch = frame[y : y + 100, x : x + 150]
            patch[inside] = checker[inside][:, None]
            truth.append((x, y, 150, 100))
        else:
            truth.append(None)
        mains.append(frame)
    main = make_video(tmp_path / "main.avi", mains, fps=5, codec="mp4v")
    smalls = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in mains]
    detect = make_video(tmp_path / "detect.mp4", smalls, fps=5)
    cfg = cam(str(main), detect_url=str(detect), detect_fps=5, loop=False)
    proc = FrameProcessor(cfg, MotionConfig(), RegionsConfig(), 240)
    decoded = list(iter_frames(main))
    crops: list[tuple[int, Crop]] = []
    for frame in Capture(cfg, threading.Event(), realtime=False, start_ts=0.0).frames():
        assert frame.image.shape == (360, 640, 3) and frame.size == (3840, 2160)
        crops += [(frame.seq - 1, c) for c in proc.process(frame).crops]
    assert len(crops) >= 4
    for i, crop in crops:
        assert crop.frame_size == (3840, 2160)
        assert truth[i] is not None and contains(crop.box, truth[i])
        assert crop.box[2] < 400  # a region of the bird's size in 4K pixels
        expected = cut_crop(decoded[i], crop.box, 240)
        assert np.array_equal(crop.image, expected), "not cut from the 4K frame"
        centre = crop.image[120 - 40 : 120 + 40, 120 - 60 : 120 + 60]
        assert float(centre.std()) > 15, "the bird's fine pattern is missing"


def test_realtime_file_is_paced_and_loops(tmp_path: Path) -> None:
    frames = [np.full((120, 160, 3), 10 * i, np.uint8) for i in range(10)]
    clip = make_video(tmp_path / "short.mp4", frames, fps=10)  # 1 s
    with Consumer(cam(str(clip), detect_fps=5, loop=True)) as c:
        c.wait_frames(12, timeout=6)  # 2.4 s worth: it went round more than twice
        st = c.capture.status
        span = c.got[-1][0] - c.got[0][0]
        assert 1.8 < span < 3.5, "read at the file's own pace, not as fast as possible"
        assert st.reconnects == 0 and st.state == "streaming"
        assert 8 <= st.stream_fps <= 12


def test_mjpeg_over_http() -> None:
    """A cheap camera's `multipart/x-mixed-replace` MJPEG stream, read by FFmpeg."""
    jpegs = [cv2.imencode(".jpg", np.full((240, 320, 3), 40 * i, np.uint8))[1].tobytes()
             for i in range(5)]

    class Mjpeg(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            with contextlib.suppress(OSError):
                for i in range(200):
                    jpeg = jpegs[i % len(jpegs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                                     + jpeg + b"\r\n")
                    time.sleep(0.05)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Mjpeg)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
        with Consumer(cam(url, open_timeout_s=3, read_timeout_s=3)) as c:
            c.wait_frames(3, timeout=8)
            assert c.got[-1][1].image.shape == (240, 320, 3)
    finally:
        server.shutdown()
        server.server_close()


# ---- the RTSP camera ----------------------------------------------------------------


def test_open_against_a_silent_port_returns_within_the_open_timeout() -> None:
    with silent_port() as port:
        for url in (f"rtsp://127.0.0.1:{port}/cam", f"http://127.0.0.1:{port}/video.mjpg"):
            started = time.monotonic()
            with pytest.raises(CaptureError):
                open_capture(url, cam(url, open_timeout_s=1.0))
            assert time.monotonic() - started < 1.8, url


def test_a_hanging_open_delays_another_open_by_at_most_the_open_timeout(
    rtsp_camera: RtspServer,
) -> None:
    """OpenCV's FFmpeg backend runs one open at a time, process-wide (measured: a file open
    waits too), so a hanging camera holds up another camera's (re)open, but never for longer
    than its open timeout; streams that are open keep reading (see the wrong-URL test)."""
    failed: list[float] = []

    def hang(url: str) -> None:
        started = time.monotonic()
        with contextlib.suppress(CaptureError):
            open_capture(url, cam(url, open_timeout_s=1.5))
        failed.append(time.monotonic() - started)

    with silent_port() as port:
        hung = threading.Thread(target=hang, args=(f"rtsp://127.0.0.1:{port}/cam",))
        hung.start()
        time.sleep(0.2)  # the hanging open is under way
        started = time.monotonic()
        open_capture(rtsp_camera.url, cam(rtsp_camera.url)).release()
        assert time.monotonic() - started < 1.5 + 1.0
        hung.join()
    assert failed and failed[0] >= 1.4  # it really was hanging


def test_udp_transport(rtsp_camera: RtspServer) -> None:
    with Consumer(cam(rtsp_camera.url, transport="udp")) as c:
        c.wait_frames(3, timeout=5)
        assert c.capture.status.connected


def test_streaming_status_and_latest_frame_semantics(
    rtsp_camera: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer that needs 0.4 s per frame: the reader still grabs all 15 fps (nothing
    queues up in the socket), only the frames handed out are converted, each is fresh."""
    url = rtsp_camera.url.replace("rtsp://", "rtsp://viewer:s3cret@")
    caplog.set_level(logging.INFO, logger="camtrap")
    with Consumer(cam(url, detect_fps=5), work_s=0.4) as c:
        c.wait_frames(1, timeout=5)
        start_seen = c.capture.status.frames_seen
        t0 = time.monotonic()
        c.wait_frames(6, timeout=6)
        st = c.capture.status
        elapsed = time.monotonic() - t0
        assert (st.frames_seen - start_seen) / elapsed > 12, "the reader fell behind"
        assert 13 <= st.stream_fps <= 17
        assert 1.5 <= st.processed_fps <= 2.7  # the consumer's pace, not detect_fps
        ages = [got - frame.ts + (time.time() - time.monotonic()) for got, frame in c.got[-6:]]
        assert max(ages) < 0.25, f"frames handed out stale: {ages}"
        d = st.as_dict()
        assert d["connected"] is True and d["state"] == "streaming"
        assert d["reconnects_last_hour"] == 0 and d["stalls_last_hour"] == 0
        assert d["last_frame_age_s"] is not None and d["last_frame_age_s"] < 0.5
    assert "s3cret" not in caplog.text and "viewer:***@" in caplog.text
    assert "s3cret" not in str(st.as_dict()) and "s3cret" not in st.url


def test_server_killed_then_restarted_frames_flow_within_the_backoff(
    rtsp_camera: RtspServer,
) -> None:
    with Consumer(cam(rtsp_camera.url, reconnect_min_s=0.5, reconnect_max_s=4.0)) as c:
        c.wait_frames(3, timeout=5)
        rtsp_camera.kill()
        wait_until(lambda: not c.capture.status.connected, 1.0, "the loss noticed")
        time.sleep(1.5)  # down long enough for a failed reconnect or two
        rtsp_camera.restart()
        back = c.wait_frames(1, timeout=6)
        # attempts after 0.5, 1.5, 3.5 s (+-20%): the next one after the restart is at
        # most one 2 s step away, plus the open itself
        assert back < 2.4 + 1.0, f"frames again {back:.1f} s after the restart"
        st = c.capture.status
        assert st.reconnects >= 2 and st.state == "streaming"
        logging.getLogger(__name__).warning("reconnect after restart: %.2f s", back)


def test_sigstopped_server_is_a_stall_and_the_capture_recovers_after_sigcont(
    rtsp_camera: RtspServer,
) -> None:
    cfg = cam(rtsp_camera.url, read_timeout_s=1.0, stale_after_s=1.5, open_timeout_s=1.0,
              reconnect_min_s=0.5, reconnect_max_s=1.0)
    with Consumer(cfg) as c:
        c.wait_frames(3, timeout=5)
        rtsp_camera.pause()
        paused = time.monotonic()
        wait_until(lambda: c.capture.status.stalls >= 1, 6, "stall detected")
        detected = time.monotonic() - paused
        assert detected <= cfg.read_timeout_s + cfg.stale_after_s + 0.5
        st = c.capture.status
        assert not st.connected and st.state == "reconnecting"
        assert st.stalls_last_hour() == 1 and "stalled" in (st.last_error or "")
        time.sleep(1.5)  # reopen attempts hang (open timeout) while it is stopped
        n = len(c.got)
        rtsp_camera.resume()
        back = c.wait_frames(1, timeout=8)
        assert back < 1.2 + 1.0 + 1.0, f"frames again {back:.1f} s after SIGCONT"
        # The first packets after SIGCONT can be a backlog the decoder rejects (seen once in
        # CI: one more reconnect); what must hold is that the stream settles and keeps going.
        wait_until(lambda: c.capture.status.state == "streaming" and len(c.got) >= n + 6, 10,
                   "streaming steadily after SIGCONT")


def test_slow_but_healthy_stream_is_not_restarted() -> None:
    """1 frame per second with stale_after_s 0.5: each frame is a second apart, yet the
    stream is healthy (each grab returns well within the read timeout)."""
    with RtspServer("live", fps=1) as server, Consumer(
        cam(server.url, read_timeout_s=2.5, stale_after_s=0.5)
    ) as c:
        c.wait_frames(5, timeout=12)
        st = c.capture.status
        assert st.reconnects == 0 and st.stalls == 0, st.as_dict()


def test_a_wrong_url_on_one_camera_while_another_keeps_producing(
    rtsp_camera: RtspServer,
) -> None:
    crops: dict[str, list[Crop]] = {"good": [], "bad": [], "gone": []}
    good_cfg = cam(rtsp_camera.url, name="good")
    bad_cfg = cam(rtsp_camera.url.replace("/cam", "/nosuchmount"), name="bad")
    with silent_port() as port:
        gone_cfg = cam(f"rtsp://u:pw@127.0.0.1:{port}/cam", name="gone")
        workers = [CameraWorker(c, MotionConfig(), RegionsConfig(), 240, crops[c.name].append)
                   for c in (good_cfg, bad_cfg, gone_cfg)]
        for w in workers:
            w.start()
        try:
            time.sleep(4.0)
            good, bad, gone = workers
            assert good.status.connected and 4 <= good.status.processed_fps <= 6
            assert good.status.frames_processed >= 15 and len(crops["good"]) >= 10
            assert good.status.reconnects == 0
            for w in (bad, gone):
                assert w.is_alive() and not w.status.connected
                assert w.status.state == "reconnecting" and w.status.reconnects >= 1
                assert not crops[w.camera.name]
            assert "pw@" not in (gone.status.last_error or "")
            assert time.monotonic() - good.last_progress < 1.0
        finally:
            for w in workers:
                w.stop()
            for w in workers:
                w.join(timeout=5)
    assert not any(w.is_alive() for w in workers)


def test_live_detect_stream_beside_the_main_stream() -> None:
    """Motion frames from the 640x360 stream, crops from the 1280x720 stream."""
    with RtspServer("live") as detect, RtspServer("live", width=1280, height=720) as main:
        cfg = cam(main.url, detect_url=detect.url, detect_fps=5)
        proc = FrameProcessor(cfg, MotionConfig(), RegionsConfig(), 240)
        crops: list[Crop] = []
        fulls: list[tuple[int, int, int]] = []
        stop = threading.Event()
        capture = Capture(cfg, stop)
        deadline = time.monotonic() + 8
        for frame in capture.frames():
            assert frame.image.shape == (360, 640, 3)
            if frame.full_size is not None:
                assert frame.full_size == (1280, 720)
                result = proc.process(frame)
                if result.crops:
                    fulls.append(frame.full_image().shape)  # type: ignore[union-attr]
                crops += result.crops
            if len(crops) >= 5 or time.monotonic() > deadline:
                stop.set()
        assert len(crops) >= 5, capture.status.as_dict()
        assert all(c.frame_size == (1280, 720) for c in crops)
        assert set(fulls) == {(720, 1280, 3)}
        assert proc.crops_from_detect == 0
        st = capture.status.as_dict()
        assert st["main"]["connected"] is False  # closed with the capture  # type: ignore[index]


def test_paused_camera_decodes_nothing_and_resumes(rtsp_camera: RtspServer) -> None:
    """Outside its active hours a camera closes its streams; it opens them again after."""
    crops: list[Crop] = []
    worker = CameraWorker(cam(rtsp_camera.url), MotionConfig(), RegionsConfig(), 240,
                          crops.append)
    worker.set_active(False, "paused, outside active hours (06:00-19:30)")  # before start
    worker.start()
    try:
        time.sleep(0.8)
        st = worker.status
        assert st.state == "paused" and st.frames_seen == 0 and not crops
        assert st.as_dict()["active_hours"] == "paused, outside active hours (06:00-19:30)"
        worker.set_active(True, "active (06:00-19:30)")
        wait_until(lambda: st.frames_processed >= 3, 5, "frames after resuming")
        worker.set_active(False, "paused")
        wait_until(lambda: st.state == "paused", 2, "paused again")
        seen = st.frames_seen
        time.sleep(0.6)
        assert st.frames_seen == seen and not st.connected, "still decoding while paused"
        worker.set_active(True)
        wait_until(lambda: st.frames_seen > seen and st.state == "streaming", 5, "resumed")
        assert worker.is_alive()
    finally:
        worker.stop()
        worker.join(timeout=5)
    assert not worker.is_alive()


class _FakeCapture:
    """A capture whose grab() can hang past every timeout, as a wedged driver might."""

    def __init__(self, hang: threading.Event | None) -> None:
        self.hang, self.released, self.grabs = hang, False, 0

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 64.0, cv2.CAP_PROP_FRAME_HEIGHT: 48.0}.get(prop, 0.0)

    def grab(self) -> bool:
        self.grabs += 1
        if self.hang is not None and self.grabs > 3:
            self.hang.wait()
            return False
        time.sleep(1 / 15)
        return True

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self) -> None:
        self.released = True


def test_a_read_that_ignores_its_timeout_is_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop: a grab() blocked far past read_timeout + staleness is left behind on its
    thread (which releases its capture when the call returns) and a new reader takes over."""
    unblock = threading.Event()
    caps = [_FakeCapture(unblock), _FakeCapture(None)]
    opened: list[_FakeCapture] = []

    def fake_open(url: str, cfg: CameraConfig) -> _FakeCapture:
        opened.append(caps[min(len(opened), 1)])
        return opened[-1]

    monkeypatch.setattr("camtrap.video.stream.open_capture", fake_open)
    with Consumer(cam("rtsp://127.0.0.1:9/cam", read_timeout_s=0.3, stale_after_s=0.3)) as c:
        c.wait_frames(1, timeout=2)
        wait_until(lambda: c.capture.status.stalls == 1, 4, "the hung read abandoned")
        c.wait_frames(3, timeout=3)  # from the second capture
        assert len(opened) == 2 and c.capture.status.state == "streaming"
        assert not caps[0].released  # still blocked in grab()
        unblock.set()
        wait_until(lambda: caps[0].released, 2, "the abandoned capture released")
    assert caps[1].released
