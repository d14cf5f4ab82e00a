"""Scheduled jobs on APScheduler's BackgroundScheduler, and the time logic they rest on.

Jobs (each configured as cron or interval in `schedule`, each can be switched off):
digest (`<prefix>/digest`, retained), nightly summary (files + `<prefix>/summary` and
`<prefix>/summary/image`, retained), retention, stats heartbeat (`<prefix>/stats`), plus two
internal ones: camera uptime sampling (feeds the summary) and active hours (pauses cameras
outside their window).

APScheduler's memory job store forgets runs missed while the daemon was down, so at start a
one-off job summarises the days that have visits but no summary yet, and runs retention.
Cron strings mean what crontab means (Sunday = 0, see config.crontab_fields) and a job at a
fixed hour fires once on the night clocks go back (APScheduler 3 fires it twice).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time as _time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from astral import Observer
from astral.sun import sunrise, sunset

from camtrap.config import TIME_SPEC_RE, crontab_fields
from camtrap.payloads import Topics, to_json
from camtrap.summary import (
    DaySummary,
    day_bounds,
    load_summary,
    resolve_tz,
    rollup_rows,
    summary_dates,
    summary_table,
    write_summary,
)

if TYPE_CHECKING:
    from camtrap.config import ActiveHoursConfig, Config, JobConfig, LocationConfig
    from camtrap.store import Store

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain

SUMMARY_GRACE_S = 6 * 3600  # a nightly summary late by up to this much still runs
RETENTION_GRACE_S = 6 * 3600
UPTIME_EVERY_S = 60.0
ACTIVE_CHECK_SECONDS = "0,30"  # active hours are re-evaluated twice a minute


# --- triggers ---------------------------------------------------------------------------


class CronOnceTrigger(CronTrigger):
    """A CronTrigger that fires a fixed-hour job once on the night clocks go back.

    APScheduler 3 fires "30 2 * * *" twice in Europe/Berlin on the last Sunday of October
    (02:30 CEST and again at 02:30 CET). Like cron, we skip the repeat when the hour field
    is fixed; an hourly-wildcard job still runs through the repeated hour in real time.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        t = super().get_next_fire_time(previous_fire_time, now)
        if self._hour_is_wildcard():
            return t
        while t is not None and _is_repeated_wall_time(t):
            t = super().get_next_fire_time(t, _just_after(t))
        return t

    def _hour_is_wildcard(self) -> bool:
        hour = next(f for f in self.fields if f.name == "hour")
        return str(hour) == "*"


def _just_after(t: datetime) -> datetime:
    """A microsecond later in real time (`t + timedelta` is wall-clock arithmetic, which
    on a repeated hour can go back an hour)."""
    return t.astimezone(UTC) + timedelta(microseconds=1)


def _is_repeated_wall_time(t: datetime) -> bool:
    """True for the second occurrence of a wall-clock time that happens twice (DST end)."""
    naive = t.replace(tzinfo=None)
    first = naive.replace(fold=0, tzinfo=t.tzinfo).utcoffset()
    second = naive.replace(fold=1, tzinfo=t.tzinfo).utcoffset()
    return (
        first != second
        and first is not None
        and second is not None
        and (t.utcoffset() == second and second < first)
    )


def cron_trigger(expr: str, tz: tzinfo | None) -> CronOnceTrigger:
    """A standard crontab line (local time of `tz`) as a trigger."""
    return CronOnceTrigger(**crontab_fields(expr), timezone=tz)


def build_trigger(job: JobConfig, tz: tzinfo, now: datetime) -> BaseTrigger | None:
    """The trigger for a job, None when switched off. Intervals count from `now` (given, so
    a test clock drives them too) and run in real time across DST changes."""
    if not job.enabled:
        return None
    if job.cron is not None:
        return cron_trigger(job.cron, tz)
    assert job.interval_min is not None
    every = timedelta(minutes=job.interval_min)
    return IntervalTrigger(seconds=every.total_seconds(), start_date=now + every, timezone=tz)


def summary_date_for(run_time: datetime) -> date:
    """Which day a summary run covers: a run in the morning (before noon) summarises the
    day before, so `5 0 * * *` summarises complete days and a late 23:55 run still gets
    its own day."""
    d = run_time.date()
    return d if run_time.hour >= 12 else d - timedelta(days=1)


def today_is_due(trigger: BaseTrigger | None, now: datetime) -> bool:
    """Has a summary run for today's date been scheduled between midnight and now?"""
    if not isinstance(trigger, CronTrigger):
        return False
    today = now.date()
    midnight = datetime.combine(today, time(0), tzinfo=now.tzinfo)
    t = trigger.get_next_fire_time(None, midnight)
    for _ in range(2000):  # one day of a per-minute cron, with room
        if t is None or t > now:
            return False
        if summary_date_for(t.astimezone(now.tzinfo)) == today:
            return True
        t = trigger.get_next_fire_time(t, _just_after(t))
    return False


