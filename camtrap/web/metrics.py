"""Prometheus metrics: gauges and counters read from one status snapshot at scrape time, so
the hot path pays nothing; only the inference latency and batch size histograms are observed
as batches finish."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from camtrap.status import MQTT_STATES, CameraSnapshot, StatusSnapshot

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Snapshot = Callable[[], StatusSnapshot]

_PER_CAMERA_GAUGES: list[tuple[str, str, Callable[[CameraSnapshot], float]]] = [
    ("camtrap_camera_connected", "1 while the camera delivers frames",
     lambda c: float(c.connected)),
    ("camtrap_camera_stream_fps", "Frames per second read from the stream",
     lambda c: float(c.state.get("stream_fps") or 0.0)),
    ("camtrap_camera_processed_fps", "Frames per second looked at for motion", lambda c: c.fps),
]
_PER_CAMERA_COUNTERS: list[tuple[str, str, Callable[[CameraSnapshot], float]]] = [
    ("camtrap_camera_reconnects", "Reconnects since start", lambda c: c.reconnects),
    ("camtrap_camera_frames", "Frames read since start", lambda c: c.frames),
    ("camtrap_camera_crops", "Crops sent to the classifier", lambda c: c.crops),
    ("camtrap_crops_dropped", "Crops dropped by a full queue", lambda c: c.drops),
]


class Metrics:
    def __init__(self, snapshot: Snapshot) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("camtrap_inference_latency_seconds",
                                 "Time to classify one batch", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_size = Histogram("camtrap_inference_batch_size", "Crops per batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.registry.register(_SnapshotCollector(snapshot))

    def observe_batch(self, size: int, latency_s: float | None) -> None:
        self.batch_size.observe(size)
        if latency_s is not None:
            self.latency.observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        cams = sorted(s.cameras.items())
        for name, doc, get in _PER_CAMERA_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["camera"])
            for cam, c in cams:
                g.add_metric([cam], get(c))
            yield g
        for name, doc, get in _PER_CAMERA_COUNTERS:
            cf = CounterMetricFamily(name, doc, labels=["camera"])
            for cam, c in cams:
                cf.add_metric([cam], get(c))
            yield cf
        st = s.storage
        yield GaugeMetricFamily("camtrap_crops_queued", "Crops waiting for the classifier",
                                value=s.inference.queued)
        yield GaugeMetricFamily("camtrap_outbox_messages", "Events not yet acknowledged",
                                value=st.outbox)
        yield CounterMetricFamily("camtrap_outbox_dropped", "Events dropped by a full outbox",
                                  value=st.outbox_dropped)
        yield GaugeMetricFamily("camtrap_storage_ok", "1 while the database takes writes",
                                value=float(st.ok))
        yield GaugeMetricFamily("camtrap_visit_events_held",
                                "Visit events held in memory until the database takes them",
                                value=st.unstored)
        yield CounterMetricFamily("camtrap_visit_events_dropped",
                                  "Visit events dropped by a full sink queue or held buffer",
                                  value=st.sink_dropped)
        yield CounterMetricFamily("camtrap_crop_write_failures",
                                  "Best crops that could not be written",
                                  value=st.crop_write_failures)
        events = CounterMetricFamily("camtrap_visit_events", "Visit events", labels=["type"])
        for kind, n in sorted(s.visit_events.items()):
            events.add_metric([kind], n)
        yield events
        yield GaugeMetricFamily("camtrap_visits_open", "Visits in progress", value=s.visits_open)
        yield GaugeMetricFamily("camtrap_mqtt_connected", "1 while connected to the broker",
                                value=float(bool(s.mqtt_connected)))
        if s.mqtt is not None:
            state = GaugeMetricFamily("camtrap_mqtt_state",
                                      "1 for the broker link's state (healthz mqtt.state)",
                                      labels=["state"])
            for name in MQTT_STATES:
                state.add_metric([name], float(s.mqtt.state == name))
            yield state
            yield GaugeMetricFamily("camtrap_mqtt_held_messages",
                                    "Outbox messages the broker refused, kept for a retry",
                                    value=s.mqtt.held)
        yield GaugeMetricFamily("camtrap_healthy", "1 while every thread makes progress",
                                value=float(s.healthy))
