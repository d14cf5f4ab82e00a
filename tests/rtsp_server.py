#!/usr/bin/python3
"""A real RTSP camera for tests: GStreamer's gst-rtsp-server on 127.0.0.1.

Run it with Debian's system interpreter (`/usr/bin/python3`, which has python3-gi); the
project venv has no GObject bindings. It prints exactly one line, `PORT <n>`, once it is
serving, then runs until SIGTERM/SIGINT and exits 0.

Modes:
  live  an endless synthetic camera, paced at --fps: a static blotchy noise texture over a
        green-grey background, a little temporal sensor noise, and a dark brown ball
        (40 px across) that wanders over the frame (videotestsrc's "wavy" ball, frame n at
        the same place every run: period 200 frames in x, 200/sqrt(2) in y, up to about
        10 px per frame at 640x360). The stream starts when the first client connects.
        With --object-period S the ball is shown for S seconds, then hidden for S seconds.
  file  serve an H.264 mp4/mov/mkv file as is (demux + h264parse), once, no loop; with
        --transcode any decodable file is decoded and re-encoded with x264.
        With --loop the file's frames are read into memory once and served endlessly,
        re-timestamped at the file's frame rate, from the key frame at or before --start-at
        seconds: a long-running camera that costs almost no CPU (bench/pipeline.py runs
        several 1080p ones beside the daemon). --mark S (repeatable) with --marks FILE
        appends a line `MARK <S> <wall>` to FILE each time the frame at S s of the file is
        due on the wire (time.time() of its running time on the pipeline clock): the known
        truth of when an object appears.

The factory is shared, so several clients can read one stream at once.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# ARGB colours. Luma (BT.601): background about 148, ball about 45.
BACKGROUND = 0xFF8C9C7C  # green-grey, like foliage behind a feeder
BIRD = 0xFF3A2A1A  # dark brown
TEXTURE_ALPHA = 0.30  # static noise texture blended over the scene
NOISE_ALPHA = 0.05  # temporal noise: about +-6 luma per pixel before encoding


def x264(fps: int, bitrate_kbps: int) -> str:
    """Low-latency H.264 with a key frame every second, so a client can join at any time."""
    return (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        f"bitrate={bitrate_kbps} byte-stream=true ! "
        "video/x-h264,profile=constrained-baseline ! "
        "rtph264pay name=pay0 pt=96 config-interval=1"
    )


def live_launch(width: int, height: int, fps: int, bitrate_kbps: int) -> str:
    """Three layers in a compositor: moving ball on background, static texture, noise.

    The sources are deliberately not is-live: a live compositor mixes whatever has arrived
    by each frame's deadline, and on a loaded machine (torch on every core) the first frame
    then lacks the texture or is black, a false "motion" over the whole frame. Non-live, the
    compositor waits for every layer, frame n is the same every run, and the RTSP server
    still paces the stream at `fps` by the clock, like a camera.
    """
    caps = f"video/x-raw,format=AYUV,width={width},height={height},framerate={fps}/1"
    return (
        "( "
        f"compositor name=mix background=black "
        f"sink_0::zorder=0 "
        f"sink_1::zorder=1 sink_1::alpha={TEXTURE_ALPHA} "
        f"sink_2::zorder=2 sink_2::alpha={NOISE_ALPHA} ! "
        f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
        "videoconvert ! video/x-raw,format=I420 ! "
        f"{x264(fps, bitrate_kbps)} "
        "videotestsrc name=bird pattern=ball motion=wavy animation-mode=frames "
        f"background-color={BACKGROUND} foreground-color={BIRD} ! {caps} ! mix.sink_0 "
        f"videotestsrc pattern=snow num-buffers=1 ! "
        f"video/x-raw,width={max(width // 8, 1)},height={max(height // 8, 1)} ! "
        f"videoscale method=bilinear ! {caps} ! imagefreeze ! mix.sink_1 "
        f"videotestsrc pattern=snow ! {caps} ! mix.sink_2 "
        ")"
    )


def file_launch(path: Path, transcode: bool, fps: int, bitrate_kbps: int) -> str:
    """Serve a file's H.264 as is, or decode and re-encode anything GStreamer can read."""
    location = GLib.strescape(str(path.resolve()))
    src = f'filesrc location="{location}"'
    if transcode:
        return (
            f"( {src} ! decodebin ! videoconvert ! video/x-raw,format=I420 ! "
            f"{x264(fps, bitrate_kbps)} )"
        )
    suffix = path.suffix.lower()
    if suffix in (".mkv", ".webm"):
        demux = "matroskademux"
    elif suffix in (".mp4", ".mov", ".m4v", ".3gp"):
        demux = "qtdemux"
    else:
        demux = "parsebin"
    return f"( {src} ! {demux} ! queue ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"


