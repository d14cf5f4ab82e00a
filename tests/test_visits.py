"""Visit rules on recorded prediction sequences: pure logic, no threads, time passed in."""

from __future__ import annotations

import numpy as np
import pytest

from camtrap.config.models import VisitsConfig
from camtrap.inference.backend import Prediction
from camtrap.motion.regions import Crop
from camtrap.visits.tracker import VisitEvent, VisitTracker, unknown_names, visit_id

LABELS = ["Eurasian Hoopoe", "House Sparrow", "Great Tit", "Laughing Dove"]
T0 = 1_800_000_000.0


def pred(ts: float, label: str, score: float, camera: str = "feeder") -> Prediction:
    image = np.full((240, 240, 3), int(score * 255), np.uint8)
    crop = Crop(camera, T0 + ts, int(ts * 10), (10, 20, 100, 100), (640, 360), image)
    rest = [(name, (1 - score) / 3) for name in LABELS if name != label]
    return Prediction(crop=crop, top_k=((label, score), *rest[:2]))


def feed(
    tracker: VisitTracker, seq: list[tuple[float, str, float]], camera: str = "feeder"
) -> list[VisitEvent]:
    return [ev for ts, label, score in seq
            for ev in tracker.observe(pred(ts, label, score, camera))]


def cfg(**kw: object) -> VisitsConfig:
    base: dict[str, object] = {
        "threshold": 0.6, "min_hits": 2, "window_s": 10, "end_after_s": 30,
        "update_interval_s": 5,
    }
    return VisitsConfig.model_validate(base | kw)


def test_start_needs_min_hits_within_window() -> None:
    t = VisitTracker(cfg(), LABELS)
    assert feed(t, [(0, "Great Tit", 0.9), (11, "Great Tit", 0.9)]) == []  # 11 s apart
    events = feed(t, [(12, "Great Tit", 0.8)])
    assert [e.kind for e in events] == ["start"]
    start = events[0]
    assert start.species == "Great Tit" and not start.unknown
    assert start.start_ts == T0 + 11 and start.hits == 2
    assert start.score == pytest.approx(0.9)
    assert start.crop_jpeg[:2] == b"\xff\xd8"  # the best crop, as JPEG


def test_update_only_when_best_improves_and_rate_limited() -> None:
    t = VisitTracker(cfg(), LABELS)
    feed(t, [(0, "Great Tit", 0.7), (1, "Great Tit", 0.7)])
    assert feed(t, [(2, "Great Tit", 0.65)]) == []  # not better
    assert feed(t, [(3, "Great Tit", 0.8)]) == []  # better, but only 3 s since start
    events = feed(t, [(6, "Great Tit", 0.7)])  # interval passed: report the pending best
    assert [(e.kind, round(e.score, 2), e.hits) for e in events] == [("update", 0.8, 5)]
    assert feed(t, [(12, "Great Tit", 0.75)]) == []  # nothing better since the update


def test_end_after_quiet_period_with_stable_id() -> None:
    t = VisitTracker(cfg(), LABELS)
    start = feed(t, [(0, "Great Tit", 0.9), (1, "Great Tit", 0.9)])[0]
    assert t.tick(T0 + 30) == []  # 29 s after the last hit
    (end,) = t.tick(T0 + 31)
    assert end.kind == "end" and end.visit_id == start.visit_id
    assert end.end_ts == T0 + 1
    assert t.open_visits == 0
    again = feed(t, [(40, "Great Tit", 0.9), (41, "Great Tit", 0.9)])[0]
    assert again.kind == "start" and again.visit_id != start.visit_id


def test_three_tiers() -> None:
    t = VisitTracker(cfg(), LABELS)
    assert feed(t, [(0, "House Sparrow", 0.1), (1, "House Sparrow", 0.15)]) == []  # below floor
    (ev,) = feed(t, [(2, "House Sparrow", 0.3), (3, "Great Tit", 0.4)])  # between floor and 0.6
    assert ev.species == "Unknown bird" and ev.unknown
    assert ev.top_k[0] == ("Great Tit", 0.4)  # the best look, with the model's guess


def test_unknown_tier_can_be_switched_off() -> None:
    t = VisitTracker(cfg(unknown={"enabled": False}), LABELS)
    assert feed(t, [(0, "House Sparrow", 0.4), (1, "House Sparrow", 0.4)]) == []


def test_uncertain_looks_do_not_open_unknown_visit_beside_a_named_one() -> None:
    t = VisitTracker(cfg(), LABELS)
    feed(t, [(0, "Great Tit", 0.9), (1, "Great Tit", 0.9)])
    assert feed(t, [(2, "Great Tit", 0.4), (3, "Great Tit", 0.45)]) == []


