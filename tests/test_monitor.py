"""One status snapshot behind /healthz, /metrics, <prefix>/stats and STATUS=."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from camtrap.comms.payloads import stats_payload
from camtrap.config.models import BatchingConfig, VisitsConfig
from camtrap.inference.queue import CropQueue
from camtrap.inference.worker import InferenceWorker
from camtrap.monitor import Parts, take_snapshot
from camtrap.motion.regions import Crop
from camtrap.sink import EventSink
from camtrap.storage.store import Store
from camtrap.timeutil import resolve_tz
from camtrap.visits.tracker import VisitTracker
from camtrap.web.metrics import Metrics
from tests.backends import NumpyBackend


def parts(tmp_path: Path, queue: CropQueue) -> Parts:
    backend = NumpyBackend()
    worker = InferenceWorker(backend, queue, BatchingConfig(), lambda _p: None)
    store = Store(tmp_path / "state")
    sink = EventSink(store, resolve_tz("UTC"), "node", [], publish_crops=False)
    return Parts(cameras=[], inference=worker, sink=sink, store=store,
                 tracker=VisitTracker(VisitsConfig(), backend.labels), publisher=None,
                 active=dict)


def test_metrics_scrape_while_camera_threads_add_drop_counters(tmp_path: Path) -> None:
    """Camera threads add a camera's drop counter the first time its crop is dropped; a
    scrape that iterates the live dict then fails with 'dictionary changed size'."""
    queue = CropQueue(maxsize=1)
    p = parts(tmp_path, queue)
    metrics = Metrics(lambda: take_snapshot(p, 0.0))
    image = np.zeros((8, 8, 3), np.uint8)
    stop = threading.Event()
    errors: list[BaseException] = []

    def camera(k: int) -> None:
        n = 0
        while not stop.is_set():
            queue.put(Crop(f"cam{k}-{n}", 0.0, n, (0, 0, 8, 8), (8, 8), image))
            n += 1

    threads = [threading.Thread(target=camera, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            try:
                text = metrics.render().decode()
            except RuntimeError as exc:
                errors.append(exc)
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"camtrap_crops_dropped", "camtrap_storage_ok", "camtrap_healthy"} <= families


def test_every_view_uses_the_snapshot_field_names(tmp_path: Path) -> None:
    queue = CropQueue(maxsize=4)
    p = parts(tmp_path, queue)
    snap = take_snapshot(p, 0.0)
    body = stats_payload(snap, datetime.now().astimezone())
    assert body["schema"] == 1
    assert {"uptime_s", "cameras", "queue", "inference", "outbox"} <= set(body)  # schema 1
    assert {"healthy", "storage", "mqtt_connected", "visits"} <= set(body)  # added
    assert set(body["inference"]) >= {"batches", "crops", "errors", "latency_ms_p50",
                                      "latency_ms_p95", "last_latency_ms"}
    assert snap.status_line().startswith("0/0 cameras up")
