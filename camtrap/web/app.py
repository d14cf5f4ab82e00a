"""The web interface's app (pages, the JSON API, images, `/healthz`, `/metrics`) and the
server that runs it in a daemon thread of the camtrap process.

Everything the app reads of the daemon comes in through `WebDeps`: a status snapshot
function, the metrics, a read-only `Reader`, the `Reviewer` (the one write path) and, for
the live view, a function giving a camera's latest JPEG. The app never takes the
pipeline's locks and never writes on its connection, so a busy browser cannot slow it.

uvicorn runs off the main thread (it then leaves signals to the daemon) with a short
graceful timeout, so a live-view client cannot hold up a stop.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from camtrap.comms.payloads import stats_payload
from camtrap.config.web import WebConfig
from camtrap.web.auth import Auth, AuthMiddleware, Identity, Scope
from camtrap.web.thumbs import Thumbnails

if TYPE_CHECKING:
    from camtrap.status import StatusSnapshot
    from camtrap.web.exports import Site
    from camtrap.web.metrics import Metrics
    from camtrap.web.queries import Reader
    from camtrap.web.reviewer import Reviewer

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
GRACEFUL_S = 2.0  # open responses (live view) are cut after this at a stop
START_TIMEOUT_S = 5.0

Frames = Callable[[str], "bytes | None"]


@dataclass
class WebDeps:
    """What the daemon lends the web interface. Only `cfg`, `state_dir`, `tz` and
    `reader` are needed; the rest switch features on (review, health, live view)."""

    cfg: WebConfig
    state_dir: Path
    tz: tzinfo
    reader: Reader
    reviewer: Reviewer | None = None
    snapshot: Callable[[], StatusSnapshot] | None = None
    metrics: Metrics | None = None
    labels: Sequence[str] = ()  # the model's labels: the correction search
    cameras: Sequence[str] = ()  # configured cameras, shown even without visits
    frames: Frames | None = None  # a camera's latest frame as JPEG (live view)
    site: Site | None = None  # where the cameras are, for eBird and Camtrap DP exports
    extra_routes: Sequence[BaseRoute] = ()
    stopping: threading.Event = field(default_factory=threading.Event)


# --- /healthz and /metrics: the same bodies as the stdlib health server ----------------


def healthz(request: Request) -> Response:
    """200 or 503 with the `<prefix>/stats` body, as `health:`'s server answers."""
    deps: WebDeps = request.app.state.deps
    if deps.snapshot is None:
        return JSONResponse({"error": "no status in this process"}, status_code=503)
    snap = deps.snapshot()
    body = json.dumps(stats_payload(snap, datetime.now().astimezone())).encode()
    return Response(body, 200 if snap.healthy else 503, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def metrics(request: Request) -> Response:
    deps: WebDeps = request.app.state.deps
    if deps.metrics is None:
        return Response(b"", 404)
    return Response(deps.metrics.render(), headers={"Cache-Control": "no-store",
                                                    "Content-Type": "text/plain; version=0.0.4"})


# --- middleware: base path and security headers ---------------------------------------


class BasePath:
    """Serves the app under `base` whether or not the proxy in front strips it: routes
    match below it, `root_path` names it. Links are relative anyway."""

    def __init__(self, app: Any, base: str) -> None:
        self.app = app
        self.base = base.rstrip("/")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.base and scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if not (path == self.base or path.startswith(self.base + "/")):
                path = self.base + path
            scope = {**scope, "path": path, "root_path": self.base}
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Strict defaults for every response: no framing except by `frame_ancestors` (a
    Home Assistant dashboard), same-origin scripts and styles only, no sniffing."""

    def __init__(self, app: Any, frame_ancestors: Sequence[str] = ()) -> None:
        self.app = app
        ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
        if frame_ancestors:
            ancestors = "'self' " + ancestors
        csp = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
               "script-src 'self'; connect-src 'self'; form-action 'self'; "
               f"base-uri 'none'; object-src 'none'; frame-ancestors {ancestors}")
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        ]
        if not frame_ancestors:
            self.headers.append((b"x-frame-options", b"DENY"))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


# --- the app ------------------------------------------------------------------------------


def identity(request: Request) -> Identity:
    return request.state.identity  # set by AuthMiddleware on every request


def _api_routes(deps: WebDeps) -> list[BaseRoute]:
    """The JSON API of api.py, asking our auth who the user is and who may write."""
    from camtrap.web import api

    def crop_url(request: Request, v: Any) -> str | None:
        if not v.crop_file:
            return None
        return f"{request.scope.get('root_path', '')}/media/crop/{v.visit_id}"

    def user_of(request: Request) -> str | None:
        return identity(request).user

    def can_write(request: Request) -> bool:
        return identity(request).is_owner

    return list(api.routes(deps.reader, deps.reviewer, crop_url=crop_url, user_of=user_of,
                           can_write=can_write, site=deps.site, cameras=list(deps.cameras)))


def create_app(deps: WebDeps) -> Starlette:
    """The whole web interface as one ASGI app. Reads its secrets (password hashes, the
    session key) now: a missing file is an OSError, bad input before the daemon is READY."""
    from camtrap.web import pages

    auth = Auth(deps.cfg.auth, deps.state_dir)
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *_api_routes(deps),
        *pages.routes(),
        *deps.extra_routes,
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [
        Middleware(BasePath, base=deps.cfg.base_path),
        Middleware(SecurityHeaders, frame_ancestors=deps.cfg.frame_ancestors),
        Middleware(AuthMiddleware, auth=auth, cookie_path=deps.cfg.base_path or "/"),
    ]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers=pages.exception_handlers())
    app.state.deps = deps
    app.state.thumbs = Thumbnails(deps.state_dir)
    app.state.templates = pages.templates()
    return app


# --- the server -------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a port in use fails the start (OSError, exit 2)
    and port 0 gives a free one (tests)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(f"web: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class WebServer:
    """uvicorn in a daemon thread. `start` returns once it serves; `stop` returns within
    `GRACEFUL_S` + a second or so even with streaming clients connected."""

    def __init__(self, app: Starlette, host: str, port: int,
                 graceful_s: float = GRACEFUL_S) -> None:
        import uvicorn

        self.app = app
        self.host = host
        self.sock = bind(host, port)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                proxy_headers=False, server_header=False,
                                timeout_graceful_shutdown=graceful_s, timeout_keep_alive=5,
                                h11_max_incomplete_event_size=64 * 1024)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="web", daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = self.app.state.deps.cfg.base_path
        return f"http://{host}:{self.port}{base}/"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"web: the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        log.info("web interface: %s", self.url)

    def stop(self, timeout_s: float = GRACEFUL_S + 3.0) -> None:
        """Ask uvicorn to finish; cut it off if it is still serving after `timeout_s`."""
        deps: WebDeps = self.app.state.deps
        deps.stopping.set()  # live views end their loop at once
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)
        self.sock.close()
        try:
            deps.reader.close()
        except Exception:  # closing read-only connections must not fail a stop
            log.debug("web: closing the reader failed", exc_info=True)
        if self.thread.is_alive():
            log.warning("web: the server thread did not end in time (a daemon thread)")
