"""The look sampler: which looks at a track go to the classifier (geometry and time only)."""

from __future__ import annotations

import numpy as np

from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig, TracksConfig
from camtrap.motion.frames import FrameProcessor
from camtrap.motion.looks import Look, LookState, better, decide, measure, sharpness
from camtrap.video.capture import Frame

CFG = TracksConfig()
STILL = Look(side=150, sharpness=100.0, cut=False, offset=0.05)


def sample(looks: list[tuple[float, Look]], cfg: TracksConfig = CFG) -> list[float]:
    """The clocks of the looks that were sent."""
    state: LookState | None = None
    sent: list[float] = []
    for clock, look in looks:
        go, state = decide(state, look, clock, cfg)
        if go:
            sent.append(clock)
    return sent


def test_first_looks_at_once_then_refreshes_that_grow_apart() -> None:
    minute = [(i * 0.2, STILL) for i in range(300)]  # a bird that sits a minute at 5 fps
    sent = sample(minute)
    assert sent[:3] == [0.0, 0.2, 0.4]  # the first event is not delayed
    gaps = np.diff(sent[2:]).round(1).tolist()
    assert gaps == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]  # doubling, up to refresh_max_s
    assert 300 / len(sent) >= 5  # the classifier's load for it falls far more than 5x


def test_a_better_look_goes_but_not_more_often_than_better_interval() -> None:
    larger = Look(200, 100.0, False, 0.05)
    sent = sample([(0.0, STILL), (0.2, STILL), (0.4, STILL), (0.6, larger), (1.4, larger),
                   (1.6, Look(300, 100.0, False, 0.0))])
    assert sent == [0.0, 0.2, 0.4, 1.4]  # 0.6: too soon after 0.4; 1.6: too soon after 1.4


def test_what_counts_as_better() -> None:
    assert better(Look(200, 100, False, 0.0), STILL, CFG)  # larger
    assert better(Look(150, 200, False, 0.0), STILL, CFG)  # sharper
    assert not better(Look(160, 120, False, 0.0), STILL, CFG)  # about the same
    assert not better(Look(300, 500, True, 0.0), STILL, CFG)  # cut by the frame edge
    assert better(Look(140, 90, False, 0.0), Look(150, 100, True, 0.0), CFG)  # whole now
    assert not better(Look(300, 500, False, 0.4), STILL, CFG)  # far off its region's centre


def test_measure_sees_the_edge_the_offset_and_the_focus() -> None:
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 255, (240, 240, 3), dtype=np.uint8)
    flat = np.full((240, 240, 3), 120, np.uint8)
    assert sharpness(sharp) > 100 * max(sharpness(flat), 1e-3)
    look = measure((100, 100, 200, 200), [(150, 150, 100, 100)], (1280, 720), sharp)
    assert look.side == 200 and not look.cut and look.offset == 0.0
    edge = measure((0, 100, 200, 200), [(0, 150, 100, 100)], (1280, 720), sharp)
    assert edge.cut and edge.offset > 0.2


def test_frame_processor_classifies_only_the_looks_worth_taking() -> None:
    """A bird-sized square that jitters in place for 20 s at 5 fps: every frame has a
    region on track 1; its first looks go at once, then only refreshes."""
    cam = CameraConfig(name="c", url="x.mp4")
    proc = FrameProcessor(cam, MotionConfig(), RegionsConfig(), 240, TracksConfig())
    grey = np.full((360, 640, 3), 128, np.uint8)
    proc.process(Frame("c", 0.0, 1, grey))
    results = []
    for i in range(1, 100):
        img = grey.copy()
        dx = (i % 2) * 6  # the bird shifts a little every frame: there is always motion
        img[150:190, 300 + dx:340 + dx] = 30
        results.append(proc.process(Frame("c", i * 0.2, i + 1, img)))
    moving = [r for r in results if r.regions]
    assert len(moving) > 90
    for r in moving:
        assert len(r.track_ids) == len(r.classified) == len(r.regions)
        assert [c.track_id for c in r.crops] == [
            t for t, go in zip(r.track_ids, r.classified, strict=True) if go]
    assert {t for r in moving for t in r.track_ids} == {1}
    sent = sum(len(r.crops) for r in moving)
    assert 3 <= sent <= len(moving) / 5 and proc.looks_skipped == len(moving) - sent
    assert all(moving[i].classified[0] for i in range(3))  # first looks at once
    # each classified crop carries its frame, downscaled, for the visit page
    assert all(c.context_jpeg and c.context_jpeg[:2] == b"\xff\xd8"
               for r in moving for c in r.crops)


def test_tracks_off_classifies_every_region() -> None:
    cam = CameraConfig(name="c", url="x.mp4")
    proc = FrameProcessor(cam, MotionConfig(), RegionsConfig(), 240,
                          TracksConfig(enabled=False))
    grey = np.full((360, 640, 3), 128, np.uint8)
    proc.process(Frame("c", 0.0, 1, grey))
    img = grey.copy()
    img[150:190, 300:340] = 30
    r = proc.process(Frame("c", 0.2, 2, img))
    assert r.regions and r.classified == [True] * len(r.regions)
    assert r.track_ids == [None] * len(r.regions) and r.crops[0].track_id is None
    assert r.crops[0].context_jpeg is not None
