"""Finding the species model's checkpoint: a local path, or birder's registry with a download
that can never hang (birder's has no timeout) and errors that name the file or URL and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from camtrap.config.models import ModelConfig

log = logging.getLogger(__name__)

LIST_MODELS_HINT = (
    "list the downloadable names with `python -m birder.tools list-models --pretrained`, "
    "or set model.path to a local .pt checkpoint"
)
_CHUNK = 256 * 1024
class ModelError(Exception):
    """The model cannot be found, fetched or loaded; the message names the file/URL and why."""


@dataclass(frozen=True)
class RegistryEntry:
    """What birder's registry says about a pretrained model name."""

    url: str  # of the .pt file
    sha256: str | None
    network: str


# --------------------------------------------------------------------------- registry


_birder_imported = False


def _registry() -> Any:
    """birder's model registry, with every network registered (importing birder does that)."""
    global _birder_imported
    import birder  # noqa: F401  (registers all networks)
    from birder.model_registry import registry

    if not _birder_imported:
        _birder_imported = True
        adopt_birder_logging()
    return registry


def adopt_birder_logging() -> None:
    """Route birder's log lines through camtrap's logging.

    Importing birder runs `logging.config.dictConfig`, giving the `birder` logger its own
    console handler, level INFO and propagate=False, so its lines would bypass our format
    and levels. Done once, at the first import; `logging.modules.birder` set after that wins.
    """
    birder_log = logging.getLogger("birder")
    birder_log.handlers.clear()
    birder_log.propagate = True
    birder_log.setLevel(logging.NOTSET)


def registry_entry(name: str) -> RegistryEntry | None:
    """Where birder's registry says `name`.pt lives and its sha256, or None if unknown."""
    registry = _registry()
    if not registry.pretrained_exists(name):
        return None
    from birder.conf import settings

    meta = registry.get_pretrained_metadata(name)
    base = meta.get("url", settings.REGISTRY_BASE_URL).rstrip("/")
    sha = meta.get("formats", {}).get("pt", {}).get("sha256")
    return RegistryEntry(f"{base}/{name}.pt", sha, meta["net"]["network"])


def network_name(model_name: str, checkpoint: dict[str, Any] | None = None) -> str:
    """The birder network (architecture) behind a weights name.

    In order: a `network` key in the checkpoint (birder's own files have none), the
    registry's metadata for a known pretrained name, the name itself if it is a network,
    else the longest `_`-separated prefix that is one (`<network>_<tag>` is birder's
    naming rule, so `flexivit_reg1_s16_rms_ls_my-tag` maps to `flexivit_reg1_s16_rms_ls`).
    """
    registry = _registry()
    if checkpoint is not None and isinstance(checkpoint.get("network"), str):
        return checkpoint["network"]
    entry = registry_entry(model_name)
    if entry is not None:
        return entry.network
    parts = model_name.split("_")
    for end in range(len(parts), 0, -1):
        candidate = "_".join(parts[:end])
        if registry.exists(candidate):
            return candidate
    raise ModelError(f"unknown network for model {model_name!r}; {LIST_MODELS_HINT}")


# --------------------------------------------------------------------------- download


def model_url(cfg: ModelConfig, entry: RegistryEntry | None) -> str | None:
    """The URL to fetch `cfg.name` from.

    `model.download_url` ending in `.pt` is the file's full URL; any other value is a mirror
    base, and the file is `<base>/<name>.pt` (the registry's own layout). http(s):// and
    file:// (a mounted share) work. Without it, the registry's URL; None when the registry
    does not know the name.
    """
    if cfg.download_url:
        if urlsplit(cfg.download_url).path.endswith(".pt"):
            return cfg.download_url
        return f"{cfg.download_url.rstrip('/')}/{cfg.name}.pt"
    return entry.url if entry else None


def resolve_checkpoint(cfg: ModelConfig, progress: bool = True) -> Path:
    """The local checkpoint for `cfg`, downloading it into `models_dir` on first use.

    `model.path` wins and is never downloaded. Otherwise `<models_dir>/<name>.pt` is used
    when present (checked against the registry's sha256 when known: a mirror serves the same
    bytes) and fetched when absent. Any failure is a ModelError that says what to do.
    """
    if cfg.path is not None:
        if not cfg.path.is_file():
            raise ModelError(f"model.path {cfg.path}: file not found")
        return cfg.path
    entry = registry_entry(cfg.name)
    dest = cfg.models_dir / f"{cfg.name}.pt"
    sha = entry.sha256 if entry else None
    if dest.is_file():
        _check_sha(dest, sha)
        return dest
    url = model_url(cfg, entry)
    if url is None:
        raise ModelError(
            f"model {cfg.name!r} is not in birder's registry and {dest} does not exist; "
            f"{LIST_MODELS_HINT}"
        )
    download(url, dest, sha, cfg.download_timeout_s, progress)
    return dest


def _check_sha(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"{path}: sha256 {actual} does not match the registry's {expected} "
            "(a partial or different file); delete it to download again, or set model.path "
            "to use it anyway"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None, timeout_s: float, progress: bool) -> None:
    """Fetch `url` to `dest` atomically (temp file + rename), or raise ModelError.

    `timeout_s` bounds every wait: the DNS lookup, the connect, and each read, so a
    silent server fails in about `timeout_s`, while a slow but moving download of the
    84 MB file is allowed to take as long as it needs.
    """
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(dest, timeout_s)
        _resolve_host(url, timeout_s)
        digest = _fetch(url, tmp, timeout_s, progress)
        if sha256 is not None and digest != sha256:
            raise ValueError(f"sha256 of the download is {digest}, expected {sha256}")
        os.replace(tmp, dest)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ModelError(
            f"cannot download {url} to {dest}: {_describe(exc)}. Fetch the file another way "
            f"and place it at {dest}, or set model.path to a local checkpoint"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_partials(dest: Path, timeout_s: float) -> None:
    """Temp files of killed downloads; a live one is written to at least every timeout_s."""
    cutoff = time.time() - max(60.0, 2 * timeout_s)
    for partial in dest.parent.glob(f".{dest.name}.*.partial"):
        with contextlib.suppress(OSError):
            if partial.stat().st_mtime < cutoff:
                partial.unlink()


def _resolve_host(url: str, timeout_s: float) -> None:
    """Look the host up in a helper thread: getaddrinfo ignores socket timeouts."""
    parts = urlsplit(url)
    if parts.scheme == "file":  # a local or mounted mirror: nothing to look up
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL (need http://, https:// or file://): {url}")
    result: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, name="model-dns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        raise TimeoutError(f"DNS lookup of {parts.hostname} took over {timeout_s:g} s")
    if result[0] is not None:
        raise result[0]


def _fetch(url: str, tmp: Path, timeout_s: float, progress: bool) -> str:
    """Stream the body into `tmp` with a progress bar; return its sha256."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "camtrap"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=timeout_s) as response, tmp.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024,
            desc=Path(urlsplit(url).path).name, disable=not progress,
        ) as bar:
            while block := response.read(_CHUNK):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        got = out.tell()
    if total is not None and got != total:
        raise ValueError(f"connection closed after {got} of {total} bytes")
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return _describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


