"""A real Home Assistant for tests: HA 2025.4.4 as a subprocess from its own venv (Python 3.13,
made by `make test` or `make ha-env`, i.e. scripts/install-homeassistant.sh), with the MQTT
integration pointed at a test broker, so MQTT discovery is checked by the real thing and not a
schema copy.

What the temp config dir holds (nothing needs the network; HA runs with --skip-pip):
- configuration.yaml: fixed location/time zone/units, `http` on 127.0.0.1:<free port>,
  `logger`, and `mqtt_statestream`, which republishes every entity state change (retained)
  to `<statestream>/<domain>/<object_id>/state`, with timestamps (`last_changed`,
  `last_updated`) and each attribute (JSON) on sibling topics.
- .storage/core.config_entries: an MQTT entry for the broker (discovery on prefix
  `homeassistant`, birth `homeassistant/status` `online`, will `offline`).
- .storage/onboarding (all steps done) and .storage/auth: an admin user with a long-lived
  access token (`token`), so the REST API (`api_state`, `render_template`) and the websocket
  API (`ws`, `entity_registry`, `device_registry`) answer.

Reading what HA made of a discovery message, best first:
- `wait_state(entity_id, value)` / `state_history(entity_id)`: statestream, over MQTT
  (every change, in order; an event entity's state is the ISO time of its last event).
- `api_state(entity_id)`: the REST API (state, attributes, last_changed) right now.
- `wait_entity(unique_id)` / `entity_registry()` / `device_registry()`: the live registries
  over the websocket API (no delay); after `stop()` they are read from .storage instead.
- `stored_entity_registry(...)`: .storage/core.entity_registry, which HA writes up to 10 s
  after a change (at once on a graceful stop); it waits for a predicate.
- `errors()`: WARNING/ERROR records of the HA log that mention mqtt or discovery.

Boot: HA publishes its birth message about 8 s after the process starts (2 cores, measured;
`start()` allows 180 s) and returns then (`boot_seconds`), with discovery subscribed and HTTP
serving. A graceful `stop()` makes HA publish `homeassistant/status` `offline` itself; a
restart publishes `online` again (the cue for a daemon to republish its discovery).

Usage (skipped, with the reason, when the HA venv is missing)::

    import pytest
    from tests.homeassistant import HomeAssistant, discovery_topic, requires_homeassistant

    @pytest.fixture
    def home_assistant(mosquitto: Mosquitto) -> Iterator[HomeAssistant]:
        with HomeAssistant.for_broker(mosquitto) as ha:   # start() waits for the birth
            yield ha

    @requires_homeassistant
    def test_discovery(mqtt_recorder: MqttRecorder, home_assistant: HomeAssistant) -> None:
        config = {"name": "Last species", "unique_id": "feeder_last_species",
                  "state_topic": "feeder/species", "device": {...}, "origin": {...}}
        mqtt_recorder.publish(discovery_topic("sensor", "feeder_last_species"),
                              json.dumps(config), retain=True)
        entity_id = home_assistant.wait_entity("feeder_last_species")["entity_id"]
        mqtt_recorder.publish("feeder/species", "Parus major")
        home_assistant.wait_state(entity_id, "Parus major")
        assert not home_assistant.errors(), home_assistant.log_tail()

(The module is named `homeassistant` but HA's own package never enters the test venv, so
there is no clash.) For speed a module- or session-scoped fixture can share one HA between
tests that use distinct unique_ids and topics.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from tests.servers import (
    HOST,
    REPO_DIR,
    Message,
    Mosquitto,
    MqttRecorder,
    _Leftovers,
    _stop_process,
    free_port,
    port_open,
)

HA_VERSION = "2025.4.4"
HA_VENV = Path(os.environ.get("CAMTRAP_HA_VENV", REPO_DIR / ".ha-venv"))
HA_STAMP = ".camtrap-ha-installed"  # written last by scripts/install-homeassistant.sh
DISCOVERY_PREFIX = "homeassistant"
STATESTREAM_BASE = "ha_state"


def ha_skip_reason(venv: Path = HA_VENV) -> str | None:
    """Why HA tests cannot run here (the HA venv is missing), or None when they can."""
    if not venv.exists():
        return (
            f"Home Assistant venv {venv} is missing: run `make ha-env` "
            "(scripts/install-homeassistant.sh, about 3 min, needs Python 3.13)"
        )
    return None


requires_homeassistant = pytest.mark.skipif(
    ha_skip_reason() is not None, reason=ha_skip_reason() or ""
)

# A HA log record starts with "2025-05-01 12:00:00.123 LEVEL (thread) [logger] message";
# tracebacks and multi-line messages continue on the following lines.
_RECORD_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)

# The websocket API, spoken by HA's venv python (it has aiohttp; the test venv does not).
_WS_CLIENT = r"""
import asyncio, json, sys
import aiohttp

