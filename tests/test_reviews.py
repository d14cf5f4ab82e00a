"""Reviews: the pure rules, and a review changing the visit everywhere (SQLite row and
history, rollups and their first-ever/first-this-year flags, summary files and mosaic,
`camtrap summary`, the digest, retention, and MQTT through the outbox at a real broker).

Every test runs against a real SQLite file seeded through `Store.record`, as the daemon
writes it."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from camtrap.comms.mqtt import MqttPublisher
from camtrap.comms.payloads import Topics
from camtrap.config.models import MqttConfig
from camtrap.reports.files import summary_command
from camtrap.schedule.jobs import JobRunner
from camtrap.storage.store import Store
from camtrap.timeutil import day_bounds
from camtrap.visits.reviews import ReviewError, ReviewState, apply, effective_species
from camtrap.web.queries import Reader
from camtrap.web.reviewer import Reviewer, ReviewNotice
from tests.seed import add_visit, make_config
from tests.servers import Mosquitto, MqttRecorder
from tests.waiting import wait_until

JLM = ZoneInfo("Asia/Jerusalem")
D1, D2, D3 = date(2026, 5, 12), date(2026, 5, 13), date(2026, 5, 14)
NOW = 1_800_000_000.0


def at(d: date, h: int, m: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, tzinfo=JLM)


# --- the pure rules -------------------------------------------------------------------------

FRESH = ReviewState()


@pytest.mark.parametrize(
    ("state", "action", "species", "expected"),
    [
        (FRESH, "confirm", None, ReviewState("confirmed")),
        (FRESH, "correct", "House Sparrow", ReviewState("corrected", "House Sparrow")),
        # correcting to what the model said is a confirmation, not a correction
        (FRESH, "correct", " Great Tit ", ReviewState("confirmed")),
        (ReviewState("corrected", "House Sparrow"), "confirm", None, ReviewState("confirmed")),
        (ReviewState("corrected", "House Sparrow"), "reject", None, ReviewState("rejected")),
        (ReviewState("rejected"), "reset", None, FRESH),
        (FRESH, "delete", None, ReviewState(deleted_ts=NOW)),
        # a second delete keeps the first time (retention counts from it)
        (ReviewState(deleted_ts=5.0), "delete", None, ReviewState(deleted_ts=5.0)),
        # restore gives the verdict back
        (ReviewState("corrected", "Hoopoe", deleted_ts=5.0), "restore", None,
         ReviewState("corrected", "Hoopoe")),
        (FRESH, "keep", None, ReviewState(keep=True)),
        (ReviewState(keep=True, deleted_ts=5.0), "unkeep", None, ReviewState(deleted_ts=5.0)),
    ],
)
def test_each_action_sets_the_state_it_says(
    state: ReviewState, action: str, species: str | None, expected: ReviewState
) -> None:
    assert apply(state, "Great Tit", action, species, NOW) == expected


def test_effective_species_and_what_counts() -> None:
    corrected = ReviewState("corrected", "Hoopoe")
    assert effective_species("Great Tit", corrected) == "Hoopoe"
    assert effective_species("Great Tit", ReviewState("confirmed")) == "Great Tit"
    assert corrected.counts and not ReviewState("rejected").counts
    assert not ReviewState(deleted_ts=1.0).counts
    assert ReviewState("confirmed", deleted_ts=1.0).public_status == "deleted"


@pytest.mark.parametrize(
    ("state", "action", "species", "message"),
    [
        (FRESH, "approve", None, "action: must be one of"),
        (FRESH, "correct", None, "species: required"),
        (FRESH, "correct", "  ", "species: required"),
        (FRESH, "correct", "a\nb", "not a species name"),
        (FRESH, "correct", "x" * 201, "not a species name"),
        (ReviewState(deleted_ts=1.0), "confirm", None, "restore it first"),
        (ReviewState(deleted_ts=1.0), "correct", "Hoopoe", "restore it first"),
    ],
)
def test_reviews_the_rules_refuse(
    state: ReviewState, action: str, species: str | None, message: str
) -> None:
    with pytest.raises(ReviewError, match=message):
        apply(state, "Great Tit", action, species, NOW)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[Store]:
    s = Store(state, tz=JLM)
    yield s
    s.close()


@pytest.fixture
def reader(state: Path, store: Store) -> Iterator[Reader]:
    r = Reader(state, JLM)
    yield r
    r.close()


def reviewer(store: Store, reader: Reader, **kw: object) -> Reviewer:
    kw.setdefault("topics", Topics("camtrap"))
    kw.setdefault("background", False)
    return Reviewer(store, reader, JLM, node="test", cameras=["feeder", "ground"], **kw)  # type: ignore[arg-type]


def rows(state: Path, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(state / "camtrap.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def review_events(store: Store) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in store.pending(0, 1000)
            if m.topic == "camtrap/events" and json.loads(m.payload)["type"] == "review"]


# --- the write: one transaction ---------------------------------------------------------------


def test_a_review_writes_row_history_and_outbox_message_together(
    state: Path, store: Store, reader: Reader
) -> None:
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7), score=0.62)
    rv = reviewer(store, reader)
    v = rv.review(ev.visit_id, "correct", "House Sparrow", user="owner", note="the bill")

    assert (v.species, v.model_species, v.status, v.review_user) == (
        "House Sparrow", "Great Tit", "corrected", "owner")
    (row,) = rows(state, "SELECT status, reviewed_species, review_user FROM visits")
    assert tuple(row) == ("corrected", "House Sparrow", "owner")
    (hist,) = rows(state, "SELECT user, action, old_species, new_species, note, model_species"
                          " FROM reviews")
    assert tuple(hist) == ("owner", "correct", "Great Tit", "House Sparrow", "the bill",
                           "Great Tit")
    (body,) = review_events(store)
    assert body["schema"] == 1 and body["visit_id"] == ev.visit_id
    assert (body["species"], body["model_species"], body["unknown"], body["retracted"]) == (
        "House Sparrow", "Great Tit", False, False)
    assert body["review"] == {
        "status": "corrected", "species": "House Sparrow", "user": "owner",
        "time": body["review"]["time"], "action": "correct", "previous_species": "Great Tit",
        "keep": False,
    }
    for field in ("score", "top_k", "hits", "start_time", "last_seen", "end_time", "camera"):
        assert field in body


def test_a_refused_or_failed_review_leaves_no_trace(
    state: Path, store: Store, reader: Reader
) -> None:
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    rv = reviewer(store, reader)
    rv.review(ev.visit_id, "delete")
    with pytest.raises(ReviewError, match="restore it first"):
        rv.review(ev.visit_id, "correct", "Hoopoe")
    with pytest.raises(KeyError):
        rv.review("no-such-visit", "confirm")

    def broken(_outcome: object) -> list[tuple[str, bytes, int, bool]]:
        raise RuntimeError("the message could not be made")

    with pytest.raises(RuntimeError):
        store.review(ev.visit_id, "restore", messages=broken)
    # only the first delete is there: its row, its history, its message
    assert rows(state, "SELECT deleted_ts IS NOT NULL AS d FROM visits")[0]["d"] == 1
    assert [r["action"] for r in rows(state, "SELECT action FROM reviews")] == ["delete"]
    assert len(review_events(store)) == 1


def test_reject_delete_and_restore_retract_and_bring_back(
    store: Store, reader: Reader
) -> None:
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    rv = reviewer(store, reader)
    start, end = day_bounds(D3, JLM)
    rv.review(ev.visit_id, "reject")
    assert store.visits_between(start, end) == [] and store.counts_between(start, end) == []
    rv.review(ev.visit_id, "reset")
    rv.review(ev.visit_id, "delete")
    assert store.visit_count_between(start, end) == 0
    assert reader.visit(ev.visit_id) is not None  # soft: still stored, restorable
    v = rv.review(ev.visit_id, "restore")
    assert not v.deleted and [r.species for r in store.visits_between(start, end)] == [
        "Great Tit"]
    retracted = [e["retracted"] for e in review_events(store)]
    assert retracted == [True, False, True, False]


# --- everywhere: rollups, summary files and mosaic, `camtrap summary`, digest -----------------


def test_a_correction_moves_first_ever_and_renders_the_summaries_again(
    state: Path, store: Store, reader: Reader, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config(state)
    hoopoe_1 = add_visit(store, "feeder", "Eurasian Hoopoe", at(D1, 8))
    add_visit(store, "feeder", "Great Tit", at(D1, 9))
    add_visit(store, "ground", "Eurasian Hoopoe", at(D3, 10))
    runner = JobRunner(cfg, store, Topics("camtrap"), clock=lambda: at(D3, 23))
    for d in (D1, D3):
        runner.produce_summary(d)
    summaries = state / "summaries"
    before = {d: (summaries / f"{d}.jpg").read_bytes() for d in (D1, D3)}
    s3 = json.loads((summaries / f"{D3}.json").read_text())
    assert s3["new_species"] == []  # the hoopoe was seen on D1

    rv = reviewer(store, reader, files_lock=runner.files_lock)
    rv.review(hoopoe_1.visit_id, "correct", "House Sparrow")

    # rollups of D1 name the effective species at once
    assert {(r.species, r.visits) for r in store.rollups(D1.isoformat())} == {
        ("House Sparrow", 1), ("Great Tit", 1)}
    # D1's files: the sparrow instead of the hoopoe; D3's: the hoopoe is now first ever
    s1 = json.loads((summaries / f"{D1}.json").read_text())
    assert {s["species"] for s in s1["species"]} == {"House Sparrow", "Great Tit"}
    s3 = json.loads((summaries / f"{D3}.json").read_text())
    assert s3["new_species"] == ["Eurasian Hoopoe"]
    assert "House Sparrow" in (summaries / f"{D1}.md").read_text()
    for d in (D1, D3):
        assert (summaries / f"{d}.jpg").read_bytes() != before[d], f"mosaic of {d}"

    # `camtrap summary` reads the effective species
    assert summary_command(cfg, D1.isoformat(), as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert {s["species"] for s in out["species"]} == {"Great Tit", "House Sparrow"}
    assert out["new_species"] == ["Great Tit", "House Sparrow"]


def test_the_digest_counts_effective_species_and_skips_retracted(
    state: Path, store: Store, reader: Reader
) -> None:
    cfg = make_config(state)
    a = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    b = add_visit(store, "feeder", "Great Tit", at(D3, 8))
    c = add_visit(store, "ground", "White Wagtail", at(D3, 9))
    rv = reviewer(store, reader)
    rv.review(a.visit_id, "correct", "Palestine Sunbird")
    rv.review(b.visit_id, "reject")
    rv.review(c.visit_id, "delete")
    published: list[tuple[str, bytes, bool]] = []
    runner = JobRunner(cfg, store, Topics("camtrap"), clock=lambda: at(D3, 20),
                       publish=lambda t, p, r: published.append((t, p, r)))
    body = runner.run_digest()
    assert body["species"] == {"Palestine Sunbird": 1} and body["visits"] == 1
    assert body["cameras"]["ground"] == {"visits": 0, "species": {}}


def test_a_review_inside_a_retained_day_keeps_the_deleted_visits_counts(
    state: Path, store: Store, reader: Reader
) -> None:
    """Retention has deleted a day's visits but one kept visit: reviewing it moves one
    visit between the day's rollups instead of rolling the day up from what is left."""
    cfg = make_config(state, storage="  retention: {visits_days: 30}")
    kept = add_visit(store, "feeder", "Great Tit", at(D1, 7))
    for m in range(3):
        add_visit(store, "feeder", "Great Tit", at(D1, 8, m))
    rv = reviewer(store, reader)
    rv.review(kept.visit_id, "keep")
    runner = JobRunner(cfg, store, Topics("camtrap"), clock=lambda: at(date(2026, 7, 1), 3))
    result = runner.run_retention()
    assert result.visits == 3
    assert [(r.species, r.visits) for r in store.rollups(D1.isoformat())] == [("Great Tit", 4)]

    rv.review(kept.visit_id, "correct", "Eurasian Hoopoe")
    assert {(r.species, r.visits) for r in store.rollups(D1.isoformat())} == {
        ("Great Tit", 3), ("Eurasian Hoopoe", 1)}
    assert store.last_seen_before("Eurasian Hoopoe", 2e9) == kept.start_ts


