"""Motion quality on generated scenes with known truth: numpy frames, and H.264 clips read
through `Capture(realtime=False)` + `FrameProcessor` exactly as `camtrap replay` reads them.

Every random number is seeded: these tests give the same result on every run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig
from camtrap.motion.detector import (
    MIN_CONTRAST_RANGE,
    MotionDetector,
    percentiles,
    polygon_mask,
    small_luma,
    stretch_lut,
    to_frame_boxes,
)
from camtrap.motion.frames import FrameProcessor, FrameResult
from camtrap.motion.regions import Box, contains
from camtrap.video.capture import Capture, Frame
from tests.servers import make_video

W, H = 640, 360
BIRD = (26, 42, 58)  # BGR dark brown, luma about 40 on a background of about 145


# ---- scene generation ---------------------------------------------------------------


def texture(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """A static green-grey background with blotchy texture (leaves, bark), BGR uint8."""
    rng = np.random.default_rng(seed)
    blotches = rng.normal(0, 22, (max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float32)
    blotches = cv2.resize(blotches, (w, h), interpolation=cv2.INTER_LINEAR)
    fine = rng.normal(0, 8, (h, w, 1)).astype(np.float32)
    base = np.array([124, 156, 140], np.float32)
    return np.clip(base + blotches + fine, 0, 255).astype(np.uint8)


class Noise:
    """Temporal sensor noise from a seeded bank of frames, added with saturating uint8
    arithmetic (cheap enough for the minute-long scenes)."""

    def __init__(self, w: int = W, h: int = H, sigma: float = 6.0, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.bank = []
        for _ in range(7):
            n = np.repeat(rng.normal(0, sigma, (h, w, 1)), 3, axis=2)
            up = np.clip(n, 0, 255).astype(np.uint8)
            down = np.clip(-n, 0, 255).astype(np.uint8)
            self.bank.append((up, down))
        self.i = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.i += 1
        up, down = self.bank[self.i % len(self.bank)]
        return cv2.subtract(cv2.add(frame, up), down)


def draw_bird(frame: np.ndarray, cx: float, cy: float, rx: int = 22, ry: int = 15) -> Box:
    """A dark ellipse (a bird seen from the side); returns its true box."""
    cv2.ellipse(frame, (round(cx), round(cy)), (rx, ry), 0, 0, 360, BIRD, -1)
    return (round(cx) - rx, round(cy) - ry, 2 * rx + 1, 2 * ry + 1)


def path(i: int, n: int) -> tuple[float, float]:
    """A wandering path over the whole frame, up to about 15 px per frame."""
    t = i / n
    x = W / 2 + 0.38 * W * np.sin(2 * np.pi * 1.3 * t)
    y = H / 2 + 0.33 * H * np.sin(2 * np.pi * 2.1 * t + 0.7)
    return (x, y)


def covered(regions: list[Box], truth: Box, tolerance: int = 2) -> bool:
    x, y, w, h = truth
    inner = (x + tolerance, y + tolerance, w - 2 * tolerance, h - 2 * tolerance)
    return any(contains(r, inner) for r in regions)


def camera(url: str = "unused.mp4", **kw: object) -> CameraConfig:
    return CameraConfig(name="test", url=url, loop=False, **kw)  # type: ignore[arg-type]


def replay(video: Path, cam: CameraConfig, motion: MotionConfig | None = None) -> list[FrameResult]:
    """What `camtrap replay` computes: every processed frame of a clip, video clock ts."""
    processor = FrameProcessor(cam, motion or MotionConfig(), RegionsConfig(), 240)
    capture = Capture(cam, threading.Event(), realtime=False, start_ts=0.0)
    return [processor.process(frame) for frame in capture.frames()]


def process_arrays(
    frames: Iterator[np.ndarray], cam: CameraConfig, motion: MotionConfig, fps: float = 5.0
) -> list[FrameResult]:
    processor = FrameProcessor(cam, motion, RegionsConfig(), 240)
    return [
        processor.process(Frame(cam.name, i / fps, i + 1, image)) for i, image in enumerate(frames)
    ]


# ---- clips through the replay path ---------------------------------------------------


def test_moving_object_over_textured_noisy_background(tmp_path: Path) -> None:
    """90% of the frames where the bird moves yield a region that contains all of it."""
    bg, noise = texture(), Noise()
    frames, truth = [], []
    for i in range(100):
        frame = bg.copy()
        box = draw_bird(frame, *path(i - 10, 80)) if 10 <= i < 90 else None
        frames.append(noise(frame))
        truth.append(box)
    clip = make_video(tmp_path / "moving.mp4", frames, fps=10)
    results = replay(clip, camera(str(clip), detect_fps=5))
    assert len(results) == 50  # every second frame of 10 fps at detect_fps 5
    moving = hit = 0
    for r in results:
        i = round(r.frame.ts * 10)
        box = truth[i]
        if box is not None and 10 < i < 90:
            moving += 1
            hit += covered(r.regions, box)
        elif i < 10 or i > 91:
            assert not r.regions, f"frame {i}: regions {r.regions} in a quiet stretch"
    assert moving >= 35
    assert hit >= 0.9 * moving, f"{hit}/{moving} moving frames with a region around the bird"
    for r in results:  # regions are squares inside the frame
        for x, y, w, h in r.regions:
            assert w == h and x >= 0 and y >= 0 and x + w <= W and y + h <= H


@pytest.mark.parametrize("flat", [False, True], ids=["textured", "flat"])
def test_static_scene_with_sensor_noise_gives_no_regions(tmp_path: Path, flat: bool) -> None:
    """Strong noise (sigma 8), and on a flat scene the contrast stretch must not amplify it."""
    bg = np.full((H, W, 3), 128, np.uint8) if flat else texture(seed=3)
    noise = Noise(sigma=8.0, seed=4)
    clip = make_video(tmp_path / "static.mp4", [noise(bg) for _ in range(60)], fps=10, codec="mp4v")
    results = replay(clip, camera(str(clip)))
    assert len(results) == 30
    assert [r.frame.seq for r in results if r.regions] == []
    assert max(r.motion.changed for r in results) < 0.01


def lights(kind: str, frame: np.ndarray, since: int = 99) -> np.ndarray:
    """A sudden change of the whole picture (`since` frames ago), or a cloud that halves the
    light over 1.6 s."""
    f = frame.astype(np.float32)
    if kind == "cloud":
        f = f * (1 - 0.5 * min(since / 16, 1.0))
    elif kind == "brighter":
        f = f * 1.2 + 45
    elif kind == "darker":
        f = f * 0.45
    else:  # "ir": the camera switches to night mode: grey, brighter, flatter
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        f = np.repeat((grey * 0.7 + 70)[:, :, None], 3, axis=2)
    return np.clip(f, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["brighter", "darker", "ir", "cloud"])
def test_global_brightness_jump_gives_at_most_two_frames_of_regions(
    tmp_path: Path, kind: str
) -> None:
    bg, noise = texture(seed=5), Noise(seed=6)
    frames = [noise(bg if i < 30 else lights(kind, bg, i - 30)) for i in range(70)]
    clip = make_video(tmp_path / "lights.mp4", frames, fps=10, codec="mp4v")
    results = replay(clip, camera(str(clip)))
    after = [r for r in results if round(r.frame.ts * 10) >= 30]
    with_regions = [i for i, r in enumerate(after) if r.regions]
    assert all(i < 2 for i in with_regions), f"regions in processed frames {with_regions} after"
    assert any(r.motion.recalibrated for r in after[:2]) or not with_regions


def test_motion_inside_a_mask_gives_no_regions() -> None:
    """A branch waving in the masked left third: nothing; the same outside the mask: found."""
    bg, noise = texture(seed=7), Noise(seed=8)

    def frames(x0: float) -> Iterator[np.ndarray]:
        for i in range(40):
            frame = bg.copy()
            draw_bird(frame, x0 + 40 * np.sin(i / 2), 180 + 60 * np.cos(i / 3))
            yield noise(frame)

    mask = [[(0.0, 0.0), (0.34, 0.0), (0.34, 1.0), (0.0, 1.0)]]
    masked = process_arrays(frames(100), camera(masks=mask), MotionConfig())
    assert [r.frame.seq for r in masked if r.regions] == []
    control = process_arrays(frames(100), camera(), MotionConfig())
    assert sum(bool(r.regions) for r in control) >= 35
    elsewhere = process_arrays(frames(450), camera(masks=mask), MotionConfig())
    assert sum(bool(r.regions) for r in elsewhere) >= 35


def test_object_that_arrives_and_stays_is_absorbed() -> None:
    """A moved feeder: motion while it moves, then none; after `absorb_after_s` it is part of
    the background, so a bird landing beside it gets a region of its own size."""
    bg, noise = texture(seed=9), Noise(seed=10)
    motion = MotionConfig(absorb_after_s=6.0)
    det = MotionDetector(motion)
    fps = 5.0
    feeder = (300, 150, 70, 90)

    def scene(i: int, fx: int, bird: tuple[float, float] | None = None) -> np.ndarray:
        frame = bg.copy()
        corner = (fx + feeder[2], feeder[1] + feeder[3])
        cv2.rectangle(frame, (fx, feeder[1]), corner, (40, 60, 200), -1)
        if bird:
            draw_bird(frame, *bird, rx=12, ry=9)
        return noise(frame)

    results = []
    for i in range(80):  # moves in from x=200 over 10 frames, then stays at x=300
        fx = 200 + 10 * min(i, 10)
        results.append(det.detect(scene(i, fx), i / fps))
    assert all(r.boxes for r in results[2:10]), "the moving feeder is motion"
    assert not any(r.boxes for r in results[12:]), "a still object is not motion"
    assert results[15].changed > 0.02, "not absorbed yet after 1 s"
    assert results[79].changed < 0.002, "absorbed after absorb_after_s"
    # A bird hopping beside the (absorbed) feeder: a region around the bird alone.
    bird_boxes = []
    for i in range(80, 90):
        r = det.detect(scene(i, 300, (385 + 4 * (i % 3), 200 + 3 * (i % 2))), i / fps)
        bird_boxes += r.boxes
    assert bird_boxes and all(w < 60 and h < 60 for _, _, w, h in bird_boxes), bird_boxes


def test_perched_bird_that_keeps_moving_is_not_absorbed() -> None:
    """A bird perched for a minute, body still, head moving: a region around the whole bird
    in 90% of the frames, to the end of the minute (absorb_after_s is 15 s)."""
    bg, noise = texture(seed=11), Noise(seed=12)
    fps, seconds = 5.0, 60
    body = (320, 200)

    def frames() -> Iterator[np.ndarray]:
        for i in range(int(fps * seconds)):
            frame = bg.copy()
            draw_bird(frame, *body, rx=24, ry=16)
            a = i * 1.9
            head = (round(body[0] + 22 + 5 * np.cos(a)), round(body[1] - 16 + 4 * np.sin(a)))
            cv2.circle(frame, head, 9, BIRD, -1)
            yield noise(frame)

    processor = FrameProcessor(camera(), MotionConfig(), RegionsConfig(), 240)
    processor.process(Frame("test", -0.2, 0, noise(bg)))  # the empty perch: then it arrives
    results = [processor.process(Frame("test", i / fps, i + 1, f)) for i, f in enumerate(frames())]
    truth = (body[0] - 24, body[1] - 16, 49, 33)
    hits = [covered(r.regions, truth) for r in results]
    assert sum(hits) >= 0.9 * len(hits), f"{sum(hits)}/{len(hits)}"
    last = hits[-int(10 * fps) :]
    assert sum(last) >= 0.9 * len(last), "absorbed before the minute was over"


# ---- the pure steps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "small", "factor"),
    [((1920, 1080), (240, 135), 8), ((3840, 2160), (256, 144), 15), ((640, 360), (320, 180), 2),
     ((1280, 720), (256, 144), 5), ((100, 60), (100, 60), 1)],
)
def test_small_luma_uses_an_integer_factor(size: tuple[int, int], small: tuple[int, int],
                                           factor: int) -> None:
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    grey, f = small_luma(frame, 144)
    assert (grey.shape[1], grey.shape[0]) == small and f == factor and grey.dtype == np.uint8


def test_small_luma_averages_columns_and_maps_boxes_back() -> None:
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[400:480, 800:960] = 255  # a white block
    grey, f = small_luma(frame, 144)
    ys, xs = np.nonzero(grey > 127)
    x0, y0 = int(xs.min()), int(ys.min())
    small_box = (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)
    (x, y, w, h), = to_frame_boxes([small_box], f, 1920, 1080)
    assert (x, y) == (800, 400) and x + w == 960 and abs(y + h - 480) <= f


def test_contrast_stretch_caps_the_gain() -> None:
    lut = stretch_lut(100.0, 120.0)  # a flat, hazy scene: range widened to 64
    assert int(lut[142]) - int(lut[78]) <= 255
    gain = (int(lut[120]) - int(lut[100])) / 20
    assert gain == pytest.approx(255 / MIN_CONTRAST_RANGE, abs=0.1)
    lut = stretch_lut(40.0, 200.0)
    assert lut[40] == 0 and lut[200] == 255 and lut[0] == 0 and lut[255] == 255
    lo, hi = percentiles(np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert lo == pytest.approx(10, abs=1) and hi == pytest.approx(245, abs=1)


def test_polygon_mask_in_relative_coordinates() -> None:
    mask = polygon_mask([[(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]], 100, 50)
    assert mask is not None and mask.shape == (50, 100)
    assert mask[:, :49].min() == 255 and mask[:, 51:].max() == 0
    assert polygon_mask([], 10, 10) is None


def test_first_frame_starts_the_background() -> None:
    det = MotionDetector(MotionConfig())
    first = det.detect(texture(), 0.0)
    assert first.recalibrated and not first.boxes
    again = det.detect(texture(), 0.2)
    assert not again.recalibrated and not again.boxes and again.changed == 0.0
