"""Reading the config file: YAML, `${VAR}` and `${VAR:-default}` from the environment (so
secrets stay out of the file), relative paths against the file, errors with field paths."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import (
    ValidationError,
)

from camtrap.config.base import ConfigError
from camtrap.config.models import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(
    data: object, env: dict[str, str], path: tuple[int | str, ...] = ()
) -> tuple[object, list[str]]:
    """Replace `${VAR}` / `${VAR:-default}` inside string values (never in comments or keys).

    A value that is only a variable and comes out empty becomes null, so
    `password: ${MQTT_PASSWORD:-}` means "no password". Returns the data and one problem
    line per unset variable.
    """
    if isinstance(data, dict):
        out_d: dict[object, object] = {}
        problems: list[str] = []
        for key, value in data.items():
            out_d[key], p = expand_env(value, env, (*path, str(key)))
            problems += p
        return out_d, problems
    if isinstance(data, list):
        out_l: list[object] = []
        problems = []
        for i, value in enumerate(data):
            v, p = expand_env(value, env, (*path, i))
            out_l.append(v)
            problems += p
        return out_l, problems
    if not isinstance(data, str) or "${" not in data:
        return data, []
    problems = []

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{_field_path(path)}: environment variable {name} is not set "
            f"(use ${{{name}:-default}} for an optional value)"
        )
        return ""

    expanded = _VAR.sub(sub, data)
    if expanded == "" and _VAR.fullmatch(data):
        return None, problems
    return expanded, problems


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: dict) -> str:
    # pydantic adds the failing input to the location for union/literal checks; keep
    # only field names and indices that exist in the file.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{_field_path(loc)}: {msg}"


def parse_config(text: str, source: str = "<config>", env: dict[str, str] | None = None) -> Config:
    """Validate YAML text; raise ConfigError listing every problem with its field path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"YAML syntax error at {where}{problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections"])
    data, problems = expand_env(data, dict(os.environ) if env is None else env)
    if problems:
        raise ConfigError(source, problems)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e) for e in exc.errors()]) from None


def load_config(path: Path | str, env: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["file is not UTF-8 text"]) from None
    cfg = parse_config(text, str(path), env)
    return _resolve_paths(cfg, path.parent)


def _resolve_paths(cfg: Config, base: Path) -> Config:
    """Relative paths in the file are relative to the file, not to the working directory."""

    def rel(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    model = cfg.model.model_copy(
        update={"path": rel(cfg.model.path), "models_dir": rel(cfg.model.models_dir)}
    )
    storage = cfg.storage.model_copy(update={"state_dir": rel(cfg.storage.state_dir)})
    tls = cfg.mqtt.tls
    tls = tls.model_copy(update={"ca_file": rel(tls.ca_file), "cert_file": rel(tls.cert_file),
                                 "key_file": rel(tls.key_file)})
    mqtt = cfg.mqtt.model_copy(update={"tls": tls})
    auth = cfg.web.auth
    auth = auth.model_copy(update={name: rel(getattr(auth, name)) for name in (
        "owner_password_file", "viewer_password_file", "api_token_file", "secret_file")})
    web = cfg.web.model_copy(update={"auth": auth})

    def source(url: str | None) -> str | None:
        if url is None or url.isdigit() or urlsplit(url).scheme != "":
            return url
        return str(rel(Path(url)))

    cams = [
        c.model_copy(update={"url": source(c.url), "detect_url": source(c.detect_url)})
        for c in cfg.cameras
    ]
    return cfg.model_copy(
        update={"model": model, "storage": storage, "mqtt": mqtt, "web": web, "cameras": cams}
    )