async def main():
    req = json.load(sys.stdin)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(req["url"]) as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": req["token"]})
            reply = await ws.receive_json()
            if reply["type"] != "auth_ok":
                sys.exit(f"websocket auth failed: {reply}")
            await ws.send_json({"id": 1, **req["message"]})
            while True:
                reply = await ws.receive_json()
                if reply.get("id") == 1 and reply.get("type") == "result":
                    print(json.dumps(reply))
                    return

asyncio.run(asyncio.wait_for(main(), 30))
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_jwt(claims: Mapping[str, Any], key: str) -> str:
    """An HS256 JWT, as HA's auth makes for an access token (no PyJWT in the test venv)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode()
    signature = hmac.new(key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"


def _message(topic: str, payload: str) -> dict[str, Any]:
    return {"topic": topic, "payload": payload, "qos": 0, "retain": False}


def _storage(key: str, data: Any, version: int = 1, minor_version: int = 1) -> str:
    return json.dumps(
        {"version": version, "minor_version": minor_version, "key": key, "data": data},
        indent=2,
    )


class HomeAssistant:
    """A real Home Assistant (subprocess) using the MQTT broker at `broker_host:broker_port`.

    `start()` waits for HA's birth message; `stop()` is graceful (registries are flushed to
    .storage); `close()` also deletes the config dir (`keep_dir=True` keeps it, e.g. for a
    post-mortem). `restart()` keeps the config dir and .storage, like a real HA restart.
    """

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        discovery_prefix: str = DISCOVERY_PREFIX,
        statestream_base: str = STATESTREAM_BASE,
        time_zone: str = "UTC",
        log_levels: Mapping[str, str] | None = None,
        extra_yaml: str = "",
        venv: Path = HA_VENV,
        keep_dir: bool = False,
    ) -> None:
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.username = username
        self.password = password
        self.discovery_prefix = discovery_prefix
        self.statestream_base = statestream_base.rstrip("/")
        self.time_zone = time_zone
        self.log_levels = dict(log_levels or {})
        self.extra_yaml = extra_yaml
        self.venv = Path(venv)
        self.python = self.venv / "bin" / "python"
        self.http_port = free_port()
        self.config_dir = Path(tempfile.mkdtemp(prefix="camtrap-ha-"))
        self.log_file = self.config_dir / "home-assistant.log"
        self.console_file = self.config_dir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_seconds: float | None = None
        self.token = ""
        # Everything on the broker, from before HA starts: birth, statestream, discovery.
        self.mqtt = MqttRecorder(
            broker_host,
            broker_port,
            "#",
            username=username,
            password=password,
            client_id=f"camtrap-ha-harness-{uuid.uuid4().hex[:8]}",
        )
        self._mqtt_started = False
        self._leftovers = _Leftovers() if keep_dir else _Leftovers(self.config_dir)
        self._finalizer = weakref.finalize(self, self._leftovers)
        self._write_config()

    @classmethod
    def for_broker(cls, broker: Mosquitto, **kwargs: Any) -> HomeAssistant:
        """A HomeAssistant for a `Mosquitto` (its plain listener and credentials)."""
        kwargs.setdefault("username", broker.username)
        kwargs.setdefault("password", broker.password)
        return cls(broker.host, broker.port, **kwargs)

    # ---- config dir

    def _write_config(self) -> None:
        levels = {"default": "info", **self.log_levels}
        default = levels.pop("default")
        logs = "".join(f"    {name}: {level}\n" for name, level in levels.items())
        logs = f"  logs:\n{logs}" if logs else ""
        yaml = (
            "homeassistant:\n"
            "  name: camtrap test\n"
            "  latitude: 52.52\n"
            "  longitude: 13.40\n"
            "  elevation: 34\n"
            "  unit_system: metric\n"
            f"  time_zone: {self.time_zone}\n"
            "  country: DE\n"
            "  currency: EUR\n"
            "  language: en\n"
            "http:\n"
            f"  server_host: {HOST}\n"
            f"  server_port: {self.http_port}\n"
            "logger:\n"
            f"  default: {default}\n"
            f"{logs}"
            "mqtt_statestream:\n"
            f"  base_topic: {self.statestream_base}\n"
            "  publish_attributes: true\n"
            "  publish_timestamps: true\n"
        )
        if self.extra_yaml:
            yaml += self.extra_yaml.rstrip("\n") + "\n"
        (self.config_dir / "configuration.yaml").write_text(yaml)

        storage = self.config_dir / ".storage"
        storage.mkdir(exist_ok=True)
        now = datetime.now(UTC).isoformat()
        status_topic = f"{self.discovery_prefix}/status"
        data: dict[str, Any] = {"broker": self.broker_host, "port": self.broker_port}
        if self.username is not None:
            data |= {"username": self.username, "password": self.password}
        mqtt_entry = {
            "created_at": now,
            "data": data,
            "disabled_by": None,
            "discovery_keys": {},
            "domain": "mqtt",
            "entry_id": uuid.uuid4().hex.upper()[:26],
            "minor_version": 2,
            "modified_at": now,
            "options": {
                "discovery": True,
                "discovery_prefix": self.discovery_prefix,
                "birth_message": _message(status_topic, "online"),
                "will_message": _message(status_topic, "offline"),
            },
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
            "source": "user",
            "subentries": [],
            "title": self.broker_host,
            "unique_id": None,
            "version": 1,
        }
        (storage / "core.config_entries").write_text(
            _storage("core.config_entries", {"entries": [mqtt_entry]}, minor_version=5)
        )
        (storage / "onboarding").write_text(
            _storage(
                "onboarding",
                {"done": ["user", "core_config", "analytics", "integration"]},
                version=4,
            )
        )
        self._write_auth(storage, now)

    def _write_auth(self, storage: Path, now: str) -> None:
        user_id = uuid.uuid4().hex
        token_id = uuid.uuid4().hex
        jwt_key = secrets.token_hex(64)
        auth = {
            "users": [
                {
                    "id": user_id,
                    "group_ids": ["system-admin"],
                    "is_owner": True,
                    "is_active": True,
                    "name": "camtrap tests",
                    "system_generated": False,
                    "local_only": False,
                }
            ],
            "groups": [{"id": "system-admin"}, {"id": "system-users"}, {"id": "system-read-only"}],
            "credentials": [],
            "refresh_tokens": [
                {
                    "id": token_id,
                    "user_id": user_id,
                    "client_id": None,
                    "client_name": "camtrap tests",
                    "client_icon": None,
                    "token_type": "long_lived_access_token",
                    "created_at": now,
                    "access_token_expiration": 3650 * 86400,
                    "token": secrets.token_hex(64),
                    "jwt_key": jwt_key,
                    "last_used_at": None,
                    "last_used_ip": None,
                    "expire_at": None,
                    "credential_id": None,
                    "version": HA_VERSION,
                }
            ],
        }
        (storage / "auth").write_text(_storage("auth", auth))
        iat = int(time.time()) - 60
        self.token = _hs256_jwt({"iss": token_id, "iat": iat, "exp": iat + 3650 * 86400}, jwt_key)

    # ---- lifecycle

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def start(self, timeout: float = 180.0) -> Self:
        """Start HA and wait for its birth message (`<prefix>/status` `online`) and a
        working REST API. Raises with the log tail if HA exits, falls into recovery mode,
        or is not up within `timeout` s. Sets `boot_seconds`."""
        if self.running:
            return self
        reason = ha_skip_reason(self.venv)
        if reason is not None:
            raise RuntimeError(reason)
        if not (self.venv / HA_STAMP).exists() or not self.python.exists():
            raise RuntimeError(
                f"Home Assistant venv {self.venv} is incomplete (no {HA_STAMP}): "
                "rerun `make ha-env`"
            )
        if self._mqtt_started:
            self.mqtt.wait_ready()  # it reconnects by itself, e.g. after a broker restart
        else:
            self.mqtt.start()
            self._mqtt_started = True
        status_topic = f"{self.discovery_prefix}/status"
        since = self.mqtt.mark()
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
        }
        cmd = [
            str(self.python), "-m", "homeassistant",
            "--config", str(self.config_dir),
            "--log-file", str(self.log_file),
            "--skip-pip", "--log-no-color",
        ]  # fmt: skip
        began = time.monotonic()
        with open(self.console_file, "ab") as console:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                env=env,
                cwd=self.config_dir,
                start_new_session=True,
            )
        self._leftovers.proc = self.proc
        deadline = began + timeout
        while True:
            born = [m for m in self.mqtt.messages(status_topic, since) if m.text == "online"]
            if born:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Home Assistant exited with {self.proc.returncode} during start\n"
                    f"{self.log_tail()}\nconsole:\n{self._console_tail()}"
                )
            if "recovery mode" in self.log[log_start:].lower():
                self.kill()
                raise RuntimeError(
                    "Home Assistant started in recovery mode (a missing package? see "
                    f"scripts/install-homeassistant.sh)\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"Home Assistant sent no birth message on {status_topic!r} in {timeout} s"
                    f"\n{self.log_tail()}\nconsole:\n{self._console_tail()}"
                )
            time.sleep(0.1)
        while not port_open(HOST, self.http_port):  # up long before the birth, in practice
            if time.monotonic() > deadline:
                raise TimeoutError(f"HA http not listening on {self.url}\n{self.log_tail()}")
            time.sleep(0.1)
        self.boot_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (SIGTERM): HA saves .storage (registries) before it exits."""
        _stop_process(self.proc, signal.SIGTERM, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: like a power cut; the will message (`offline`) comes from the broker."""
        _stop_process(self.proc, signal.SIGKILL)

    def restart(self, timeout: float = 180.0) -> Self:
        """Graceful stop, then start again with the same config dir and .storage."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop HA (SIGTERM, then SIGKILL), the recorder, and delete the config dir."""
        self.stop(timeout=30)
        self.mqtt.stop()
        self._mqtt_started = False
        self._finalizer()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"HomeAssistant({self.url}, mqtt={self.broker_host}:{self.broker_port}, {state})"

    # ---- log

    @property
    def log(self) -> str:
        """home-assistant.log so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last `lines` lines of the HA log, labelled, for assertion messages."""
        tail = self.log.splitlines()[-lines:]
        return f"--- home-assistant.log (last {len(tail)} lines) ---\n" + "\n".join(tail)

    def _console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[str]:
        """The log split into records (a record keeps its traceback lines)."""
        records: list[str] = []
        for line in self.log.splitlines():
            if _RECORD_START.match(line) or not records:
                records.append(line)
            else:
                records[-1] += "\n" + line
        return records

    def errors(
        self,
        words: Sequence[str] = ("mqtt", "discovery"),
        levels: Sequence[str] = ("WARNING", "ERROR", "CRITICAL"),
    ) -> list[str]:
        """Log records at `levels` that mention any of `words` (case-insensitive; the logger
        name counts, e.g. homeassistant.components.mqtt.discovery). `words=()`: all of them."""
        found = []
        for record in self.log_records():
            m = _RECORD_START.match(record)
            if m is None or m.group(1) not in levels:
                continue
            low = record.lower()
            if not words or any(w.lower() in low for w in words):
                found.append(record)
        return found

    # ---- entity states over MQTT (mqtt_statestream)

    def state_topic(self, entity_id: str, leaf: str = "state") -> str:
        """Where statestream publishes `entity_id`'s state (or `leaf`: an attribute name,
        `last_changed`, `last_updated`)."""
        return f"{self.statestream_base}/{entity_id.replace('.', '/')}/{leaf}"

    def state_history(self, entity_id: str, since: int = 0) -> list[str]:
        """Every state statestream published for `entity_id` (from recorder index `since`)."""
        return [m.text for m in self.mqtt.messages(self.state_topic(entity_id), since)]

    def state(self, entity_id: str) -> str | None:
        """The latest state statestream published for `entity_id`, or None."""
        history = self.state_history(entity_id)
        return history[-1] if history else None

    def attribute(self, entity_id: str, name: str) -> Any:
        """The latest value statestream published for an attribute (JSON-decoded), or None.
        Attributes are published just after the state: prefer `api_state` right after a
        `wait_state`."""
        msgs = self.mqtt.messages(self.state_topic(entity_id, name))
        return msgs[-1].json() if msgs else None

    def wait_state(
        self,
        entity_id: str,
        expected: str | Callable[[str], bool] | None = None,
        timeout: float = 30.0,
        *,
        since: int = 0,
    ) -> Message:
        """The first statestream state message for `entity_id` from index `since` that
        equals `expected` (or satisfies it, if callable; None: any). Raises AssertionError
        with what arrived and the HA log tail on timeout."""
        topic = self.state_topic(entity_id)

        def matches(m: Message) -> bool:
            if m.topic != topic:
                return False
            if expected is None:
                return True
            return expected(m.text) if callable(expected) else m.text == expected

        matches.__name__ = f"{topic} == {expected!r}"
        try:
            return self.mqtt.wait_for(matches, timeout, since=since)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tail()}") from None

    # ---- REST and websocket APIs (with the pre-made long-lived token)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the REST API (`path` like `/api/states`); returns decoded JSON (or text),
        None for a 404."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise AssertionError(
                f"HA API {method} {path} -> {e.code}: {e.read().decode(errors='replace')}"
            ) from None
        return json.loads(text) if "json" in ctype else text

    def api_state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object now (`state`, `attributes`, `last_changed`, ...)."""
        result = self.api("GET", f"/api/states/{entity_id}")
        return result if isinstance(result, dict) else None

    def api_states(self) -> list[dict[str, Any]]:
        """Every entity's state object now."""
        return list(self.api("GET", "/api/states"))

    def render_template(self, template: str) -> str:
        """Render a Jinja template in HA, e.g. "{{ device_attr(device_id('sensor.x'), 'name') }}"
        or "{{ integration_entities('mqtt') }}"."""
        return str(self.api("POST", "/api/template", {"template": template}))

    def ws(self, message_type: str, timeout: float = 40.0, **fields: Any) -> Any:
        """One websocket API command (e.g. "config/entity_registry/list"); returns `result`.
        Runs a small aiohttp client in HA's venv (about 1 s)."""
        request = {
            "url": f"ws://{HOST}:{self.http_port}/api/websocket",
            "token": self.token,
            "message": {"type": message_type, **fields},
        }
        proc = subprocess.run(
            [str(self.python), "-c", _WS_CLIENT],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        )
        if proc.returncode != 0:
            raise AssertionError(f"HA websocket {message_type} failed:\n{proc.stderr}")
        reply = json.loads(proc.stdout)
        if not reply.get("success"):
            raise AssertionError(f"HA websocket {message_type} failed: {reply}")
        return reply["result"]

    # ---- registries

    def entity_registry(self) -> list[dict[str, Any]]:
        """Entity registry entries (entity_id, unique_id, platform, device_id, ...): live
        from the websocket API while HA runs, from .storage once it has stopped."""
        if self.running:
            return list(self.ws("config/entity_registry/list"))
        return self._read_storage("core.entity_registry").get("entities", [])

    def device_registry(self) -> list[dict[str, Any]]:
        """Device registry entries (id, name, manufacturer, model, sw_version, identifiers
        as lists, ...): live while HA runs, from .storage once it has stopped."""
        if self.running:
            return list(self.ws("config/device_registry/list"))
        return self._read_storage("core.device_registry").get("devices", [])

    def wait_entity(
        self, unique_id: str, timeout: float = 30.0, *, platform: str = "mqtt"
    ) -> dict[str, Any]:
        """The entity registry entry with `unique_id` (of `platform`), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.entity_registry()
            for entry in entries:
                if entry.get("unique_id") == unique_id and entry.get("platform") == platform:
                    return entry
            if time.monotonic() > deadline:
                have = sorted((e.get("platform"), e.get("unique_id")) for e in entries)
                raise AssertionError(
                    f"no {platform} entity with unique_id {unique_id!r} in {timeout} s; "
                    f"registry has {have}\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def device_of(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """The device registry entry of an entity registry entry."""
        for device in self.device_registry():
            if device.get("id") == entity.get("device_id"):
                return device
        raise AssertionError(f"entity {entity.get('entity_id')} has no device in the registry")

    def _read_storage(self, key: str) -> dict[str, Any]:
        path = self.config_dir / ".storage" / key
        try:
            return dict(json.loads(path.read_text())["data"])
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet / mid-write
            return {}

    def stored_entity_registry(
        self,
        wait_for: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """`.storage/core.entity_registry` entities. HA writes it up to 10 s after a change
        (at once on a graceful stop): with `wait_for` it polls until that is true."""
        return self._wait_storage("core.entity_registry", "entities", wait_for, timeout)

    def stored_device_registry(
        self,
        wait_for: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """`.storage/core.device_registry` devices, like `stored_entity_registry`."""
        return self._wait_storage("core.device_registry", "devices", wait_for, timeout)

    def _wait_storage(
        self,
        key: str,
        field: str,
        wait_for: Callable[[list[dict[str, Any]]], bool] | None,
        timeout: float,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            items = list(self._read_storage(key).get(field, []))
            if wait_for is None or wait_for(items):
                return items
            if time.monotonic() > deadline:
                raise AssertionError(
                    f".storage/{key} did not satisfy {getattr(wait_for, '__name__', wait_for)}"
                    f" in {timeout} s; it has {len(items)} {field}\n{self.log_tail()}"
                )
            time.sleep(0.5)


def discovery_topic(component: str, object_id: str, prefix: str = DISCOVERY_PREFIX) -> str:
    """`<prefix>/<component>/<object_id>/config`."""
    return f"{prefix}/{component}/{object_id}/config"


__all__ = [
    "DISCOVERY_PREFIX",
    "HA_VENV",
    "HA_VERSION",
    "STATESTREAM_BASE",
    "HomeAssistant",
    "discovery_topic",
    "ha_skip_reason",
    "requires_homeassistant",
]
