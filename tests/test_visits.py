"""Visit rules on recorded prediction sequences: pure logic, no threads, time passed in."""

from __future__ import annotations

import numpy as np
import pytest

from camtrap.config.models import VisitsConfig
from camtrap.inference.backend import Prediction
from camtrap.motion.regions import Crop
from camtrap.visits.tracker import VisitEvent, VisitTracker, unknown_names

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
