"""A review, everywhere: the one write path of the web interface (pages and API alike).

1. `Store.review_many`, one transaction: the visit rows, `reviews` rows, the `type:
   "review"` message on `<prefix>/events` per visit (the outbox keeps it through a broker
   outage) and the day's `daily_rollups` recomputed from the effective species, so
   first-ever and first-this-year stay right.
2. `on_review(notice)`, at once: the service's hook for the retained per-camera topics
   (`visits_today`, and `species` when the reviewed visit is the camera's latest).
3. On a worker thread, so the HTTP reply does not wait for a mosaic: the day's summary
   files and mosaic rendered again if they exist, and those of the next day on which the
   old or the new species was seen (its first-ever/first-this-year flags may flip).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from camtrap.comms.payloads import Topics, review_body, reviewed_species_payload, to_json
from camtrap.timeutil import day_bounds, local_day, midnight_before
from camtrap.visits.reviews import ReviewError, ReviewOutcome, check
from camtrap.web.queries import Visit

if TYPE_CHECKING:
    from camtrap.storage.store import Store
    from camtrap.web.queries import Reader

log = logging.getLogger(__name__)

MAX_BULK = 500


@dataclass(frozen=True)
class BulkResult:
    reviewed: list[str]  # visit ids
    failed: dict[str, str]  # visit id -> why (not found, deleted, ...)


@dataclass(frozen=True)
class ReviewNotice:
    """What a review changed in a camera's retained MQTT state. `visits_today`: the
    camera's count of today's visits that count as birds, now; `species_payload`: the new
    `<prefix>/<camera>/species` body when the reviewed visit is (or was, until it was
    rejected or deleted) the camera's latest, else None."""

    visit_id: str
    camera: str
    visits_today: int
    species_payload: bytes | None


OnReview = Callable[[ReviewNotice], None]