def test_species_threshold_override_is_case_insensitive() -> None:
    t = VisitTracker(cfg(species_thresholds={"eurasian hoopoe": 0.3}), LABELS)
    (ev,) = feed(t, [(0, "Eurasian Hoopoe", 0.35), (1, "Eurasian Hoopoe", 0.35)])
    assert ev.species == "Eurasian Hoopoe" and not ev.unknown


def test_allow_and_deny_lists() -> None:
    t = VisitTracker(cfg(deny=["house sparrow"], unknown={"enabled": False}), LABELS)
    assert feed(t, [(0, "House Sparrow", 0.9), (1, "House Sparrow", 0.9)]) == []
    t = VisitTracker(cfg(allow=["Great Tit"], unknown={"enabled": False}), LABELS)
    assert feed(t, [(0, "Laughing Dove", 0.9), (1, "Laughing Dove", 0.9)]) == []
    assert len(feed(t, [(2, "Great Tit", 0.9), (3, "Great Tit", 0.9)])) == 1


def test_names_the_model_does_not_know_are_errors() -> None:
    bad = cfg(allow=["Great Tit", "Dodo"], deny=["Kiwi"], species_thresholds={"Moa": 0.5})
    assert unknown_names(bad, LABELS) == [
        "visits.allow[1]: 'Dodo': not a species of this model",
        "visits.deny[0]: 'Kiwi': not a species of this model",
        "visits.species_thresholds.Moa: not a species of this model",
    ]
    with pytest.raises(ValueError, match="Dodo"):
        VisitTracker(bad, LABELS)


def test_cameras_are_independent() -> None:
    t = VisitTracker(cfg(), LABELS)
    assert feed(t, [(0, "Great Tit", 0.9)], "a") == []
    assert feed(t, [(1, "Great Tit", 0.9)], "b") == []  # one hit each: no visit
    events = feed(t, [(2, "Great Tit", 0.9)], "a") + feed(t, [(2, "Great Tit", 0.9)], "b")
    assert sorted(e.camera for e in events) == ["a", "b"]
    assert len({e.visit_id for e in events}) == 2


def test_flush_ends_everything() -> None:
    t = VisitTracker(cfg(), LABELS)
    feed(t, [(0, "Great Tit", 0.9), (1, "Great Tit", 0.9), (1, "Laughing Dove", 0.9),
             (2, "Laughing Dove", 0.9)])
    ends = t.flush()
    assert sorted(e.species for e in ends) == ["Great Tit", "Laughing Dove"]
    assert all(e.kind == "end" for e in ends)


@pytest.mark.parametrize("jump_s", [3 * 3600, -3 * 3600])
def test_a_wall_clock_jump_neither_ends_nor_holds_open_a_visit(jump_s: float) -> None:
    """NTP arriving on a Pi without a real-time clock moves the wall clock by hours while
    a bird is at the feeder: durations run on the monotonic clock, stamps on the wall's."""
    t = VisitTracker(cfg(), LABELS)
    mono0 = 5_000.0

    def sighting(s: float) -> Prediction:
        p = pred(s, "Great Tit", 0.9)
        wall = p.crop.ts + (jump_s if s >= 10 else 0)  # the clock is set at 10 s
        crop = Crop(p.crop.camera, wall, p.crop.frame_seq, p.crop.box, p.crop.frame_size,
                    p.crop.image, mono=mono0 + s)
        return Prediction(crop=crop, top_k=p.top_k)

    events = [ev for s in range(0, 21) for ev in t.observe(sighting(s))]
    assert [e.kind for e in events if e.kind != "update"] == ["start"]
    assert t.tick(mono0 + 20) == [] and t.tick(mono0 + 49) == []  # quiet for 29 s: open
    (end,) = t.tick(mono0 + 50)  # quiet for 30 s: ended, not hours early or late
    assert end.kind == "end" and end.start_ts == T0 + 0
    assert end.end_ts == T0 + 20 + jump_s  # stamps follow the (corrected) wall clock


# --- visits from tracks: a crop with a `track_id` is a look at one bird, and votes ---


def look(ts: float, track: int, label: str, score: float, camera: str = "feeder"
         ) -> Prediction:
    p = pred(ts, label, score, camera)
    c = p.crop
    crop = Crop(c.camera, c.ts, c.frame_seq, c.box, c.frame_size, c.image, track_id=track)
    return Prediction(crop=crop, top_k=p.top_k)


