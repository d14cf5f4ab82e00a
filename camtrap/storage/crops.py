"""Best-crop JPEGs beside the database: <state>/crops/<local day>/<camera>-<visit>.jpg.

A crop is an illustration of a visit, not the visit: when it cannot be written (disk full,
a read-only folder) the visit is still recorded, the failure is counted, and the log says so
once when it starts failing and once when it works again, not at every event.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import tzinfo
from pathlib import Path

from camtrap.timeutil import local_day
from camtrap.visits.tracker import VisitEvent

log = logging.getLogger(__name__)


class CropFiles:
    """The crop files of one state directory, in day folders named by the local date in
    `tz` (the configured `schedule.timezone`, which retention reads them in)."""

    def __init__(self, state_dir: Path, tz: tzinfo) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "crops"
        self.tz = tz
        self.write_failures = 0
        self._failing_since: int | None = None  # write_failures when this episode began

    def path(self, event: VisitEvent, suffix: str = "") -> Path:
        day = local_day(event.start_ts, self.tz).isoformat()
        return self.root / day / f"{event.camera}-{event.visit_id}{suffix}.jpg"

    def save(self, event: VisitEvent, data: bytes, suffix: str = "") -> str | None:
        """Write one image of the event (its crop; with `suffix` "-context" the frame it was
        cut from); its path relative to the state directory, or None when it could not be
        written (a previous file of the visit, if any, is left intact)."""
        path = self.path(event, suffix)
        try:
            _write_atomically(path, data)
        except OSError as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return str(path.relative_to(self.state_dir))

    def unlink(self, files: list[str]) -> int:
        """Delete crop files named relative to the state directory; how many were deleted."""
        removed = 0
        for rel in files:
            path = self.state_dir / rel
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc)
        return removed

    def _failed(self, exc: OSError) -> None:
        self.write_failures += 1
        if self._failing_since is None:
            self._failing_since = self.write_failures - 1
            log.warning(
                "cannot write crops under %s: %s; visits are still recorded, without new crops,"
                " until this is fixed (failures are counted as crop_write_failures)",
                self.root,
                exc,
            )

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            log.info(
                "crops are written under %s again (%d could not be written meanwhile)",
                self.root,
                self.write_failures - self._failing_since,
            )
            self._failing_since = None


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one; a partial temp file
    (disk full) is removed rather than left to fill the disk further."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
