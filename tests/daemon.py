"""The daemon as a real subprocess on a temp config, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml


def daemon_config(
    tmp: Path,
    *,
    camera_url: str,
    checkpoint: Path,
    broker: Any | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A config that lets a random-weight model make visits quickly."""
    cfg: dict[str, Any] = {
        "cameras": [{"name": "feeder", "url": camera_url, "detect_fps": 5,
                     "open_timeout_s": 3, "read_timeout_s": 3}],
        "model": {"path": str(checkpoint), "device": "cpu", "precision": "fp32"},
        "batching": {"max_size": 8, "max_wait_ms": 20},
        "visits": {"threshold": 0.01, "min_hits": 2, "window_s": 10, "end_after_s": 3,
                   "update_interval_s": 1, "unknown": {"enabled": False}},
        "mqtt": {"enabled": broker is not None, "host": "127.0.0.1",
                 "port": broker.port if broker is not None else 1883, "prefix": "camtrap"},
        "storage": {"state_dir": str(tmp / "state")},
        "logging": {"level": "INFO"},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


class Daemon:
    """`python -m camtrap run` with its stderr in a file (read it with `.log`)."""

    def __init__(self, config: dict[str, Any], tmp: Path, env: dict[str, str] | None = None):
        self.config_path = tmp / "camtrap.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "camtrap", "run", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the daemon's log:\n{self.log[-4000:]}")

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        if exc_type is not None:
            print(f"--- daemon log ({self.log_path}) ---\n{self.log[-6000:]}")
        self._log.close()
