"""End-to-end pipeline benchmark: RTSP cameras -> daemon -> MQTT, against known truth.

    python -m bench.pipeline --cameras 4 --duration 600 --visit-every 30 --patch 16
    python -m bench.pipeline --cameras 4 --duration 600 --idle
    python -m bench.pipeline --cameras 4 --duration 7200 --warmup 600 --chaos
    python -m bench.pipeline --find-max --patch 16 24 [--device cuda] --step-duration 120
    add --json for one JSON document on stdout instead of the tables

What runs, all real, on 127.0.0.1:
  cameras  N tests/rtsp_server.py processes, each serving a pre-encoded 1080p/15 fps H.264
           clip (about 3 Mbit/s: textured background with sensor noise) in an endless loop
           (`--loop`). A dark bird-sized shape pops in at a fixed clip time, wanders for
           --visit-length s and vanishes, once every --visit-every s. Cameras start at
           staggered points of the clip so visits are spread out. Encoding 1080p live costs
           about 0.65 core per camera here; replaying the encoded clip costs about 0.01,
           which leaves the machine to the daemon. Each server logs the wall-clock time at
           which the bird's first frame is due on the wire (`--mark`): the known truth.
  broker   mosquitto with persistence, and a persistent-session QoS 1 subscriber on `#`,
           so a broker restart loses nothing on the subscriber's side: a visit missing on
           MQTT is the daemon's fault, not the bench's.
  daemon   `camtrap run` as a subprocess on a full-size random-init FlexiViT
           (flexivit_reg1_s16_rms_ls, 12 layers, 550 classes: the real model's cost) whose
           head is biased to one species, so each appearance is exactly one visit. Its
           threads get kernel names (a bench-side shim), so per-thread CPU in /proc can be
           added up per camera; FFmpeg names its decoder threads itself (`av:h264:df0`),
           so those are shared out evenly between the cameras.

Figures: latency from a bird's first frame to its visit `start` on MQTT (p50/p95/p99);
visits expected vs published per camera; crops and frames dropped; CPU per camera and in
total; RSS at start, after --warmup and at the end, with its slope per hour; thread
restarts; batch-size histogram and inference latency (from the daemon's /metrics). With
--chaos one camera is killed (SIGKILL) and restarted every 300 s and the broker restarted
every 600 s (times --chaos-scale), each down for --down-for s. --find-max adds cameras
until one is not sustained (a crop dropped, a visit missed, or detect fps or frames read
below 95% of what was asked). Results and what to run: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import math
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 1920, 1080, 15
BITRATE = "3M"  # a typical 1080p camera main stream
APPEAR_AT = 3.0  # clip seconds at which the bird pops in (a key frame)
MIN_VISIBLE_S = 2.0  # an appearance cut shorter than this by a camera kill is not expected
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


# --------------------------------------------------------------------------- daemon shim


def name_threads() -> None:
    """Give every Python thread its name in the kernel (`comm`), before it runs.

    Python 3.11 leaves every thread named after the executable, so /proc and `top -H` can't
    tell a camera from the classifier. Native threads started later from a named thread
    inherit its name (libgomp's team of the inference thread), unless they name themselves
    (FFmpeg's `av:h264:df<n>` decoder threads).
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def set_name(name: str) -> None:
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME

    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(self: threading.Thread) -> None:
        set_name(self.name)
        original(self)

    threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]
    set_name("main")


def snapshots_on_sigusr2(folder: Path) -> None:
    """Memory diagnostics: with PYTHONTRACEMALLOC=N set for the bench, each SIGUSR2 to the
    daemon writes a tracemalloc snapshot into its work dir (compare two with
    `Snapshot.load(a).compare_to(Snapshot.load(b), "traceback")`)."""
    import tracemalloc

    numbers = itertools.count()

    def dump(_signum: int, _frame: object) -> None:
        tracemalloc.take_snapshot().dump(str(folder / f"tracemalloc-{next(numbers)}.snap"))

    signal.signal(signal.SIGUSR2, dump)


def daemon_main(config: str) -> int:
    """`camtrap run --config CONFIG` with named threads (the bench runs this as the daemon)."""
    name_threads()
    if os.environ.get("PYTHONTRACEMALLOC"):
        snapshots_on_sigusr2(Path(config).parent)
    import cv2
    import numpy as np

    # OpenCV's worker pool is shared by all cameras: create it from a thread of its own,
    # so its CPU is not counted against whichever camera happened to call it first.
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    warm = threading.Thread(
        name="cv2-pool", target=lambda: cv2.resize(image, (WIDTH // 2, HEIGHT // 2))
    )
    warm.start()
    warm.join()
    from camtrap.cli import main as cli_main

    return cli_main(["run", "--config", config])


# --------------------------------------------------------------------------- known truth


def clip_path(cache: Path, cycle: int, visible: int) -> Path:
    """A cached 1080p clip of `cycle` s with the bird shown `visible` s from APPEAR_AT."""
    path = cache / f"clip-{WIDTH}x{HEIGHT}-{FPS}fps-{BITRATE}-c{cycle}-v{visible}.mp4"
    if not path.exists():
        make_clip(path, cycle, visible)
    return path


def make_clip(path: Path, cycle: int, visible: int) -> None:
    """The scene of scripts/make-sample-clip.sh at 1080p, with a pop-in/pop-out schedule.

    A visit that pops in at a known frame (no walk-in from the edge) makes the truth exact.
    visible >= cycle: the bird never leaves (the worst case for the classifier).
    """
    w, h = WIDTH, HEIGHT
    bw, bh = w // 13 // 2 * 2, h // 11 // 2 * 2
    if visible >= cycle:
        a, b = -1.0, cycle + 1.0
    else:
        a, b = APPEAR_AT, APPEAR_AT + visible
    on = f"between(t,{a},{b - 1e-4})"
    x = f"if({on},0.30*W+0.25*W*(1-cos(2*PI*(t-{a})/3))+0.05*W*sin(2*PI*(t-{a})),-10000)"
    y = "(0.55*H+0.18*H*sin(2*PI*t/1.5)-h/2)"
    graph = (
        f"color=c=0x8c9c7c:s={w // 8}x{h // 8}:r={FPS},format=yuv420p,noise=c0s=40:c0f=u,"
        f"scale={w}:{h}:flags=bilinear,setsar=1[bg];"
        f"color=c=0x3a2a1a:s={bw}x{bh}:r={FPS},format=yuva420p,"
        "geq=lum='lum(X,Y)':cb='cb(X,Y)':cr='cr(X,Y)':"
        "a='255*lte(pow((X-W/2+0.5)/(W/2),2)+pow((Y-H/2+0.5)/(H/2),2),1)'[bird];"
        f"[bg][bird]overlay=x='{x}':y='{y}':eval=frame:format=yuv420,"
        "noise=c0s=6:c0f=t+u,format=yuv420p[v]"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    log(f"making {path.name} (once; about 10 s)")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-filter_complex", graph, "-map", "[v]", "-frames:v", str(cycle * FPS), "-r", str(FPS),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", BITRATE, "-maxrate", BITRATE,
         "-bufsize", BITRATE, "-pix_fmt", "yuv420p", "-g", str(FPS), "-bf", "0",
         "-movflags", "+faststart", "-an", str(tmp)],
        check=True,
    )  # fmt: skip
    tmp.rename(path)


def checkpoint_path(cache: Path) -> Path:
    """A full-depth random-init FlexiViT (550 classes), head biased to class 0.

    Random weights give a different species for every few crops, which would split one
    appearance into several visits; the bias keeps the cost and makes one bird one visit.
    """
    path = cache / "flexivit_reg1_s16_rms_ls-550-full-biased.pt"
    if path.exists():
        return path
    from camtrap.tools.checkpoints import FULL_CLASSES, FULL_LAYERS, build_checkpoint

    log("building the full-size test checkpoint (once)")
    return build_checkpoint(path, FULL_CLASSES, num_layers=FULL_LAYERS, favour=0)


# --------------------------------------------------------------------------- /proc


def proc_threads(pid: int) -> dict[int, tuple[str, float]]:
    """{tid: (comm, cpu seconds)} for every live thread of `pid`."""
    out: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                comm = text[text.index("(") + 1 : text.rindex(")")]
                fields = text[text.rindex(")") + 2 :].split()
                out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def proc_cpu(pid: int) -> float | None:
    """CPU seconds of the whole process, exited threads included."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory(pid: int) -> dict[str, float]:
    """RSS and its anonymous part in MB (file-backed RSS is mostly torch's libraries)."""
    out: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(value.split()[0]) / 1024
    return out


def thread_group(comm: str) -> str:
    """Group kernel thread names: the shim's names, the daemon's own, FFmpeg's decoders.

    `capture-<camera>-<role>-<gen>` (a camera's reader, cut to 15 bytes by the kernel) goes
    with its camera; FFmpeg names its frame threads `av:h264:df<n>` whatever camera started
    them, so those form one `decoders` group.
    """
    if comm.startswith("capture-"):
        return "capture-" + comm.removeprefix("capture-").split("-", 1)[0]
    if comm.startswith("av:"):
        return "decoders"
    for prefix in ("inference", "paho", "ThreadPoolExe", "APScheduler", "health", "outbox"):
        if comm.startswith(prefix):
            return prefix
    return comm


# --------------------------------------------------------------------------- metrics


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples | None:
    """The daemon's /metrics as {(name, sorted labels): value}; None if it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1]).get(label, ""): v for k, v in samples.items() if k[0] == name}


def histogram(samples: Samples, name: str) -> dict[str, Any]:
    """Per-bucket counts (not cumulative), count, sum, and bucket-interpolated quantiles."""
    cumulative = sorted(
        (float(dict(k[1])["le"]), v) for k, v in samples.items() if k[0] == f"{name}_bucket"
    )
    count = samples.get((f"{name}_count", ()), 0.0)
    total = samples.get((f"{name}_sum", ()), 0.0)
    buckets: dict[str, int] = {}
    previous = 0.0
    for le, c in cumulative:
        label = "+Inf" if math.isinf(le) else f"{le:g}"
        if c - previous > 0:
            buckets[label] = int(c - previous)
        previous = c

    def quantile(q: float) -> float | None:
        if count <= 0:
            return None
        rank, lower, below = q * count, 0.0, 0.0
        for le, c in cumulative:
            if c >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * (rank - below) / max(c - below, 1e-9)
            lower, below = le, c
        return lower

    return {
        "count": int(count),
        "mean": total / count if count else None,
        "p50": quantile(0.5),
        "p95": quantile(0.95),
        "buckets": buckets,
    }


# --------------------------------------------------------------------------- servers


def servers() -> Any:
    """tests/servers.py, imported when first needed (it needs paho and the test servers)."""
    from tests import servers as mod

    return mod


def loop_camera(clip: Path, start_at: float, marks: Path, appear: float | None) -> Any:
    """tests/rtsp_server.py serving `clip` endlessly, logging the bird's appearances."""
    mod = servers()

    class LoopCamera(mod.RtspServer):  # type: ignore[misc, name-defined]
        def _command(self) -> list[str]:
            cmd = [*super()._command(), "--loop", "--start-at", f"{start_at:g}",
                   "--marks", str(marks)]  # fmt: skip
            if appear is not None:
                cmd += ["--mark", f"{appear:g}"]
            return cmd

    return LoopCamera("file", file=clip, width=WIDTH, height=HEIGHT, fps=FPS)


def persistent_broker() -> Any:
    """Mosquitto that keeps sessions and queued QoS 1 messages across a graceful restart."""
    mod = servers()

    class PersistentMosquitto(mod.Mosquitto):  # type: ignore[misc, name-defined]
        def _write_config(self) -> None:
            super()._write_config()
            text = self.conf_file.read_text()
            text = text.replace(
                "persistence false\n",
                f"persistence true\npersistence_location {self.dir}/\nautosave_interval 10\n",
            )
            text = text.replace(
                "log_type all\n",
                "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
            )
            self.conf_file.write_text(text)

    return PersistentMosquitto()


@dataclass
class Received:
    topic: str
    time: float
    payload: bytes


class Subscriber:
    """A persistent-session QoS 1 subscriber on `#` that keeps events and counts the rest."""

    KEEP = ("/events", "/visit", "/status")

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Received] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.connects = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"camtrap-bench-{os.getpid()}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_a: self._ready.set()
        client.on_message = self._on_message
        self.client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        if not self._ready.wait(15):
            raise RuntimeError(f"cannot subscribe at {host}:{port}")

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self.connects += 1
            client.subscribe("#", qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        with self._lock:
            self.counts[msg.topic] += 1
            if not msg.retain and msg.topic.endswith(self.KEEP):
                self.messages.append(Received(msg.topic, now, bytes(msg.payload)))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- one run


@dataclass
class Spec:
    cameras: int = 4
    duration: float = 600.0
    visit_every: int = 30
    visit_length: int = 6
    idle: bool = False
    patch: int = 16
    device: str = "cpu"
    precision: str = "auto"
    detect_fps: float = 5.0
    warmup: float = 600.0
    settle: float = 15.0
    grace: float = 12.0
    sample_every: float = 5.0
    chaos: bool = False
    camera_kill_every: float = 300.0
    broker_restart_every: float = 600.0
    down_for: float = 5.0
    end_after_s: float = 5.0


@dataclass
class Sample:
    t: float
    daemon_cpu: float | None
    threads: dict[int, tuple[str, float]]
    memory: dict[str, float]
    others_cpu: dict[str, float | None]
    metrics: Samples | None


@dataclass
class Outage:
    what: str
    start: float
    end: float


@dataclass
class RunData:
    spec: Spec
    t_launch: float = 0.0
    t_ready: float = 0.0
    t_end: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    marks: dict[str, list[float]] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    topic_counts: dict[str, int] = field(default_factory=dict)
    outages: list[Outage] = field(default_factory=list)
    exit_code: int | None = None
    stop_s: float | None = None
    log_tail: str = ""
    log_counts: dict[str, int] = field(default_factory=dict)
    subscriber_connects: int = 0
    workdir: str = ""
    died_at: float | None = None  # the daemon exited by itself during the run


def stagger(i: int, n: int, cycle: int, visible: int) -> float:
    """Where camera i starts in the clip, so the n cameras' visits are spread over the cycle
    and no stream starts with the bird already in view (that would be a visit with no mark).

    Camera i's bird appears (APPEAR_AT + i * (cycle - visible) / n) s after it connects.
    """
    if visible >= cycle:
        return float(i * cycle // n)
    return float(-(i * (cycle - visible) // n) % cycle)


def daemon_config(
    spec: Spec, work: Path, urls: list[str], ckpt: Path, broker_port: int, health_port: int
) -> dict[str, Any]:
    """The daemon's config: its defaults, except what makes the truth one visit per bird."""
    return {
        "cameras": [{"name": f"cam{i}", "url": url, "detect_fps": spec.detect_fps}
                    for i, url in enumerate(urls)],
        "model": {"path": str(ckpt), "device": spec.device, "precision": spec.precision,
                  "patch_size": spec.patch},
        # Threshold 0: every crop counts (random weights); min_hits and windows as shipped.
        "visits": {"threshold": 0.0, "end_after_s": spec.end_after_s,
                   "unknown": {"enabled": False}},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "prefix": "camtrap"},
        "storage": {"state_dir": str(work / "state")},
        "health": {"enabled": True, "port": health_port},
        "logging": {"level": "INFO"},
    }  # fmt: skip


def run_once(spec: Spec, cache: Path, workdir: Path | None = None) -> RunData:
    """Start cameras, broker, subscriber and daemon; sample until done; stop; gather."""
    import yaml

    work = Path(workdir or tempfile.mkdtemp(prefix="camtrap-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = RunData(spec, workdir=str(work))
    cycle = 10 if spec.idle else spec.visit_every
    visible = 0 if spec.idle else spec.visit_length
    clip = clip_path(cache, cycle, visible)
    ckpt = checkpoint_path(cache)
    appear = None if spec.idle or visible >= cycle else APPEAR_AT
    cams = []
    broker = persistent_broker()
    subscriber: Subscriber | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path = work / "daemon.log"
    try:
        for i in range(spec.cameras):
            start_at = stagger(i, spec.cameras, cycle, visible)
            cams.append(loop_camera(clip, start_at, work / f"marks-cam{i}.txt", appear).start())
        broker.start()
        subscriber = Subscriber(broker.host, broker.port)
        health_port = servers().free_port()
        cfg = daemon_config(spec, work, [c.url for c in cams], ckpt, broker.port, health_port)
        (work / "camtrap.yaml").write_text(yaml.safe_dump(cfg))
        data.t_launch = time.time()
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.pipeline", "--as-daemon",
                 str(work / "camtrap.yaml")],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_ready(proc, log_path)
        data.t_ready = time.time()
        log(
            f"daemon ready in {data.t_ready - data.t_launch:.1f} s "
            f"({spec.cameras} cameras, patch {spec.patch}, {spec.device}); work dir {work}"
        )
        metrics_url = f"http://127.0.0.1:{health_port}/metrics"
        sample_loop(spec, data, proc, cams, broker, metrics_url)
        data.t_end = min(data.t_ready + spec.duration, data.died_at or math.inf)
        if data.died_at is None:
            data.samples.append(take_sample(proc, cams, broker, metrics_url))
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                data.exit_code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                data.exit_code = proc.wait(10)
            data.stop_s = time.monotonic() - started
        else:
            data.exit_code = proc.returncode
        time.sleep(1.0)  # the last events and `offline` reach the subscriber
        data.messages = subscriber.snapshot()
        data.topic_counts = dict(subscriber.counts)
        data.subscriber_connects = subscriber.connects
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if subscriber is not None:
            subscriber.close()
        for cam in cams:
            cam.close()
        broker.close()
    for i in range(spec.cameras):
        data.marks[f"cam{i}"] = read_marks(work / f"marks-cam{i}.txt")
    text = log_path.read_text(errors="replace")
    data.log_tail = text[-3000:]
    data.log_counts = {
        "error": text.count(" ERROR "),
        "warning": text.count(" WARNING "),
        "traceback": text.count("Traceback"),
        "thread_failed": text.count("thread failed"),
    }
    with (work / "run.pickle").open("wb") as f:
        pickle.dump(data, f)  # --reanalyse WORKDIR reads it back
    return data


def wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "camtrap running" in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"the daemon was not ready in {timeout} s")


def take_sample(
    proc: subprocess.Popen[bytes], cams: list[Any], broker: Any, metrics_url: str
) -> Sample:
    others: dict[str, float | None] = {
        f"rtsp-cam{i}": proc_cpu(c.pid) if c.running else None for i, c in enumerate(cams)
    }
    others["mosquitto"] = proc_cpu(broker.proc.pid) if broker.running else None
    others["bench"] = time.process_time()
    return Sample(
        time.time(),
        proc_cpu(proc.pid),
        proc_threads(proc.pid),
        proc_memory(proc.pid),
        others,
        scrape(metrics_url),
    )


def sample_loop(
    spec: Spec,
    data: RunData,
    proc: subprocess.Popen[bytes],
    cams: list[Any],
    broker: Any,
    metrics_url: str,
) -> None:
    """Sample every `sample_every` s until duration + grace; inject faults with --chaos."""
    t0 = data.t_ready
    stop_at = t0 + spec.duration + spec.grace
    next_sample = time.time()
    next_progress = t0 + 30
    next_kill = t0 + spec.camera_kill_every
    next_broker = t0 + spec.broker_restart_every
    victim = 0
    while time.time() < stop_at:
        if proc.poll() is not None:
            data.died_at = time.time()
            log(f"the daemon exited by itself with {proc.returncode}: see {data.workdir}")
            return
        now = time.time()
        if now >= next_sample:
            data.samples.append(take_sample(proc, cams, broker, metrics_url))
            next_sample += spec.sample_every
        if spec.chaos and now >= next_kill and now < t0 + spec.duration:
            cam = cams[victim % len(cams)]
            log(f"chaos: killing cam{victim % len(cams)} for {spec.down_for:g} s")
            start = time.time()
            cam.restart(down_for=spec.down_for)
            data.outages.append(Outage(f"cam{victim % len(cams)}", start, time.time()))
            victim += 1
            next_kill += spec.camera_kill_every
        if spec.chaos and now >= next_broker and now < t0 + spec.duration:
            log(f"chaos: restarting the broker, down {spec.down_for:g} s")
            start = time.time()
            broker.restart(down_for=spec.down_for)
            data.outages.append(Outage("broker", start, time.time()))
            next_broker += spec.broker_restart_every
        if now >= next_progress:
            s = data.samples[-1]
            ev = by_label(s.metrics, "camtrap_visit_events_total", "type") if s.metrics else {}
            drops = (
                sum(by_label(s.metrics, "camtrap_crops_dropped_total", "camera").values())
                if s.metrics
                else 0
            )
            log(
                f"t={now - t0:6.0f} s  visits started {ev.get('start', 0):.0f}  "
                f"drops {drops:.0f}  rss {s.memory.get('VmRSS', 0):.0f} MB"
            )
            next_progress += 30
        time.sleep(max(0.05, min(next_sample, next_progress) - time.time()))


def read_marks(path: Path) -> list[float]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "MARK":
            out.append(float(parts[2]))
    return sorted(out)


# --------------------------------------------------------------------------- analysis


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def analyse(data: RunData) -> dict[str, Any]:
    spec = data.spec
    t0, t_end = data.t_ready, data.t_end
    steady = [s for s in data.samples if s.t >= t0 + spec.settle]
    cams = [f"cam{i}" for i in range(spec.cameras)]
    return {
        "spec": asdict(spec),
        "startup_s": round(t0 - data.t_launch, 1),
        "visits": analyse_visits(data, cams),
        "cpu": analyse_cpu(steady, cams),
        "memory": analyse_memory(data, spec),
        "frames": analyse_frames(steady, cams),
        "classifier": analyse_classifier(data.samples[-1].metrics if data.samples else None),
        "threads": analyse_threads(data.samples, cams),
        "stop": {"exit_code": data.exit_code,
                 "seconds": None if data.stop_s is None else round(data.stop_s, 2),
                 "died_at_s": None if data.died_at is None else round(data.died_at - t0, 1)},
        "log": data.log_counts,
        "outages": [asdict(o) | {"start": round(o.start - t0, 1), "end": round(o.end - t0, 1)}
                    for o in data.outages],
        "subscriber_connects": data.subscriber_connects,
        "measured_s": round(t_end - t0, 1),
        "workdir": data.workdir,
        "log_tail": data.log_tail if data.died_at or data.log_counts.get("traceback") else "",
    }  # fmt: skip


def analyse_visits(data: RunData, cams: list[str]) -> dict[str, Any]:
    """Match each appearance to the first visit start at its camera that covers it."""
    spec = data.spec
    t0, t_end = data.t_ready, data.t_end
    starts: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)  # cam: id: (rx, st)
    duplicates = 0
    ends: set[str] = set()
    for m in data.messages:
        if not m.topic.endswith("/events"):
            continue
        body = json.loads(m.payload)
        if body.get("type") == "end":
            ends.add(body["visit_id"])
        if body.get("type") != "start":
            continue
        if body["visit_id"] in starts[body["camera"]]:
            duplicates += 1
            continue
        st = datetime.fromisoformat(body["start_time"]).timestamp()
        starts[body["camera"]][body["visit_id"]] = (m.time, st)
    broker_down = [o for o in data.outages if o.what == "broker"]
    per_camera: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    clean: list[float] = []
    detect: list[float] = []
    missed: list[dict[str, Any]] = []
    outcomes: dict[str, list[tuple[float, bool]]] = {cam: [] for cam in cams}
    for cam in cams:
        visits = sorted(starts.get(cam, {}).items(), key=lambda kv: kv[1][1])
        used: set[str] = set()
        kills = [o.start for o in data.outages if o.what == cam]
        row = {
            "expected": 0,
            "published": 0,
            "missed": 0,
            "cut_by_kill": 0,
            "split": 0,
            "spurious": 0,
        }
        for mark in data.marks.get(cam, []):
            if not (t0 + 1.0 <= mark <= t_end):
                continue
            visible_until = min([mark + spec.visit_length, *[k for k in kills if k > mark]])
            cut = visible_until - mark < MIN_VISIBLE_S
            match = next(
                (vid for vid, (_rx, st) in visits
                 if vid not in used and mark - 1.0 <= st <= visible_until + 1.0),
                None,
            )  # fmt: skip
            if cut:
                row["cut_by_kill"] += 1
                if match is None:
                    continue
            else:
                row["expected"] += 1
            if match is None:
                row["missed"] += 1
                missed.append({"camera": cam, "t": round(mark - t0, 1)})
                outcomes[cam].append((mark, False))
                continue
            if not cut:
                outcomes[cam].append((mark, True))
            used.add(match)
            row["published"] += int(not cut)
            rx, st = starts[cam][match]
            latencies.append(rx - mark)
            detect.append(st - mark)
            if not any(o.start - spec.visit_length - 5 <= mark <= o.end + 5 for o in broker_down):
                clean.append(rx - mark)
        windows = [(m - 1.0, m + spec.visit_length + 1.0) for m in data.marks.get(cam, [])]
        for vid, (_rx, st) in visits:
            if vid in used or not t0 <= st <= t_end:
                continue
            # A second start inside an appearance is one bird split into several visits;
            # one outside every appearance is a visit of nothing (noise, a reconnect).
            split = any(lo <= st <= hi for lo, hi in windows)
            row["split" if split else "spurious"] += 1
        row["unended"] = sum(1 for vid in used if vid not in ends)
        per_camera[cam] = row

    def pct(xs: list[float]) -> dict[str, float | None]:
        return {
            f"p{q}": None if not xs else round(percentile(xs, q) or 0.0, 3) for q in (50, 95, 99)
        } | {"max": round(max(xs), 3) if xs else None, "n": len(xs)}

    total = {
        k: sum(r[k] for r in per_camera.values())
        for k in ("expected", "published", "missed", "cut_by_kill", "split", "spurious", "unended")
    }
    return {
        "total": total,
        "per_camera": per_camera,
        "missed": missed,
        "duplicate_starts": duplicates,
        "latency_s": pct(latencies),
        "latency_outside_broker_outages_s": pct(clean),
        "start_time_minus_appearance_s": pct(detect),
        "timeline": timeline(data, outcomes),
    }  # fmt: skip


def timeline(
    data: RunData, outcomes: dict[str, list[tuple[float, bool]]], buckets: int = 12
) -> dict[str, list[str]]:
    """Per camera, per twelfth of the run: 'published/expected' appearances (by mark time)."""
    t0, span = data.t_ready, max(data.t_end - data.t_ready, 1.0)
    out: dict[str, list[str]] = {}
    for cam, marks in outcomes.items():
        exp = [0] * buckets
        pub = [0] * buckets
        for mark, published in marks:
            i = min(int((mark - t0) / span * buckets), buckets - 1)
            exp[i] += 1
            pub[i] += published
        out[cam] = [f"{p}/{e}" for p, e in zip(pub, exp, strict=True)]
    return out


def analyse_cpu(steady: list[Sample], cams: list[str]) -> dict[str, Any]:
    """Cores used (1.0 = one core busy) over the steady window, in total and per group."""
    if len(steady) < 2:
        return {}
    first, last = steady[0], steady[-1]
    span = last.t - first.t
    groups: dict[str, float] = defaultdict(float)
    for a, b in itertools.pairwise(steady):
        for tid, (comm, cpu) in b.threads.items():
            if tid in a.threads:
                groups[thread_group(comm)] += cpu - a.threads[tid][1]
    total = ((last.daemon_cpu or 0) - (first.daemon_cpu or 0)) / span
    others: dict[str, float | None] = {}
    for key in first.others_cpu:
        x, y = first.others_cpu.get(key), last.others_cpu.get(key)
        others[key] = None if x is None or y is None or y < x else round((y - x) / span, 3)
    # Decoders can't be told apart by camera; every camera decodes the same kind of stream,
    # so each gets an equal share of them.
    shared = groups.get("decoders", 0.0) / max(len(cams), 1)
    per_camera = {
        cam: round(
            (groups.get(f"camera-{cam}", 0.0) + groups.get(f"capture-{cam}", 0.0) + shared) / span,
            3,
        )
        for cam in cams
    }
    return {
        "window_s": round(span, 1),
        "daemon_total": round(total, 3),
        "per_camera": per_camera,
        "groups": {k: round(v / span, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
                   if v / span >= 0.001},
        "others": others,
        "note": "cores (1.0: one core busy all the time); per camera: its camera and capture "
        "threads plus an equal share of FFmpeg's decoder threads",
    }  # fmt: skip


def analyse_memory(data: RunData, spec: Spec) -> dict[str, Any]:
    points = [(s.t - data.t_ready, s.memory) for s in data.samples if s.memory]
    if not points:
        return {}

    def at(t: float) -> dict[str, float]:
        return min(points, key=lambda p: abs(p[0] - t))[1]

    after = [(t, m) for t, m in points if t >= spec.warmup]
    fit = (
        after
        if len(after) >= 3 and after[-1][0] - after[0][0] >= 60
        else [(t, m) for t, m in points if t >= spec.settle]
    )

    def slope(key: str) -> float | None:
        xs = [t / 3600 for t, _ in fit]
        ys = [m.get(key, 0.0) for _, m in fit]
        if len(xs) < 3 or xs[-1] - xs[0] <= 0:
            return None
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 2)

    warm = at(spec.warmup) if spec.warmup <= points[-1][0] else None
    end = points[-1][1]
    return {
        "rss_mb": {"start": round(points[0][1].get("VmRSS", 0), 1),
                   "after_warmup": None if warm is None else round(warm.get("VmRSS", 0), 1),
                   "end": round(end.get("VmRSS", 0), 1),
                   "peak": round(max(m.get("VmRSS", 0) for _, m in points), 1)},
        "anon_mb": {"start": round(points[0][1].get("RssAnon", 0), 1),
                    "after_warmup": None if warm is None else round(warm.get("RssAnon", 0), 1),
                    "end": round(end.get("RssAnon", 0), 1)},
        "growth_after_warmup_mb": None if warm is None else
            round(end.get("VmRSS", 0) - warm.get("VmRSS", 0), 1),
        "slope_mb_per_hour": slope("VmRSS"),
        "anon_slope_mb_per_hour": slope("RssAnon"),
        "slope_fitted_from_s": round(fit[0][0], 1) if fit else None,
        "slope_fitted_over_s": round(fit[-1][0] - fit[0][0], 1) if fit else None,
        "warmup_s": spec.warmup,
    }  # fmt: skip


def analyse_frames(steady: list[Sample], cams: list[str]) -> dict[str, Any]:
    """Frames read vs the stream's 15/s over intervals when the camera was up throughout."""
    out: dict[str, Any] = {}
    with_metrics = [s for s in steady if s.metrics]
    for cam in cams:
        read = expected = 0.0
        fps: list[float] = []
        for a, b in itertools.pairwise(with_metrics):
            assert a.metrics is not None and b.metrics is not None
            if not all(_up_throughout(x.metrics, cam) for x in (a, b)):
                continue
            if _count(a.metrics, "camtrap_camera_reconnects_total", cam) != _count(
                b.metrics, "camtrap_camera_reconnects_total", cam
            ):
                continue  # it went down and came back between the two samples
            fa = by_label(a.metrics, "camtrap_camera_frames_total", "camera").get(cam, 0.0)
            fb = by_label(b.metrics, "camtrap_camera_frames_total", "camera").get(cam, 0.0)
            if fb < fa:
                continue
            read += fb - fa
            expected += FPS * (b.t - a.t)
            fps.append(by_label(b.metrics, "camtrap_camera_processed_fps", "camera").get(cam, 0.0))
        last = with_metrics[-1].metrics if with_metrics else None
        out[cam] = {
            "frames_read": int(read),
            "frames_expected": int(expected),
            "frames_dropped": max(0, round(expected - read)),
            "read_ratio": round(read / expected, 4) if expected else None,
            "detect_fps_mean": round(sum(fps) / len(fps), 2) if fps else None,
            "detect_fps_min": round(min(fps), 2) if fps else None,
            "crops": int(by_label(last, "camtrap_camera_crops_total", "camera").get(cam, 0))
            if last else None,
            "crops_dropped": int(by_label(last, "camtrap_crops_dropped_total", "camera")
                                 .get(cam, 0)) if last else None,
            "reconnects": int(by_label(last, "camtrap_camera_reconnects_total", "camera")
                              .get(cam, 0)) if last else None,
        }  # fmt: skip
    return out


def _up_throughout(metrics: Samples | None, cam: str) -> bool:
    return bool(metrics) and _count(metrics, "camtrap_camera_connected", cam) >= 1


def _count(metrics: Samples | None, name: str, cam: str) -> float:
    return by_label(metrics, name, "camera").get(cam, 0.0) if metrics else 0.0


def analyse_classifier(metrics: Samples | None) -> dict[str, Any]:
    if not metrics:
        return {}
    return {
        "batch_size": histogram(metrics, "camtrap_inference_batch_size"),
        "latency_s": histogram(metrics, "camtrap_inference_latency_seconds"),
        "outbox_dropped": int(metrics.get(("camtrap_outbox_dropped_total", ()), 0)),
        "events": by_label(metrics, "camtrap_visit_events_total", "type"),
    }


def analyse_threads(samples: list[Sample], cams: list[str]) -> dict[str, Any]:
    """A restart shows as a new lowest thread id in a named group (the Python thread is the
    group's first; native threads it starts come later), or a group that vanished."""
    watched = [f"{g}-{c}" for c in cams for g in ("camera", "capture")] + ["inference"]
    first: dict[str, int] = {}
    restarts: dict[str, int] = defaultdict(int)
    vanished: set[str] = set()
    for s in samples:
        lows: dict[str, int] = {}
        for tid, (comm, _cpu) in s.threads.items():
            g = thread_group(comm)
            if g in watched:
                lows[g] = min(lows.get(g, tid), tid)
        for g in watched:
            if g not in lows:
                if s.threads:
                    vanished.add(g)
                continue
            if g in first and lows[g] != first[g]:
                restarts[g] += 1
            first[g] = lows[g]
    counts = defaultdict(int)
    if samples:
        for comm, _ in samples[-1].threads.values():
            counts[thread_group(comm)] += 1
    return {
        "restarts": dict(restarts),
        "vanished": sorted(vanished),
        "threads_at_end": dict(sorted(counts.items())),
    }


# --------------------------------------------------------------------------- report


def git_commit() -> str:
    """HEAD, with +dirty for uncommitted changes to tracked files."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def machine(commit: str) -> dict[str, Any]:
    from camtrap.tools.benchmark import cpu_model

    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "memory": mem,
            "python": platform.python_version(),
            "commit": commit, "host": platform.node(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", "-m", "bench.pipeline", *sys.argv[1:]]),
            "load_avg_at_end": os.getloadavg()}  # fmt: skip
    with contextlib.suppress(Exception):
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def fmt(x: Any, spec: str = "") -> str:
    if x is None:
        return "-"
    return format(x, spec) if spec else str(x)


def print_run(r: dict[str, Any]) -> None:
    spec = r["spec"]
    mode = (
        "idle"
        if spec["idle"]
        else f"a visit every {spec['visit_every']} s ({spec['visit_length']} s visible)"
    )
    print(
        f"\n== {spec['cameras']} cameras 1080p/{FPS}, {mode}, detect {spec['detect_fps']:g} fps,"
        f" patch {spec['patch']}, {spec['device']} {spec['precision']}"
        f"{', chaos' if spec['chaos'] else ''}: {r['measured_s']:.0f} s after READY"
        f" (startup {r['startup_s']} s)"
    )
    v = r["visits"]
    if v:
        t = v["total"]
        print(
            f"visits: expected {t['expected']}, published {t['published']}, missed "
            f"{t['missed']}; extra starts: split (one bird, several visits) {t['split']}, "
            f"spurious (no bird) {t['spurious']}; never ended {t['unended']}; cut by a kill "
            f"{t['cut_by_kill']}; duplicate starts {v['duplicate_starts']}"
        )
        lat = v["latency_s"]
        print(
            f"latency appearance -> start on MQTT (s): p50 {fmt(lat['p50'])}  p95 "
            f"{fmt(lat['p95'])}  p99 {fmt(lat['p99'])}  max {fmt(lat['max'])}  (n={lat['n']})"
        )
        if r["outages"]:
            c = v["latency_outside_broker_outages_s"]
            print(
                f"  outside broker outages: p50 {fmt(c['p50'])}  p95 {fmt(c['p95'])}  p99 "
                f"{fmt(c['p99'])}  max {fmt(c['max'])}  (n={c['n']})"
            )
        d = v["start_time_minus_appearance_s"]
        print(
            f"  of which appearance -> visit start_time (first counted frame): p50 "
            f"{fmt(d['p50'])}  p95 {fmt(d['p95'])}"
        )
        if v["missed"]:
            print("  missed: " + ", ".join(f"{m['camera']}@{m['t']}s" for m in v["missed"][:20]))
    cpu, frames = r["cpu"], r["frames"]
    print(
        f"\n{'camera':8} {'exp':>4} {'pub':>4} {'miss':>4} {'split':>5} {'cpu':>6} "
        f"{'det fps':>7} {'frames read':>13} {'dropped':>7} {'crops':>6} {'dropped':>7} "
        f"{'reconn':>6}  published/expected by time slice"
    )
    for cam, f in frames.items():
        row = v["per_camera"].get(cam, {}) if v else {}
        print(
            f"{cam:8} {fmt(row.get('expected')):>4} {fmt(row.get('published')):>4} "
            f"{fmt(row.get('missed')):>4} {fmt(row.get('split')):>5} "
            f"{fmt(cpu.get('per_camera', {}).get(cam), '.3f'):>6} "
            f"{fmt(f['detect_fps_mean'], '.2f'):>7} "
            f"{f['frames_read']:>6}/{f['frames_expected']:<6} {f['frames_dropped']:>7} "
            f"{fmt(f['crops']):>6} {fmt(f['crops_dropped']):>7} {fmt(f['reconnects']):>6}  "
            f"{' '.join(v['timeline'].get(cam, [])) if v else ''}"
        )
    if cpu:
        groups = ", ".join(f"{k} {x:.3f}" for k, x in cpu["groups"].items())
        others = ", ".join(f"{k} {fmt(x)}" for k, x in cpu["others"].items())
        print(
            f"\nCPU (cores, over {cpu['window_s']:.0f} s): daemon total "
            f"{cpu['daemon_total']:.3f} = {cpu['daemon_total'] * 100:.0f}% of one core"
        )
        print(f"  by thread group: {groups}")
        print(f"  outside the daemon: {others}")
    m = r["memory"]
    if m:
        rss, anon = m["rss_mb"], m["anon_mb"]
        print(
            f"RSS MB: start {rss['start']}, after warm-up ({m['warmup_s']:g} s) "
            f"{fmt(rss['after_warmup'])}, end {rss['end']}, peak {rss['peak']}; growth after"
            f" warm-up {fmt(m['growth_after_warmup_mb'])} MB; slope "
            f"{fmt(m['slope_mb_per_hour'])} MB/h (anon {fmt(m['anon_slope_mb_per_hour'])}"
            f" MB/h, fitted from t={m['slope_fitted_from_s']} s over "
            f"{m['slope_fitted_over_s']} s); anon start {anon['start']} end {anon['end']}"
        )
        if (m["slope_fitted_over_s"] or 0) < 1800:
            print(
                "  (a slope over less than 30 min is mostly allocator high-water noise: "
                "new batch sizes raise RSS in steps; judge growth on a long run)"
            )
    c = r["classifier"]
    if c:
        b, lat = c["batch_size"], c["latency_s"]
        print(
            f"classifier: {b['count']} batches, batch size mean {fmt(b['mean'], '.2f')}, "
            f"histogram {b['buckets']}"
        )
        print(
            f"  inference latency per batch (s): mean {fmt(lat['mean'], '.3f')}, p50 "
            f"{fmt(lat['p50'], '.3f')}, p95 {fmt(lat['p95'], '.3f')}, buckets {lat['buckets']}"
        )
        print(f"  events {c['events']}, outbox dropped {c['outbox_dropped']}")
    th = r["threads"]
    print(
        f"threads: restarts {th['restarts'] or 'none'}, vanished {th['vanished'] or 'none'}, "
        f"at end {th['threads_at_end']}"
    )
    print(
        f"daemon log: {r['log']}; stop: exit {r['stop']['exit_code']} in "
        f"{r['stop']['seconds']} s; outages {len(r['outages'])}; subscriber connects "
        f"{r['subscriber_connects']}"
    )


def sustained(r: dict[str, Any], detect_fps: float) -> tuple[bool, str]:
    """No crop dropped, every camera at >= 95% of detect fps and of the stream's frames."""
    why = []
    for cam, f in r["frames"].items():
        if f["crops_dropped"]:
            why.append(f"{cam} dropped {f['crops_dropped']} crops")
        if f["detect_fps_mean"] is None or f["detect_fps_mean"] < 0.95 * detect_fps:
            why.append(f"{cam} detect fps {f['detect_fps_mean']}")
        if f["read_ratio"] is None or f["read_ratio"] < 0.95:
            why.append(f"{cam} read {f['read_ratio']} of the frames")
    v = r["visits"]
    if v and v["total"]["missed"]:
        why.append(f"{v['total']['missed']} visits missed")
    return not why, "; ".join(why)


def find_max(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for patch in args.patch:
        steps = []
        best = 0
        for n in range(args.start_cameras, args.max_cameras + 1):
            spec = make_spec(
                args,
                cameras=n,
                patch=patch,
                duration=args.step_duration,
                warmup=args.step_duration,
                chaos=False,
            )
            r = analyse(run_once(spec, cache))
            ok, why = sustained(r, args.detect_fps)
            lat = r["visits"]["latency_s"] if r["visits"] else {}
            steps.append(
                {
                    "cameras": n,
                    "sustained": ok,
                    "why": why,
                    "daemon_cpu": r["cpu"].get("daemon_total"),
                    "latency_p95_s": lat.get("p95"),
                    "run": r,
                }
            )
            log(f"find-max patch {patch}: {n} cameras {'ok' if ok else 'NOT sustained: ' + why}")
            if not ok:
                break
            best = n
        out[str(patch)] = {"max_cameras": best, "steps": steps}
    return out


def make_spec(args: argparse.Namespace, **over: Any) -> Spec:
    scale = args.chaos_scale
    spec = Spec(
        cameras=args.cameras, duration=args.duration, visit_every=args.visit_every,
        visit_length=args.visit_length, idle=args.idle, patch=args.patch[0],
        device=args.device, precision=args.precision, detect_fps=args.detect_fps,
        warmup=args.warmup, chaos=args.chaos, camera_kill_every=300.0 * scale,
        broker_restart_every=600.0 * scale, down_for=args.down_for, end_after_s=args.end_after,
        sample_every=args.sample_every,
    )  # fmt: skip
    for k, v in over.items():
        setattr(spec, k, v)
    return spec


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--duration", type=float, default=600, help="seconds measured after READY")
    p.add_argument("--visit-every", type=int, default=30, help="s between a camera's visits")
    p.add_argument(
        "--visit-length",
        type=int,
        default=6,
        help="s the bird stays (>= --visit-every: it never leaves)",
    )
    p.add_argument("--idle", action="store_true", help="no bird at all (noise only)")
    p.add_argument("--patch", type=int, nargs="+", default=[16])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--detect-fps", type=float, default=5.0)
    p.add_argument(
        "--warmup",
        type=float,
        default=600,
        help="s after READY before the 'after warm-up' memory figure",
    )
    p.add_argument("--end-after", type=float, default=5.0, help="visits.end_after_s")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument(
        "--chaos",
        action="store_true",
        help="kill+restart a camera every 300 s, restart the broker every 600 s",
    )
    p.add_argument(
        "--chaos-scale",
        type=float,
        default=1.0,
        help="multiply the chaos periods (0.1: every 30 s and 60 s)",
    )
    p.add_argument("--down-for", type=float, default=5.0, help="s a killed thing stays down")
    p.add_argument(
        "--find-max",
        action="store_true",
        help="add cameras until one is not sustained, for each --patch",
    )
    p.add_argument("--start-cameras", type=int, default=1)
    p.add_argument("--max-cameras", type=int, default=8)
    p.add_argument("--step-duration", type=float, default=120)
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "camtrap-bench",
    )
    p.add_argument(
        "--reanalyse",
        type=Path,
        metavar="WORKDIR",
        help="analyse a finished run again from its work dir (run.pickle)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--as-daemon"]:
        return daemon_main(raw[1])
    args = parse_args(raw)
    if shutil.which("ffmpeg") is None:
        print("bench/pipeline.py needs ffmpeg (make test installs it)", file=sys.stderr)
        return 2
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    commit = git_commit()  # now: the code under test, whatever is committed during a long run
    result: dict[str, Any] = {}
    if args.reanalyse is not None:
        with (args.reanalyse / "run.pickle").open("rb") as f:
            result["run"] = analyse(pickle.load(f))  # our own file
    elif args.find_max:
        result["find_max"] = find_max(args, args.cache_dir)
    else:
        result["run"] = analyse(run_once(make_spec(args), args.cache_dir))
    result["machine"] = machine(commit)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    m = result["machine"]
    print(
        f"{m['date']}  {m['cpu']}, {m['memory']}, Python {m['python']}, "
        f"torch {m.get('torch')}{', ' + m['gpu'] if 'gpu' in m else ''}, commit {m['commit']}"
    )
    print(f"command: {m['command']}")
    if "run" in result:
        print_run(result["run"])
    for patch, fm in result.get("find_max", {}).items():
        print(f"\n== find-max, patch {patch}: {fm['max_cameras']} cameras sustained")
        for step in fm["steps"]:
            print(
                f"  {step['cameras']} cameras: {'ok' if step['sustained'] else 'no'}  daemon "
                f"cpu {fmt(step['daemon_cpu'])}  latency p95 {fmt(step['latency_p95_s'])}  "
                f"{step['why']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