def test_keep_exempts_a_visit_and_its_crop_from_retention(
    state: Path, store: Store, reader: Reader
) -> None:
    cfg = make_config(state, storage="  retention: {visits_days: 30, crops_days: 7}")
    kept = add_visit(store, "feeder", "Great Tit", at(D1, 7))
    gone = add_visit(store, "feeder", "Great Tit", at(D1, 8))
    trashed = add_visit(store, "ground", "White Wagtail", at(D1, 9))
    rv = reviewer(store, reader)
    rv.review(kept.visit_id, "keep")
    rv.review(trashed.visit_id, "delete")
    runner = JobRunner(cfg, store, Topics("camtrap"), clock=lambda: at(date(2026, 7, 1), 3))
    runner.run_retention()
    left = {r["visit_id"] for r in rows(state, "SELECT visit_id FROM visits")}
    assert left == {kept.visit_id}  # the soft-deleted one went with the unkept one
    assert store.crop_path(kept).exists() and not store.crop_path(gone).exists()
    assert reader.visit(kept.visit_id).crop_file is not None  # type: ignore[union-attr]
    # the day folder sweep also leaves the kept crop alone, the next night too
    runner.run_retention()
    assert store.crop_path(kept).exists()
    rv.review(kept.visit_id, "unkeep")
    runner.run_retention()
    assert rows(state, "SELECT COUNT(*) AS n FROM visits")[0]["n"] == 0


