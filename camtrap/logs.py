"""Logging for a terminal or the systemd journal, with secrets kept out of it."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

from camtrap.config.models import LoggingConfig

_PR_SET_NAME = 15


def name_os_thread() -> None:
    """Give the calling thread its Python name in the kernel too (first 15 bytes), so
    `top -H`, `ps -L` and /proc tell a camera from the classifier. Linux only; else no-op."""
    if not sys.platform.startswith("linux"):
        return
    name = threading.current_thread().name.encode()[:15]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name, 0, 0, 0)


_URL_IN_TEXT = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^/\s:@]+)(?::[^/\s@]*)?@")


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***` (user and host stay, for diagnosis)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def mask_text(text: str) -> str:
    """Mask every `scheme://user:password@` inside free text (OpenCV/FFmpeg messages)."""
    return _URL_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_text(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


def setup_logging(cfg: LoggingConfig) -> None:
    """Root handler on stderr; no timestamps under journald, which adds its own."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    for name, level in cfg.modules.items():
        logging.getLogger(name).setLevel(level)


_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    """Prefix lines with `<N>` so journald records the right priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"