class Reviewer:
    """See the module docstring. Thread-safe: reviews are serialised by the Store's lock.

    `files_lock`: the scheduler's lock over summary files (`JobRunner.files_lock`), so a
    re-render never races the nightly summary or retention. `background=False` renders
    files before returning (the CLI, tests)."""

    def __init__(
        self,
        store: Store,
        reader: Reader,
        tz: tzinfo,
        *,
        topics: Topics | None = None,
        node: str = "",
        cameras: Sequence[str] = (),
        jpeg_quality: int = 90,
        files_lock: threading.Lock | None = None,
        on_review: OnReview | None = None,
        background: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.reader = reader
        self.tz = tz
        self.topics = topics
        self.node = node
        self.cameras = list(cameras)
        self.jpeg_quality = jpeg_quality
        self.files_lock = files_lock
        self.on_review = on_review
        self.background = background
        self.clock = clock
        self.summaries_dir = Path(store.state_dir) / "summaries"
        self.rendered = 0  # summary days rendered again (tests, metrics)
        self._days: queue.Queue[date | None] = queue.Queue()
        self._pending: set[date] = set()
        self._pending_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._worker: threading.Thread | None = None

    # --- the write path -----------------------------------------------------------------

    def review(
        self,
        visit_id: str,
        action: str,
        species: str | None = None,
        user: str | None = None,
        note: str | None = None,
    ) -> Visit:
        """Apply one review and return the visit as it now stands. Raises KeyError when
        there is no such visit, ReviewError (a ValueError) when the review is not valid."""
        outcome = self.store.review(visit_id, action, species, user, note, now=self.clock(),
                                    messages=self._messages)
        self._after([outcome])
        v = self.reader.visit(visit_id)
        if v is None:  # pragma: no cover - retention removed it this very moment
            raise KeyError(visit_id)
        return v

    def bulk(
        self,
        visit_ids: list[str],
        action: str,
        species: str | None = None,
        user: str | None = None,
        note: str | None = None,
    ) -> BulkResult:
        """The same review on many visits (at most MAX_BULK), in one transaction; files are
        refreshed once per day touched. Raises ReviewError when the action itself is not
        valid or there are too many visits."""
        check(action, species, note)
        if len(visit_ids) > MAX_BULK:
            raise ReviewError(f"visit_ids: at most {MAX_BULK} visits at once")
        done, failed = self.store.review_many(visit_ids, action, species, user, note,
                                              now=self.clock(), messages=self._messages)
        self._after(done)
        return BulkResult(
            reviewed=[o.after.visit_id for o in done],
            failed={vid: "no such visit" if isinstance(e, KeyError) else str(e)
                    for vid, e in failed.items()},
        )

    def _messages(self, o: ReviewOutcome) -> list[tuple[str, bytes, int, bool]]:
        if self.topics is None:
            return []
        body = review_body(o.after, o.action, o.before.species, self.tz, self.node)
        return [(self.topics.events, to_json(body), 1, False)]

    # --- after the transaction ----------------------------------------------------------

    def _after(self, outcomes: list[ReviewOutcome]) -> None:
        changed = [o for o in outcomes if o.counting_changed]
        if not changed:
            return
        self._notify(changed)
        days: set[date] = set()
        for o in changed:
            day = local_day(o.after.start_ts, self.tz)
            days.add(day)
            for sp in {o.before.species, o.after.species}:
                nxt = self._next_day_with(sp, day_bounds(day, self.tz)[1])
                if nxt is not None:
                    days.add(nxt)
        for day in sorted(days):
            self._render_later(day)

    def _next_day_with(self, species: str, after_ts: float) -> date | None:
        """The first later day on which `species` was seen: its flags depend on this one."""
        return self.reader.next_day_with(species, after_ts)

    def _notify(self, outcomes: list[ReviewOutcome]) -> None:
        if self.on_review is None:
            return
        since = midnight_before(self.clock(), self.tz)
        for camera in dict.fromkeys(o.after.camera for o in outcomes):
            mine = [o for o in outcomes if o.after.camera == camera]
            latest_id = self.store.latest_visit_id(camera)
            latest = self.store.reviewed_visit(latest_id) if latest_id else None
            payload = None
            if latest is not None and any(o.after.start_ts >= latest.start_ts for o in mine):
                payload = reviewed_species_payload(latest, self.tz)
            notice = ReviewNotice(
                visit_id=mine[-1].after.visit_id,
                camera=camera,
                visits_today=self.store.count_visits(camera, since),
                species_payload=payload,
            )
            try:
                self.on_review(notice)
            except Exception:
                log.exception("review: the on_review hook failed for camera %s", camera)

    # --- summary files ------------------------------------------------------------------

    def _render_later(self, day: date) -> None:
        if not (self.summaries_dir / f"{day.isoformat()}.json").exists():
            return
        if not self.background:
            self.render(day)
            return
        with self._pending_lock:
            if day in self._pending:
                return
            self._pending.add(day)
            self._idle.clear()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="review-files",
                                                daemon=True)
                self._worker.start()
        self._days.put(day)

    def _work(self) -> None:
        while True:
            try:
                day = self._days.get(timeout=5.0)
            except queue.Empty:
                with self._pending_lock:
                    if not self._pending:
                        self._worker = None
                        return
                continue
            if day is None:
                return
            try:
                self.render(day)
            except Exception:
                log.exception("review: rendering the summary of %s again failed", day)
            finally:
                with self._pending_lock:
                    self._pending.discard(day)
                    if not self._pending:
                        self._idle.set()

    def render(self, day: date) -> bool:
        """Write `day`'s summary files again from the database, if it has them; whether
        any file changed."""
        from camtrap.reports.build import load_summary
        from camtrap.reports.files import write_summary

        lock: AbstractContextManager[object] = self.files_lock or nullcontext()
        with lock:
            if not (self.summaries_dir / f"{day.isoformat()}.json").exists():
                return False
            summary = load_summary(self.store, day, self.tz, self.cameras)
            files = write_summary(summary, self.summaries_dir, self.store.state_dir,
                                  self.jpeg_quality)
        self.rendered += 1
        log.info("review: summary of %s %s", day,
                 "rendered again" if files.changed else "unchanged")
        return files.changed

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait for queued summary renders (tests, a clean stop); whether they finished."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """At a stop, before the Store closes: let a queued render finish (for up to
        `timeout`), then end the worker. An unfinished render leaves the old files (they
        are replaced atomically); the nightly catch-up does not redo it, a later review
        or `camtrap summary` reads the database anyway."""
        if not self._idle.wait(timeout):
            log.warning("review: a summary render is still running at stop")
        self._days.put(None)