def test_bulk_review_applies_what_it_can_in_one_go(store: Store, reader: Reader) -> None:
    evs = [add_visit(store, "feeder", "Great Tit", at(D3, 7, m)) for m in range(4)]
    rv = reviewer(store, reader)
    rv.review(evs[0].visit_id, "delete")
    result = rv.bulk([e.visit_id for e in evs] + ["nope"], "correct", "House Sparrow", "me")
    assert result.reviewed == [e.visit_id for e in evs[1:]]
    assert set(result.failed) == {evs[0].visit_id, "nope"}
    assert "restore it first" in result.failed[evs[0].visit_id]
    assert result.failed["nope"] == "no such visit"
    assert [r.visits for r in store.rollups(D3.isoformat())] == [3]
    with pytest.raises(ReviewError):
        rv.bulk([e.visit_id for e in evs], "correct")


# --- the retained per-camera state: the hook ------------------------------------------------------


def test_the_hook_gets_visits_today_and_the_latest_species(
    store: Store, reader: Reader
) -> None:
    now = at(D3, 12).timestamp()
    early = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    latest = add_visit(store, "feeder", "Great Tit", at(D3, 8))
    notices: list[ReviewNotice] = []
    rv = reviewer(store, reader, on_review=notices.append, clock=lambda: now)

    rv.review(early.visit_id, "reject")  # not the latest: only the count changes
    assert notices[-1] == ReviewNotice(early.visit_id, "feeder", 1, None)
    rv.review(latest.visit_id, "correct", "Eurasian Hoopoe")
    payload = json.loads(notices[-1].species_payload or b"{}")
    assert (payload["species"], payload["visit_id"]) == ("Eurasian Hoopoe", latest.visit_id)
    assert notices[-1].visits_today == 1
    rv.review(early.visit_id, "reset")
    rv.review(latest.visit_id, "delete")  # the latest is gone: the one before shows
    payload = json.loads(notices[-1].species_payload or b"{}")
    assert (payload["species"], payload["visit_id"]) == ("Great Tit", early.visit_id)
    n = len(notices)
    rv.review(early.visit_id, "keep")  # nothing a camera shows changed
    assert len(notices) == n


