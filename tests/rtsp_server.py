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

The factory is shared, so several clients can read one stream at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
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
    args = parser.parse_args(argv)
    if not args.mount.startswith("/"):
        parser.error("--mount must start with /")

    Gst.init(None)
    if args.mode == "file":
        if args.file is None or not args.file.is_file():
            parser.error(f"--mode file needs an existing --file, got {args.file}")
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