class ObjectBlinker:
    """Shows the ball for `period` seconds, then hides it (ball colour = background), repeat.

    The clock starts when a media (pipeline) is made, i.e. at the first client's connect, so
    a test that connects sees the ball for the first `period` seconds.
    """

    def __init__(self, period: float) -> None:
        self.period = period

    def attach(self, factory: GstRtspServer.RTSPMediaFactory) -> None:
        if self.period > 0:
            factory.connect("media-configure", self._on_media)

    def _on_media(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        bird = media.get_element().get_by_name("bird")
        if bird is None:
            return
        state = {"visible": True}

        def toggle() -> bool:
            state["visible"] = not state["visible"]
            bird.set_property("foreground-color", BIRD if state["visible"] else BACKGROUND)
            return GLib.SOURCE_CONTINUE

        source_id = GLib.timeout_add(int(self.period * 1000), toggle)
        media.connect("unprepared", lambda _media: GLib.source_remove(source_id))


class LoopedClip:
    """A file's H.264 access units, read once into memory and pushed through an appsrc forever.

    Encoding 1080p live costs most of a core per camera; replaying pre-encoded frames costs
    almost nothing, so a benchmark can run several cameras beside the daemon it measures.
    Frames are re-timestamped at the file's rate, so the loop seam is seamless to a client.
    Every new media (a client connecting after the last one left) starts at `start_at` again.
    """

    def __init__(
        self, path: Path, start_at: float, marks: list[float], marks_file: Path | None
    ) -> None:
        self.frames, self.caps = self._read(path)
        if not self.frames:
            raise ValueError(f"{path}: no H.264 frames")
        structure = self.caps.get_structure(0)
        ok, num, den = structure.get_fraction("framerate")
        self.fps = num / den if ok and num > 0 and den > 0 else 15.0
        self.frame_ns = int(Gst.SECOND / self.fps)
        start = min(int(start_at * self.fps), len(self.frames) - 1)
        while start > 0 and self.frames[start].has_flags(Gst.BufferFlags.DELTA_UNIT):
            start -= 1  # a client can only start decoding at a key frame
        self.start = start
        self.marks = {min(math.ceil(s * self.fps - 1e-6), len(self.frames) - 1): s for s in marks}
        self.marks_file = marks_file

    @staticmethod
    def _read(path: Path) -> tuple[list[Gst.Buffer], Gst.Caps]:
        location = GLib.strescape(str(path.resolve()))
        suffix = path.suffix.lower()
        demux = "matroskademux" if suffix in (".mkv", ".webm") else "qtdemux"
        pipeline = Gst.parse_launch(
            f'filesrc location="{location}" ! {demux} ! h264parse config-interval=-1 ! '
            "video/x-h264,stream-format=byte-stream,alignment=au ! "
            "appsink name=sink sync=false"
        )
        sink = pipeline.get_by_name("sink")
        pipeline.set_state(Gst.State.PLAYING)
        frames: list[Gst.Buffer] = []
        caps = None
        while True:
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            if sample is None:
                break
            caps = caps or sample.get_caps()
            frames.append(sample.get_buffer())
        pipeline.set_state(Gst.State.NULL)
        if caps is None:
            raise ValueError(f"{path}: no H.264 stream")
        return frames, caps

    def launch(self) -> str:
        return (
            "( appsrc name=src format=time is-live=false ! h264parse ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )"
        )

    def attach(self, factory: GstRtspServer.RTSPMediaFactory) -> None:
        factory.connect("media-configure", self._on_media)

    def _on_media(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        src = media.get_element().get_by_name("src")
        src.set_property("caps", self.caps)
        state = {"n": 0}
        pending: list[tuple[float, int]] = []  # (mark s, pts ns) before the clock is known

        def need_data(appsrc: Gst.Element, _length: int) -> None:
            n = state["n"]
            state["n"] = n + 1
            index = (self.start + n) % len(self.frames)
            buf = self.frames[index].copy()
            buf.pts = buf.dts = n * self.frame_ns
            buf.duration = self.frame_ns
            if index in self.marks:
                pending.append((self.marks[index], buf.pts))
            if pending and self.marks_file is not None:
                self._write_marks(appsrc, pending)
            appsrc.emit("push-buffer", buf)

        src.connect("need-data", need_data)

    def _write_marks(self, appsrc: Gst.Element, pending: list[tuple[float, int]]) -> None:
        clock = appsrc.get_clock()
        if clock is None or appsrc.get_state(0)[1] != Gst.State.PLAYING:
            return  # still prerolling: base time unknown; written at a later frame
        now_ns, now_wall = clock.get_time(), time.time()
        base = appsrc.get_base_time()
        assert self.marks_file is not None
        with self.marks_file.open("a") as f:
            for mark, pts in pending:
                f.write(f"MARK {mark:g} {now_wall + (base + pts - now_ns) / 1e9:.6f}\n")
        pending.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--mode", choices=("live", "file"), default="live")
    parser.add_argument("--file", type=Path, help="video file for --mode file")
    parser.add_argument("--transcode", action="store_true", help="file mode: re-encode")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=1500, help="kbit/s for x264")
    parser.add_argument(
        "--object-period",
        type=float,
        default=0.0,
        help="live: show the object for S s, hide it for S s, repeat (0: always shown)",
    )
    parser.add_argument("--loop", action="store_true", help="file mode: serve endlessly")
    parser.add_argument(
        "--start-at", type=float, default=0.0, help="--loop: start S s into the file"
    )
    parser.add_argument(
        "--mark", type=float, action="append", default=[], help="--loop: clip time to log"
    )
    parser.add_argument("--marks", type=Path, help="--loop: file that MARK lines go to")
    args = parser.parse_args(argv)
    if not args.mount.startswith("/"):
        parser.error("--mount must start with /")
    if args.loop and (args.mode != "file" or args.transcode):
        parser.error("--loop needs --mode file and no --transcode")

    Gst.init(None)
    looped: LoopedClip | None = None
    if args.mode == "file":
        if args.file is None or not args.file.is_file():
            parser.error(f"--mode file needs an existing --file, got {args.file}")
        if args.loop:
            looped = LoopedClip(args.file, args.start_at, args.mark, args.marks)
            launch = looped.launch()
        else:
            launch = file_launch(args.file, args.transcode, args.fps, args.bitrate)
    else:
        launch = live_launch(args.width, args.height, args.fps, args.bitrate)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    if args.mode == "live":
        ObjectBlinker(args.object_period).attach(factory)
    if looped is not None:
        looped.attach(factory)
    server.get_mount_points().add_factory(args.mount, factory)

    loop = GLib.MainLoop()
    try:
        source_id = server.attach(None)
    except GLib.Error as exc:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    if source_id == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    def quit_loop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_loop)
    print(f"PORT {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
