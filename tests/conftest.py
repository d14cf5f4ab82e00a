"""Shared fixtures: real servers on 127.0.0.1 (see servers.py), a sample clip, a checkpoint.

Test modules import helpers by package (`from tests.servers import ...`, `from tests.waiting
import wait_until`): pytest puts the repo root on sys.path (pyproject `pythonpath`), and the
benchmarks in bench/ import the same modules the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Mosquitto, MqttRecorder, RtspServer, make_clip


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """An anonymous mosquitto on 127.0.0.1:<free port>, stopped after the test."""
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def mqtt_recorder(mosquitto: Mosquitto) -> Iterator[MqttRecorder]:
    """A subscriber to `#` on the `mosquitto` fixture's broker, already subscribed."""
    with MqttRecorder.for_broker(mosquitto) as recorder:
        yield recorder


@pytest.fixture
def rtsp_camera() -> Iterator[RtspServer]:
    """A live synthetic camera at `rtsp_camera.url` (rtsp://127.0.0.1:<port>/cam), 640x360
    at 15 fps: a 40 px dark ball always in view, always moving."""
    with RtspServer("live") as camera:
        yield camera


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/make-sample-clip.sh output, made once: 20 s, 640x360, 15 fps (300 frames),
    H.264; a bird-sized dark ellipse visits from 2-7 s and 12-17 s, quiet otherwise."""
    return make_clip(tmp_path_factory.mktemp("clip") / "feeder.mp4")


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight FlexiViT checkpoint in birder's .pt format, from the builder the
    benchmarks use too (camtrap.tools.checkpoints); torch and birder are imported only by
    tests that ask for it."""
    from camtrap.tools.checkpoints import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("model") / "test_flexivit.pt")


@pytest.fixture(scope="session")
def full_checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size checkpoint (12 layers, 550 classes, as the model card's): for what must
    take as long as the real model does, such as a reload's load and warm-up."""
    from camtrap.tools.checkpoints import FULL_CLASSES, FULL_LAYERS, build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("model") / "full_flexivit.pt",
                            FULL_CLASSES, num_layers=FULL_LAYERS)
