"""The camera-capacity search of `camtrap bench classifier --find-cameras`, as pure logic, and
the checkpoint builder the benchmarks share with the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from camtrap.tools.benchmark import Load, find_cameras

RATE = 5.0


def classifier_for(capacity_cameras: int,
                   p95_ms: float = 30.0) -> tuple[Callable[[int], Load], list[int]]:
    """A measured step of a classifier that keeps up with `capacity_cameras` and no more."""
    seen: list[int] = []

    def measure(n: int) -> Load:
        seen.append(n)
        over = n > capacity_cameras
        return Load(n, RATE * n, RATE * min(n, capacity_cameras), 10 if over else 0,
                    20.0, p95_ms, {})

    return measure, seen


def best(steps: list[Load]) -> int:
    return max((s.cameras for s in steps if s.sustained(1.5)), default=0)


def test_doubles_until_a_drop_then_bisects_to_an_eighth() -> None:
    measure, seen = classifier_for(300)
    steps = find_cameras(measure, 1.5, start=4)
    assert seen[:8] == [4, 8, 16, 32, 64, 128, 256, 512]
    assert 256 < best(steps) <= 300
    assert all(256 < n < 512 for n in seen[8:])


def test_a_late_p95_fails_a_step_without_drops() -> None:
    assert not Load(8, 40.0, 40.0, 0, 900.0, 1600.0, {}).sustained(1.5)
    measure, _ = classifier_for(10_000, p95_ms=2000.0)
    assert best(find_cameras(measure, 1.5, start=4)) == 0


def test_stops_at_the_limit_without_bisecting() -> None:
    measure, seen = classifier_for(10_000)
    steps = find_cameras(measure, 1.5, start=4, limit=64)
    assert seen == [4, 8, 16, 32, 64] and best(steps) == 64


def test_built_checkpoints_load_through_birder_and_can_favour_a_class(tmp_path: Path) -> None:
    """The builder `camtrap bench`, bench/pipeline and the tests share: a birder file with
    made-up class names; `favour` makes every input that class (one bird, one visit)."""
    import torch
    from birder.common import fs_ops

    from camtrap.tools.checkpoints import NETWORK, build_checkpoint

    path = build_checkpoint(tmp_path / "m.pt", 20, favour=3)
    assert not list(tmp_path.glob(".*.part"))  # written atomically
    net, info = fs_ops.load_model(torch.device("cpu"), NETWORK, path=path, inference=True)
    assert info.class_to_idx["species 003"] == 3 and len(info.class_to_idx) == 20
    with torch.inference_mode():
        logits = net(torch.randn(4, 3, 240, 240, generator=torch.Generator().manual_seed(0)))
    assert logits.argmax(1).tolist() == [3, 3, 3, 3]
