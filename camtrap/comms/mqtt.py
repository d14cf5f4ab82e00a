"""MQTT publishing that loses nothing: events go out from the SQLite outbox.

Each outbox row is handed to paho once per process; paho keeps QoS 1 messages across
reconnects and resends them, and the row is deleted only on the broker's PUBACK. Rows still
in the outbox after a crash are sent again at the next start (at-least-once, never a gap).
Retained per-camera state is not queued: the latest value is re-sent on every connect.

The daemon speaks MQTT 5 because a 3.1.1 broker answers a publish that its ACL denies with
a plain PUBACK and drops the message: only MQTT 5's reason code (0x87, Not authorized) tells
a refusal from a delivery. A refused row stays in the outbox; its topic is held back (so no
later row of it overtakes) and its oldest row is re-sent with backoff until the broker
takes it. A broker without MQTT 5 gets 3.1.1, with a warning that refusals go unseen.
Every broker fault (unreachable, no CONNACK, TLS, refused login, ACL) is logged once, when
it begins, and kept in `health()` until it ends.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from camtrap.comms.payloads import Topics
from camtrap.config.models import MqttConfig, TlsConfig
from camtrap.logs import name_os_thread
from camtrap.status import MqttSnapshot
from camtrap.storage.store import OutboxMessage, Store

log = logging.getLogger(__name__)

MAX_HANDED = 100  # outbox rows handed to paho and not yet acknowledged
MAX_WATCHED = 1000  # other publishes whose PUBACK is still to be looked at
RETRY_MIN_S = 1.0  # backoff for refused messages, as paho's for reconnects
RETRY_MAX_S = 60.0
UNSUPPORTED_PROTOCOL = 0x84  # CONNACK from a broker without MQTT 5 (3.1.1's code 1)
KEEPALIVE_TIMEOUT = 0x8D  # paho's reason when nothing came back within the keepalive

# state -> log level of the one line that says it began: action needed, or maybe transient
FAULT_LEVELS = {"unreachable": logging.WARNING, "no_answer": logging.WARNING,
                "tls_error": logging.ERROR, "refused": logging.ERROR, "denied": logging.ERROR}


def client_id(cfg: MqttConfig) -> str:
    return cfg.client_id or f"camtrap-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def broker_url(cfg: MqttConfig) -> str:
    """How every log line and health error names the broker (never with credentials)."""
    return f"{'mqtts' if cfg.tls.enabled else 'mqtt'}://{cfg.host}:{cfg.port}"


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


def connect_fault(exc: BaseException | None, url: str) -> tuple[str, str]:
    """(state, error) for an exception of a connection attempt: paho's on_connect_fail gets
    none, but runs inside its `except OSError`, where sys.exc_info() still has it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_error", (f"TLS with broker {url} failed: certificate verify failed: "
                             f"{exc.verify_message} (check mqtt.tls.ca_file and the broker's "
                             "certificate)")
    if isinstance(exc, ssl.SSLError):
        return "tls_error", f"TLS with broker {url} failed: {exc.reason or exc}"
    reason = getattr(exc, "strerror", None) or str(exc or "") or type(exc).__name__
    return "unreachable", f"cannot reach broker {url}: {reason}"


@dataclass
class _Backoff:
    """When to try a refused message again: 1, 2, 4 ... 60 s, as paho's reconnects."""

    delay: float = RETRY_MIN_S
    at: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.at

    def step(self, now: float) -> None:
        """A refusal: wait, and wait longer after the next one."""
        self.at = now + self.delay
        self.delay = min(self.delay * 2, RETRY_MAX_S)

    def reset(self) -> None:
        self.delay, self.at = RETRY_MIN_S, 0.0


@dataclass
class _Held:
    """Outbox rows of one topic that the broker refused, oldest first. No later row of the
    topic overtakes them; the oldest goes out again as a probe with backoff, and once the
    broker takes one the rest follow at full speed."""

    ids: list[int] = field(default_factory=list)
    backoff: _Backoff = field(default_factory=_Backoff)
    accepted: bool = False  # the broker's last answer on this topic was a yes

    def refused(self, outbox_id: int, now: float) -> None:
        bisect.insort(self.ids, outbox_id)
        self.accepted = False
        if self.backoff.due(now):  # one step per probe, not one per refused row in flight
            self.backoff.step(now)

    def taken(self) -> None:
        self.accepted = True
        self.backoff.reset()


