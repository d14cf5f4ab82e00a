"""A small, deterministic birder checkpoint for tests (the real weights are never downloaded).

The file has birder's `.pt` layout and loads through `birder.common.fs_ops.load_model`, so
the code under test reads it exactly as it reads the real
`flexivit_reg1_s16_rms_ls_dino-v2-il-all.pt`. Random init alone would make a useless
fixture: birder zero-initialises the head (every class 1/N) and starts layer scale at 1e-5
(the output barely depends on the input). We rescale both so that predictions vary with the
image and top-1 probabilities spread well above 1/N, like a trained model's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from birder.model_registry import registry
from birder.version import __version__ as birder_version

NETWORK = "flexivit_reg1_s16_rms_ls"
SEED = 1234
DEFAULT_CLASSES = [
    "Eurasian Hoopoe",
    "House Sparrow",
    "Great Tit",
    "Laughing Dove",
    "White-spectacled Bulbul",
    "Palestine Sunbird",
    "Common Myna",
    "European Goldfinch",
]
RGB_STATS = {"mean": (0.5191, 0.5306, 0.4877), "std": (0.2316, 0.2304, 0.2588)}


def build_net(num_classes: int, num_layers: int, size: int, seed: int = SEED) -> torch.nn.Module:
    """A random-init FlexiViT S/16 (reg1, RMSNorm, layer scale) with input-dependent output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = registry.net_factory(
            NETWORK, num_classes, 3, config={"num_layers": num_layers}, size=(size, size)
        )
        with torch.no_grad():
            for name, param in net.named_parameters():
                if name.endswith("gamma"):  # layer scale: 1e-5 at init
                    param.fill_(0.5)
            net.classifier.weight.normal_(0.0, 6.0 / net.classifier.weight.shape[1] ** 0.5)
            net.classifier.bias.normal_(0.0, 0.5)
    return net.eval()


def build_checkpoint(
    path: Path,
    classes: list[str] | None = None,
    num_layers: int = 1,
    size: int = 240,
) -> Path:
    """Write a birder-format classification checkpoint to `path` and return `path`."""
    classes = list(DEFAULT_CLASSES if classes is None else classes)
    net = build_net(len(classes), num_layers, size)
    checkpoint = {
        "state": net.state_dict(),
        "birder_version": birder_version,
        "task": net.task,
        "signature": {
            "inputs": [{"data_shape": [0, 3, size, size]}],
            "outputs": [{"data_shape": [0, len(classes)]}],
        },
        "class_to_idx": {name: i for i, name in enumerate(classes)},
        "rgb_stats": RGB_STATS,
        "config": {"num_layers": num_layers},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def textured_images(n: int, size: int = 240, seed: int = 0) -> np.ndarray:
    """`n` varied natural-looking RGB uint8 images (N, size, size, 3), never constant.

    Mixes smoothed noise at several scales, colour gradients and drawn shapes, so the
    model's input statistics look like photos rather than flat fills.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = _one_image(rng, size, i % 4)
    return out


def _one_image(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    img = _smooth_noise(rng, size)
    if kind in (1, 3):
        img = 0.5 * img + 0.5 * _gradient(rng, size)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if kind >= 2:
        _draw_shapes(rng, img)
    return img


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.choice([4, 8, 16, 32, 64]))
    small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, rng.uniform(2, 25), (size, size, 3)).astype(np.float32)
    return img + cv2.GaussianBlur(fine, (0, 0), rng.uniform(0.5, 2.0))


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    return np.broadcast_to(a + (b - a) * t, (size, size, 3))


def _draw_shapes(rng: np.random.Generator, img: np.ndarray) -> None:
    size = img.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            axes = tuple(int(a) for a in rng.integers(8, size // 3, 2))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        else:
            end = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.line(img, centre, end, colour, int(rng.integers(2, 12)), cv2.LINE_AA)
