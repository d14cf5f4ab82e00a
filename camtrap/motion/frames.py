"""One frame through motion and regions to crops: the pure part of a camera's work."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig, TracksConfig
from camtrap.motion.detector import MotionDetector, MotionResult
from camtrap.motion.looks import LookState, decide, measure
from camtrap.motion.regions import Box, Crop, context_jpeg, cut_crop, plan_regions, scale_boxes
from camtrap.motion.tracks import Tracks, associate
from camtrap.video.capture import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    motion: MotionResult  # boxes in full-resolution (main stream) pixels
    regions: list[Box]  # square regions in full-resolution pixels
    crops: list[Crop]  # the crops to classify: with tracks, only the looks worth taking
    track_ids: list[int | None] = field(default_factory=list)  # per region, same order
    classified: list[bool] = field(default_factory=list)  # per region: its crop is in `crops`


def effective_motion(camera: CameraConfig, motion: MotionConfig) -> MotionConfig:
    """The `motion` section with the camera's own overrides (only the keys it sets)."""
    if camera.motion is None:
        return motion
    return motion.model_copy(update=camera.motion.model_dump(exclude_unset=True))


def effective_regions(camera: CameraConfig, regions: RegionsConfig) -> RegionsConfig:
    """The `regions` section with the camera's own overrides (only the keys it sets)."""
    if camera.regions is None:
        return regions
    return regions.model_copy(update=camera.regions.model_dump(exclude_unset=True))


class FrameProcessor:
    """Pure per-frame work shared by the live camera thread and `camtrap replay`.

    Motion runs on `frame.image` (the detect stream's frame when there is one); its boxes are
    mapped to the main stream's pixels, and crops are cut from the main stream's frame, which
    is converted only when there is something to cut.
    """

    def __init__(
        self,
        camera: CameraConfig,
        motion: MotionConfig,
        regions: RegionsConfig,
        input_size: int,
        tracks: TracksConfig | None = None,
    ) -> None:
        self.camera = camera
        self.motion_cfg = effective_motion(camera, motion)
        self.regions_cfg = effective_regions(camera, regions)
        self.input_size = input_size
        masks = [[(float(x), float(y)) for x, y in m] for m in camera.masks]
        self.detector = MotionDetector(self.motion_cfg, masks)
        self.crops_from_detect = 0  # crops cut from the detect frame: main stream had none
        # None or disabled: every region's crop is classified, as before tracks existed.
        self.tracks_cfg = tracks if tracks is not None and tracks.enabled else None
        self.tracks = Tracks()
        self.looks: dict[int, LookState] = {}
        self.looks_skipped = 0  # regions whose look was not worth a forward pass

    def process(self, frame: Frame) -> FrameResult:
        motion = self.detector.detect(frame.image, frame.clock)
        dh, dw = frame.image.shape[:2]
        fw, fh = frame.size
        if (fw, fh) != (dw, dh):
            boxes = scale_boxes(motion.boxes, fw / dw, fh / dh, (fw, fh))
            motion = dataclasses.replace(motion, boxes=boxes)
        regions = plan_regions(motion.boxes, fw, fh, self.regions_cfg)
        if self.tracks_cfg is None:
            crops = self._crops(frame, regions, [None] * len(regions)) if regions else []
            return FrameResult(frame, motion, regions, _with_context(frame, crops),
                               [None] * len(regions), [True] * len(regions))
        return self._sample(frame, motion, regions, self.tracks_cfg)

    def _sample(
        self, frame: Frame, motion: MotionResult, regions: list[Box], cfg: TracksConfig
    ) -> FrameResult:
        """Regions -> tracks -> the looks worth classifying (see `camtrap.motion.looks`)."""
        self.tracks, ids = associate(self.tracks, regions, frame.clock, cfg)
        alive = {t.id for t in self.tracks.tracks}
        self.looks = {k: v for k, v in self.looks.items() if k in alive}
        if not regions:
            return FrameResult(frame, motion, regions, [], [], [])
        crops = self._crops(frame, regions, list(ids))
        sent: list[bool] = []
        for crop, tid in zip(crops, ids, strict=True):
            look = measure(crop.box, motion.boxes, frame.size, crop.image)
            go, self.looks[tid] = decide(self.looks.get(tid), look, frame.clock, cfg)
            sent.append(go)
        self.looks_skipped += sent.count(False)
        chosen = [c for c, go in zip(crops, sent, strict=True) if go]
        return FrameResult(frame, motion, regions, _with_context(frame, chosen), list(ids),
                           sent)

    def reset(self) -> None:
        """The scene will have changed (a pause): motion starts afresh, tracks end. Ids go
        on counting, so an id never names two birds."""
        self.detector.reset()
        self.tracks = Tracks((), self.tracks.next_id)
        self.looks.clear()

    def _crops(self, frame: Frame, regions: list[Box], ids: list[int | None]) -> list[Crop]:
        fw, fh = frame.size
        source: np.ndarray | None = frame.full_image()
        cut = regions
        if source is None or source.shape[:2] != (fh, fw):
            # The main stream has no frame right now: cut from the detect frame instead,
            # and still report the regions in main-stream pixels.
            source = frame.image
            dh, dw = source.shape[:2]
            cut = scale_boxes(regions, dw / fw, dh / fh, (dw, dh))
            self.crops_from_detect += len(regions)
        return [
            Crop(
                camera=frame.camera,
                ts=frame.ts,
                frame_seq=frame.seq,
                box=region,
                frame_size=(fw, fh),
                image=cut_crop(source, c, self.input_size),
                mono=frame.mono,
                track_id=tid,
            )
            for region, c, tid in zip(regions, cut, ids, strict=True)
        ]


def _with_context(frame: Frame, crops: list[Crop]) -> list[Crop]:
    """The classified crops with the frame they came from, downscaled: encoded once per
    frame, and only for frames whose crops go to the classifier."""
    if not crops:
        return crops
    context = context_jpeg(frame.image)
    return [dataclasses.replace(c, context_jpeg=context) for c in crops]
