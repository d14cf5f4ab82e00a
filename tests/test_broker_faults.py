"""Brokers that refuse (issue 17): an ACL that denies the daemon's topics, a port that never
sends a CONNACK, TLS with an untrusted CA or an expired certificate, a password changed
while running, a broker without MQTT 5. Each fault is real (mosquitto, openssl, a socket
that never answers); each must give one log line, a health state, retries with backoff, and
lose no event once the broker accepts again.

A `Relay` stands at the address the publisher is configured with, so a test can swap what
answers behind it (a broken broker, then a good one) while a recorder stays subscribed to
the good one the whole time: no race between the recorder's and the publisher's reconnects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from camtrap.comms.mqtt import MqttPublisher
from camtrap.comms.payloads import Topics, stats_payload
from camtrap.config.models import BatchingConfig, MqttConfig, VisitsConfig
from camtrap.inference.queue import CropQueue
from camtrap.inference.worker import InferenceWorker
from camtrap.monitor import Parts, take_snapshot
from camtrap.sink import EventSink
from camtrap.storage.store import Store
from camtrap.timeutil import resolve_tz
from camtrap.visits.tracker import VisitEvent, VisitTracker
from camtrap.web.metrics import Metrics
from tests.backends import NumpyBackend
from tests.servers import (
    HOST,
    Mosquitto,
    MqttRecorder,
    SilentServer,
    make_expired_server_cert,
)
from tests.waiting import wait_until

SECRET = "s3cret-Pw!"
EVENTS = "camtrap/events"
VISIT = "camtrap/feeder/visit"
DENY_WRITES = "topic read #\n"  # anonymous clients may read everything and write nothing
ALLOW_ALL = "topic readwrite #\n"


class Relay:
    """A TCP relay on 127.0.0.1 to `target` (host, port); set `target` to swap what answers
    behind the address. With `refuse_mqtt5` it answers an MQTT 5 CONNECT itself with 3.1.1's
    CONNACK "unacceptable protocol version" and hangs up, as a broker without MQTT 5 does."""

    def __init__(self, target: tuple[str, int], *, refuse_mqtt5: bool = False) -> None:
        self.target = target
        self.refuse_mqtt5 = refuse_mqtt5
        self.connections = 0
        self.refused_mqtt5 = 0
        self._server = socket.create_server((HOST, 0))
        self.port = int(self._server.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._closed = threading.Event()

    def start(self) -> Self:
        threading.Thread(target=self._accept, name="relay", daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = client.recv(65536)
            if self.refuse_mqtt5 and _connect_level(first) == 5:
                self.refused_mqtt5 += 1
                client.sendall(b"\x20\x02\x00\x01")
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            self._socks.append(upstream)
            upstream.sendall(first)
        except OSError:
            client.close()
            return
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _connect_level(packet: bytes) -> int | None:
    """The protocol level of an MQTT CONNECT (4: 3.1.1, 5: MQTT 5), if this is one."""
    if not packet or packet[0] != 0x10:
        return None
    i = 1
    while i < len(packet) and packet[i] & 0x80:  # remaining length: 1-4 bytes
        i += 1
    name_at = i + 1
    if len(packet) < name_at + 7 or packet[name_at:name_at + 6] != b"\x00\x04MQTT":
        return None
    return packet[name_at + 6]


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


def event(n: int) -> VisitEvent:
    return VisitEvent("start", f"{n:016x}", "feeder", "Great Tit", False, 0.9, 2, 1e9 + n,
                      1e9 + n, None, (("Great Tit", 0.9),), (0, 0, 10, 10), (640, 360), b"")


def queue_events(store: Store, first: int, count: int, *, visit: bool = False) -> None:
    """Events n as outbox rows on EVENTS (and on VISIT too, with `visit`)."""
    for n in range(first, first + count):
        body = json.dumps({"n": n}).encode()
        rows = [(EVENTS, body, 1, False)] + ([(VISIT, body, 1, False)] if visit else [])
        store.record(event(n), rows)


def numbers(recorder: MqttRecorder, topic: str, count: int, timeout: float) -> list[int]:
    return [m.json()["n"] for m in recorder.wait_for_count(topic, count, timeout=timeout)]


def lines(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING
          ) -> list[str]:
    """The publisher's log lines at `level` or above that contain `text`."""
    return [r.getMessage() for r in caplog.records
            if r.name == "camtrap.comms.mqtt" and r.levelno >= level and text in r.getMessage()]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state", outbox_max=1000, save_crops=False)
    yield s
    s.close()


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="camtrap.comms.mqtt")
    return caplog


