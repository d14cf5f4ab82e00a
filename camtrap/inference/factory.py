"""The one place that names an engine: callers ask for a `Backend` by config."""

from __future__ import annotations

from camtrap.config.models import ModelConfig
from camtrap.inference.backend import Backend, bucket_sizes


def make_backend(model_cfg: ModelConfig, max_batch: int) -> Backend:
    """The engine for `model_cfg`, loaded and taking batches of up to `max_batch`.

    An engine's libraries are imported here, on first use, so that commands which never
    classify (`camtrap check`) never import torch. Raises ModelError when the model cannot
    be found or loaded.
    """
    from camtrap.inference.torch_backend import TorchBackend

    return TorchBackend(model_cfg, max_batch=max_batch)


def load_backend(model_cfg: ModelConfig, max_batch: int) -> Backend:
    """`make_backend`, warmed up at every batch size the worker can form, so that the first
    bird after a start or a reload is not the one that pays for the setup."""
    backend = make_backend(model_cfg, max_batch)
    backend.warm_up(bucket_sizes(backend.max_batch))
    return backend
