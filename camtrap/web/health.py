"""Optional HTTP health endpoint: `/healthz` for checks, `/metrics` for Prometheus.

Gauges are read from the running service at scrape time, so the hot path pays nothing;
only the inference latency and batch size histograms are observed as batches finish.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from camtrap.service import Service

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("camtrap_inference_latency_seconds",
                                 "Time to classify one batch", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_size = Histogram("camtrap_inference_batch_size", "Crops per batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.registry.register(_ServiceCollector(service))

    def observe_batch(self, size: int, latency_s: float | None) -> None:
        self.batch_size.observe(size)
        if latency_s is not None:
            self.latency.observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        cams = list(svc.cameras)
        per_camera: list[tuple[str, str, Callable[..., float]]] = [
            ("camtrap_camera_connected", "1 while the camera delivers frames",
             lambda c: float(c.status.connected)),
            ("camtrap_camera_stream_fps", "Frames per second read from the stream",
             lambda c: c.status.stream_fps),
            ("camtrap_camera_processed_fps", "Frames per second looked at for motion",
             lambda c: c.status.processed_fps),
        ]
        for name, doc, get in per_camera:
            g = GaugeMetricFamily(name, doc, labels=["camera"])
            for c in cams:
                g.add_metric([c.camera.name], get(c))
            yield g
        counters: list[tuple[str, str, Callable[..., float]]] = [
            ("camtrap_camera_reconnects", "Reconnects since start", lambda c: c.status.reconnects),
            ("camtrap_camera_frames", "Frames read since start", lambda c: c.status.frames_seen),
            ("camtrap_camera_crops", "Crops sent to the classifier", lambda c: c.crops_emitted),
        ]
        for name, doc, get in counters:
            cf = CounterMetricFamily(name, doc, labels=["camera"])
            for c in cams:
                cf.add_metric([c.camera.name], get(c))
            yield cf
        drops = CounterMetricFamily("camtrap_crops_dropped", "Crops dropped by a full queue",
                                    labels=["camera"])
        for camera, n in svc.queue.drops.items():
            drops.add_metric([camera], n)
        yield drops
        yield GaugeMetricFamily("camtrap_crops_queued", "Crops waiting for the classifier",
                                value=len(svc.queue))
        yield GaugeMetricFamily("camtrap_outbox_messages", "Events not yet acknowledged",
                                value=svc.store.outbox_len())
        yield CounterMetricFamily("camtrap_outbox_dropped", "Events dropped by a full outbox",
                                  value=svc.store.outbox_dropped)
        events = CounterMetricFamily("camtrap_visit_events", "Visit events", labels=["type"])
        for kind, n in sorted(svc.event_counts.items()):
            events.add_metric([kind], n)
        yield events
        yield GaugeMetricFamily("camtrap_visits_open", "Visits in progress",
                                value=svc.tracker.open_visits)
        connected = svc.publisher is not None and svc.publisher.connected
        yield GaugeMetricFamily("camtrap_mqtt_connected", "1 while connected to the broker",
                                value=float(connected))


class HealthServer:
    def __init__(self, service: Service, metrics: Metrics, host: str, port: int) -> None:
        self.service = service
        self.metrics = metrics
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, outer.metrics.render(), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    report = outer.service.health_report()
                    code = 200 if report["healthy"] else 503
                    self._send(code, json.dumps(report).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("health: " + format, *args)

        return Handler

    def start(self) -> None:
        self.thread.start()
        log.info("health: http://%s:%d/healthz and /metrics", *self.httpd.server_address[:2])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