def publisher(store: Store, port: int, **mqtt: Any) -> MqttPublisher:
    cfg = MqttConfig.model_validate({"host": HOST, "port": port, **mqtt})
    return MqttPublisher(cfg, store, Topics(cfg.prefix))


@contextlib.contextmanager
def running(pub: MqttPublisher) -> Iterator[MqttPublisher]:
    pub.start()
    try:
        yield pub
    finally:
        pub.stop(flush_timeout_s=0.5)


def snapshot_views(pub: MqttPublisher, store: Store) -> tuple[dict[str, Any], str, str]:
    """(the `<prefix>/stats` body, the /metrics text, systemd's STATUS= line) of the daemon's
    one status snapshot, taken with this publisher."""
    backend = NumpyBackend()
    parts = Parts(cameras=[], publisher=pub, store=store, active=dict,
                  inference=InferenceWorker(backend, CropQueue(maxsize=4), BatchingConfig(),
                                            lambda _p: None),
                  sink=EventSink(store, resolve_tz("UTC"), "node", [], publish_crops=False),
                  tracker=VisitTracker(VisitsConfig(), backend.labels))
    snap = take_snapshot(parts, 0.0)
    body = stats_payload(snap, datetime.now().astimezone())
    return body, Metrics(lambda: snap).render().decode(), snap.status_line()


def test_acl_denial_keeps_events_until_the_acl_allows_them(
    store: Store, log: pytest.LogCaptureFixture,
) -> None:
    """mosquitto acknowledges a denied 3.1.1 publish like a delivered one and drops it: the
    old publisher deleted the rows and the events were lost. Over MQTT 5 the PUBACK says
    "Not authorized"; the rows stay, go out in order when the ACL allows them, and the
    `online` that was refused too is re-sent without waiting for a reconnect."""
    with Mosquitto(acl=DENY_WRITES) as broker, MqttRecorder.for_broker(broker) as rec, \
            running(publisher(store, broker.port)) as pub:
        wait_until(lambda: pub.connected, 10, "connected")
        queue_events(store, 0, 5)
        pub.wake()
        wait_until(lambda: pub.health().state == "denied", 10, "the denied state")
        wait_until(lambda: pub.health().held == 5, 10, "5 events held")
        queue_events(store, 5, 5)  # while denied: held behind the first five
        pub.wake()
        wait_until(lambda: pub.health().held == 10, 10, "10 events held")
        time.sleep(3.5)  # the oldest goes out again after 1 s, then 2 s: refused each time
        denied = [ln for ln in broker.log.splitlines() if "Denied PUBLISH" in ln]
        assert sum(f"'{EVENTS}'" in ln for ln in denied) >= 5 + 2, broker.log
        assert store.outbox_len() == 10
        assert not rec.messages(EVENTS)
        health = pub.health()
        assert health.state == "denied" and health.protocol == "5"
        assert health.error is not None and broker.url in health.error
        assert "Not authorized" in health.error
        body, metrics, status = snapshot_views(pub, store)
        assert body["mqtt"] == {"state": "denied", "error": health.error, "protocol": "5",
                                "held": 10}
        assert body["mqtt_connected"] is True and body["outbox"] == 10
        assert 'camtrap_mqtt_state{state="denied"} 1.0' in metrics
        assert "camtrap_mqtt_held_messages 10.0" in metrics
        assert "broker denies messages (10 held)" in status
        said = lines(log, "refuses messages on camtrap/")
        assert len(said) == 1, said  # once, not per event or per retry
        assert broker.url in said[0] and "anonymous clients" in said[0]

        mark = rec.mark()
        broker.set_acl(ALLOW_ALL)
        assert numbers(rec, EVENTS, 10, timeout=20) == list(range(10))  # none lost, in order
        rec.wait_for(lambda m: m.topic == "camtrap/status" and m.payload == b"online",
                     since=mark, timeout=20)
        wait_until(lambda: store.outbox_len() == 0, 10, "the outbox emptied")
        wait_until(lambda: pub.health().state == "connected", 10, "connected again")
        assert pub.health().error is None and pub.health().held == 0
        assert len(lines(log, "takes every message again", logging.INFO)) == 1
        queue_events(store, 10, 1)  # and the topic flows as before
        pub.wake()
        assert numbers(rec, EVENTS, 11, timeout=10) == list(range(11))


