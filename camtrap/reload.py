"""SIGHUP: read the config file again, work out what changed, and prepare everything that can
fail (the file, the model, the visit rules, the MQTT client) on a helper thread, so the main
thread keeps feeding the watchdog through a long model load or compile. The service then
applies the prepared result whole, with nothing left that can fail half way; if preparing
fails, nothing changes and the log says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camtrap.config.base import ConfigError
from camtrap.config.loader import load_config
from camtrap.config.models import CameraConfig, Config, ModelConfig
from camtrap.inference.backend import Backend
from camtrap.inference.checkpoint import ModelError
from camtrap.visits.tracker import VisitTracker

log = logging.getLogger(__name__)

FIXED_SECTIONS = ("storage", "web")  # applied only by a restart

LoadBackend = Callable[[ModelConfig, int], Backend]  # ready: loaded and warmed up


@dataclass(frozen=True)
class Changes:
    """What a new config changes, as far as the running daemon is concerned."""

    logging: bool = False
    backend: bool = False  # the model or the largest batch: a new backend is loaded
    batching: bool = False
    visits: bool = False
    cameras_stop: tuple[str, ...] = ()
    cameras_start: tuple[CameraConfig, ...] = ()
    jobs: bool = False
    publisher: bool = False  # MQTT or Home Assistant settings: a new publisher
    announce: bool = False  # cameras changed: Home Assistant entities added or removed
    kept: tuple[str, ...] = ()  # sections that changed but need a restart

    @property
    def anything(self) -> bool:
        return any((self.logging, self.backend, self.batching, self.visits, self.cameras_stop,
                    self.cameras_start, self.jobs, self.publisher, self.announce))


def camera_changes(old: Config, new: Config) -> tuple[tuple[str, ...], tuple[CameraConfig, ...]]:
    """(names to stop, configs to start): a camera whose settings changed is restarted, and
    every camera when the shared motion, region or track settings changed."""
    shared = (new.motion, new.regions, new.tracks) != (old.motion, old.regions, old.tracks)
    running = {c.name: c for c in old.cameras if c.enabled}
    wanted = {c.name: c for c in new.cameras if c.enabled}
    stop = tuple(n for n, c in running.items() if shared or wanted.get(n) != c)
    start = tuple(c for n, c in wanted.items() if n in stop or n not in running)
    return stop, start


def plan(old: Config, new: Config) -> tuple[Config, Changes]:
    """The config to run and what changes; sections that need a restart keep their values."""
    kept = tuple(s for s in FIXED_SECTIONS if getattr(new, s) != getattr(old, s))
    if kept:
        new = new.model_copy(update={s: getattr(old, s) for s in kept})
    backend = new.model != old.model or new.batching.max_size != old.batching.max_size
    stop, start = camera_changes(old, new)
    publisher = (new.mqtt, new.homeassistant) != (old.mqtt, old.homeassistant)
    jobs_inputs = ("schedule", "storage", "location", "cameras", "mqtt")
    return new, Changes(
        logging=new.logging != old.logging,
        backend=backend,
        batching=new.batching != old.batching,
        visits=backend or (new.visits, new.tracks) != (old.visits, old.tracks),
        cameras_stop=stop,
        cameras_start=start,
        jobs=any(getattr(new, k) != getattr(old, k) for k in jobs_inputs),
        publisher=publisher,
        announce=not publisher and new.cameras != old.cameras,
        kept=kept,
    )


@dataclass
class Prepared:
    """Everything a reload needs, built and checked; applying it cannot fail half way."""

    cfg: Config
    changes: Changes
    backend: Backend | None = None  # a new backend, loaded and warmed up
    tracker: VisitTracker | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # parts the service built ahead


def prepare(path: Path, old: Config, labels: list[str], load_backend: LoadBackend,
            build: Callable[[Config, Changes], dict[str, Any]] | None = None) -> Prepared:
    """Read and check the new file and build what it needs; raises on any problem."""
    new, changes = plan(old, load_config(path))
    backend = load_backend(new.model, new.batching.max_size) if changes.backend else None
    try:
        tracker = None
        if changes.visits:
            tracker = VisitTracker(new.visits, backend.labels if backend else labels,
                                   new.storage.jpeg_quality, new.tracks)
        extra = build(new, changes) if build is not None else {}
    except BaseException:
        if backend is not None:
            backend.close()
        raise
    return Prepared(new, changes, backend, tracker, extra)


class Reloader:
    """Runs `prepare` on a helper thread; the main loop collects the result with `poll`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._thread: threading.Thread | None = None
        self._result: Prepared | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def request(self, work: Callable[[Path], Prepared]) -> None:
        """Start preparing; the caller waits until the previous one is collected."""
        assert self._thread is None, "a reload is already being prepared"
        if self.path is None:
            log.error("reload: the daemon was not started from a file; nothing to read")
            return
        path = self.path

        def run() -> None:
            try:
                self._result = work(path)
            except ConfigError as exc:
                log.error("reload: %s is invalid, keeping the running config:\n  %s",
                          exc.source, "\n  ".join(exc.problems))
            except (ValueError, OSError, ModelError) as exc:
                log.error("reload failed, keeping the running config: %s", exc)
            except Exception:
                log.exception("reload failed, keeping the running config")

        self._result = None
        self._thread = threading.Thread(target=run, name="reload", daemon=True)
        self._thread.start()

    def poll(self) -> tuple[bool, Prepared | None]:
        """(finished, result): result is None when the reload failed (already logged)."""
        if self._thread is None or self._thread.is_alive():
            return False, None
        self._thread = None
        result, self._result = self._result, None
        return True, result
