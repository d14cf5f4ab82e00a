"""Random-init birder checkpoints, for tests and benchmarks (the real weights are never needed).

A file from `build_checkpoint` has birder's `.pt` layout and loads through
`birder.common.fs_ops.load_model`, so code reads it exactly as it reads the real
`flexivit_reg1_s16_rms_ls_dino-v2-il-all.pt`. Random init alone would make a useless model:
birder zero-initialises the head (every class 1/N) and starts layer scale at 1e-5 (the output
barely depends on the input). By default both are rescaled so that predictions vary with the
image and top-1 probabilities spread well above 1/N, like a trained model's. Speed does not
depend on the values, so benchmarks use the same builder at full size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NETWORK = "flexivit_reg1_s16_rms_ls"
SEED = 1234
FULL_LAYERS = 12  # the released model's depth
FULL_CLASSES = 550  # the released model's class count
FAVOUR_LOGIT = 40.0  # added to a favoured class's bias: it wins for every input
DEFAULT_CLASSES = (
    "Eurasian Hoopoe",
    "House Sparrow",
    "Great Tit",
    "Laughing Dove",
    "White-spectacled Bulbul",
    "Palestine Sunbird",
    "Common Myna",
    "European Goldfinch",
)
RGB_STATS = {"mean": (0.5191, 0.5306, 0.4877), "std": (0.2316, 0.2304, 0.2588)}


def species_names(n: int) -> list[str]:
    """`n` made-up class names, `species 000` onwards."""
    return [f"species {i:03d}" for i in range(n)]


def build_checkpoint(
    path: Path | str,
    classes: Sequence[str] | int | None = None,
    *,
    num_layers: int = 1,
    size: int = 240,
    layer_scale: float | None = 0.5,
    head_std: float | None = 6.0,
    favour: int | None = None,
    seed: int = SEED,
) -> Path:
    """Write a birder-format FlexiViT S/16 classification checkpoint to `path`; return it.

    classes: names, a count (`species_names`), or None for a few real species.
    num_layers: 1 is quick for tests; FULL_LAYERS costs what the real model costs.
    layer_scale: every layer-scale gamma (None keeps birder's 1e-5: output ~ input-blind).
    head_std: the head's weights ~ N(0, head_std / sqrt(dim)) and bias ~ N(0, 0.5)
        (None keeps birder's zero head: every class 1/N).
    favour: a class index whose logit gets FAVOUR_LOGIT more, so every crop is that class
        (one bird -> one visit in end-to-end benchmarks).
    """
    import torch
    from birder.version import __version__ as birder_version

    if classes is None:
        classes = DEFAULT_CLASSES
    names = species_names(classes) if isinstance(classes, int) else list(classes)
    net = _build_net(len(names), num_layers, size, layer_scale, head_std, seed)
    if favour is not None:
        with torch.no_grad():
            net.classifier.bias[favour] += FAVOUR_LOGIT
    checkpoint = {
        "state": net.state_dict(),
        "birder_version": birder_version,
        "task": net.task,
        "signature": {
            "inputs": [{"data_shape": [0, 3, size, size]}],
            "outputs": [{"data_shape": [0, len(names)]}],
        },
        "class_to_idx": {name: i for i, name in enumerate(names)},
        "rgb_stats": RGB_STATS,
        "config": {"num_layers": num_layers},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    torch.save(checkpoint, tmp)
    tmp.replace(path)  # a killed build leaves no file that looks complete
    return path


def _build_net(num_classes: int, num_layers: int, size: int, layer_scale: float | None,
               head_std: float | None, seed: int) -> torch.nn.Module:
    """A seeded random-init network, rescaled as `build_checkpoint` describes."""
    import torch
    from birder.model_registry import registry

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = registry.net_factory(
            NETWORK, num_classes, 3, config={"num_layers": num_layers}, size=(size, size)
        )
        with torch.no_grad():
            if layer_scale is not None:
                for name, param in net.named_parameters():
                    if name.endswith("gamma"):  # layer scale: 1e-5 at init
                        param.fill_(layer_scale)
            if head_std is not None:
                weight = net.classifier.weight
                weight.normal_(0.0, head_std / weight.shape[1] ** 0.5)
                net.classifier.bias.normal_(0.0, 0.5)
    return net.eval()