def test_acl_that_denies_one_topic_does_not_hold_back_the_others(
    store: Store, log: pytest.LogCaptureFixture,
) -> None:
    """More refused rows than the publisher hands to paho at once (100) must not stall the
    topics the ACL allows; the refused topic catches up, in order, once allowed."""
    acl = DENY_WRITES + "topic write camtrap/events\ntopic write camtrap/status\n"
    with Mosquitto(acl=acl) as broker, MqttRecorder.for_broker(broker) as rec, \
            running(publisher(store, broker.port)) as pub:
        queue_events(store, 0, 150, visit=True)
        assert numbers(rec, EVENTS, 150, timeout=30) == list(range(150))
        wait_until(lambda: pub.health().held == 150, 15, "the visit rows held")
        wait_until(lambda: store.outbox_len() == 150, 10, "only the visit rows left")
        assert pub.health().state == "denied"
        assert not rec.messages(VISIT)
        assert len(lines(log, f"refuses messages on {VISIT}")) == 1

        broker.set_acl(ALLOW_ALL)
        assert numbers(rec, VISIT, 150, timeout=30) == list(range(150))
        wait_until(lambda: store.outbox_len() == 0, 10, "the outbox emptied")
        wait_until(lambda: pub.health().state == "connected", 10, "connected again")


def test_broker_that_never_sends_connack(store: Store, log: pytest.LogCaptureFixture) -> None:
    """A port that accepts TCP and never answers: paho gives up after the keepalive, and
    the publisher says so once, whatever the number of tries, until a broker answers."""
    with SilentServer() as silent, Mosquitto() as broker, \
            MqttRecorder.for_broker(broker) as rec, Relay((silent.host, silent.port)) as relay, \
            running(publisher(store, relay.port, keepalive_s=5)) as pub:
        queue_events(store, 0, 3)
        wait_until(lambda: pub.health().state == "no_answer", 15, "the no_answer state")
        assert "sent no CONNACK within 5 s" in (pub.health().error or "")
        wait_until(lambda: silent.accepted >= 2, 10, "another try after backoff")
        relay.target = (broker.host, broker.port)  # for the try after that one
        assert not pub.connected and store.outbox_len() == 3
        assert numbers(rec, EVENTS, 3, timeout=30) == [0, 1, 2]
        assert silent.accepted == 2  # the second try timed out as well before this one
        said = lines(log, "CONNACK")
        assert len(said) == 1, said
        assert f"mqtt://{HOST}:{relay.port}" in said[0]
        wait_until(lambda: pub.health().state == "connected", 10, "connected")
        wait_until(lambda: store.outbox_len() == 0, 10, "the outbox emptied")


def tls_publisher(store: Store, port: int, ca_file: Path | None) -> MqttPublisher:
    return publisher(store, port, tls={"enabled": True, "ca_file": str(ca_file)})