def watch(t: VisitTracker, seq: list[tuple[float, int, str, float]]) -> list[VisitEvent]:
    return [ev for ts, tr, label, score in seq for ev in t.observe(look(ts, tr, label, score))]


def test_one_lucky_look_does_not_name_a_tracked_bird() -> None:
    """Three confident but different answers about one bird: an unknown bird, not the first
    species the model happened to say."""
    t = VisitTracker(cfg(), LABELS)
    assert watch(t, [(0, 1, "Great Tit", 0.9), (0.2, 1, "House Sparrow", 0.9)]) == []
    (ev,) = watch(t, [(0.4, 1, "Laughing Dove", 0.9)])
    assert ev.kind == "start" and ev.unknown and ev.species == "Unknown bird"


def test_a_tracked_bird_is_named_by_agreeing_votes_from_its_first_look() -> None:
    t = VisitTracker(cfg(), LABELS)
    assert watch(t, [(0, 1, "Great Tit", 0.8), (0.2, 1, "House Sparrow", 0.7)]) == []
    (ev,) = watch(t, [(0.4, 1, "Great Tit", 0.9)])  # 2 of 3 agree: >= 60%, >= min_hits
    assert (ev.kind, ev.species, ev.unknown, ev.hits) == ("start", "Great Tit", False, 2)
    assert ev.start_ts == T0 + 0 and ev.score == pytest.approx(0.9)
    assert ev.track_ids == (1,) and ev.count == 1 and ev.looks == 3
    # the visit id is the same contract as before tracks: camera, species, start stamp
    assert ev.visit_id == visit_id("feeder", "Great Tit", T0 + 0)


def test_two_agreeing_looks_start_as_soon_as_without_tracks() -> None:
    """No added latency to the first event: min_hits looks that agree are enough."""
    t = VisitTracker(cfg(), LABELS)
    (ev,) = watch(t, [(0, 1, "Great Tit", 0.9), (0.2, 1, "Great Tit", 0.9)])
    assert ev.kind == "start" and ev.last_ts == T0 + 0.2


def test_two_birds_of_one_species_at_once_are_one_visit_with_count_2() -> None:
    t = VisitTracker(cfg(), LABELS)
    seq = [(s / 5, tr, "Great Tit", 0.9) for s in range(0, 50) for tr in (1, 2)]
    events = watch(t, seq)
    assert [e.kind for e in events if e.kind != "update"] == ["start"]
    (end,) = t.flush()
    assert end.count == 2 and end.track_ids == (1, 2) and end.looks == 100


def test_a_bird_that_comes_back_on_a_new_track_is_counted_once() -> None:
    t = VisitTracker(cfg(), LABELS)
    watch(t, [(s, 1, "Great Tit", 0.9) for s in range(0, 5)])  # track 1 ends at 4 s
    watch(t, [(s, 2, "Great Tit", 0.9) for s in range(10, 15)])  # the bird is back: track 2
    (end,) = t.flush()
    assert end.count == 1 and end.track_ids == (1, 2) and end.hits == 10


def test_a_dissenting_look_keeps_the_visit_open_but_is_no_hit() -> None:
    t = VisitTracker(cfg(), LABELS)
    watch(t, [(0, 1, "Great Tit", 0.9), (1, 1, "Great Tit", 0.9), (2, 1, "Great Tit", 0.9)])
    assert watch(t, [(20, 1, "House Sparrow", 0.95)]) == []  # still 3 of 4: a Great Tit
    assert t.tick(T0 + 49) == []  # quiet for 29 s since the dissenting look
    (end,) = t.tick(T0 + 50)
    assert end.species == "Great Tit" and end.hits == 3 and end.score == pytest.approx(0.9)


def test_tracked_visits_are_the_same_on_a_second_replay() -> None:
    seq = [(s / 5, 1 + (s > 20), "Laughing Dove", 0.7 + s / 200) for s in range(40)]
    runs = []
    for _ in range(2):
        t = VisitTracker(cfg(), LABELS)
        runs.append([(e.kind, e.visit_id, e.hits, e.track_ids)
                     for e in watch(t, seq) + t.flush()])
    assert runs[0] == runs[1] and runs[0][0][0] == "start"


def test_event_body_has_count_track_ids_and_looks() -> None:
    from camtrap.comms.payloads import event_body

    t = VisitTracker(cfg(), LABELS)
    (ev,) = watch(t, [(0, 7, "Great Tit", 0.9), (0.2, 7, "Great Tit", 0.9)])
    body = event_body(ev, None, "node")
    assert (body["count"], body["track_ids"], body["looks"]) == (1, [7], 2)
    assert body["visit_id"] == ev.visit_id and body["hits"] == 2  # earlier fields unchanged
