"""Real servers for tests, all on 127.0.0.1: a mosquitto broker, an RTSP camera, an MQTT
recorder, and synthetic video files.

Nothing here is a mock: faults in tests are real faults (a SIGKILLed camera, a SIGSTOPped
one, a broker restarted on the same port), so the daemon's recovery code is exercised the
way it will be in the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import paho.mqtt.client as mqtt

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
RTSP_SERVER_SCRIPT = TESTS_DIR / "rtsp_server.py"
SAMPLE_CLIP_SCRIPT = REPO_DIR / "scripts" / "make-sample-clip.sh"
SYSTEM_PYTHON = "/usr/bin/python3"  # has python3-gi; the venv does not
MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"

# What scripts/make-sample-clip.sh draws, for tests that need the truth: a dark ellipse
# visits in every 10 s cycle from 2 s to 7 s (enters at 2 s, fully gone after 7 s).
CLIP_CYCLE_S = 10.0
CLIP_VISIT_S = (2.0, 7.0)

# cv2 options that make an RTSP open fast (about 0.2 s instead of 2 s); read at each open.
OPENCV_FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp|analyzeduration;0|probesize;32"


def free_port() -> int:
    """A TCP port that was free a moment ago (for servers that cannot report a port-0 bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen[Any] | None, sig: int, timeout: float = 5.0) -> None:
    """Send `sig`, wake it if it was SIGSTOPped, wait; SIGKILL if it will not go."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
        if sig != signal.SIGKILL:
            proc.send_signal(signal.SIGCONT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class _Leftovers:
    """What a server object owns outside Python: a child process and temp files. Run by
    close(), or by weakref.finalize when a test forgot (at the latest at interpreter exit),
    so no broker or camera outlives the test run."""

    def __init__(self, *paths: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.paths = list(paths)

    def __call__(self) -> None:
        _stop_process(self.proc, signal.SIGKILL)
        for path in self.paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


class Mosquitto:
    """Debian's mosquitto as a child process on 127.0.0.1 with a private temp config.

    Anonymous by default; with `username`/`password` a password file is made with
    `mosquitto_passwd` and anonymous access is refused. With `tls=True` a second listener
    on `tls_port` speaks TLS with a server certificate for 127.0.0.1/localhost signed by a
    fresh CA (`ca_file`). The plain listener on `port` always stays, so a test can watch a
    TLS client's traffic with a plain `MqttRecorder` (same credentials).

    Refusals for broker-fault tests: `acl` is the text of a mosquitto `acl_file` (topic
    lines before any `user` line are for anonymous clients; `set_acl` changes it while
    running), `set_password` changes the user's password while running (mosquitto then
    drops that user's connection), `add_user` adds another user (e.g. for a recorder that a
    password change must not disconnect). `make_expired_server_cert(broker.dir)` before
    `start()` makes the TLS listener serve an expired certificate.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        port: int | None = None,
        tls_port: int | None = None,
        acl: str | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host = HOST
        self.username = username
        self.password = password
        self.tls = tls
        self._fixed_ports = port is not None
        self._port = port or free_port()
        self._tls_port = (tls_port or free_port()) if tls else None
        self.dir = Path(tempfile.mkdtemp(prefix="camtrap-mosquitto-"))
        self.conf_file = self.dir / "mosquitto.conf"
        self.log_file = self.dir / "mosquitto.log"
        self.acl_file = self.dir / "acl" if acl is not None else None
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._leftovers = _Leftovers(self.dir)
        self._finalizer = weakref.finalize(self, self._leftovers)
        if username is not None and password is not None:
            subprocess.run(
                ["mosquitto_passwd", "-b", "-c", str(self.dir / "passwd"), username, password],
                check=True,
                capture_output=True,
                timeout=30,
            )
        if tls:
            self.ca_file = make_tls_certs(self.dir)
        if self.acl_file is not None and acl is not None:
            self.acl_file.write_text(acl)
        self._write_config()

    @property
    def port(self) -> int:
        return self._port

    @property
    def tls_port(self) -> int | None:
        return self._tls_port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        return None if self._tls_port is None else f"mqtts://{self.host}:{self._tls_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> str:
        """The broker's log so far (connections, auth failures): handy in assert messages."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _write_config(self) -> None:
        user = pwd.getpwuid(os.getuid()).pw_name  # as root, mosquitto drops to this user
        lines = [
            f"user {user}",
            "persistence false",
            f"log_dest file {self.log_file}",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "per_listener_settings false",
            f"listener {self._port} {self.host}",
        ]
        if self.tls:
            lines += [
                f"listener {self._tls_port} {self.host}",
                f"cafile {self.dir / 'ca.crt'}",
                f"certfile {self.dir / 'server.crt'}",
                f"keyfile {self.dir / 'server.key'}",
                "require_certificate false",
            ]
        if self.username is not None:
            lines += ["allow_anonymous false", f"password_file {self.dir / 'passwd'}"]
        else:
            lines += ["allow_anonymous true"]
        if self.acl_file is not None:
            lines += [f"acl_file {self.acl_file}"]
        self.conf_file.write_text("\n".join(lines) + "\n")

    def _ports(self) -> list[int]:
        return [self._port] + ([self._tls_port] if self._tls_port is not None else [])

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait until every listener accepts connections (about 30 ms)."""
        if self.running:
            return self
        for attempt in range(3):
            try:
                self._start_once(timeout)
                return self
            except _PortTaken:
                # Another process took the port between free_port() and our bind.
                if self._fixed_ports or attempt == 2:
                    raise
                self._port = free_port()
                if self.tls:
                    self._tls_port = free_port()
                self._write_config()
        return self

    def _start_once(self, timeout: float) -> None:
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._leftovers.proc = self.proc
        deadline = time.monotonic() + timeout
        while True:
            text = self.log
            if self.proc.poll() is not None:
                if "Address already in use" in text[log_start:]:
                    raise _PortTaken(f"port taken; mosquitto log:\n{text}")
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode} on start; log:\n{text}"
                )
            # "running" is logged once every listener is bound: a port that merely accepts
            # connections could belong to someone else.
            if " running" in text[log_start:] and all(
                port_open(self.host, p) for p in self._ports()
            ):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"mosquitto did not listen in {timeout} s; log:\n{self.log}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): clients see their connection closed."""
        _stop_process(self.proc, signal.SIGTERM)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), like a crashed or unplugged broker."""
        _stop_process(self.proc, signal.SIGKILL)

    def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP: mosquitto re-reads its password and ACL files; returns once it has."""
        if self.proc is None or not self.running:
            raise RuntimeError(f"{self!r} is not running")
        before = self.log.count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log.count("Reloading config") == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"mosquitto did not reload in {timeout} s; log:\n{self.log}")
            time.sleep(0.01)
        time.sleep(0.05)  # the log line comes first, then the files are read and applied

    def set_acl(self, acl: str) -> None:
        """Replace the ACL file's text and reload (the broker must have been made with one)."""
        if self.acl_file is None:
            raise RuntimeError("Mosquitto(acl=...) was not given an ACL file")
        self.acl_file.write_text(acl)
        self.reload()

    def add_user(self, username: str, password: str) -> None:
        """Another user in the password file (read at start, or at the next reload)."""
        if self.username is None:
            raise RuntimeError("Mosquitto(username=...) has no password file")
        subprocess.run(
            ["mosquitto_passwd", "-b", str(self.dir / "passwd"), username, password],
            check=True, capture_output=True, timeout=30,
        )

    def set_password(self, password: str) -> None:
        """Change the user's password while running: its connected clients are dropped."""
        if self.username is None:
            raise RuntimeError("Mosquitto(username=...) has no password file")
        self.add_user(self.username, password)
        self.password = password
        self.reload()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down `down_for` seconds, start again on the SAME port(s)."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        self._fixed_ports = True
        self.start()

    def close(self) -> None:
        """Stop and delete the temp dir (config, certificates, log)."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mosquitto({self.url}, tls_port={self._tls_port}, user={self.username!r})"


class _PortTaken(RuntimeError):
    pass


def make_tls_certs(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 and localhost (EC P-256, fast) made with
    the openssl CLI into `directory`; returns the CA certificate path (`ca.crt`).

    Files: ca.crt, ca.key, server.crt, server.key.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=camtrap test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return d / "ca.crt"


def make_expired_server_cert(directory: Path) -> Path:
    """Replace `server.crt` in a `make_tls_certs` directory with one that expired in 2020,
    signed by the same CA (`openssl ca` can set past dates; `openssl x509` in 3.0 cannot),
    so a client that trusts the CA fails on the date alone. Returns its path."""
    d = Path(directory)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca = testca\n"
        "[testca]\ndatabase = index.txt\nnew_certs_dir = .\ncertificate = ca.crt\n"
        "private_key = ca.key\nserial = serial\ndefault_md = sha256\npolicy = any\n"
        "unique_subject = no\n"
        "[any]\ncommonName = supplied\n"
    )
    subprocess.run(
        ["openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-in", "server.csr",
         "-out", "server.crt", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
         "-extfile", "server.ext"],
        check=True, capture_output=True, timeout=30, cwd=d,
    )
    return d / "server.crt"


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and reads it forever, never
    answering: a broker whose port is open but whose MQTT never sends a CONNACK (a hung
    broker, or something else listening on its port). `accepted` counts connections."""

    def __init__(self) -> None:
        self._sock = socket.create_server((HOST, 0))
        self.host = HOST
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                if key.fileobj is self._sock:
                    conn, _addr = self._sock.accept()
                    self.accepted += 1
                    self._conns.append(conn)
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the client gave up: forget it
                    sel.unregister(conn)
                    conn.close()
        sel.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RtspServer:
    """tests/rtsp_server.py (GStreamer's RTSP server) as a subprocess on 127.0.0.1.

    `mode="live"`: a synthetic live camera (see rtsp_server.py: a 40 px dark ball wandering
    over a textured green-grey background; `object_period` makes it come and go).
    `mode="file"`: serve `file` (H.264 mp4/mkv; `transcode=True` for other codecs) once.
    Faults: `kill()` (SIGKILL), `pause()`/`resume()` (SIGSTOP/SIGCONT: a hung camera),
    `restart()` on the same port.
    """

    def __init__(
        self,
        mode: str = "live",
        *,
        file: str | os.PathLike[str] | None = None,
        transcode: bool = False,
        mount: str = "/cam",
        width: int = 640,
        height: int = 360,
        fps: int = 15,
        object_period: float = 0.0,
        port: int | None = None,
        startup_timeout: float = 15.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if mode not in ("live", "file"):
            raise ValueError(f"mode must be live or file, got {mode!r}")
        if mode == "file" and file is None:
            raise ValueError("mode='file' needs file=")
        self.mode = mode
        self.file = None if file is None else Path(file)
        self.transcode = transcode
        self.mount = mount
        self.width = width
        self.height = height
        self.fps = fps
        self.object_period = object_period
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)  # e.g. ["--loop", "--mark", "2", "--marks", F]
        self._port: int | None = port
        self.proc: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="camtrap-rtsp-", suffix=".log")
        os.close(fd)
        self._stderr_path = Path(name)
        self._leftovers = _Leftovers(self._stderr_path)
        self._finalizer = weakref.finalize(self, self._leftovers)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RtspServer has not been started")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"rtsp://{HOST}:{self.port}{self.mount}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("RtspServer has not been started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def stderr(self) -> str:
        """What the server wrote to stderr (GStreamer warnings, tracebacks)."""
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _command(self) -> list[str]:
        cmd = [
            SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT),
            "--port", str(self._port or 0),
            "--mount", self.mount,
            "--mode", self.mode,
            "--width", str(self.width),
            "--height", str(self.height),
            "--fps", str(self.fps),
            "--object-period", str(self.object_period),
        ]  # fmt: skip
        if self.file is not None:
            cmd += ["--file", str(self.file)]
        if self.transcode:
            cmd += ["--transcode"]
        return cmd + self.extra_args

    def start(self) -> Self:
        """Start and wait for its `PORT n` line; raises with its stderr if it dies first."""
        if self.running:
            return self
        deadline = time.monotonic() + self.startup_timeout
        port_deadline = time.monotonic() + 3.0
        while True:
            try:
                self._start_once(deadline)
                return self
            except _PortTaken as exc:
                # A restart can race a socket that is still closing: try again briefly.
                if time.monotonic() > min(deadline, port_deadline):
                    raise RuntimeError(
                        f"rtsp_server.py cannot listen on 127.0.0.1:{self._port}: "
                        f"port taken for 3 s; last stderr:\n{str(exc)[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def _start_once(self, deadline: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        with open(self._stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        self._leftovers.proc = self.proc
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = b""
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise TimeoutError(
                        f"rtsp_server.py printed no PORT line in {self.startup_timeout} s; "
                        f"stderr:\n{self.stderr}"
                    )
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    code = self.proc.wait(timeout=5)
                    text = self.stderr
                    if self._port and "cannot listen" in text:
                        raise _PortTaken(text)
                    raise RuntimeError(
                        f"rtsp_server.py exited with {code} before serving; "
                        f"command: {' '.join(self._command())}\nstderr:\n{text}"
                    )
                line += chunk
        word, _, value = line.decode().strip().partition(" ")
        if word != "PORT" or not value.isdigit():
            self.kill()
            raise RuntimeError(f"rtsp_server.py printed {line!r}, expected 'PORT <n>'")
        self._port = int(value)

    def stop(self) -> None:
        """Graceful stop (SIGTERM; works on a paused server too)."""
        _stop_process(self.proc, signal.SIGTERM)
        self._close_stdout()

    def kill(self) -> None:
        """SIGKILL: the camera vanishes; a reader's next read fails within milliseconds."""
        _stop_process(self.proc, signal.SIGKILL)
        self._close_stdout()

    def pause(self) -> None:
        """SIGSTOP: the camera hangs with its sockets open (reads block until a timeout)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop (SIGKILL), stay down `down_for` seconds, serve again on the SAME port."""
        port = self.port
        self.kill()
        if down_for > 0:
            time.sleep(down_for)
        self._port = port
        self.start()

    def _close_stdout(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def close(self) -> None:
        """Kill and delete the stderr log."""
        self._close_stdout()
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url if self._port else "not started"
        return f"RtspServer({self.mode}, {where})"


@dataclass(frozen=True)
class Message:
    """One received MQTT message. `time` is time.time() at receipt; `index` its order."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    time: float
    index: int

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.payload)

    def __str__(self) -> str:
        body = self.text if len(self.payload) <= 200 else f"<{len(self.payload)} bytes>"
        flags = " retained" if self.retain else ""
        return f"#{self.index} {self.topic} qos{self.qos}{flags}: {body}"


Predicate = Callable[[Message], bool]


def _topic_predicate(topic_filter: str) -> Predicate:
    def on_topic(m: Message) -> bool:
        return mqtt.topic_matches_sub(topic_filter, m.topic)

    on_topic.__name__ = f"topic {topic_filter!r}"
    return on_topic


@dataclass(eq=False)
class MqttRecorder:
    """Records everything published on `topic` (a filter, default `#`) at a real broker.

    paho-mqtt 2.x with loop_start(): it reconnects by itself (0.1-1 s back-off) and
    re-subscribes on every connect, so it survives a broker restart.
    """

    host: str
    port: int
    topic: str = "#"
    username: str | None = None
    password: str | None = None
    ca_file: str | os.PathLike[str] | None = None
    client_id: str = ""
    qos: int = 1
    _lock: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _messages: list[Message] = field(default_factory=list, init=False, repr=False)
    _ready: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _client: mqtt.Client | None = field(default=None, init=False, repr=False)
    connects: int = field(default=0, init=False)
    disconnects: int = field(default=0, init=False)
    last_reason: str = field(default="", init=False)

    @classmethod
    def for_broker(
        cls, broker: Mosquitto, topic: str = "#", *, tls: bool = False, **kwargs: Any
    ) -> MqttRecorder:
        """A recorder for a `Mosquitto`, with its credentials (and CA and TLS port if tls)."""
        port = broker.port
        if tls:
            if broker.tls_port is None:
                raise ValueError(f"{broker!r} has no TLS listener")
            port = broker.tls_port
            kwargs.setdefault("ca_file", broker.ca_file)
        kwargs.setdefault("username", broker.username)
        kwargs.setdefault("password", broker.password)
        return cls(broker.host, port, topic, **kwargs)

    # ---- lifecycle

    def start(self, timeout: float = 10.0) -> Self:
        """Connect, subscribe, and wait for the SUBACK (raises on timeout)."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.ca_file is not None:
            client.tls_set(ca_certs=str(self.ca_file))
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        try:
            self.wait_ready(timeout)
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._ready.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def ready(self) -> bool:
        """Connected and subscribed."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until connected and subscribed (again, after a broker restart)."""
        if not self._ready.wait(timeout):
            raise AssertionError(
                f"MqttRecorder not subscribed to {self.topic!r} at {self.host}:{self.port} "
                f"within {timeout} s (connects={self.connects}, last={self.last_reason!r})"
            )

    # ---- paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.last_reason = str(reason)
        if reason.is_failure:
            return
        self.connects += 1
        client.subscribe(self.topic, qos=self.qos)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        if reasons and not reasons[0].is_failure:
            self._ready.set()
        else:
            self.last_reason = f"subscribe refused: {reasons}"

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._ready.clear()
        self.disconnects += 1
        self.last_reason = f"disconnected: {reason}"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            m = Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                retain=bool(msg.retain),
                qos=int(msg.qos),
                time=time.time(),
                index=len(self._messages),
            )
            self._messages.append(m)
            self._lock.notify_all()

    # ---- reading

    def all(self) -> list[Message]:
        """A snapshot of every message received so far, in order."""
        with self._lock:
            return list(self._messages)

    def messages(self, topic_filter: str = "#", since: int = 0) -> list[Message]:
        """Messages whose topic matches `topic_filter` (MQTT wildcards), from index `since`."""
        return [m for m in self.all()[since:] if mqtt.topic_matches_sub(topic_filter, m.topic)]

    def mark(self) -> int:
        """The index the next message will get: pass it as `since` to ignore older ones."""
        with self._lock:
            return len(self._messages)

    def clear(self) -> None:
        """Forget what was received (indexes keep counting from 0 again)."""
        with self._lock:
            self._messages.clear()

    def wait_for(
        self,
        predicate: Predicate | str,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Message:
        """The first message (from index `since`, already received or arriving within
        `timeout` s) that satisfies `predicate`; a str is a topic filter. On timeout raises
        AssertionError listing what did arrive, so a failing test shows its evidence.
        """
        pred = _topic_predicate(predicate) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        checked = since
        with self._lock:
            while True:
                for m in self._messages[checked:]:
                    if pred(m):
                        return m
                checked = max(checked, len(self._messages))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            got = list(self._messages)
        raise AssertionError(self._describe(pred, timeout, got, since))

    def wait_for_count(
        self, topic_filter: str, count: int, timeout: float = 10.0, *, since: int = 0
    ) -> list[Message]:
        """Wait until at least `count` messages match `topic_filter`; return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [
                    m
                    for m in self._messages[since:]
                    if mqtt.topic_matches_sub(topic_filter, m.topic)
                ]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    break
                self._lock.wait(remaining)
            got = list(self._messages)
        if len(found) < count:
            raise AssertionError(
                f"wanted {count} messages on {topic_filter!r}, got {len(found)}.\n"
                + self._describe(None, timeout, got, since)
            )
        return found

    def _describe(
        self, predicate: Predicate | None, timeout: float, got: Sequence[Message], since: int
    ) -> str:
        what = getattr(predicate, "__name__", repr(predicate)) if predicate else "messages"
        head = (
            f"no message matching {what} within {timeout} s on {self.topic!r} at "
            f"{self.host}:{self.port} (connects={self.connects}, "
            f"disconnects={self.disconnects}, last={self.last_reason!r}); "
            f"received {len(got)} (from #{since}):"
        )
        lines = [f"  {m}" for m in got[since:]][-60:]
        return "\n".join([head, *lines]) if lines else head + " none"

    # ---- publishing (for tests that drive the daemon over MQTT)

    def publish(
        self,
        topic: str,
        payload: str | bytes | None = None,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 5.0,
    ) -> None:
        """Publish through this recorder's connection and wait until the broker has it."""
        if self._client is None:
            raise RuntimeError("MqttRecorder is not started")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)


def iter_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decode a video file with cv2 (BGR frames)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def make_clip(
    path: str | os.PathLike[str],
    seconds: int = 20,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
) -> Path:
    """scripts/make-sample-clip.sh: an H.264 mp4 of a dark bird-sized ellipse visiting a
    textured background from 2 s to 7 s of every 10 s (see CLIP_VISIT_S)."""
    out = Path(path)
    result = subprocess.run(
        [str(SAMPLE_CLIP_SCRIPT), str(out), str(seconds), str(width), str(height), str(fps)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"make-sample-clip.sh failed ({result.returncode}):\n{result.stderr}")
    return out


def make_video(
    path: str | os.PathLike[str],
    frames: Sequence[np.ndarray],
    fps: float = 15,
    *,
    codec: str = "h264",
) -> Path:
    """Write `frames` (BGR or grey uint8, all one size) as an mp4, for exact known truth.

    codec="h264" pipes raw frames to ffmpeg/libx264 (crf 10, yuv420p, no B-frames): cv2 and
    the RTSP server's file mode can both read it. codec="mp4v" uses cv2.VideoWriter (MPEG-4
    part 2; cv2 reads it, the RTSP file mode needs transcode=True). cv2 in this venv cannot
    write H.264 itself.
    """
    import cv2

    if not frames:
        raise ValueError("no frames")
    bgr = [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f for f in frames]
    h, w = bgr[0].shape[:2]
    for i, f in enumerate(bgr):
        if f.shape != (h, w, 3) or f.dtype != np.uint8:
            raise ValueError(f"frame {i} is {f.shape} {f.dtype}, expected {(h, w, 3)} uint8")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if codec == "mp4v":
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter cannot write {out}")
        for f in bgr:
            writer.write(f)
        writer.release()
        return out
    if codec != "h264":
        raise ValueError(f"codec must be h264 or mp4v, got {codec!r}")
    if w % 2 or h % 2:
        raise ValueError(f"h264/yuv420p needs even sizes, got {w}x{h}")
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
        "-sws_flags", "accurate_rnd+full_chroma_int+bitexact",  # else a grey tint of 1-4
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "10", "-pix_fmt", "yuv420p",
        "-g", str(max(1, round(fps))), "-bf", "0", "-movflags", "+faststart", "-an", str(out),
    ]  # fmt: skip
    data = b"".join(np.ascontiguousarray(f).tobytes() for f in bgr)
    result = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}):\n{result.stderr.decode()}")
    return out


def open_capture(url: str, timeout_ms: int = 3000) -> Any:
    """cv2.VideoCapture for an RTSP url the way FACTS.md says: fast open, bounded reads.

    OPENCV_FFMPEG_CAPTURE_OPTIONS is set only for the open and then restored, so it does not
    leak into (and hide bugs in) code under test in the same process.
    """
    import cv2

    old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = OPENCV_FFMPEG_CAPTURE_OPTIONS
    try:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms]
        params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    finally:
        if old is None:
            del os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old