def assert_tls_fault_then_recovery(
    store: Store, log: pytest.LogCaptureFixture, bad: Mosquitto, good: Mosquitto, why: str,
) -> None:
    """Behind the relay first `bad`, then `good`: one log line with `why`, then delivery."""
    assert bad.tls_port is not None and good.tls_port is not None
    with MqttRecorder.for_broker(good) as rec, Relay((HOST, bad.tls_port)) as relay, \
            running(tls_publisher(store, relay.port, good.ca_file)) as pub:
        queue_events(store, 0, 3)
        wait_until(lambda: pub.health().state == "tls_error", 10, "the tls_error state")
        wait_until(lambda: relay.connections >= 2, 15, "a retry after backoff")
        assert why in (pub.health().error or "")
        said = lines(log, "TLS with broker")
        assert len(said) == 1, said
        assert f"mqtts://{HOST}:{relay.port}" in said[0] and why in said[0]
        assert store.outbox_len() == 3

        relay.target = (HOST, good.tls_port)
        assert numbers(rec, EVENTS, 3, timeout=30) == [0, 1, 2]
        wait_until(lambda: pub.health().state == "connected", 10, "connected")
        wait_until(lambda: store.outbox_len() == 0, 10, "the outbox emptied")


def test_tls_broker_with_a_certificate_from_another_ca(
    store: Store, log: pytest.LogCaptureFixture,
) -> None:
    with Mosquitto(tls=True) as bad, Mosquitto(tls=True) as good:
        assert_tls_fault_then_recovery(store, log, bad, good,
                                      "self-signed certificate in certificate chain")


def test_tls_broker_with_an_expired_certificate(
    store: Store, log: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    """The expired certificate is signed by the CA the publisher trusts: only its date is
    at fault."""
    with Mosquitto(tls=True) as good:
        expired = Mosquitto(tls=True)
        for name in ("ca.crt", "ca.key"):
            shutil.copy(good.dir / name, expired.dir / name)
        make_expired_server_cert(expired.dir)
        with expired:
            assert_tls_fault_then_recovery(store, log, expired, good, "certificate has expired")


def test_password_changed_while_running(store: Store, log: pytest.LogCaptureFixture) -> None:
    """The broker drops the daemon and refuses it from then on: one log line for the
    refusals, events kept, delivered once the passwords agree again; no password in logs."""
    with Mosquitto(username="camtrap", password=SECRET) as broker:
        broker.add_user("watcher", "watcher-pw")
        broker.reload()
        with MqttRecorder.for_broker(broker, username="watcher", password="watcher-pw") as rec, \
                running(publisher(store, broker.port, username="camtrap",
                                  password=SECRET)) as pub:
            queue_events(store, 0, 2)
            assert numbers(rec, EVENTS, 2, timeout=10) == [0, 1]
            broker.set_password("changed-Pw!")
            wait_until(lambda: pub.health().state == "refused", 10, "the refused state")
            queue_events(store, 2, 3)
            pub.wake()
            wait_until(lambda: broker.log.count("not authorised") >= 2, 15, "2 refused tries")
            said = lines(log, "refused the connection")
            assert len(said) == 1, said
            assert broker.url in said[0] and "Not authorized" in said[0]
            assert store.outbox_len() == 3

            broker.set_password(SECRET)
            assert numbers(rec, EVENTS, 5, timeout=30) == list(range(5))
            wait_until(lambda: pub.health().state == "connected", 10, "connected")
            wait_until(lambda: store.outbox_len() == 0, 10, "the outbox emptied")
    for secret in (SECRET, "changed-Pw!"):
        assert secret not in log.text
        assert secret not in repr(pub.health())


def test_broker_without_mqtt5_gets_mqtt311(store: Store, log: pytest.LogCaptureFixture) -> None:
    """A broker that answers an MQTT 5 CONNECT with "unacceptable protocol version" (e.g.
    mosquitto before 1.6) still gets every event, over 3.1.1, with a warning."""
    with Mosquitto() as broker, MqttRecorder.for_broker(broker) as rec, \
            Relay((broker.host, broker.port), refuse_mqtt5=True) as relay, \
            running(publisher(store, relay.port)) as pub:
        queue_events(store, 0, 3)
        assert numbers(rec, EVENTS, 3, timeout=20) == [0, 1, 2]
        assert relay.refused_mqtt5 >= 1
        assert pub.health().protocol == "3.1.1" and pub.health().state == "connected"
        assert len(lines(log, "does not speak MQTT 5")) == 1
        wait_until(lambda: store.outbox_len() == 0, 10, "the outbox emptied")
