"""Scheduled jobs: cron across DST, a real BackgroundScheduler on a fixed clock through a
nightly summary, catch-up after downtime, active hours at sunrise and sunset, uptime,
digest and stats payloads, and the config keys behind them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from camtrap.comms.payloads import Topics
from camtrap.config.base import ConfigError
from camtrap.config.loader import parse_config
from camtrap.config.models import ActiveHoursConfig, LocationConfig
from camtrap.schedule.active import (
    ActiveState,
    active_state,
    is_active,
    parse_time_spec,
    resolve_time,
)
from camtrap.schedule.jobs import JobRunner
from camtrap.schedule.triggers import (
    cron_trigger,
    missing_summary_days,
    summary_date_for,
    today_is_due,
)
from camtrap.status import CameraSnapshot, InferenceSnapshot, StatusSnapshot, StorageSnapshot
from camtrap.storage.store import Store
from tests.seed import add_visit, make_config
from tests.waiting import wait_until

BERLIN = ZoneInfo("Europe/Berlin")
JLM = ZoneInfo("Asia/Jerusalem")
JERUSALEM = LocationConfig(latitude=31.7683, longitude=35.2137)
MINIMAL = "cameras:\n  - name: feeder\n    url: rtsp://cam.local/stream\n"


def fires(trigger: CronTrigger | IntervalTrigger, start: datetime, n: int) -> list[datetime]:
    """The next n fire times from `start`, as the scheduler asks for them, in UTC (aware
    datetimes of a repeated wall time never compare equal across zones: PEP 495)."""
    out: list[datetime] = []
    prev, now = None, start
    for _ in range(n):
        t = trigger.get_next_fire_time(prev, now)
        assert t is not None
        out.append(t.astimezone(UTC))
        prev, now = t, t.astimezone(UTC) + timedelta(microseconds=1)
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- cron and DST -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "start", "expected"),
    [
        # Berlin: clocks forward 2026-03-29 02:00, back 2026-10-25 03:00
        (
            BERLIN,
            datetime(2026, 3, 28, 12),
            [utc(2026, 3, 28, 22, 55), utc(2026, 3, 29, 21, 55), utc(2026, 3, 30, 21, 55)],
        ),
        (
            BERLIN,
            datetime(2026, 10, 24, 12),
            [utc(2026, 10, 24, 21, 55), utc(2026, 10, 25, 22, 55), utc(2026, 10, 26, 22, 55)],
        ),
        # Jerusalem: forward Friday 2026-03-27 02:00, back 2026-10-25 02:00
        (
            JLM,
            datetime(2026, 3, 26, 12),
            [utc(2026, 3, 26, 21, 55), utc(2026, 3, 27, 20, 55), utc(2026, 3, 28, 20, 55)],
        ),
        (
            JLM,
            datetime(2026, 10, 24, 12),
            [utc(2026, 10, 24, 20, 55), utc(2026, 10, 25, 21, 55), utc(2026, 10, 26, 21, 55)],
        ),
    ],
)
def test_nightly_summary_stays_at_2355_local_across_dst(
    tz: ZoneInfo, start: datetime, expected: list[datetime]
) -> None:
    got = fires(cron_trigger("55 23 * * *", tz), start.replace(tzinfo=tz), 3)
    assert got == expected
    assert all((t.astimezone(tz).hour, t.astimezone(tz).minute) == (23, 55) for t in got)


def test_fixed_hour_job_fires_once_when_clocks_go_back() -> None:
    start = datetime(2026, 10, 24, 12, tzinfo=BERLIN)
    # plain APScheduler 3 runs "30 2 * * *" twice that night ...
    raw = fires(CronTrigger.from_crontab("30 2 * * *", timezone=BERLIN), start, 2)
    assert raw == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]
    # ... ours once, at the first 02:30 (CEST), like cron
    ours = fires(cron_trigger("30 2 * * *", BERLIN), start, 2)
    assert ours == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # Jerusalem repeats 01:00-02:00
    jlm = fires(cron_trigger("30 1 * * *", JLM), datetime(2026, 10, 24, 12, tzinfo=JLM), 2)
    assert jlm == [utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 23, 30)]


def test_fixed_hour_in_the_missing_hour_fires_once_after_the_gap() -> None:
    start = datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    got = fires(cron_trigger("30 2 * * *", BERLIN), start, 2)
    # 02:30 doesn't exist on 2026-03-29: it runs at 03:30 CEST, once; then 02:30 again
    assert got == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
    assert got[0].astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"


def test_wildcard_hour_runs_through_the_repeated_hour_in_real_time() -> None:
    start = datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN)
    got = fires(cron_trigger("*/30 * * * *", BERLIN), start, 6)
    assert [b - a for a, b in pairwise(got)] == [timedelta(minutes=30)] * 5
    assert got[0] == utc(2026, 10, 25, 0, 0)  # 02:00 CEST, then 02:30, 02:00 CET, 02:30 CET


def test_interval_jobs_count_real_minutes_across_dst() -> None:
    start = datetime(2026, 3, 27, 1, 40, tzinfo=JLM)
    trig = IntervalTrigger(minutes=15, start_date=start, timezone=JLM)
    got = fires(trig, start, 4)
    assert [b - a for a, b in pairwise(got)] == [timedelta(minutes=15)] * 3
    assert [t.astimezone(JLM).strftime("%H:%M") for t in got] == [
        "01:40",
        "01:55",
        "03:10",
        "03:25",
    ]


def test_crontab_weekdays_mean_what_cron_means() -> None:
    start = datetime(2026, 3, 1, tzinfo=JLM)  # a Sunday
    names = [t.strftime("%a") for t in fires(cron_trigger("0 8 * * 1-5", JLM), start, 6)]
    assert names == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]
    assert {t.strftime("%a") for t in fires(cron_trigger("0 8 * * 0", JLM), start, 3)} == {"Sun"}
    assert {t.strftime("%a") for t in fires(cron_trigger("0 8 * * 7", JLM), start, 3)} == {"Sun"}
    weekend = [t.strftime("%a") for t in fires(cron_trigger("0 8 * * 6,0", JLM), start, 4)]
    assert weekend == ["Sun", "Sat", "Sun", "Sat"]


def test_summary_date_and_due_days() -> None:
    assert summary_date_for(datetime(2026, 5, 14, 23, 55, tzinfo=JLM)) == date(2026, 5, 14)
    assert summary_date_for(datetime(2026, 5, 15, 0, 5, tzinfo=JLM)) == date(2026, 5, 14)
    nightly = cron_trigger("55 23 * * *", JLM)
    assert not today_is_due(nightly, datetime(2026, 5, 14, 23, 54, tzinfo=JLM))
    assert today_is_due(nightly, datetime(2026, 5, 14, 23, 55, tzinfo=JLM))
    after_midnight = cron_trigger("5 0 * * *", JLM)  # summarises the day before
    assert not today_is_due(after_midnight, datetime(2026, 5, 14, 23, 59, tzinfo=JLM))
    with_visits = {date(2026, 5, 10), date(2026, 5, 12), date(2026, 5, 13), date(2026, 5, 14)}
    got = missing_summary_days(
        datetime(2026, 5, 14, 10, 0, tzinfo=JLM),
        nightly,
        date(2026, 5, 11),
        existing={date(2026, 5, 12)},
        has_visits=with_visits.__contains__,
    )
    assert got == [date(2026, 5, 13)]  # 05-10 before the look-back, 05-14 not yet due


# --- a real scheduler on a fixed clock ----------------------------------------------------


class FixedClock:
    """The one clock of a test: APScheduler's `datetime.now` and the runner's both read it."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FixedClock:
    c = FixedClock(datetime(2026, 5, 14, 12, 0, tzinfo=JLM))

    class ClockDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return c.t.astimezone(tz) if tz else c.t.astimezone().replace(tzinfo=None)

    # where APScheduler 3.11 reads the time: due jobs and misfire grace
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", ClockDatetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", ClockDatetime)
    return c


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._cond:
            self.messages.append((topic, payload, retain))
            self._cond.notify_all()

    def topics(self) -> list[str]:
        with self._cond:
            return [t for t, _, _ in self.messages]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [p for t, p, _ in self.messages if t == topic]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                assert left > 0, f"no {topic} (have {self.topics()})"
                self._cond.wait(left)


