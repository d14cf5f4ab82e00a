"""Scheduled jobs on APScheduler's BackgroundScheduler.

Jobs (each configured as cron or interval in `schedule`, each can be switched off):
digest (`<prefix>/digest`, retained), nightly summary (files + `<prefix>/summary` and
`<prefix>/summary/image`, retained), retention, stats heartbeat (`<prefix>/stats`), plus two
internal ones: camera uptime sampling (feeds the summary) and active hours (pauses cameras
outside their window).

APScheduler's memory job store forgets runs missed while the daemon was down, so at start a
one-off job summarises the days that have visits but no summary yet, and runs retention.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from camtrap.comms.payloads import Topics, digest_payload, stats_payload, to_json
from camtrap.reports.build import DaySummary, load_summary, rollup_rows
from camtrap.reports.files import summary_dates, write_summary
from camtrap.reports.render import summary_table
from camtrap.schedule.active import ActiveState, active_state
from camtrap.schedule.triggers import build_trigger, missing_summary_days, summary_date_for
from camtrap.status import StatusSnapshot
from camtrap.timeutil import day_bounds, resolve_tz, split_by_day

if TYPE_CHECKING:
    from camtrap.config.models import Config, JobConfig
    from camtrap.storage.store import Store

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain

SUMMARY_GRACE_S = 6 * 3600  # a nightly summary late by up to this much still runs
RETENTION_GRACE_S = 6 * 3600
UPTIME_EVERY_S = 60.0
ACTIVE_CHECK_SECONDS = "0,30"  # active hours are re-evaluated twice a minute


@dataclass(frozen=True)
class RetentionResult:
    visits: int = 0
    crops: int = 0
    summaries: int = 0
    rolled_up_days: int = 0


def _hours_of(day: date, start: datetime, end: datetime, tz: Any) -> list[tuple[int, float]]:
    """Seconds of [start, end) in each local hour of `day` (an hour repeated when clocks go
    back counts into one slot)."""
    out: dict[int, float] = {}
    lo, hi = day_bounds(day, tz)
    t, stop = max(start.timestamp(), lo), min(end.timestamp(), hi)
    while t < stop:
        here = datetime.fromtimestamp(t, tz)
        nxt = min(stop, (here.replace(minute=0, second=0, microsecond=0)
                         + timedelta(hours=1)).timestamp())
        if nxt <= t:  # pragma: no cover - a zone with sub-hour offsets changes
            nxt = stop
        out[here.hour] = out.get(here.hour, 0.0) + (nxt - t)
        t = nxt
    return sorted(out.items())


_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(json|md|jpg)$")


class JobRunner:
    """Owns the BackgroundScheduler. The service gives it a way to publish, a stats
    snapshot and a callback that pauses or resumes a camera; all three are optional."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        topics: Topics,
        publish: Publish | None = None,
        stats: Callable[[], StatusSnapshot] | None = None,
        on_active: Callable[[str, ActiveState], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        files_lock: threading.Lock | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.publish = publish
        self.stats = stats
        self.on_active = on_active
        self.tz = resolve_tz(cfg.schedule.timezone)
        self.clock = clock or (lambda: datetime.now(self.tz))
        self.topics = topics
        self.summaries_dir = Path(cfg.storage.state_dir) / "summaries"
        self.camera_names = [c.name for c in cfg.cameras]
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            # "Running job ..." twice a minute is noise at INFO; `logging.modules` still wins
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        self.scheduler = BackgroundScheduler(
            timezone=self.tz,
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        self.startup_done = threading.Event()
        self.active: dict[str, ActiveState] = {}
        # summaries, retention and reviews' re-renders: one at a time; the service's lock
        # outlives a reload that restarts the jobs
        self._files = files_lock or threading.Lock()
        self._stopping = threading.Event()
        self._last_sample: datetime | None = None

    def now(self) -> datetime:
        return self.clock().astimezone(self.tz)

    @property
    def files_lock(self) -> threading.Lock:
        """Held while summary files or retention change: a review's re-render takes it."""
        return self._files

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Evaluate active hours now (before the cameras decode), add the jobs, start the
        scheduler thread. Catch-up, retention and a first digest run right after, on the
        scheduler's worker, so a long catch-up never delays READY."""
        sched = self.cfg.schedule
        now = self.now()
        self.update_active_hours()
        jobs: list[tuple[str, JobConfig, Callable[[], object], int]] = [
            ("digest", sched.digest, self.run_digest, 60),
            ("summary", sched.summary, self.run_nightly_summary, SUMMARY_GRACE_S),
            ("retention", sched.retention, self.run_retention, RETENTION_GRACE_S),
        ]
        if self.stats is not None:
            jobs.append(("stats", sched.stats, self.run_stats, 30))
        for job_id, job, func, grace in jobs:
            trigger = build_trigger(job, self.tz, now)
            if trigger is None:
                log.info("scheduler: %s is switched off", job_id)
                continue
            self.scheduler.add_job(func, trigger, id=job_id, name=job_id, misfire_grace_time=grace)
        if self.stats is not None:
            every = timedelta(seconds=UPTIME_EVERY_S)
            self.scheduler.add_job(
                self.sample_uptime,
                IntervalTrigger(seconds=UPTIME_EVERY_S, start_date=now + every, timezone=self.tz),
                id="uptime",
                name="uptime",
            )
        if any(c.enabled and c.active_hours for c in self.cfg.cameras):
            self.scheduler.add_job(
                self.update_active_hours,
                CronTrigger(second=ACTIVE_CHECK_SECONDS, timezone=self.tz),
                id="active_hours",
                name="active_hours",
            )
        self.scheduler.add_job(
            self._startup,
            "date",
            run_date=now,
            id="startup",
            name="startup",
            misfire_grace_time=None,
        )
        self.scheduler.start()
        log.info(
            "scheduler: %s",
            ", ".join(
                f"{j.id} {j.next_run_time:%Y-%m-%d %H:%M:%S}"
                for j in self.scheduler.get_jobs()
                if j.id != "startup" and j.next_run_time is not None
            ),
        )

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Stop scheduling; wait up to `timeout_s` for a summary or retention in progress
        (files are written atomically, so an abandoned one leaves no half file)."""
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._files.acquire(timeout=timeout_s):
            self._files.release()
        else:
            log.warning("scheduler: a summary or retention run is still going at shutdown")

    def wakeup(self) -> None:
        """Make the scheduler look at its jobs now (tests move their clock, then call this)."""
        self.scheduler.wakeup()

    def _startup(self) -> None:
        try:
            if self.cfg.schedule.summary.enabled:
                self.catch_up()
            if self.cfg.schedule.retention.enabled:
                self.run_retention()
            self.publish_latest_summary()
            if self.cfg.schedule.digest.enabled:
                self.run_digest()
        finally:
            self.startup_done.set()

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.publish is None:
            return
        try:
            self.publish(topic, payload, retain)
        except Exception:
            log.exception("scheduler: publishing %s failed", topic)

    # --- summaries ----------------------------------------------------------------------

    def produce_summary(self, day: date) -> DaySummary:
        """Summarise `day` into summaries/ (idempotent) and refresh its rollups."""
        with self._files:
            start, end = day_bounds(day, self.tz)
            summary = load_summary(self.store, day, self.tz, self.camera_names)
            files = write_summary(
                summary, self.summaries_dir, self.store.state_dir, self.cfg.storage.jpeg_quality
            )
            self.store.replace_rollups(
                day.isoformat(), rollup_rows(day, self.store.visits_between(start, end))
            )
        log.info(
            "summary for %s %s (%s)\n%s",
            day,
            "written" if files.changed else "unchanged",
            files.json,
            summary_table(summary),
        )
        return summary

    def publish_summary(self, day: date) -> bool:
        base = self.summaries_dir / day.isoformat()
        try:
            body = base.with_suffix(".json").read_bytes()
            image = base.with_suffix(".jpg").read_bytes()
        except FileNotFoundError:
            return False
        self._publish(self.topics.summary, body, True)
        self._publish(f"{self.topics.summary}/image", image, True)
        return True

    def publish_latest_summary(self) -> date | None:
        """Retained topics again after a restart: the broker may have lost them."""
        days = summary_dates(self.summaries_dir)
        if not days:
            return None
        latest = max(days)
        return latest if self.publish_summary(latest) else None

    def run_nightly_summary(self) -> date:
        now = self.now()
        day = summary_date_for(now)
        self.catch_up(now, exclude={day})
        self.produce_summary(day)
        self.publish_summary(day)
        return day

    def catch_up(self, now: datetime | None = None, exclude: Collection[date] = ()) -> list[date]:
        """Summarise the due days that have visits and no summary file (daemon was down).
        Publishing is the caller's: the newest summary, once."""
        now = now or self.now()
        today = now.date()
        earliest = today - timedelta(days=self.cfg.schedule.catch_up_days)
        keep = self.cfg.storage.retention.summaries_days
        if keep is not None:  # never re-make what retention deletes
            earliest = max(earliest, today - timedelta(days=keep))
        trigger = build_trigger(self.cfg.schedule.summary, self.tz, now)

        def has_visits(d: date) -> bool:
            return self.store.visit_count_between(*day_bounds(d, self.tz)) > 0

        days = [
            d
            for d in missing_summary_days(
                now, trigger, earliest, summary_dates(self.summaries_dir), has_visits
            )
            if d not in exclude
        ]
        done = []
        for d in days:
            if self._stopping.is_set():
                break
            log.info("summary for %s was missed (daemon down): making it now", d)
            self.produce_summary(d)
            done.append(d)
        return done

    # --- digest, stats, uptime, active hours --------------------------------------------

    def run_digest(self) -> dict[str, Any]:
        now = self.now()
        start, end = day_bounds(now.date(), self.tz)
        unknown = self.cfg.visits.unknown.label if self.cfg.visits.unknown.enabled else None
        body = digest_payload(
            now.date(), now, self.store.counts_between(start, end), self.camera_names, unknown
        )
        self._publish(self.topics.digest, to_json(body), True)
        return body

    def run_stats(self) -> dict[str, Any] | None:
        if self.stats is None:
            return None
        body = stats_payload(self.stats(), self.now())
        self._publish(self.topics.stats, to_json(body), False)
        return body

    def sample_uptime(self) -> None:
        """Credit the time since the last sample to each camera: watched (inside active
        hours), up (and connected) or paused. A gap (suspend, stall) counts at most three
        samples, so downtime is never counted as watched."""
        if self.stats is None:
            return
        now = self.now()
        last, self._last_sample = self._last_sample, now
        if last is None or now <= last:
            return
        span = min((now - last).total_seconds(), 3 * UPTIME_EVERY_S)
        cams = self.stats().cameras
        for cam in self.cfg.cameras:
            if not cam.enabled:
                continue
            st = cams.get(cam.name)
            state = self.active.get(cam.name)
            paused = state is not None and not state.active
            connected = st is not None and st.connected and not paused
            for day, secs in split_by_day(now - timedelta(seconds=span), now, self.tz):
                self.store.add_uptime(
                    day.isoformat(),
                    cam.name,
                    secs if connected else 0.0,
                    0.0 if paused else secs,
                    secs if paused else 0.0,
                    [
                        (h, s if connected else 0.0, 0.0 if paused else s, s if paused else 0.0)
                        for h, s in _hours_of(day, now - timedelta(seconds=span), now, self.tz)
                    ],
                )

    def update_active_hours(self) -> dict[str, ActiveState]:
        """Re-evaluate each camera's window; tell the service about every change (and about
        every windowed camera the first time)."""
        now = self.now()
        for cam in self.cfg.cameras:
            if not cam.enabled or cam.active_hours is None:
                continue
            state = active_state(cam.active_hours, now, self.cfg.location, self.tz)
            before = self.active.get(cam.name)
            self.active[cam.name] = state
            if before is None or before.active != state.active:
                log.info("camera %s: %s", cam.name, state.describe())
                if self.on_active is not None:
                    try:
                        self.on_active(cam.name, state)
                    except Exception:
                        log.exception("camera %s: active-hours callback failed", cam.name)
        return dict(self.active)

    # --- retention ----------------------------------------------------------------------

    def run_retention(self, now: datetime | None = None) -> RetentionResult:
        """Delete visits, crops and summaries older than `storage.retention` says, in whole
        local days before today. Days about to lose their visits are rolled up first."""
        now = (now or self.now()).astimezone(self.tz)
        today = now.date()
        r = self.cfg.storage.retention
        visits = crops = summaries = rolled = 0
        with self._files:
            if r.visits_days is not None:
                cutoff_day = today - timedelta(days=r.visits_days)
                cutoff, _ = day_bounds(cutoff_day, self.tz)
                oldest = self.store.oldest_visit_ts()
                if oldest is not None and oldest < cutoff:
                    d = datetime.fromtimestamp(oldest, self.tz).date()
                    while d < cutoff_day:
                        rows = self.store.visits_between(*day_bounds(d, self.tz))
                        if rows:
                            self.store.replace_rollups(d.isoformat(), rollup_rows(d, rows))
                            rolled += 1
                        d += timedelta(days=1)
                    visits, crops = self.store.delete_visits_before(cutoff)
                self.store.delete_uptime_before(cutoff_day.isoformat())
            ages = [a for a in (r.crops_days, r.visits_days) if a is not None]
            if ages:
                crop_day = today - timedelta(days=min(ages))
                crops += self.store.delete_crops_before(day_bounds(crop_day, self.tz)[0])
                crops += self._sweep_crop_dirs(crop_day - timedelta(days=1))
            if r.summaries_days is not None:
                summaries = self._delete_summaries(today - timedelta(days=r.summaries_days))
        result = RetentionResult(visits, crops, summaries, rolled)
        if visits or crops or summaries:
            log.info(
                "retention: deleted %d visits, %d crops, %d summary files",
                visits,
                crops,
                summaries,
            )
        return result

    def _sweep_crop_dirs(self, before: date) -> int:
        """Day folders of crops (named by the system's local date, hence a day's margin)
        older than `before`: what is left in them belongs to no stored visit, except the
        files of visits a reviewer kept (exempt from retention), which stay."""
        removed = 0
        crops_dir = self.store.crops_dir
        if not crops_dir.is_dir():
            return 0
        kept = {self.store.state_dir / f for f in self.store.kept_files()}
        for sub in crops_dir.iterdir():
            try:
                day = date.fromisoformat(sub.name)
            except ValueError:
                continue
            if not (sub.is_dir() and day < before):
                continue
            files = [p for p in sub.iterdir() if p.is_file()]
            if not any(p in kept for p in files):
                removed += len(files)
                shutil.rmtree(sub, ignore_errors=True)
                continue
            for p in files:
                if p not in kept:
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _delete_summaries(self, before: date) -> int:
        removed = 0
        if not self.summaries_dir.is_dir():
            return 0
        for p in self.summaries_dir.iterdir():
            m = _DAY_FILE.match(p.name)
            if m and date.fromisoformat(m[1]) < before:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
