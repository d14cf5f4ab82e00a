"""Tracks on recorded region sequences: pure association, time passed in."""

from __future__ import annotations

from camtrap.config.models import TracksConfig
from camtrap.motion.regions import Box
from camtrap.motion.tracks import Tracks, associate

CFG = TracksConfig()
DT = 0.2  # 5 fps


def run(frames: list[list[Box]], t0: float = 0.0, dt: float = DT,
        state: Tracks | None = None) -> tuple[Tracks, list[list[int]]]:
    state = state or Tracks()
    ids: list[list[int]] = []
    for i, regions in enumerate(frames):
        state, got = associate(state, regions, t0 + i * dt, CFG)
        ids.append(got)
    return state, ids


def test_a_moving_bird_keeps_one_id() -> None:
    frames = [[(100 + 30 * i, 200 + 5 * i, 120, 120)] for i in range(25)]
    state, ids = run(frames)
    assert {i for (i,) in ids} == {1}
    (track,) = state.tracks
    assert track.hits == 25 and abs(track.vx - 150) < 1  # 30 px a frame at 5 fps


def test_two_birds_side_by_side_keep_their_ids() -> None:
    frames = [[(100 + i % 3, 100, 100, 100), (400 - i % 2, 120, 110, 110)] for i in range(20)]
    _, ids = run(frames)
    assert all(f == [1, 2] for f in ids)
    # the detector's order does not matter: every other frame lists them the other way
    _, ids = run([f if i % 2 == 0 else f[::-1] for i, f in enumerate(frames)])
    assert all(f == ([1, 2] if i % 2 == 0 else [2, 1]) for i, f in enumerate(ids))


def test_crossing_paths_keep_their_ids_through_a_merged_region() -> None:
    """Two birds fly towards each other and cross; for two frames motion sees one blob (one
    larger region). Constant velocity carries each id through to the right side."""
    frames: list[list[Box]] = []
    for i in range(30):
        a, b = 100 + 40 * i, 1260 - 40 * i  # meet at i = 14.5
        if 14 <= i <= 15:
            frames.append([(min(a, b), 300, abs(a - b) + 100, 100)])
        else:
            frames.append([(a, 300, 100, 100), (b, 310, 100, 100)])
    _, ids = run(frames)
    before, after = ids[:14], ids[16:]
    assert all(f == [1, 2] for f in before)
    assert all(f == [1, 2] for f in after)  # A (first listed, left-to-right mover) is still 1


def test_crossing_with_overlapping_regions_does_not_swap() -> None:
    frames = [[(100 + 40 * i, 300, 100, 100), (1260 - 40 * i, 330, 100, 100)] for i in range(30)]
    _, ids = run(frames)
    assert all(f == [1, 2] for f in ids)


def test_a_pause_of_a_few_seconds_keeps_the_id_a_longer_one_does_not() -> None:
    state, _ = run([[(300, 300, 120, 120)]] * 5)
    # unseen for 2.5 s (sat still behind a leaf), then back where it was
    state, again = run([[(305, 298, 120, 120)]], t0=0.8 + 2.5, state=state)
    assert again == [[1]]
    # unseen for 4 s: a new bird, a new id; ids are never reused
    state, later = run([[(305, 298, 120, 120)]], t0=3.3 + 4.0, state=state)
    assert later == [[2]]
    state, _ = run([[]], t0=20.0, state=state)
    assert state.tracks == () and state.next_id == 3


def test_a_bird_that_stopped_out_of_sight_is_found_where_it_was() -> None:
    """Moving right at 150 px/s, then unseen for 2 s: its prediction is 300 px further on,
    but it reappears where it stopped; the nearer of the two guesses matches."""
    state, _ = run([[(100 + 30 * i, 300, 100, 100)] for i in range(6)])
    state, ids = run([[(250, 300, 100, 100)]], t0=1.0 + 2.0, state=state)
    assert ids == [[1]]


def test_a_far_region_or_a_very_different_size_is_another_track() -> None:
    state, _ = run([[(100, 100, 100, 100)]])
    _, ids = run([[(700, 100, 100, 100)]], t0=DT, state=state)
    assert ids == [[2]]
    _, ids = run([[(60, 60, 400, 400)]], t0=DT, state=state)  # four times the side
    assert ids == [[2]]