def missing_summary_days(
    now: datetime,
    trigger: BaseTrigger | None,
    earliest: date,
    existing: set[date],
    has_visits: Callable[[date], bool],
) -> list[date]:
    """Days from `earliest` on that have visits and no summary, and are due: every day
    before today, and today once its scheduled run has passed."""
    today = now.date()
    out = []
    d = earliest
    while d <= today:
        if d not in existing and (d < today or today_is_due(trigger, now)) and has_visits(d):
            out.append(d)
        d += timedelta(days=1)
    return out


# --- active hours -----------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSpec:
    anchor: Literal["clock", "sunrise", "sunset"]
    minutes: int  # clock: minutes after midnight; sunrise/sunset: offset (negative = before)


def parse_time_spec(text: str) -> TimeSpec:
    m = TIME_SPEC_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not HH:MM, sunrise[+-N] or sunset[+-N]")
    if m["hour"] is not None:
        return TimeSpec("clock", int(m["hour"]) * 60 + int(m["minute"]))
    offset = int(m["offset"] or 0) * (-1 if m["sign"] == "-" else 1)
    return TimeSpec(m["sun"], offset)  # type: ignore[arg-type]


def resolve_time(
    spec: TimeSpec, day: date, tz: tzinfo, location: LocationConfig | None
) -> datetime | None:
    """The moment `spec` means on local `day`; None where the sun doesn't rise or set."""
    if spec.anchor == "clock":
        h, m = divmod(spec.minutes, 60)
        # a wall time that doesn't exist (DST start) lands after the gap, as cron's does
        return datetime.combine(day, time(h, m), tzinfo=tz).astimezone(tz)
    if location is None:
        raise ValueError(f"{spec.anchor} needs a location (latitude, longitude)")
    observer = Observer(location.latitude, location.longitude, location.elevation_m)
    fn = sunrise if spec.anchor == "sunrise" else sunset
    try:
        sun = fn(observer, date=day, tzinfo=tz)
    except ValueError:  # polar day or night
        return None
    return (sun + timedelta(minutes=spec.minutes)).astimezone(tz)


@dataclass(frozen=True)
class ActiveState:
    active: bool
    until: datetime | None  # when that changes (None: not within two days)
    window: str  # today's window in local time, e.g. "05:02-20:17", for status and logs

    def describe(self) -> str:
        nxt = "" if self.until is None else f" until {self.until:%Y-%m-%d %H:%M}"
        what = "active" if self.active else "paused, outside active hours"
        return f"{what} ({self.window}){nxt}"


def _intervals(
    window: ActiveHoursConfig, day: date, tz: tzinfo, location: LocationConfig | None
) -> tuple[datetime, datetime]:
    """The active interval that starts on `day`; an end not after the start is the next
    day's (a window across midnight). Without a sunrise/sunset: the whole day (fail open:
    a camera is never paused because of polar light)."""
    start_spec, end_spec = parse_time_spec(window.start), parse_time_spec(window.end)
    start = resolve_time(start_spec, day, tz, location)
    end = resolve_time(end_spec, day, tz, location)
    if end is not None and start is not None and end <= start:
        end = resolve_time(end_spec, day + timedelta(days=1), tz, location)
    if start is None or end is None:
        lo, hi = day_bounds(day, tz)
        return datetime.fromtimestamp(lo, tz), datetime.fromtimestamp(hi, tz)
    return start, end


def active_state(
    window: ActiveHoursConfig, when: datetime, location: LocationConfig | None, tz: tzinfo
) -> ActiveState:
    """Whether a camera with this window runs at `when`, and until when."""
    when = when.astimezone(tz)
    day = when.date()
    spans = [_intervals(window, day + timedelta(days=k), tz, location) for k in range(-1, 3)]
    today = spans[1]
    label = f"{today[0]:%H:%M}-{today[1]:%H:%M}"
    for i, (s, e) in enumerate(spans):
        if s <= when < e:
            for s2, e2 in spans[i + 1 :]:  # touching intervals (fail-open days) join up
                if s2 <= e:
                    e = max(e, e2)
            return ActiveState(True, e, label)
    upcoming = [s for s, _ in spans if s > when]
    return ActiveState(False, min(upcoming) if upcoming else None, label)


def is_active(
    window: ActiveHoursConfig | None,
    when: datetime,
    location: LocationConfig | None,
    tz: tzinfo,
) -> bool:
    """True when a camera with this window (None: always on) should decode at `when`."""
    return window is None or active_state(window, when, location, tz).active


# --- payloads -------------------------------------------------------------------------