class MqttPublisher:
    def __init__(self, cfg: MqttConfig, store: Store, topics: Topics) -> None:
        self.cfg = cfg
        self.store = store
        self.topics = topics
        self.url = broker_url(cfg)
        self.connected = False
        self.last_error: str | None = None  # the current fault in words, else None
        self.state = "connecting"  # the link's state (status.MQTT_STATES), less `denied`
        self.protocol = paho.MQTTv5
        self.published = 0
        self._client_id = client_id(cfg)
        self._retained: dict[str, bytes] = {}
        self._on_connect_hooks: list[Callable[[], None]] = []
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}
        self._awaiting_connack = False
        self._downgrade = threading.Event()
        # Only pump() touches these, under _pump_lock, which no paho callback takes: paho
        # calls on_publish with its own mutex held, so a shared lock there could deadlock.
        self._handed: list[tuple[paho.MQTTMessageInfo, OutboxMessage]] = []
        self._last_handed_id = 0
        self._held: dict[str, _Held] = {}  # topic -> its refused outbox rows
        self._held_count = 0  # rows in _held, for health() without the pump's lock
        self._refused_live: set[str] = set()  # topics of refused publishes outside the outbox
        self._live_backoff = _Backoff()
        self._denial: str | None = None  # the refusal that began the current ACL fault
        self._pump_lock = threading.Lock()
        # Small locks that are never held while calling into paho, so callbacks may take them.
        self._acks: dict[int, ReasonCode] = {}  # mid -> the broker's answer (on_publish)
        self._ack_lock = threading.Lock()
        self._watched: list[tuple[paho.MQTTMessageInfo, str]] = []
        self._watch_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="mqtt-outbox", daemon=True)
        self.client = self._make_client(paho.MQTTv5)

    def _make_client(self, protocol: paho.MQTTProtocolVersion) -> paho.Client:
        v5 = protocol == paho.MQTTv5
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id,
                        clean_session=None if v5 else True, protocol=protocol)
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
        c.reconnect_delay_set(min_delay=int(RETRY_MIN_S), max_delay=int(RETRY_MAX_S))
        c.on_pre_connect = self._on_pre_connect
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        for topic, callback in self._subscriptions.items():
            c.message_callback_add(topic, self._message_handler(topic, callback))
        return c

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Call `hook()` after every (re)connect, e.g. to re-send discovery."""
        self._on_connect_hooks.append(hook)

    def subscribe(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Call `callback(payload)` for messages on `topic`, across reconnects."""
        self._subscriptions[topic] = callback
        self.client.message_callback_add(topic, self._message_handler(topic, callback))

    @staticmethod
    def _message_handler(topic: str, callback: Callable[[bytes], None]
                         ) -> Callable[[Any, Any, paho.MQTTMessage], None]:
        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            try:
                callback(msg.payload)
            except Exception:
                log.exception("mqtt: handler for %s failed", topic)

        return on_message

    def start(self) -> None:
        log.info("mqtt: connecting to %s as %s", self.url, self._client_id)
        self._connect()
        self._pump.start()

    def _connect(self) -> None:
        # clean_start only counts in MQTT 5; 3.1.1 has clean_session=True from the client
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                  clean_start=True)
        self.client.loop_start()

    # --- the link's state: one log line when a fault begins ------------------------------

    def _set_state(self, state: str, error: str | None) -> None:
        with self._state_lock:
            if (state, error) == (self.state, self.last_error):
                return
            self.state, self.last_error = state, error
        if error is not None:
            log.log(FAULT_LEVELS.get(state, logging.WARNING),
                    "mqtt: %s; retrying with backoff (%g-%g s)", error, RETRY_MIN_S, RETRY_MAX_S)

    def health(self) -> MqttSnapshot:
        """The link for /healthz, /metrics and `<prefix>/stats`; ACL refusals count while
        connected, as they are what keeps messages from going out then."""
        with self._state_lock:
            state, error = self.state, self.last_error
        denial = self._denial
        if self.connected and denial is not None:
            state, error = "denied", denial
        return MqttSnapshot(state=state, error=error, held=self._held_count,
                            protocol="5" if self.protocol == paho.MQTTv5 else "3.1.1")

    # --- paho callbacks (its network thread) ---------------------------------------------

    def _on_pre_connect(self, _c: Any, _u: Any) -> None:
        self._awaiting_connack = True

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._set_state(*connect_fault(sys.exc_info()[1], self.url))

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._awaiting_connack = False
        if rc.is_failure:
            if rc.value == UNSUPPORTED_PROTOCOL and self.protocol == paho.MQTTv5:
                self._downgrade.set()  # the pump thread swaps the client: not from here
                self._wake.set()
                return
            self._set_state("refused", f"broker {self.url} refused the connection: {rc} "
                                       "(check mqtt.username and the password)")
            return
        self.connected = True
        self._set_state("connected", None)
        log.info("mqtt: connected to %s", self.url)
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._announce()
        self._wake.set()

    def _announce(self) -> None:
        """What a subscriber needs after a (re)connect: `online`, retained state, hooks."""
        self._publish(self.topics.status, b"online", retain=True)
        with self._lock:
            retained = list(self._retained.items())
        for topic, payload in retained:
            self._publish(topic, payload, retain=True)
        for hook in self._on_connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("mqtt: on-connect hook failed")

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        was_connected, self.connected = self.connected, False
        if self._stopping.is_set():
            return
        if was_connected:
            log.warning("mqtt: disconnected from %s (%s); reconnecting", self.url, rc)
            self._set_state("connecting", None)
        elif self._awaiting_connack:  # TCP (and TLS) worked, MQTT did not answer
            self._awaiting_connack = False
            if rc.value == KEEPALIVE_TIMEOUT:
                why = f"sent no CONNACK within {self.cfg.keepalive_s} s (mqtt.keepalive_s)"
            else:
                why = f"closed the connection before its CONNACK ({rc})"
            self._set_state("no_answer", f"broker {self.url} accepted TCP but {why}; is it an "
                                         "MQTT broker, and is mqtt.tls right for its port?")

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        # paho marks the message published only after this returns: the answer is here first
        with self._ack_lock:
            self._acks[mid] = rc
        self._wake.set()

    def _acknowledged(self, info: paho.MQTTMessageInfo) -> bool:
        """The broker answered. Not `info.is_published()`: that raises for a message handed
        over while the connection was dropping, which paho keeps and sends after the
        reconnect, so one such message would wedge the pump."""
        with self._ack_lock:
            return info.mid in self._acks

    def _answer(self, info: paho.MQTTMessageInfo) -> ReasonCode | None:
        with self._ack_lock:
            return self._acks.pop(info.mid, None)

    # --- publishing -----------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """A publish outside the outbox: its answer is watched only to see refusals."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._watch_lock:
            self._watched.append((info, topic))
            del self._watched[:-MAX_WATCHED]

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def _pump_loop(self) -> None:
        name_os_thread()
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                if self._downgrade.is_set():
                    self._use_mqtt311()
                self.pump()
                self._retry_live()
            except Exception:
                log.exception("mqtt: outbox pump failed; retrying")

    def pump(self) -> int:
        """Settle what the broker answered, then hand the next rows to paho (held topics'
        rows when their retry is due); returns how many were handed."""
        with self._pump_lock:
            now = time.monotonic()
            self._settle_handed(now)
            self._settle_watched(now)
            if not self.connected:
                return 0
            sent = self._retry_held(now) + self._hand_new()
            self._held_count = sum(len(h.ids) for h in self._held.values())
            self._end_denial_if_over()
            return sent

    def _settle_handed(self, now: float) -> None:
        still: list[tuple[paho.MQTTMessageInfo, OutboxMessage]] = []
        for info, row in self._handed:
            if not self._acknowledged(info):
                still.append((info, row))
                continue
            rc = self._answer(info)
            held = self._held.get(row.topic)
            if rc is not None and rc.is_failure:  # kept in the outbox for a retry
                if held is None:
                    held = self._held[row.topic] = _Held()
                    self._denied(row.topic, rc)
                held.refused(row.id, now)
                continue
            self.store.ack(row.id)
            self.published += 1
            if held is not None:
                held.taken()
        self._handed = still

    def _settle_watched(self, now: float) -> None:
        with self._watch_lock:
            watched, self._watched = self._watched, []
        still = []
        for info, topic in watched:
            if not self._acknowledged(info):
                still.append((info, topic))
                continue
            rc = self._answer(info)
            if rc is None or not rc.is_failure:
                self._refused_live.discard(topic)
            elif topic not in self._refused_live:
                if not self._refused_live:
                    self._live_backoff.step(now)
                self._refused_live.add(topic)
                self._denied(topic, rc)
        with self._watch_lock:
            self._watched[:0] = still

    def _retry_held(self, now: float) -> int:
        """A due probe per held topic; all of a topic's rows once the broker takes one."""
        busy = {row.topic for _, row in self._handed}
        sent = 0
        for topic, held in list(self._held.items()):
            if topic in busy:
                continue  # one round at a time per topic keeps its order
            if not held.ids:
                if held.accepted:
                    del self._held[topic]  # every refused row of it went out
                continue
            if held.accepted:
                count = MAX_HANDED - len(self._handed)
            elif held.backoff.due(now):
                count = 1
            else:
                continue
            if count <= 0:
                continue
            batch, held.ids[:count] = held.ids[:count], []
            for outbox_id in batch:
                row = self._row(outbox_id)
                if row is not None:  # else the full outbox dropped it (counted there)
                    self._hand(row)
                    sent += 1
        return sent

    def _hand_new(self) -> int:
        room = MAX_HANDED - len(self._handed)
        if room <= 0:
            return 0
        rows = self.store.pending(self._last_handed_id, room)
        sent = 0
        for row in rows:
            self._last_handed_id = row.id
            held = self._held.get(row.topic)
            if held is None:
                self._hand(row)
                sent += 1
                continue
            held.ids.append(row.id)  # behind the refused ones; at most the outbox's bound
            del held.ids[:-self.store.outbox_max]
        return sent

    def _hand(self, row: OutboxMessage) -> None:
        info = self.client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
        self._handed.append((info, row))

    def _row(self, outbox_id: int) -> OutboxMessage | None:
        rows = self.store.pending(outbox_id - 1, 1)
        return rows[0] if rows and rows[0].id == outbox_id else None

    def _denied(self, topic: str, rc: ReasonCode) -> None:
        """One log line when the broker first refuses a message; the rest are counted."""
        if self._denial is not None:
            log.debug("mqtt: broker %s also refuses %s: %s", self.url, topic, rc)
            return
        who = f"user {self.cfg.username}" if self.cfg.username else "anonymous clients"
        self._denial = (f"broker {self.url} refuses messages on {topic}: {rc} (check its ACL "
                        f"for {who}); events stay in the outbox")
        log.error("mqtt: %s; retrying with backoff (%g-%g s)", self._denial, RETRY_MIN_S,
                  RETRY_MAX_S)

    def _end_denial_if_over(self) -> None:
        if self._denial is not None and not self._held and not self._refused_live:
            self._denial = None
            log.info("mqtt: broker %s takes every message again; the held ones went out",
                     self.url)

    def _retry_live(self) -> None:
        """Re-announce with backoff while the broker refuses `online`, retained state or
        discovery: those are not in the outbox, and a subscriber needs them when it relents."""
        if not self._refused_live:
            self._live_backoff.reset()
            return
        now = time.monotonic()
        if not self.connected or not self._live_backoff.due(now):
            return
        self._live_backoff.step(now)
        self._announce()

    def _use_mqtt311(self) -> None:
        """The broker has no MQTT 5: start over with 3.1.1 on a new client."""
        self._downgrade.clear()
        if self.protocol != paho.MQTTv5:
            return
        log.warning("mqtt: broker %s does not speak MQTT 5; using 3.1.1, where a message the "
                    "broker's ACL refuses is acknowledged as if delivered and cannot be kept",
                    self.url)
        old = self.client
        old.disconnect()
        old.loop_stop()
        with self._pump_lock:
            self._handed, self._last_handed_id, self._held = [], 0, {}
            self._refused_live, self._denial = set(), None
            with self._watch_lock:
                self._watched = []
            self.protocol = paho.MQTTv311
            self.client = self._make_client(paho.MQTTv311)
        self._connect()

    def in_flight(self) -> int:
        with self._pump_lock:
            return len(self._handed)

    def drained(self) -> bool:
        """Every outbox row went out (none in flight, none held back by a refusal)."""
        with self._pump_lock:
            return (not self._handed and not self._held
                    and not self.store.pending(self._last_handed_id, 1))

    def _stuck(self) -> bool:
        """Nothing more can go out now: only rows that the broker refuses are left."""
        with self._pump_lock:
            return (not self._handed and not self.store.pending(self._last_handed_id, 1)
                    and not any(h.accepted for h in self._held.values()))

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish retained state now if connected; it is re-sent on every reconnect."""
        with self._lock:
            self._retained[topic] = payload
        if self.connected:
            self._publish(topic, payload, retain=True)

    def publish_now(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Fire-and-forget (stats, digests): newer values replace lost ones."""
        if self.connected:
            self._publish(topic, payload, retain=retain)

    def stop(self, flush_timeout_s: float = 3.0) -> None:
        """Flush what the broker allows within the bound, publish `offline`, disconnect."""
        deadline = time.monotonic() + flush_timeout_s
        while self.connected and time.monotonic() < deadline:
            self.pump()
            if self.drained() or self._stuck():
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