def at(d: date, h: int, m: int, s: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, s, tzinfo=JLM)


DAY = date(2026, 5, 14)


@pytest.fixture
def runner_factory(tmp_path: Path, clock: FixedClock) -> Iterator[Callable[..., JobRunner]]:
    made: list[JobRunner] = []
    stores: list[Store] = []

    def make(recorder: Recorder | None = None, **kwargs: object) -> JobRunner:
        cfg = kwargs.pop("cfg", None) or make_config(tmp_path / "state")
        store = Store(cfg.storage.state_dir)
        stores.append(store)
        runner = JobRunner(cfg, store, Topics(cfg.mqtt.prefix), publish=recorder,
                           clock=clock.now, **kwargs)
        made.append(runner)
        return runner

    yield make
    for r in made:
        r.shutdown()
    for s in stores:
        s.close()


def seed_day(state_dir: Path, day: date) -> None:
    store = Store(state_dir)
    add_visit(store, "feeder", "Eurasian Hoopoe", at(day, 7, 10), score=0.8)
    add_visit(store, "ground", "Great Tit", at(day, 9, 30), score=0.9)
    store.close()


def test_fixed_clock_drives_a_real_scheduler_through_the_nightly_summary(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    seed_day(tmp_path / "state", DAY)
    clock.t = at(DAY, 23, 54, 30)
    rec = Recorder()
    runner = runner_factory(rec)
    runner.start()
    assert runner.startup_done.wait(5)
    summary_file = tmp_path / "state" / "summaries" / "2026-05-14.json"
    assert not summary_file.exists()  # 23:55 hasn't come yet
    digest = rec.wait_for("camtrap/digest")[0]
    assert b'"visits": 2' in digest
    job = runner.scheduler.get_job("summary")
    assert job.next_run_time == at(DAY, 23, 55)

    clock.t = at(DAY, 23, 55)
    runner.wakeup()
    body = rec.wait_for("camtrap/summary")[0]
    image = rec.wait_for("camtrap/summary/image")[0]
    assert summary_file.read_bytes() == body
    assert image == summary_file.with_suffix(".jpg").read_bytes() and image[:2] == b"\xff\xd8"
    assert summary_file.with_suffix(".md").exists()
    assert all(r for t, _, r in rec.messages if t.startswith("camtrap/summary"))  # retained
    data = json.loads(body)
    assert data["visits"] == 2 and data["new_species"] == ["Great Tit", "Eurasian Hoopoe"]
    tomorrow = at(date(2026, 5, 15), 23, 55)
    wait_until(lambda: runner.scheduler.get_job("summary").next_run_time == tomorrow, 5,
               "the summary job rescheduled for tomorrow")


def test_a_late_nightly_run_within_grace_summarises_its_own_day(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    seed_day(tmp_path / "state", DAY)
    clock.t = at(DAY, 23, 54)
    rec = Recorder()
    runner = runner_factory(rec)
    runner.start()
    assert runner.startup_done.wait(5)
    clock.t = at(date(2026, 5, 15), 0, 40)  # the machine was suspended through 23:55
    runner.wakeup()
    rec.wait_for("camtrap/summary")
    assert (tmp_path / "state" / "summaries" / "2026-05-14.json").exists()
    assert not (tmp_path / "state" / "summaries" / "2026-05-15.json").exists()


def test_catch_up_after_downtime_and_idempotence(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    state = tmp_path / "state"
    out = state / "summaries"
    for d in (date(2026, 5, 11), date(2026, 5, 13), DAY):  # nothing on the 12th
        seed_day(state, d)
    # the daemon ran on the 11th past 23:55 but was stopped before the job: made at start
    clock.t = at(date(2026, 5, 11), 23, 58)
    first = runner_factory(Recorder())
    first.start()
    assert first.startup_done.wait(5)
    assert sorted(p.name for p in out.glob("*.json")) == ["2026-05-11.json"]
    first.shutdown()
    made_11 = {p.name: p.read_bytes() for p in out.iterdir()}

    # down until the 14th at 10:00: the 13th is caught up, the 12th had no visits, the
    # 14th is not due before 23:55
    clock.t = at(DAY, 10, 0)
    rec = Recorder()
    second = runner_factory(rec)
    second.start()
    assert second.startup_done.wait(5)
    assert sorted(p.name for p in out.glob("*.json")) == ["2026-05-11.json", "2026-05-13.json"]
    assert b'"date": "2026-05-13"' in rec.wait_for("camtrap/summary")[0]  # the newest
    assert {p.name: p.read_bytes() for p in out.iterdir() if "05-11" in p.name} == made_11

    # producing the dates again gives the same bytes
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for p in out.iterdir():
        p.unlink()
    assert second.catch_up() == [date(2026, 5, 11), date(2026, 5, 13)]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert second.catch_up() == []  # nothing left to do
    second.produce_summary(date(2026, 5, 13))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_real_scheduler_runs_a_0230_job_once_on_the_night_clocks_go_back(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    cfg = make_config(
        tmp_path / "state",
        tz="Europe/Berlin",
        schedule="  digest: {enabled: false}\n  summary: {enabled: false}\n"
        "  retention: {cron: '30 2 * * *'}",
    )
    runs: list[datetime] = []
    done = threading.Semaphore(0)
    clock.t = datetime(2026, 10, 25, 2, 29, 50, tzinfo=BERLIN)  # CEST, fold=0
    runner = runner_factory(cfg=cfg)
    runner.run_retention = lambda: (runs.append(clock.t), done.release())  # type: ignore[method-assign]
    runner.start()
    assert runner.startup_done.wait(5) and done.acquire(timeout=5)  # retention at start
    job = runner.scheduler.get_job("retention")
    assert job.next_run_time.astimezone(UTC) == utc(2026, 10, 25, 0, 30)
    clock.t = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)  # the first 02:30 (CEST)
    runner.wakeup()
    assert done.acquire(timeout=5)
    # scheduled next for tomorrow's 02:30 CET, not for the repeated 02:30 an hour later
    tomorrow = utc(2026, 10, 26, 1, 30)
    wait_until(lambda: runner.scheduler.get_job("retention").next_run_time == tomorrow, 5,
               "the retention job rescheduled for tomorrow")
    clock.t = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN)  # the second 02:30 (CET)
    runner.wakeup()
    assert not done.acquire(timeout=0.3)
    assert len(runs) == 2


def test_catch_up_days_limits_the_look_back(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    state = tmp_path / "state"
    seed_day(state, date(2026, 4, 1))
    seed_day(state, date(2026, 5, 10))
    clock.t = at(DAY, 10, 0)
    cfg = make_config(state, schedule="  catch_up_days: 7")
    runner = runner_factory(cfg=cfg)
    assert runner.catch_up() == [date(2026, 5, 10)]


def test_switched_off_jobs_are_not_scheduled(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    cfg = make_config(
        tmp_path / "state",
        schedule="  digest: {enabled: false}\n  summary: {enabled: false}\n"
        "  retention: {enabled: false}\n  stats: {interval_min: 2}",
    )
    runner = runner_factory(cfg=cfg, stats=snapshot)
    runner.start()
    assert runner.startup_done.wait(5)
    assert {j.id for j in runner.scheduler.get_jobs()} == {"stats", "uptime"}
    assert runner.scheduler.get_job("stats").next_run_time == clock.t + timedelta(minutes=2)


# --- stats, digest, uptime ----------------------------------------------------------------


def snapshot(feeder_connected: bool = True) -> StatusSnapshot:
    cam = {
        "state": "streaming",
        "connected": feeder_connected,
        "stream_fps": 15.0,
        "processed_fps": 5.0,
        "reconnects_last_hour": 0,
        "last_frame_age_s": 0.1,
        "last_error": None,
    }

    def camera(state: dict[str, object], drops: int) -> CameraSnapshot:
        return CameraSnapshot(state=state, frames=100, reconnects=0, crops=40, drops=drops,
                              active=True, active_until=None, stuck=False)

    return StatusSnapshot(
        uptime_s=60.0,
        healthy=True,
        cameras={
            "feeder": camera(cam, 2),
            "ground": camera({**cam, "connected": False, "state": "connecting"}, 0),
        },
        inference=InferenceSnapshot(
            backend="torch cpu fp32 patch 16", alive=True, idle_s=0.1, batches=10, crops=40,
            errors=0, failed_crops=0, queued=3, drops={"feeder": 2}, latency_p50_s=0.0421,
            latency_p95_s=0.09, last_latency_s=0.05,
        ),
        storage=StorageSnapshot(ok=True, error=None, outbox=7, outbox_dropped=0,
                                crop_write_failures=0, unstored=0, sink_queued=0,
                                sink_dropped=0),
        mqtt_connected=True,
        visits_open=0,
    )


def test_stats_heartbeat_payload(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    rec = Recorder()
    runner = runner_factory(rec, stats=snapshot)
    body = runner.run_stats()
    assert body is not None
    assert body["cameras"]["feeder"]["fps"] == 5.0 and body["cameras"]["feeder"]["drops"] == 2
    assert body["cameras"]["ground"]["state"] == "connecting"
    assert body["cameras"]["feeder"]["active"] is True
    assert body["queue"] == {"depth": 3, "drops": 2}
    assert body["inference"]["latency_ms_p50"] == 42.1
    assert body["outbox"] == 7
    assert rec.messages[-1][0] == "camtrap/stats" and rec.messages[-1][2] is False


def test_digest_counts_today_per_camera_and_species(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    state = tmp_path / "state"
    seed_day(state, DAY)
    seed_day(state, date(2026, 5, 13))
    store = Store(state)
    add_visit(store, "feeder", "Eurasian Hoopoe", at(DAY, 11, 0))
    add_visit(store, "feeder", "Unknown bird", at(DAY, 11, 30), unknown=True)
    store.close()
    clock.t = at(DAY, 12, 0)
    rec = Recorder()
    body = runner_factory(rec).run_digest()
    assert body["date"] == "2026-05-14" and body["visits"] == 4
    assert body["species"] == {"Eurasian Hoopoe": 2, "Great Tit": 1, "Unknown bird": 1}
    assert body["species_count"] == 2
    assert body["cameras"]["feeder"] == {
        "visits": 3,
        "species": {"Eurasian Hoopoe": 2, "Unknown bird": 1},
    }
    assert body["cameras"]["ground"]["visits"] == 1
    assert rec.messages[-1][0] == "camtrap/digest" and rec.messages[-1][2] is True


def test_uptime_is_split_at_midnight_and_pauses_count_apart(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    cfg = make_config(tmp_path / "state", feeder="    active_hours: {start: '06:00', end: '20:00'}")
    clock.t = at(DAY, 23, 59, 30)
    runner = runner_factory(cfg=cfg, stats=snapshot)
    runner.update_active_hours()  # feeder is outside its window at night
    runner.sample_uptime()  # the first sample only starts the count
    clock.t = at(date(2026, 5, 15), 0, 0, 30)
    runner.sample_uptime()
    store = runner.store
    for day in ("2026-05-14", "2026-05-15"):
        up = store.uptime(day)
        assert (up["feeder"].up, up["feeder"].total, up["feeder"].paused) == (0, 0, 30)
        assert (up["ground"].up, up["ground"].total, up["ground"].paused) == (0, 30, 0)
    clock.t = at(date(2026, 5, 15), 6, 0)
    runner.update_active_hours()
    clock.t = at(date(2026, 5, 15), 6, 1)
    runner.sample_uptime()  # a 6 h gap counts as at most three samples
    up = store.uptime("2026-05-15")["feeder"]
    assert (up.up, up.total, up.paused) == (180, 180, 30)


# --- active hours -------------------------------------------------------------------------


def window(start: str, end: str) -> ActiveHoursConfig:
    return ActiveHoursConfig(start=start, end=end)


def test_sunrise_and_sunset_in_jerusalem_match_the_almanac() -> None:
    day = date(2026, 6, 21)
    rise = resolve_time(parse_time_spec("sunrise"), day, JLM, JERUSALEM)
    sett = resolve_time(parse_time_spec("sunset"), day, JLM, JERUSALEM)
    assert rise is not None and sett is not None
    # published times for Jerusalem on the solstice: 05:33 and 19:47 (IDT, +03:00)
    assert abs(rise - datetime(2026, 6, 21, 5, 33, tzinfo=JLM)) < timedelta(minutes=2)
    assert abs(sett - datetime(2026, 6, 21, 19, 47, tzinfo=JLM)) < timedelta(minutes=2)


def test_active_hours_around_sunrise_and_sunset() -> None:
    day = date(2026, 6, 21)
    w = window("sunrise-30", "sunset + 30 min")
    rise = resolve_time(parse_time_spec("sunrise"), day, JLM, JERUSALEM)
    sett = resolve_time(parse_time_spec("sunset"), day, JLM, JERUSALEM)
    assert rise is not None and sett is not None
    minute = timedelta(minutes=1)
    opens, closes = rise - 30 * minute, sett + 30 * minute
    assert not is_active(w, opens - minute, JERUSALEM, JLM)
    assert is_active(w, opens, JERUSALEM, JLM)
    assert is_active(w, closes - minute, JERUSALEM, JLM)
    assert not is_active(w, closes, JERUSALEM, JLM)
    state = active_state(w, datetime(2026, 6, 21, 12, 0, tzinfo=JLM), JERUSALEM, JLM)
    assert state.active and state.until == closes
    assert state.window == f"{opens:%H:%M}-{closes:%H:%M}"
    night = active_state(w, closes + minute, JERUSALEM, JLM)
    tomorrow = resolve_time(parse_time_spec("sunrise-30"), day + timedelta(days=1), JLM, JERUSALEM)
    assert not night.active and night.until == tomorrow
    assert "paused" in night.describe()


def test_sunrise_jumps_an_hour_on_the_dst_day_in_berlin() -> None:
    berlin = LocationConfig(latitude=52.52, longitude=13.405)
    w = window("sunrise", "sunset")
    sat = resolve_time(parse_time_spec("sunrise"), date(2026, 3, 28), BERLIN, berlin)
    sun = resolve_time(parse_time_spec("sunrise"), date(2026, 3, 29), BERLIN, berlin)
    assert sat is not None and sun is not None
    assert (sat.utcoffset(), sun.utcoffset()) == (timedelta(hours=1), timedelta(hours=2))
    wall = (sun.hour * 60 + sun.minute) - (sat.hour * 60 + sat.minute)
    assert 55 <= wall <= 59  # an hour later on the wall clock, less the day's gain
    assert not is_active(w, datetime(2026, 3, 29, 6, 40, tzinfo=BERLIN), berlin, BERLIN)
    assert is_active(w, datetime(2026, 3, 29, 6, 55, tzinfo=BERLIN), berlin, BERLIN)


def test_clock_windows_including_across_midnight() -> None:
    w = window("06:00", "19:30")
    day = date(2026, 5, 14)
    assert not is_active(w, at(day, 5, 59), None, JLM)
    assert is_active(w, at(day, 6, 0), None, JLM)
    assert not is_active(w, at(day, 19, 30), None, JLM)
    assert is_active(None, at(day, 3, 0), None, JLM)  # no window: always on
    night = window("20:00", "06:00")  # a camera trap for the night
    assert is_active(night, at(day, 23, 0), None, JLM)
    assert is_active(night, at(day, 5, 0), None, JLM)
    assert not is_active(night, at(day, 12, 0), None, JLM)
    assert active_state(night, at(day, 23, 0), None, JLM).until == at(date(2026, 5, 15), 6, 0)
    assert active_state(night, at(day, 12, 0), None, JLM).until == at(day, 20, 0)


def test_polar_night_never_pauses_a_camera() -> None:
    tromso = LocationConfig(latitude=69.65, longitude=18.96)
    oslo = ZoneInfo("Europe/Oslo")
    when = datetime(2026, 12, 21, 12, 0, tzinfo=oslo)
    assert resolve_time(parse_time_spec("sunrise"), when.date(), oslo, tromso) is None
    assert is_active(window("sunrise", "sunset"), when, tromso, oslo)


def test_runner_tells_the_service_about_changes_only(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    cfg = make_config(tmp_path / "state", feeder="    active_hours: {start: '06:00', end: '20:00'}")
    calls: list[tuple[str, ActiveState]] = []
    clock.t = at(DAY, 5, 59, 30)
    runner = runner_factory(cfg=cfg, on_active=lambda cam, st: calls.append((cam, st)))
    runner.update_active_hours()
    assert [(c, s.active) for c, s in calls] == [("feeder", False)]  # ground has no window
    assert calls[0][1].until == at(DAY, 6, 0)
    clock.t = at(DAY, 5, 59, 45)
    runner.update_active_hours()
    assert len(calls) == 1
    clock.t = at(DAY, 6, 0, 0)
    runner.update_active_hours()
    assert [(c, s.active) for c, s in calls] == [("feeder", False), ("feeder", True)]
    assert calls[1][1].until == at(DAY, 20, 0)


def test_active_hours_job_runs_on_the_scheduler(
    tmp_path: Path, clock: FixedClock, runner_factory: Callable[..., JobRunner]
) -> None:
    cfg = make_config(tmp_path / "state", feeder="    active_hours: {start: '06:00', end: '20:00'}")
    seen = threading.Event()
    clock.t = at(DAY, 19, 59, 50)
    runner = runner_factory(cfg=cfg, on_active=lambda cam, st: seen.set() if not st.active else 0)
    runner.start()  # evaluated at once: active
    assert runner.active["feeder"].active
    clock.t = at(DAY, 20, 0, 0)
    runner.wakeup()
    assert seen.wait(5)
    assert not runner.active["feeder"].active


# --- config -------------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "test.yaml", env={})
    return exc.value.problems


def test_config_keys_for_jobs_and_active_hours() -> None:
    cfg = parse_config(
        MINIMAL
        + "    active_hours: {start: sunrise-30, end: sunset+45}\n"
        + "location: {latitude: 31.77, longitude: 35.21}\n"
        + "storage:\n  retention: {visits_days: 30, crops_days: null}\n",
        env={},
    )
    assert cfg.cameras[0].active_hours == window("sunrise-30", "sunset+45")
    assert cfg.storage.retention.crops_days is None
    assert cfg.schedule.retention.cron == "30 3 * * *"
    assert problems(MINIMAL + "    active_hours: {start: sunrise, end: '20:00'}\n") == [
        "location: needed by cameras[0].active_hours (sunrise/sunset): set latitude and longitude"
    ]
    assert problems(MINIMAL + "    active_hours: {start: dawn, end: '20:00'}\n") == [
        "cameras[0].active_hours.start: 'dawn' is not a time: use HH:MM (local), sunrise or "
        "sunset, optionally with minutes, e.g. sunrise-30 or sunset+45"
    ]
    assert problems(MINIMAL + "    active_hours: {start: '06:00', end: '24:00'}\n") == [
        "cameras[0].active_hours.end: '24:00' is not a time of day (00:00 to 23:59)"
    ]
    assert problems(MINIMAL + "    active_hours: {start: '06:00', end: '06:00'}\n") == [
        "cameras[0].active_hours: start and end are the same: remove active_hours to run all day"
    ]
    assert problems(MINIMAL + "schedule:\n  summary: {cron: '55 23 * *'}\n") == [
        "schedule.summary.cron: bad crontab '55 23 * *': expected 5 fields (minute hour day "
        "month weekday), got 4"
    ]
    assert problems(MINIMAL + "storage:\n  retention: {visits_days: 0}\n") == [
        "storage.retention.visits_days: Input should be greater than or equal to 1"
    ]
