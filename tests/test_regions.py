"""Motion boxes -> square regions -> model-sized RGB crops: pure functions, exact answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig
from camtrap.motion.frames import FrameProcessor, effective_motion, effective_regions
from camtrap.motion.regions import (
    cluster_boxes,
    contains,
    cut_crop,
    plan_regions,
    scale_boxes,
    square_region,
)
from camtrap.video.capture import Frame


def test_square_region_is_a_bit_larger_than_the_object_and_centred() -> None:
    x, y, w, h = square_region((400, 300, 100, 60), 1920, 1080, scale=1.3, min_size=96)
    assert w == h == 130
    assert (x + w / 2, y + h / 2) == (450, 330)
    assert contains((x, y, w, h), (400, 300, 100, 60))


def test_square_region_has_a_minimum_side() -> None:
    assert square_region((500, 500, 10, 8), 1920, 1080, 1.3, 96)[2:] == (96, 96)


@pytest.mark.parametrize(
    ("box", "expect_xy"),
    [((0, 0, 40, 40), (0, 0)), ((1900, 1060, 20, 20), (1920 - 130, 1080 - 130)),
     ((1890, 0, 30, 100), (1920 - 130, 0))],
)
def test_square_region_is_shifted_to_stay_inside_the_frame(
    box: tuple[int, int, int, int], expect_xy: tuple[int, int]
) -> None:
    region = square_region(box, 1920, 1080, 1.3, 130)
    assert region[:2] == expect_xy and region[2:] == (130, 130)


def test_square_region_never_exceeds_the_frame() -> None:
    assert square_region((0, 0, 600, 400), 640, 360, 1.5, 96) == (120, 0, 360, 360)  # centred


def test_nearby_boxes_are_one_object_far_ones_are_not() -> None:
    wing, body, other = (100, 100, 20, 20), (125, 105, 30, 30), (600, 400, 30, 30)
    clusters = cluster_boxes([wing, body, other], max_gap=10)
    assert sorted(clusters) == [(100, 100, 55, 35), other]
    assert cluster_boxes([wing, other], max_gap=10) == [wing, other]
    # merging can chain: a joins b, then the union reaches c
    assert cluster_boxes([(0, 0, 10, 10), (40, 0, 10, 10), (15, 0, 20, 10)], 6) == [(0, 0, 50, 10)]


def test_plan_regions_largest_first_at_most_n() -> None:
    cfg = RegionsConfig(max_per_frame=2, min_size=16, merge_gap=0.0)
    boxes = [(10, 10, 20, 20), (300, 200, 80, 60), (500, 50, 40, 40)]
    regions = plan_regions(boxes, 640, 360, cfg)
    assert len(regions) == 2
    assert contains(regions[0], boxes[1]) and contains(regions[1], boxes[2])


def test_plan_regions_skips_an_object_already_inside_a_region_of_its_scale() -> None:
    cfg = RegionsConfig(min_size=96, merge_gap=0.0, max_per_frame=4)
    big, inside = (200, 100, 90, 90), (205, 105, 12, 12)
    assert plan_regions([big, inside], 640, 360, cfg) == [square_region(big, 640, 360, 1.3, 96)]


def test_scale_boxes_covers_every_touched_pixel_and_clips() -> None:
    # detect 640x360 -> main 3840x2160: factor 6
    assert scale_boxes([(10, 20, 5, 4)], 6, 6) == [(60, 120, 30, 24)]
    assert scale_boxes([(636, 356, 4, 4)], 6, 6, (3840, 2160)) == [(3816, 2136, 24, 24)]
    # a non-integer factor rounds outwards
    assert scale_boxes([(1, 1, 1, 1)], 1.5, 1.5) == [(1, 1, 2, 2)]


def test_cut_crop_is_rgb_of_the_model_size() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:200, 100:200] = (255, 0, 0)  # blue in BGR
    crop = cut_crop(frame, (100, 100, 100, 100), 240)  # enlarged: cubic
    assert crop.shape == (240, 240, 3) and crop.dtype == np.uint8
    assert tuple(crop[120, 120]) == (0, 0, 255)  # blue in RGB
    small = cut_crop(frame, (50, 50, 300, 300), 96)  # shrunk: area average, no ringing
    assert small.shape == (96, 96, 3) and small.max() <= 255
    grey = cut_crop(frame[:, :, 0], (100, 100, 100, 100), 64)
    assert grey.shape == (64, 64, 3)


def test_cut_crop_shrinks_with_area_averaging() -> None:
    """A fine pattern averaged, not aliased: a 2-pixel checkerboard becomes flat grey."""
    pattern = (np.indices((480, 480)).sum(axis=0) % 2 * 255).astype(np.uint8)
    frame = cv2.cvtColor(pattern, cv2.COLOR_GRAY2BGR)
    crop = cut_crop(frame, (0, 0, 480, 480), 240)
    assert abs(float(crop.mean()) - 127.5) < 2 and float(crop.std()) < 2


def test_frame_processor_maps_detect_boxes_to_the_full_frame() -> None:
    """Motion on a 640x360 detect frame, regions and crops in 3840x2160 main-stream pixels,
    the crop cut from the full frame (which is fetched only because there was motion)."""
    cam = CameraConfig(name="c", url="main.mp4", detect_url="detect.mp4")
    proc = FrameProcessor(cam, MotionConfig(), RegionsConfig(), 240)
    full = np.zeros((2160, 3840, 3), np.uint8)
    full[1200:1320, 1800:1920] = (0, 0, 255)  # red object in the full frame only
    fetched: list[int] = []

    def fetch() -> np.ndarray:
        fetched.append(1)
        return full

    grey = np.full((360, 640, 3), 128, np.uint8)
    proc.process(Frame("c", 0.0, 1, grey, fetch, (3840, 2160)))
    proc.process(Frame("c", 0.2, 2, grey, fetch, (3840, 2160)))
    assert fetched == []  # nothing moved: the 4K frame is never converted
    moved = grey.copy()
    moved[200:220, 300:320] = 20  # the same object as the detect stream sees it
    result = proc.process(Frame("c", 0.4, 3, moved, fetch, (3840, 2160)))
    assert fetched == [1]
    (box,) = result.motion.boxes
    assert contains(box, (1800, 1200, 120, 120))
    (crop,) = result.crops
    assert crop.frame_size == (3840, 2160) and contains(crop.box, (1800, 1200, 120, 120))
    assert crop.image[120, 120].tolist() == [255, 0, 0]  # red, from the 4K frame


def test_frame_processor_falls_back_to_the_detect_frame_without_a_main_frame() -> None:
    cam = CameraConfig(name="c", url="main.mp4", detect_url="detect.mp4")
    proc = FrameProcessor(cam, MotionConfig(), RegionsConfig(), 240)
    grey = np.full((360, 640, 3), 128, np.uint8)
    proc.process(Frame("c", 0.0, 1, grey, lambda: None, (1920, 1080)))
    moved = grey.copy()
    moved[200:220, 300:320] = 20
    result = proc.process(Frame("c", 0.2, 2, moved, lambda: None, (1920, 1080)))
    (crop,) = result.crops
    assert crop.frame_size == (1920, 1080) and crop.image.shape == (240, 240, 3)
    assert contains(crop.box, (900, 600, 60, 60))
    assert proc.crops_from_detect == 1


def test_per_camera_overrides_only_the_keys_it_sets() -> None:
    cam = CameraConfig(name="c", url="x.mp4", motion={"threshold": 40},  # type: ignore[arg-type]
                       regions={"min_size": 200})  # type: ignore[arg-type]
    motion = effective_motion(cam, MotionConfig(threshold=30, height=120))
    assert (motion.threshold, motion.height) == (40, 120)
    regions = effective_regions(cam, RegionsConfig(scale=1.2))
    assert (regions.min_size, regions.scale) == (200, 1.2)
