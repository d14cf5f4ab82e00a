"""The `web:` section: where the web interface listens and who may use it. A config that
would serve it beyond this machine without authentication is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from camtrap.config.base import Strict

LOOPBACK_HOSTS = ("localhost", "::1")
PASSWORD_HASH_RE = r"^pbkdf2_sha256\$\d+\$[0-9a-f]+\$[0-9a-f]+$"


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server bound here (127.0.0.0/8, ::1, localhost)."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class WebAuthConfig(Strict):
    """Who may use the web interface. `none`: everyone is the owner (loopback only, unless
    web.allow_unauthenticated); `password`: an owner and an optional read-only viewer log
    in; `proxy`: an authenticating reverse proxy names the user in a header."""

    mode: Literal["none", "password", "proxy"] = "none"
    # PBKDF2 hashes (`python -m camtrap.web.auth hash`), from ${ENV} or a file beside them
    owner_password_hash: SecretStr | None = None
    owner_password_file: Path | None = None
    viewer_password_hash: SecretStr | None = None
    viewer_password_file: Path | None = None
    # Bearer token for scripts (owner rights, no CSRF token needed), or a file holding it
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    session_hours: float = Field(default=24 * 30, gt=0, le=24 * 366)
    secret_file: Path | None = None  # signs session cookies; None: <state_dir>/web-secret
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    proxy_user_header: str = "Remote-User"
    proxy_owners: list[str] = Field(default_factory=list)  # others are viewers; [] = all

    @field_validator("owner_password_hash", "viewer_password_hash")
    @classmethod
    def _hash(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.fullmatch(PASSWORD_HASH_RE, v.get_secret_value()):
            raise ValueError(
                "not a password hash: make one with `python -m camtrap.web.auth hash`"
            )
        return v

    @model_validator(mode="after")
    def _owner_needed(self) -> WebAuthConfig:
        if self.mode == "password" and not (self.owner_password_hash
                                            or self.owner_password_file):
            raise ValueError("mode password needs owner_password_hash or owner_password_file")
        return self


class WebConfig(Strict):
    """The web interface (pages, JSON API, /healthz and /metrics on one port). The fields
    `host` is checked against come first: a validator sees only the fields before it."""

    enabled: bool = False
    auth: WebAuthConfig = WebAuthConfig()
    allow_unauthenticated: bool = False  # serve beyond loopback with auth.mode none
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    base_path: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~-]+)*$")
    frame_ancestors: list[str] = Field(default_factory=list)  # who may embed it (HA iframe)

    @field_validator("host")
    @classmethod
    def _no_open_door(cls, host: str, info: ValidationInfo) -> str:
        auth = info.data.get("auth")
        if (info.data.get("enabled") and isinstance(auth, WebAuthConfig)
                and auth.mode == "none" and not is_loopback(host)
                and not info.data.get("allow_unauthenticated")):
            raise ValueError(
                f"{host!r} is reachable beyond this machine and web.auth.mode is none: set"
                " web.auth.mode (password or proxy), bind 127.0.0.1, or say"
                " web.allow_unauthenticated: true"
            )
        return host