def digest_payload(
    day: date,
    now: datetime,
    counts: list[tuple[str, str, int]],
    cameras: list[str],
    unknown_label: str | None = None,
) -> dict[str, Any]:
    """`<prefix>/digest`: today's visits per camera and species (most seen first)."""

    def ordered(d: dict[str, int]) -> dict[str, int]:
        return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

    species: dict[str, int] = {}
    per_cam: dict[str, dict[str, int]] = {c: {} for c in cameras}
    for cam, sp, n in counts:
        species[sp] = species.get(sp, 0) + n
        per_cam.setdefault(cam, {})[sp] = n
    return {
        "schema": 1,
        "date": day.isoformat(),
        "time": now.isoformat(timespec="seconds"),
        "visits": sum(species.values()),
        "species_count": sum(1 for s in species if s != unknown_label),
        "species": ordered(species),
        "cameras": {
            cam: {"visits": sum(sp.values()), "species": ordered(sp)}
            for cam, sp in sorted(per_cam.items())
        },
    }


def stats_payload(
    raw: Mapping[str, Any],
    active: Mapping[str, ActiveState],
    now: datetime,
    uptime_s: float,
) -> dict[str, Any]:
    """`<prefix>/stats` from the service's snapshot: `raw` is {"cameras": {name:
    CameraStatus.as_dict()}, "inference": InferenceWorker.stats(), "outbox": int}."""
    inf = raw.get("inference") or {}
    drops: dict[str, int] = dict(inf.get("drops") or {})

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    cameras = {}
    for name, st in sorted((raw.get("cameras") or {}).items()):
        entry = dict(st)
        entry["fps"] = st.get("processed_fps")
        entry["drops"] = drops.get(name, 0)
        a = active.get(name)
        entry["active"] = True if a is None else a.active
        entry["active_until"] = None if a is None or a.until is None else a.until.isoformat()
        cameras[name] = entry
    return {
        "schema": 1,
        "time": now.isoformat(timespec="seconds"),
        "uptime_s": round(uptime_s),
        "cameras": cameras,
        "queue": {"depth": inf.get("queued", 0), "drops": sum(drops.values())},
        "inference": {
            "batches": inf.get("batches", 0),
            "crops": inf.get("crops", 0),
            "errors": inf.get("errors", 0),
            "latency_ms_p50": ms(inf.get("latency_p50_s")),
            "latency_ms_p95": ms(inf.get("latency_p95_s")),
            "last_latency_ms": ms(inf.get("last_latency_s")),
        },
        "outbox": raw.get("outbox", 0),
    }


def split_by_day(start: datetime, end: datetime, tz: tzinfo) -> list[tuple[date, float]]:
    """Seconds of [start, end) on each local day it touches."""
    out = []
    t = start.astimezone(tz)
    end = end.astimezone(tz)
    while t < end:
        _, day_end = day_bounds(t.date(), tz)
        stop = min(end.timestamp(), day_end)
        out.append((t.date(), stop - t.timestamp()))
        t = datetime.fromtimestamp(stop, tz)
    return out


# --- the runner -------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionResult:
    visits: int = 0
    crops: int = 0
    summaries: int = 0
    rolled_up_days: int = 0


_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(json|md|jpg)$")


class JobRunner:
    """Owns the BackgroundScheduler. The service gives it a way to publish, a stats
    snapshot and a callback that pauses or resumes a camera; all three are optional."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        publish: Publish | None = None,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        on_active: Callable[[str, ActiveState], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.publish = publish
        self.stats = stats
        self.on_active = on_active
        self.tz = resolve_tz(cfg.schedule.timezone)
        self.clock = clock or (lambda: datetime.now(self.tz))
        self.topics = Topics(cfg.mqtt.prefix)
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
        self._files = threading.Lock()  # summaries and retention: one at a time
        self._stopping = threading.Event()
        self._last_sample: datetime | None = None
        self._started_mono = _time.monotonic()

    def now(self) -> datetime:
        return self.clock().astimezone(self.tz)

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
        body = stats_payload(
            self.stats(), self.active, self.now(), _time.monotonic() - self._started_mono
        )
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
        cams = self.stats().get("cameras") or {}
        for cam in self.cfg.cameras:
            if not cam.enabled:
                continue
            st = cams.get(cam.name) or {}
            state = self.active.get(cam.name)
            paused = state is not None and not state.active
            connected = bool(st.get("connected")) and not paused
            for day, secs in split_by_day(now - timedelta(seconds=span), now, self.tz):
                self.store.add_uptime(
                    day.isoformat(),
                    cam.name,
                    secs if connected else 0.0,
                    0.0 if paused else secs,
                    secs if paused else 0.0,
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
        older than `before`: what is left in them belongs to no kept visit."""
        removed = 0
        crops_dir = self.store.crops_dir
        if not crops_dir.is_dir():
            return 0
        for sub in crops_dir.iterdir():
            try:
                day = date.fromisoformat(sub.name)
            except ValueError:
                continue
            if sub.is_dir() and day < before:
                removed += sum(1 for p in sub.iterdir() if p.is_file())
                shutil.rmtree(sub, ignore_errors=True)
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
