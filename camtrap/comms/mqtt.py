"""MQTT publishing that loses nothing: events go out from the SQLite outbox.

Each outbox row is handed to paho once per process; paho keeps QoS 1 messages across
reconnects and resends them, and the row is deleted only on the broker's PUBACK. Rows still
in the outbox after a crash are sent again at the next start (at-least-once, never a gap).
Retained per-camera state is not queued: the latest value is re-sent on every connect.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from camtrap.comms.payloads import Topics
from camtrap.config.models import MqttConfig, TlsConfig
from camtrap.logs import name_os_thread
from camtrap.storage.store import Store

log = logging.getLogger(__name__)

MAX_HANDED = 100  # outbox rows handed to paho and not yet acknowledged


def client_id(cfg: MqttConfig) -> str:
    return cfg.client_id or f"camtrap-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def _check_tls_files(tls: TlsConfig) -> None:
    """paho's own error names no file; this one names the field and the path."""
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is None:
            continue
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise OSError(f"mqtt.tls.{name}: cannot read {path}: {exc.strerror}") from None


class MqttPublisher:
    def __init__(self, cfg: MqttConfig, store: Store, topics: Topics) -> None:
        self.cfg = cfg
        self.store = store
        self.topics = topics
        self.connected = False
        self.last_error: str | None = None
        self.published = 0
        self._retained: dict[str, bytes] = {}
        self._on_connect_hooks: list[Callable[[], None]] = []
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}
        # Only pump() touches these, under _pump_lock, which no paho callback takes: paho
        # calls on_publish with its own mutex held, so a shared lock there could deadlock.
        self._handed: list[tuple[paho.MQTTMessageInfo, int]] = []
        self._last_handed_id = 0
        self._pump_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="mqtt-outbox", daemon=True)
        self.client = self._make_client()

    def _make_client(self) -> paho.Client:
        c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id(self.cfg), clean_session=True
        )
        if self.cfg.username:
            pw = self.cfg.password.get_secret_value() if self.cfg.password else None
            c.username_pw_set(self.cfg.username, pw)
        tls = self.cfg.tls
        if tls.enabled:
            _check_tls_files(tls)
            c.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            c.tls_insecure_set(tls.insecure)
        c.will_set(self.topics.status, b"offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=60)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Call `hook()` after every (re)connect, e.g. to re-send discovery."""
        self._on_connect_hooks.append(hook)

    def subscribe(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Call `callback(payload)` for messages on `topic`, across reconnects."""
        self._subscriptions[topic] = callback

        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            try:
                callback(msg.payload)
            except Exception:
                log.exception("mqtt: handler for %s failed", topic)

        self.client.message_callback_add(topic, on_message)

    def start(self) -> None:
        log.info(
            "mqtt: connecting to %s:%d as %s",
            self.cfg.host,
            self.cfg.port,
            self.client._client_id.decode(),
        )
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._pump.start()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self.last_error = f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {rc}"
            log.error("mqtt: %s (check mqtt.username and the password); retrying", self.last_error)
            return
        self.connected, self.last_error = True, None
        log.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        client.publish(self.topics.status, b"online", qos=1, retain=True)
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        with self._lock:
            retained = list(self._retained.items())
        for topic, payload in retained:
            client.publish(topic, payload, qos=1, retain=True)
        for hook in self._on_connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("mqtt: on-connect hook failed")
        self._wake.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.connected and not self._stopping.is_set():
            log.warning(
                "mqtt: disconnected from %s:%d (%s); reconnecting", self.cfg.host, self.cfg.port, rc
            )
        self.connected = False

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        self._wake.set()

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def _pump_loop(self) -> None:
        name_os_thread()
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.pump()
            except Exception:
                log.exception("mqtt: outbox pump failed; retrying")

    def pump(self) -> int:
        """Delete acknowledged rows, then hand the next rows to paho; returns how many."""
        with self._pump_lock:
            still: list[tuple[paho.MQTTMessageInfo, int]] = []
            for info, outbox_id in self._handed:
                if info.is_published():
                    self.store.ack(outbox_id)
                    self.published += 1
                else:
                    still.append((info, outbox_id))
            self._handed = still
            room = MAX_HANDED - len(self._handed)
            if not self.connected or room <= 0:
                return 0
            rows = self.store.pending(self._last_handed_id, room)
            for row in rows:
                info = self.client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                self._handed.append((info, row.id))
                self._last_handed_id = row.id
            return len(rows)

    def in_flight(self) -> int:
        with self._pump_lock:
            return len(self._handed)

    def drained(self) -> bool:
        with self._pump_lock:
            return not self._handed and not self.store.pending(self._last_handed_id, 1)

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish retained state now if connected; it is re-sent on every reconnect."""
        with self._lock:
            self._retained[topic] = payload
        if self.connected:
            self.client.publish(topic, payload, qos=1, retain=True)

    def publish_now(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Fire-and-forget (stats, digests): newer values replace lost ones."""
        if self.connected:
            self.client.publish(topic, payload, qos=1, retain=retain)

    def stop(self, flush_timeout_s: float = 3.0) -> None:
        """Flush what the broker allows within the bound, publish `offline`, disconnect."""
        deadline = time.monotonic() + flush_timeout_s
        while self.connected and time.monotonic() < deadline:
            self.pump()
            if self.drained():
                break
            time.sleep(0.02)
        self._stopping.set()
        self._wake.set()
        if self.connected:
            info = self.client.publish(self.topics.status, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        if self._pump.is_alive():
            self._pump.join(timeout=2.0)