# --- MQTT: through the outbox, at a real broker --------------------------------------------------


def test_a_review_reaches_the_broker_after_an_outage(
    store: Store, reader: Reader, mosquitto: Mosquitto, mqtt_recorder: MqttRecorder
) -> None:
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port, prefix="camtrap")
    pub = MqttPublisher(cfg, store, Topics("camtrap"))
    pub.start()
    try:
        wait_until(lambda: pub.connected, 10, "the publisher connects")
        retained: list[tuple[str, bytes]] = []

        def on_review(n: ReviewNotice) -> None:  # what the service wires to the sink
            pub.set_retained(f"camtrap/{n.camera}/visits_today", str(n.visits_today).encode())
            if n.species_payload is not None:
                pub.set_retained(f"camtrap/{n.camera}/species", n.species_payload)
            retained.append((n.camera, n.species_payload or b""))

        rv = reviewer(store, reader, on_review=on_review,
                      clock=lambda: at(D3, 12).timestamp())
        mosquitto.stop()
        wait_until(lambda: not pub.connected, 10, "the publisher sees the broker go")
        rv.review(ev.visit_id, "correct", "White Wagtail", user="owner")
        assert store.outbox_len() >= 1  # held in SQLite while the broker is away
        mosquitto.start()
        mqtt_recorder.wait_ready(15)
        pub.wake()

        def review_seen() -> list[dict[str, object]]:
            return [b for m in mqtt_recorder.messages("camtrap/events")
                    if (b := json.loads(m.payload))["type"] == "review"]

        (body,) = wait_until(review_seen, 15, "the review event at the broker")
        assert (body["visit_id"], body["species"], body["review"]["user"]) == (
            ev.visit_id, "White Wagtail", "owner")
        species = wait_until(lambda: mqtt_recorder.messages("camtrap/feeder/species"), 10,
                             "the retained species topic")
        assert json.loads(species[-1].payload)["species"] == "White Wagtail"
        wait_until(lambda: store.outbox_len() == 0, 10, "the outbox drains")
    finally:
        pub.stop(flush_timeout_s=1)


