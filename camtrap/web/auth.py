"""Who may do what in the web interface, decided in one place for every route.

Roles: `owner` (everything), `viewer` (read-only: every page and GET of the API, no review,
no live view), anonymous (the login page and static files only). With `web.auth.mode: none`
everyone is the owner; the config refuses that beyond loopback unless told otherwise.

Identity comes from, in this order: an API token (`Authorization: Bearer`, owner, no CSRF
token: a browser never sends it on its own), a trusted proxy's user header (`mode: proxy`),
or a signed session cookie (`mode: password`). Every state-changing request made with a
cookie must come from this origin (`Sec-Fetch-Site`/`Origin`) and carry the session's CSRF
token in a form field or the `X-CSRF-Token` header; a JSON body is accepted without the
token, since a cross-origin page cannot send one without a CORS preflight we never allow.

`python -m camtrap.web.auth hash` prints a password hash for the config.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from camtrap.config.web import WebAuthConfig

OWNER = "owner"
VIEWER = "viewer"
COOKIE = "camtrap_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PBKDF2_ITERATIONS = 600_000
MAX_BODY = 256 * 1024  # a review or login form is a few hundred bytes; a bulk one a few KB
LOGIN_FAILURES = 10  # per client address ...
LOGIN_WINDOW_S = 600.0  # ... in this long, then 429 until the oldest failure ages out
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/login", "/logout"})
OWNER_GET_SUFFIXES = ("/live",)  # live camera frames: owner only, even for GET

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- passwords, secrets and signed values -------------------------------------------------


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """`pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`: stdlib only, Frigate's cost."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt),
                                  int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def load_secret(path: Path) -> bytes:
    """The key that signs session cookies: made once (0600) so sessions survive restarts."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    if len(data) < 16:
        raise OSError(f"{path}: the web session secret is too short (16 bytes at least)")
    return data


class Signer:
    """HMAC-SHA256 over a JSON payload with its issue time: tamper-proof, not secret."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _mac(self, body: bytes) -> str:
        mac = hmac.new(self.key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def sign(self, payload: dict[str, Any], now: float | None = None) -> str:
        data = {**payload, "t": int(now if now is not None else time.time())}
        body = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        text = body.decode().rstrip("=")
        return f"{text}.{self._mac(text.encode())}"

    def unsign(self, token: str, max_age_s: float, now: float | None = None
               ) -> dict[str, Any] | None:
        """The payload, or None when forged, malformed or older than `max_age_s`."""
        text, _, mac = token.partition(".")
        if not mac or len(token) > 4096 or not hmac.compare_digest(mac, self._mac(text.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), int):
            return None
        if (now if now is not None else time.time()) - data["t"] > max_age_s:
            return None
        return data


def _read_value(inline: Any, file: Path | None, what: str) -> str | None:
    """A secret given inline (SecretStr, from ${ENV}) or in a file (first line)."""
    if inline is not None:
        return str(inline.get_secret_value())
    if file is None:
        return None
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise OSError(f"{file}: cannot read the web {what}: {exc.strerror}") from None
    if not text:
        raise OSError(f"{file}: the web {what} file is empty")
    return text.splitlines()[0].strip()


# --- identities --------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who a request is from. `role` None: anonymous. `via`: none | session | token | proxy."""

    user: str | None
    role: str | None
    via: str

    @property
    def is_owner(self) -> bool:
        return self.role == OWNER

    @property
    def can_read(self) -> bool:
        return self.role in (OWNER, VIEWER)


ANONYMOUS = Identity(None, None, "anonymous")


class LoginThrottle:
    """Failed logins per client address in a sliding window: guessing gets slow."""

    def __init__(self, limit: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._fails.setdefault(client, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, client: str, now: float | None = None) -> bool:
        with self._lock:
            return len(self._recent(client, now or time.monotonic())) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        with self._lock:
            self._recent(client, now or time.monotonic()).append(now or time.monotonic())
            if len(self._fails) > 10_000:  # a flood of addresses must not grow it forever
                self._fails.clear()


class Auth:
    """The configured auth mode with its secrets read once at start (bad files: OSError)."""

    def __init__(self, cfg: WebAuthConfig, state_dir: Path) -> None:
        self.cfg = cfg
        self.mode = cfg.mode
        self.owner_hash = _read_value(cfg.owner_password_hash, cfg.owner_password_file,
                                      "owner password hash")
        self.viewer_hash = _read_value(cfg.viewer_password_hash, cfg.viewer_password_file,
                                       "viewer password hash")
        self.api_token = _read_value(cfg.api_token, cfg.api_token_file, "API token")
        if self.mode == "password" and self.owner_hash is None:
            raise OSError("web.auth: mode password needs the owner's password hash")
        self.signer = Signer(load_secret(cfg.secret_file or Path(state_dir) / "web-secret"))
        self.max_age_s = cfg.session_hours * 3600
        self.throttle = LoginThrottle()
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in cfg.trusted_proxies]

    def check_password(self, password: str) -> str | None:
        """The role this password logs in as, or None."""
        if self.owner_hash and verify_password(password, self.owner_hash):
            return OWNER
        if self.viewer_hash and verify_password(password, self.viewer_hash):
            return VIEWER
        return None

    def _trusted_proxy(self, client: str | None) -> bool:
        try:
            addr = ipaddress.ip_address(client or "")
        except ValueError:
            return False
        return any(addr in net for net in self._proxies)

    def identify(self, headers: dict[str, str], client: str | None,
                 session: dict[str, Any]) -> Identity:
        """Who the request is from; `headers` lower-case."""
        authz = headers.get("authorization", "")
        if self.api_token and authz.lower().startswith("bearer "):
            token = authz[7:].strip()
            if hmac.compare_digest(token.encode(), self.api_token.encode()):
                return Identity("api", OWNER, "token")
            return ANONYMOUS
        if self.mode == "none":
            return Identity(None, OWNER, "none")
        if self.mode == "proxy":
            user = headers.get(self.cfg.proxy_user_header.lower(), "").strip()
            if user and self._trusted_proxy(client):
                owners = self.cfg.proxy_owners
                return Identity(user[:64], OWNER if not owners or user in owners else VIEWER,
                                "proxy")
            return ANONYMOUS
        role = session.get("r")
        if role in (OWNER, VIEWER):
            return Identity(str(session.get("u") or role), role, "session")
        return ANONYMOUS

    def new_session(self, role: str | None = None) -> dict[str, Any]:
        """A fresh session (new CSRF token: a login never keeps the token from before)."""
        s: dict[str, Any] = {"c": secrets.token_urlsafe(24)}
        if role is not None:
            s.update(u=role, r=role)
        return s


# --- the policy: one check for every route ----------------------------------------------


def required_role(method: str, path: str) -> str | None:
    """The role a request needs: None (anyone), VIEWER or OWNER. Every route of the app
    goes through this one function (tests walk every route x role against it)."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    if method not in SAFE_METHODS:
        return OWNER
    if path.endswith(OWNER_GET_SUFFIXES):
        return OWNER
    return VIEWER


def relative_root(path: str) -> str:
    """The relative URL of the app's root from `path` (the route path, base path removed):
    every link and redirect is relative, so the app works under any proxy prefix."""
    depth = path.count("/") - 1
    return "../" * depth if depth > 0 else "./"


def _cross_site(headers: dict[str, str]) -> bool:
    """True when the browser says the request came from another site or origin."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser, or an old one: the token still has to match
    hosts = {headers.get("host", ""), headers.get("x-forwarded-host", "")} - {""}
    netloc = origin.split("://", 1)[-1]
    return origin == "null" or netloc not in hosts


class AuthMiddleware:
    """Pure ASGI (no buffering of streamed responses): identifies, enforces
    `required_role`, checks CSRF on state changes, bounds request bodies, and keeps a
    signed session cookie (which carries the CSRF token) on every browser."""

    def __init__(self, app: ASGIApp, auth: Auth, cookie_path: str = "/") -> None:
        self.app = app
        self.auth = auth
        self.cookie_path = cookie_path or "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        session = self._read_session(headers)
        fresh = session is None
        if session is None:
            session = self.auth.new_session()
        client = (scope.get("client") or (None,))[0]
        ident = self.auth.identify(headers, client, session)
        path = _route_path(scope)
        method = scope["method"]
        state = scope.setdefault("state", {})
        state.update(identity=ident, session=session, csrf=session["c"],
                     root=relative_root(path), auth=self.auth, set_session=None)

        need = required_role(method, path)
        if need is not None and not _allowed(ident, need):
            await self._deny(scope, send, ident, path, headers)
            return
        if method not in SAFE_METHODS:
            receive = await self._check_write(scope, receive, send, headers, session, ident)
            if receive is None:
                return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                new = state.get("set_session")
                if new is not None or (fresh and ident.via != "token"):  # scripts: no cookie
                    value = self.auth.signer.sign(new if new is not None else session)
                    hdrs = list(message.get("headers", []))
                    hdrs.append((b"set-cookie", self._cookie(value, scope).encode("latin-1")))
                    message["headers"] = hdrs
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _read_session(self, headers: dict[str, str]) -> dict[str, Any] | None:
        raw = headers.get("cookie")
        if not raw:
            return None
        jar = SimpleCookie()
        try:
            jar.load(raw)
        except Exception:  # a malformed Cookie header: treat as none
            return None
        morsel = jar.get(COOKIE)
        if morsel is None:
            return None
        data = self.auth.signer.unsign(morsel.value, self.auth.max_age_s)
        if data is None or not isinstance(data.get("c"), str):
            return None
        return data

    def _cookie(self, value: str, scope: Scope) -> str:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        max_age = int(self.auth.max_age_s)
        return (f"{COOKIE}={value}; Path={self.cookie_path}; Max-Age={max_age}; HttpOnly;"
                f" SameSite=Lax{secure}")

    async def _deny(self, scope: Scope, send: Send, ident: Identity, path: str,
                    headers: dict[str, str]) -> None:
        wants_html = "text/html" in headers.get("accept", "") and not path.startswith("/api/")
        if ident.role is None and wants_html and scope["method"] in SAFE_METHODS:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path.lstrip("/") + (f"?{query}" if query else "")
            location = relative_root(path) + "login?next=" + quote(target, safe="")
            await _plain(send, 303, b"", [(b"location", location.encode("latin-1"))])
            return
        if ident.role is None:
            await _plain(send, 401, b'{"error": "log in first"}\n',
                         [(b"content-type", b"application/json"),
                          (b"www-authenticate", b'Bearer realm="camtrap"')])
            return
        await _plain(send, 403, b'{"error": "the owner only"}\n',
                     [(b"content-type", b"application/json")])

    async def _check_write(self, scope: Scope, receive: Receive, send: Send,
                           headers: dict[str, str], session: dict[str, Any],
                           ident: Identity) -> Receive | None:
        """Bound the body, and unless a token authenticated it, demand same origin and the
        CSRF token. Returns the `receive` that replays the body, or None once answered."""
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _plain(send, 413, b'{"error": "request too large"}\n',
                         [(b"content-type", b"application/json")])
            return None
        body = await _read_body(receive, MAX_BODY)
        if body is None:
            await _plain(send, 413, b'{"error": "request too large"}\n',
                         [(b"content-type", b"application/json")])
            return None
        if ident.via != "token" and not self._csrf_ok(headers, body, session):
            await _plain(send, 403, b'{"error": "cross-site request refused (CSRF)"}\n',
                         [(b"content-type", b"application/json")])
            return None
        return _replay(body)

    def _csrf_ok(self, headers: dict[str, str], body: bytes, session: dict[str, Any]) -> bool:
        if _cross_site(headers):
            return False
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            return True  # cross-origin JSON needs a CORS preflight, which is never granted
        token = headers.get(CSRF_HEADER)
        if token is None and ctype == "application/x-www-form-urlencoded":
            try:
                values = parse_qs(body.decode("utf-8"), max_num_fields=1000)
            except (UnicodeDecodeError, ValueError):
                return False
            token = (values.get(CSRF_FIELD) or [None])[0]
        return token is not None and hmac.compare_digest(token.encode(), session["c"].encode())


def _allowed(ident: Identity, need: str) -> bool:
    return ident.is_owner if need == OWNER else ident.can_read


def _route_path(scope: Scope) -> str:
    """The path below the app's root path (what the router matches)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _plain(send: Send, status: int, body: bytes,
                 headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    """`python -m camtrap.web.auth hash`: prompt for a password, print its hash."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["hash"]:
        print("usage: python -m camtrap.web.auth hash", file=sys.stderr)
        return 2
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if len(password) < 8:
        print("a password of 8 characters at least, please", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
