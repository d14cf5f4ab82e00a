"""The daemon's HTTP endpoint: `/healthz` for checks and `/metrics` for Prometheus, both from
one status snapshot. (The web interface will join this server.)"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from camtrap.comms.payloads import stats_payload
from camtrap.status import StatusSnapshot
from camtrap.web.metrics import Metrics

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, snapshot: Callable[[], StatusSnapshot], metrics: Metrics, host: str,
                 port: int) -> None:
        self.snapshot = snapshot
        self.metrics = metrics
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
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
                    snap = outer.snapshot()
                    body = stats_payload(snap, datetime.now().astimezone())
                    self._send(200 if snap.healthy else 503, json.dumps(body).encode(),
                               "application/json")
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