def test_no_topics_no_messages(store: Store, reader: Reader) -> None:
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    rv = reviewer(store, reader, topics=None)
    rv.review(ev.visit_id, "confirm")
    assert store.outbox_len() == 0


def test_summary_renders_run_off_the_request_thread(
    state: Path, store: Store, reader: Reader
) -> None:
    cfg = make_config(state)
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    runner = JobRunner(cfg, store, Topics("camtrap"), clock=lambda: at(D3, 23))
    runner.produce_summary(D3)
    rv = reviewer(store, reader, background=True, files_lock=runner.files_lock)
    with runner.files_lock:  # a nightly summary is being written: the review still returns
        v = rv.review(ev.visit_id, "correct", "House Sparrow")
        assert v.species == "House Sparrow"
        assert rv.rendered == 0
    assert rv.wait_idle(10)
    assert rv.rendered == 1
    s = json.loads((state / "summaries" / f"{D3}.json").read_text())
    assert [x["species"] for x in s["species"]] == ["House Sparrow"]


def test_payload_is_json_with_markup_kept_as_data(store: Store, reader: Reader) -> None:
    ev = add_visit(store, "feeder", "Great Tit", at(D3, 7))
    rv = reviewer(store, reader)
    rv.review(ev.visit_id, "correct", "<script>alert(1)</script>")
    (body,) = review_events(store)
    assert body["species"] == "<script>alert(1)</script>"
    assert io.BytesIO(json.dumps(body).encode()).getvalue()  # round-trips


def test_an_old_database_gets_the_review_columns(tmp_path: Path) -> None:
    """A schema-2 file (before embeddings and reviews) is migrated in place; its visits
    start unreviewed."""
    from camtrap.storage.db import _MIGRATIONS

    path = tmp_path / "state"
    path.mkdir()
    db = sqlite3.connect(path / "camtrap.sqlite3")
    db.executescript(_MIGRATIONS[1] + _MIGRATIONS[2] + "PRAGMA user_version = 2;")
    db.execute(
        "INSERT INTO visits (visit_id, camera, species, unknown, start_ts, last_ts, end_ts,"
        " best_score, hits, top_k, box, crop_file) VALUES"
        " ('v1', 'feeder', 'Great Tit', 0, 1.0, 2.0, 3.0, 0.9, 3, '[]', '[1, 2, 3, 4]', NULL)"
    )
    db.commit()
    db.close()
    s = Store(path, tz=JLM)
    try:
        old = s.reviewed_visit("v1")
        assert old is not None and old.state == ReviewState() and old.box == (1, 2, 3, 4)
        s.review("v1", "correct", "Hoopoe")
        assert [r.species for r in s.visits_between(0, 10)] == ["Hoopoe"]
    finally:
        s.close()
