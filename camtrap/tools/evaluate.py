"""`camtrap evaluate`: how far an engine and precision agree with torch fp32 (exact against
birder) on the user's own stored best crops, `<state_dir>/crops/**/*.jpg`.

Reduced precision (bf16, int8) cannot be judged on random weights and synthetic images, and
the real weights' behaviour depends on the birds and cameras at hand: this answers it with
the user's own crops before they switch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from camtrap.config.models import Config, ModelConfig, TorchBackendConfig
from camtrap.inference.backend import TopK, predict
from camtrap.inference.checkpoint import ModelError

log = logging.getLogger(__name__)

CONFIDENT_MARGIN = 0.05  # fp32 top-1 minus top-2: below it a flip is a near-tie
CHUNK = 32  # crops read and classified at a time
ALL_CLASSES = 1 << 20  # top_k beyond the label count: every class, to compare whole rows


@dataclass
class Disagreement:
    file: str
    reference: str  # fp32's top-1 label
    candidate: str
    reference_margin: float


@dataclass
class Agreement:
    """One engine and precision against torch fp32 on the same crops."""

    crops: int
    reference: str  # describe() of each
    candidate: str
    top1_agree: int
    confident: int  # crops where fp32's margin exceeds CONFIDENT_MARGIN
    confident_agree: int
    max_abs_dp: float  # over every class of every crop
    mean_abs_dp: float
    disagreements: list[Disagreement] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def lines(self) -> list[str]:
        pct = 100.0 * self.top1_agree / max(1, self.crops)
        out = [
            f"{self.crops} stored crops: {self.candidate} against {self.reference}",
            f"  top-1 agreement: {self.top1_agree}/{self.crops} ({pct:.1f}%)",
            f"  where fp32's top-1 leads by more than {CONFIDENT_MARGIN}: "
            f"{self.confident_agree}/{self.confident}",
            f"  max |dp| {self.max_abs_dp:.3g}, mean |dp| {self.mean_abs_dp:.3g} "
            "(over every class)",
        ]
        for d in self.disagreements[:10]:
            out.append(f"  {d.file}: {d.reference} -> {d.candidate} "
                       f"(fp32 margin {d.reference_margin:.3f})")
        if len(self.disagreements) > 10:
            out.append(f"  ... and {len(self.disagreements) - 10} more")
        return out


def stored_crops(state_dir: Path, limit: int | None = None) -> list[Path]:
    """The crop JPEGs under `state_dir/crops`, newest first, at most `limit`."""
    root = state_dir / "crops"
    files = sorted(root.rglob("*.jpg"), key=lambda p: (p.stat().st_mtime, str(p)), reverse=True)
    return files[:limit] if limit else files


def candidate_config(model: ModelConfig, backend: str | None,
                     precision: str | None) -> ModelConfig:
    """`model` with the engine and precision asked for on the command line; precision goes
    where that engine reads it (model.precision for torch, model.backend.precision else)."""
    data = model.model_dump()
    kind = backend or model.backend.type
    options = data["backend"] if kind == model.backend.type else {"type": kind}
    if kind != "torch":
        data.update(precision="auto", compile=False, threads=0)
        if data["device"] not in ("auto", "cpu"):
            data["device"] = "auto"
    if precision is not None:
        if kind == "torch":
            data["precision"] = precision
        else:
            options = {**options, "precision": precision}
    data["backend"] = options
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            "model." + ".".join(str(p) for p in e["loc"] if "[" not in str(p))
            + f": {e['msg']}" for e in exc.errors())
        raise ModelError(f"cannot evaluate {kind} at precision {precision}: {problems}"
                         ) from None


def reference_config(model: ModelConfig) -> ModelConfig:
    """torch on the CPU in fp32: exact against birder's own path."""
    ref = model.model_copy(update={"backend": TorchBackendConfig(), "device": "cpu",
                                   "precision": "fp32", "compile": False})
    return ref.model_copy(update={"top_k": ALL_CLASSES, "embedding": False})


def evaluate(cfg: Config, backend: str | None = None, precision: str | None = None,
             limit: int | None = None) -> Agreement:
    """Classify the stored crops with torch fp32 and with the candidate; compare."""
    from camtrap.inference.factory import make_backend

    files = stored_crops(cfg.storage.state_dir, limit)
    if not files:
        raise ModelError(f"no crops under {cfg.storage.state_dir / 'crops'}: the daemon saves "
                         "each visit's best crop there (storage.save_crops)")
    wanted = candidate_config(cfg.model, backend, precision)
    candidate = make_backend(wanted.model_copy(update={"top_k": ALL_CLASSES,
                                                       "embedding": False}), CHUNK)
    reference = make_backend(reference_config(cfg.model), CHUNK)
    if candidate.labels != reference.labels:
        raise ModelError("the candidate engine's labels differ from the checkpoint's")
    ref_rows, cand_rows, names = [], [], []
    for paths, images in _read_chunks(files, reference.input_size):
        ref_rows.append(_full(predict(reference, images), len(reference.labels)))
        cand_rows.append(_full(predict(candidate, images), len(reference.labels)))
        names += [str(p) for p in paths]
    if not names:
        raise ModelError(f"none of the {len(files)} crop files could be read")
    result = compare(np.concatenate(ref_rows), np.concatenate(cand_rows), names,
                     reference.labels)
    result.reference, result.candidate = reference.describe(), candidate.describe()
    for engine in (candidate, reference):
        engine.close()
    return result


def compare(ref: np.ndarray, cand: np.ndarray, names: list[str],
            labels: list[str]) -> Agreement:
    """Agreement of two [n, classes] probability arrays, row by row."""
    ref_top, cand_top = ref.argmax(axis=1), cand.argmax(axis=1)
    ordered = np.sort(ref, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if ref.shape[1] > 1 else ordered[:, -1]
    confident = margin > CONFIDENT_MARGIN
    same = ref_top == cand_top
    diff = np.abs(ref - cand)
    return Agreement(
        crops=len(names), reference="", candidate="",
        top1_agree=int(same.sum()), confident=int(confident.sum()),
        confident_agree=int((same & confident).sum()),
        max_abs_dp=float(diff.max()), mean_abs_dp=float(diff.mean()),
        disagreements=[Disagreement(names[i], labels[ref_top[i]], labels[cand_top[i]],
                                    round(float(margin[i]), 4))
                       for i in np.flatnonzero(~same)],
    )


def _full(top: TopK, classes: int) -> np.ndarray:
    rows = np.zeros((len(top), classes), np.float32)
    np.put_along_axis(rows, top.indices, top.probs, axis=1)
    return rows


def _read_chunks(files: list[Path], size: int) -> Iterator[tuple[list[Path], np.ndarray]]:
    """The crops as RGB uint8 at the model's size, CHUNK at a time; unreadable ones are
    logged and skipped."""
    from PIL import Image

    paths: list[Path] = []
    images: list[np.ndarray] = []
    for path in files:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
                images.append(np.asarray(rgb, dtype=np.uint8))
                paths.append(path)
        except OSError as exc:
            log.warning("%s: skipped, cannot read it: %s", path, exc)
        if len(images) == CHUNK:
            yield paths, np.stack(images)
            paths, images = [], []
    if images:
        yield paths, np.stack(images)
