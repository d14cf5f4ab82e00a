"""Every inference backend against birder's own reference path, the crop queue, the worker.

The model is a real birder FlexiViT (random weights, 1 encoder layer, 8 classes) loaded
from a real checkpoint file; the reference is birder's `classification_transform` on PIL
images + `infer_batch`, exactly what the model card does. The parity and contract tests run
once per entry of BACKENDS: a new engine plugs in by adding its factory there.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from pathlib import Path

import birder
import numpy as np
import pytest
import torch
from birder.common import fs_ops
from birder.inference.classification import infer_batch
from PIL import Image

from camtrap.config.models import BatchingConfig, ModelConfig
from camtrap.inference.backend import (
    Backend,
    Prediction,
    TopK,
    bucket_sizes,
    classify,
    predict,
    to_predictions,
)
from camtrap.inference.factory import load_backend, make_backend
from camtrap.inference.network import cpu_has_native_bf16
from camtrap.inference.queue import CropQueue
from camtrap.inference.torch_backend import TorchBackend
from camtrap.inference.worker import InferenceWorker
from camtrap.motion.regions import Crop
from camtrap.tools.checkpoints import build_checkpoint
from tests.backends import Collector, NumpyBackend
from tests.images import textured_images

NETWORK = "flexivit_reg1_s16_rms_ls"
NUM_CLASSES = 8
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

BackendFactory = Callable[[ModelConfig, int], Backend]  # (model config, max_batch)


def _torch(cfg: ModelConfig, max_batch: int) -> Backend:
    return TorchBackend(cfg, max_batch=max_batch)


def _converted(engine: str) -> BackendFactory:
    """An engine that runs the converted graph, through the factory, with the tests' torch
    knobs mapped onto its own options (precision bf16 -> its bf16; onnxruntime has none)."""

    def make(cfg: ModelConfig, max_batch: int) -> Backend:
        options: dict[str, object] = {"type": engine}
        if cfg.precision == "bf16":
            if engine == "onnxruntime":
                pytest.skip("onnxruntime runs fp32 only")
            options["precision"] = "bf16"
        data = {**cfg.model_dump(), "device": "cpu", "precision": "auto", "backend": options}
        return make_backend(ModelConfig.model_validate(data), max_batch)

    return make


def _needs(package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(package) is None,
                              reason=f"{package} is not installed")


BACKENDS = [
    pytest.param(_torch, id="torch"),
    pytest.param(_converted("openvino"), id="openvino", marks=_needs("openvino")),
    pytest.param(_converted("onnxruntime"), id="onnxruntime", marks=_needs("onnxruntime")),
]


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return textured_images(200, seed=7)


def model_cfg(path: Path, **kw: object) -> ModelConfig:
    """The checkpoint on the CPU in fp32 with every class in the top-k and no embedding,
    unless `kw` differ."""
    options: dict[str, object] = {"path": path, "top_k": NUM_CLASSES, "device": "cpu",
                                  "precision": "fp32", "embedding": False,
                                  "models_dir": path.parent / "models"}
    options.update(kw)
    return ModelConfig(**options)


def make_classifier(path: Path, max_batch: int = 64, **kw: object) -> TorchBackend:
    return TorchBackend(model_cfg(path, **kw), max_batch=max_batch)


@pytest.fixture(scope="module", params=BACKENDS)
def build(request: pytest.FixtureRequest, small_ckpt: Path) -> Callable[..., Backend]:
    """Builds the parametrised backend from the test checkpoint: build(max_batch=64, **model)."""
    factory: BackendFactory = request.param

    def make(max_batch: int = 64, **kw: object) -> Backend:
        return factory(model_cfg(small_ckpt, **kw), max_batch)

    return make


@pytest.fixture(scope="module")
def backend(build: Callable[..., Backend]) -> Backend:
    return build()


@pytest.fixture(scope="module")
def clf(small_ckpt: Path) -> TorchBackend:
    """The torch engine on the CPU, for the worker's tests."""
    return make_classifier(small_ckpt)


def reference_probs(path: Path, images: np.ndarray, patch_size: int | None = None,
                    device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """birder's model-card path: load_model, classification_transform on PIL, infer_batch."""
    net, info = fs_ops.load_model(torch.device(device), NETWORK, path=path, inference=True)
    transform = birder.classification_transform((240, 240), info.rgb_stats)
    kwargs = {} if patch_size is None else {"patch_size": patch_size}
    probs, embeddings = [], []
    for start in range(0, len(images), 50):
        batch = torch.stack([transform(Image.fromarray(im)) for im in images[start:start + 50]])
        p, e = infer_batch(net, batch.to(device), return_embedding=True, **kwargs)
        probs.append(p)
        embeddings.append(e)
    return np.concatenate(probs), np.concatenate(embeddings)


def crop(camera: str, seq: int, image: np.ndarray | None = None) -> Crop:
    if image is None:
        image = np.zeros((240, 240, 3), np.uint8)
    return Crop(camera, time.time(), seq, (0, 0, 240, 240), (640, 480), image)


# --------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def reference(small_ckpt: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return reference_probs(small_ckpt, images)


@pytest.fixture(scope="module")
def ours_fp32(backend: Backend, images: np.ndarray) -> TopK:
    return predict(backend, images)


def fp32_tol(backend: Backend) -> float:
    """The bound on |dp| against birder at fp32: torch runs birder's own operations (1e-5);
    a converted graph's fused kernels are held to the issue's 1e-4."""
    return 1e-5 if isinstance(backend, TorchBackend) else 1e-4


def _check_parity(ours: TopK, ref: np.ndarray, tol: float) -> float:
    assert ours.probs.shape == ours.indices.shape == (len(ref), NUM_CLASSES)
    assert ours.probs.dtype == np.float32 and ours.indices.dtype == np.int64
    diff = float(np.abs(np.take_along_axis(ref, ours.indices, axis=1) - ours.probs).max())
    assert diff <= tol
    np.testing.assert_array_equal(ours.indices[:, 0], ref.argmax(axis=1))
    return diff


def test_parity_with_birder_fp32_cpu(backend: Backend, ours_fp32: TopK,
                                     reference: tuple[np.ndarray, np.ndarray]) -> None:
    diff = _check_parity(ours_fp32, reference[0], fp32_tol(backend))
    print(f"{backend.describe()} parity over {len(ours_fp32)} crops: max |dp| = {diff:.3g}")
    assert np.all(np.diff(ours_fp32.probs, axis=1) <= 0)  # best first
    assert len(set(ours_fp32.indices[:, 0])) > 1  # the images really differ for the model
    assert ours_fp32.embedding is None and backend.embedding_size is None


@pytest.mark.parametrize("patch_size", [12, 24])
def test_parity_at_other_patch_sizes(build: Callable[..., Backend], small_ckpt: Path,
                                     images: np.ndarray, patch_size: int) -> None:
    """Our once-at-load patch size equals birder's per-call (training-time) patch_size."""
    ours = build(patch_size=patch_size)
    assert f"patch {patch_size}" in ours.describe()
    ref, _ = reference_probs(small_ckpt, images[:16], patch_size=patch_size)
    _check_parity(predict(ours, images[:16]), ref, fp32_tol(ours))


def test_embedding_from_the_same_forward(build: Callable[..., Backend], images: np.ndarray,
                                         reference: tuple[np.ndarray, np.ndarray]) -> None:
    with_emb = build(embedding=True)
    assert with_emb.embedding_size == 384
    subset = images[:24]
    ours = predict(with_emb, subset)
    assert ours.embedding is not None and ours.embedding.shape == (24, 384)
    assert ours.embedding.dtype == np.float32
    np.testing.assert_allclose(ours.embedding, reference[1][:24], atol=1e-4)
    _check_parity(ours, reference[0][:24], fp32_tol(with_emb))


def test_bf16_cpu_keeps_confident_top1(build: Callable[..., Backend], images: np.ndarray,
                                       ours_fp32: TopK) -> None:
    bf16 = build(precision="bf16")
    print(f"native bf16: {cpu_has_native_bf16()}, running {bf16.describe()}")
    p32, i32 = ours_fp32.probs, ours_fp32.indices
    low = predict(bf16, images)
    p16, i16 = low.probs, low.indices
    confident = (p32[:, 0] - p32[:, 1]) > 0.05
    assert confident.mean() > 0.5
    np.testing.assert_array_equal(i16[confident, 0], i32[confident, 0])
    full32 = np.zeros((len(images), NUM_CLASSES))
    full16 = np.zeros_like(full32)
    np.put_along_axis(full32, i32, p32, axis=1)
    np.put_along_axis(full16, i16, p16, axis=1)
    print(f"bf16 vs fp32 on CPU: max |dp| = {np.abs(full32 - full16).max():.4f}, "
          f"top-1 agreement {np.mean(i16[:, 0] == i32[:, 0]):.3f}")


# --------------------------------------------------------------------------- the contract


def test_implements_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.input_size == 240 and backend.max_batch == 64
    assert len(backend.labels) == NUM_CLASSES
    assert backend.max_in_flight >= 1
    assert backend.describe()


def test_submit_takes_one_batch_at_most(backend: Backend, images: np.ndarray) -> None:
    top = backend.submit(images[:3]).result()
    assert isinstance(top, TopK) and len(top) == 3
    np.testing.assert_array_equal(top.indices, predict(backend, images[:3]).indices)
    with pytest.raises(ValueError, match="65 images in one batch, max_batch is 64"):
        backend.submit(images[:65])


def test_large_input_is_chunked(build: Callable[..., Backend], images: np.ndarray) -> None:
    small_batches = build(max_batch=4, top_k=5)
    top = predict(small_batches, images[:9])
    first = predict(small_batches, images[:4])
    assert top.probs.shape == top.indices.shape == (9, 5)
    np.testing.assert_allclose(top.probs[:4], first.probs, atol=1e-6)


def test_classify_crops(backend: Backend, images: np.ndarray) -> None:
    crops = [crop("a", i, images[i]) for i in range(3)]
    predictions = classify(backend, crops)
    assert [p.crop for p in predictions] == crops
    for p in predictions:
        assert isinstance(p, Prediction)
        assert len(p.top_k) == NUM_CLASSES
        assert p.top_k[0][0] in backend.labels
        assert sum(prob for _, prob in p.top_k) == pytest.approx(1.0, abs=1e-5)
    assert classify(backend, []) == []


def test_rejects_wrong_images(backend: Backend) -> None:
    with pytest.raises(ValueError, match=r"\(N, 240, 240, 3\)"):
        backend.submit(np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        backend.submit(np.zeros((1, 240, 240, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 240, 240, 3\)"):
        predict(backend, np.zeros((70, 224, 224, 3), np.uint8))


def test_warm_up(backend: Backend) -> None:
    assert backend.warm_up([0, 1, 3]) >= 0.0


def test_closed_backend_refuses_batches(build: Callable[..., Backend],
                                        images: np.ndarray) -> None:
    closing = build(max_batch=2, top_k=1)
    closing.close()
    closing.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        closing.submit(images[:1])


# --------------------------------------------------------------------------- shared decoding


def test_to_predictions_attaches_labels_in_crop_order() -> None:
    crops = [crop("a", i) for i in range(2)]
    top = TopK(np.array([[0.7, 0.2], [0.6, 0.3]], np.float32), np.array([[2, 0], [1, 2]]),
               np.arange(6, dtype=np.float32).reshape(2, 3))
    first, second = to_predictions(["x", "y", "z"], crops, top)
    assert first.crop is crops[0] and second.crop is crops[1]
    assert first.top_k == (("z", pytest.approx(0.7)), ("x", pytest.approx(0.2)))
    assert [label for label, _ in second.top_k] == ["y", "z"]
    np.testing.assert_array_equal(second.embedding, [3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="1 results for 2 crops"):
        to_predictions(["x", "y", "z"], crops, TopK(top.probs[:1], top.indices[:1]))


def test_topk_concat_and_empty() -> None:
    a = TopK(np.ones((2, 1), np.float32), np.zeros((2, 1), np.int64))
    b = TopK(np.zeros((1, 1), np.float32), np.ones((1, 1), np.int64))
    both = TopK.concat([a, b])
    assert len(both) == 3 and both.embedding is None
    np.testing.assert_array_equal(both.indices[:, 0], [0, 0, 1])
    assert len(TopK.concat([])) == 0


# --------------------------------------------------------------------------- torch engine


def test_torch_describe_and_in_flight(clf: TorchBackend) -> None:
    assert clf.describe() == "torch cpu fp32 patch 16"
    assert clf.max_in_flight == 1  # a CPU forward is done when submit returns


def test_make_backend_builds_the_torch_engine(small_ckpt: Path) -> None:
    built = make_backend(model_cfg(small_ckpt, top_k=2), max_batch=8)
    assert isinstance(built, TorchBackend) and isinstance(built, Backend)
    assert built.max_batch == 8 and built.buckets == [1, 2, 4, 8]
    ready = load_backend(model_cfg(small_ckpt, top_k=2), max_batch=2)
    assert ready.max_batch == 2 and len(ready.submit(np.zeros((2, 240, 240, 3), np.uint8))
                                        .result()) == 2


def test_padding_matches_unpadded(small_ckpt: Path, images: np.ndarray) -> None:
    padded = make_classifier(small_ckpt, top_k=3)
    plain = make_classifier(small_ckpt, top_k=3)
    padded.pad_batches, plain.pad_batches = True, False
    assert padded._bucket(5) == 8 and plain._bucket(5) == 5
    a = predict(padded, images[:5])
    b = predict(plain, images[:5])
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert a.probs.shape == (5, 3)


@pytest.mark.slow
def test_compiled_matches_eager(small_ckpt: Path, images: np.ndarray) -> None:
    """torch.compile (about 30 s here on the first batch) gives the eager answers."""
    compiled = make_classifier(small_ckpt, max_batch=8, compile=True, top_k=3)
    eager = make_classifier(small_ckpt, top_k=3)
    assert compiled.pad_batches
    assert compiled.describe().endswith(" compiled")
    a, b = predict(compiled, images[:5]), predict(eager, images[:5])
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_bucket_sizes() -> None:
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(16) == [1, 2, 4, 8, 16]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]


# --------------------------------------------------------------------------- CropQueue


def test_queue_round_robin_across_cameras() -> None:
    queue = CropQueue(100)
    for i in range(30):
        queue.put(crop("busy", i))
    queue.put(crop("quiet", 0))
    queue.put(crop("other", 0))
    batch = queue.get_batch(max_size=4, max_wait_s=0.0, timeout_s=1.0)
    assert sorted(c.camera for c in batch) == ["busy", "busy", "other", "quiet"]
    assert [c.frame_seq for c in batch if c.camera == "busy"] == [0, 1]  # FIFO per camera
    assert len(queue) == 28


def test_queue_round_robin_continues_across_batches() -> None:
    queue = CropQueue(100)
    for cam in "abcd":
        for i in range(3):
            queue.put(crop(cam, i))
    first = queue.get_batch(2, 0.0, 1.0)
    second = queue.get_batch(2, 0.0, 1.0)
    assert {c.camera for c in first} | {c.camera for c in second} == set("abcd")


def test_queue_overload_drops_oldest_of_busiest() -> None:
    queue = CropQueue(10)
    for i in range(50):
        queue.put(crop("busy", i))
        if i % 15 == 0:
            queue.put(crop("quiet", i))
    assert len(queue) == 10
    assert queue.drops == {"busy": 44}
    batch = queue.get_batch(10, 0.0, 1.0)
    assert sorted(c.frame_seq for c in batch if c.camera == "quiet") == [0, 15, 30, 45]
    assert [c.frame_seq for c in batch if c.camera == "busy"] == list(range(44, 50))


def test_queue_resize_drops_like_put() -> None:
    queue = CropQueue(10)
    for i in range(8):
        queue.put(crop("busy", i))
    queue.put(crop("quiet", 0))
    queue.resize(4)
    assert queue.maxsize == 4 and len(queue) == 4
    assert queue.drops == {"busy": 5}
    batch = queue.get_batch(10, 0.0, 1.0)
    assert sorted((c.camera, c.frame_seq) for c in batch) == [
        ("busy", 5), ("busy", 6), ("busy", 7), ("quiet", 0)]
    queue.resize(20)
    with pytest.raises(ValueError):
        queue.resize(0)


def test_a_crop_refused_by_a_closed_queue_is_counted() -> None:
    """Crops a camera emits while the queue is closed (at a stop) are counted as dropped:
    every crop is either classified or counted."""
    queue = CropQueue(10)
    queue.put(crop("a", 0))
    queue.close()
    assert not queue.put(crop("a", 1))
    assert queue.drop_counts() == {"a": 1} and len(queue) == 1


def test_get_batch_waits_at_most_max_wait_after_first_crop() -> None:
    queue = CropQueue(100)
    threading.Timer(0.1, lambda: queue.put(crop("a", 0))).start()
    start = time.monotonic()
    batch = queue.get_batch(max_size=8, max_wait_s=0.2, timeout_s=5.0)
    elapsed = time.monotonic() - start
    assert len(batch) == 1
    assert 0.25 < elapsed < 0.8


def test_get_batch_full_batch_does_not_wait() -> None:
    queue = CropQueue(100)
    for i in range(8):
        queue.put(crop("a", i))
    start = time.monotonic()
    assert len(queue.get_batch(max_size=8, max_wait_s=5.0, timeout_s=5.0)) == 8
    assert time.monotonic() - start < 0.5


def test_get_batch_gathers_late_crops_within_the_wait() -> None:
    queue = CropQueue(100)
    queue.put(crop("a", 0))
    threading.Timer(0.05, lambda: queue.put(crop("b", 0))).start()
    batch = queue.get_batch(max_size=2, max_wait_s=2.0, timeout_s=1.0)
    assert {c.camera for c in batch} == {"a", "b"}


def test_get_batch_timeout_and_close() -> None:
    queue = CropQueue(4)
    start = time.monotonic()
    assert queue.get_batch(4, 0.0, timeout_s=0.1) == []
    assert time.monotonic() - start < 0.5
    result: list[list[Crop]] = []
    waiter = threading.Thread(target=lambda: result.append(queue.get_batch(4, 1.0, 30.0)))
    waiter.start()
    time.sleep(0.1)
    start = time.monotonic()
    queue.close()
    waiter.join(2.0)
    assert not waiter.is_alive() and result == [[]]
    assert time.monotonic() - start < 0.5
    assert queue.put(crop("a", 0)) is False


def test_closed_queue_hands_out_the_rest_without_waiting() -> None:
    queue = CropQueue(4)
    queue.put(crop("a", 0))
    queue.close()
    start = time.monotonic()
    assert len(queue.get_batch(4, max_wait_s=5.0, timeout_s=5.0)) == 1
    assert time.monotonic() - start < 0.5
    assert queue.get_batch(4, 5.0, 5.0) == []


# --------------------------------------------------------------------------- InferenceWorker


def fed_worker(backend: Backend, crops: list[Crop],
               max_size: int) -> tuple[InferenceWorker, Collector]:
    """A started worker (no waiting for company) with `crops` already queued."""
    queue = CropQueue(max(1, len(crops)))
    sink = Collector()
    worker = InferenceWorker(backend, queue, BatchingConfig(max_size=max_size, max_wait_ms=0),
                             sink)
    for c in crops:
        queue.put(c)
    worker.start()
    return worker, sink


def test_worker_end_to_end(clf: TorchBackend, images: np.ndarray) -> None:
    queue = CropQueue(200)
    sink = Collector()
    worker = InferenceWorker(clf, queue, BatchingConfig(max_size=8, max_wait_ms=20), sink)
    assert worker.name == "inference" and worker.daemon
    worker.start()
    crops = [crop(f"cam{i % 4}", i, images[i]) for i in range(40)]
    for c in crops:
        queue.put(c)
    sink.wait_for(40, 30.0)
    assert {id(p.crop) for p in sink.predictions} == {id(c) for c in crops}
    snap = worker.snapshot(stall_limit_s=60)
    assert snap.crops == 40 and snap.errors == 0 and snap.alive
    assert sum(n * k for n, k in worker.batch_sizes.items()) == 40
    assert max(worker.batch_sizes) <= 8
    p50, p95 = worker.latency_percentiles()
    assert p50 is not None and p95 is not None and worker.last_latency_s is not None
    before = worker.last_progress
    time.sleep(0.6)
    assert worker.last_progress > before  # moves while idle too
    assert worker.stop(5.0)
    assert not worker.is_alive()


def test_worker_stop_drains_the_queue(clf: TorchBackend, images: np.ndarray) -> None:
    worker, sink = fed_worker(clf, [crop("a", i, images[i]) for i in range(20)], max_size=4)
    assert worker.stop(drain_timeout_s=30.0)
    assert len(sink.predictions) == 20
    assert len(worker.queue) == 0


def test_worker_survives_errors(clf: TorchBackend, images: np.ndarray) -> None:
    queue = CropQueue(100)
    sink = Collector()
    worker = InferenceWorker(clf, queue, BatchingConfig(max_size=1, max_wait_ms=0), sink)
    worker.start()
    queue.put(crop("a", 0, np.zeros((100, 100, 3), np.uint8)))  # wrong size: classify raises
    queue.put(crop("a", 1, images[0]))
    sink.wait_for(1, 10.0)
    assert worker.stop(5.0)
    assert worker.errors == 1 and worker.failed_crops == 1
    assert [p.crop.frame_seq for p in sink.predictions] == [1]


class Overlapping(TorchBackend):
    """The CPU engine, with the worker's CUDA schedule: take the next batch first."""

    @property
    def max_in_flight(self) -> int:
        return 2


def test_worker_with_a_batch_in_flight_keeps_order_and_results(
        small_ckpt: Path, images: np.ndarray) -> None:
    """The CUDA schedule (next batch taken before the last one's result) loses nothing."""
    overlapping = Overlapping(model_cfg(small_ckpt, top_k=1), max_batch=4)
    crops = [crop("a", i, images[i]) for i in range(30)]
    crops.insert(7, crop("a", 99, np.zeros((100, 100, 3), np.uint8)))  # one bad batch
    worker, sink = fed_worker(overlapping, crops, max_size=4)
    sink.wait_for(26, 30.0)
    assert worker.stop(5.0)
    good = [p.crop.frame_seq for p in sink.predictions]
    assert good == sorted(good) and 99 not in good
    assert worker.failed_crops + len(good) == len(crops) and worker.errors == 1
    top = predict(overlapping, np.stack([p.crop.image for p in sink.predictions]))
    assert [p.top_k[0][0] for p in sink.predictions] == [overlapping.labels[i]
                                                          for i in top.indices[:, 0]]
    assert worker.pending_since() is None



def test_worker_needs_only_the_protocol() -> None:
    """Any Backend works: order kept, up to its max_in_flight out, refusals counted."""
    double = NumpyBackend()
    assert isinstance(double, Backend)

    def tiny(seq: int, value: int) -> Crop:
        return Crop("a", time.time(), seq, (0, 0, 16, 16), (64, 64),
                    np.full((16, 16, 3), value, np.uint8))

    crops = [tiny(i, 32 * (i % 8)) for i in range(40)]
    crops[10] = tiny(10, 255)  # its batch (crops 10 and 11) is refused at submit
    worker, sink = fed_worker(double, crops, max_size=2)
    sink.wait_for(38, 10.0)
    assert worker.stop(5.0)
    assert double.most_out == 3 and double.out == 0
    assert [p.crop.frame_seq for p in sink.predictions] == [i for i in range(40)
                                                             if i not in (10, 11)]
    assert all(p.top_k[0][0] == f"class {p.crop.frame_seq % 8}" for p in sink.predictions)
    assert worker.errors == 1 and worker.failed_crops == 2
    assert worker.batch_sizes == {2: 19} and worker.pending_since() is None


def test_worker_switches_backend_and_batching_between_batches() -> None:
    """A reload: later batches go to the new backend at its batch size, nothing is lost,
    and the replaced backend is closed once it has nothing out."""
    old, new = NumpyBackend("old"), NumpyBackend("new")
    image = np.full((16, 16, 3), 64, np.uint8)
    sink = Collector()
    worker = InferenceWorker(old, CropQueue(10), BatchingConfig(max_size=2, max_wait_ms=50),
                             sink)
    for i in range(4):
        worker.queue.put(Crop("a", time.time(), i, (0, 0, 16, 16), (64, 64), image))
    worker.start()
    sink.wait_for(4, 10.0)
    worker.use(new, BatchingConfig(max_size=1, max_wait_ms=0))
    for i in range(4, 7):
        worker.queue.put(Crop("a", time.time(), i, (0, 0, 16, 16), (64, 64), image))
    sink.wait_for(7, 10.0)
    assert worker.stop(5.0)
    assert [p.top_k[0][0] for p in sink.predictions] == ["old 2"] * 4 + ["new 2"] * 3
    assert old.closed and not new.closed and old.out == new.out == 0
    assert worker.backend is new and worker.batch_sizes == {2: 2, 1: 3}


def test_worker_stop_without_start(clf: TorchBackend) -> None:
    worker = InferenceWorker(clf, CropQueue(4), BatchingConfig(), lambda _: None)
    assert worker.stop(0.1)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@needs_cuda
def test_cuda_parity_fp32(small_ckpt: Path, images: np.ndarray) -> None:
    gpu = make_classifier(small_ckpt, device="cuda")
    ref, _ = reference_probs(small_ckpt, images, device="cuda")
    top = predict(gpu, images)
    diff = float(np.abs(np.take_along_axis(ref, top.indices, axis=1) - top.probs).max())
    print(f"CUDA fp32 vs birder on CUDA: max |dp| = {diff:.3g}")
    assert diff <= 1e-4
    margin = np.sort(ref, axis=1)
    confident = (margin[:, -1] - margin[:, -2]) > 1e-3
    np.testing.assert_array_equal(top.indices[confident, 0], ref.argmax(axis=1)[confident])


@pytest.mark.cuda
@needs_cuda
def test_cuda_low_precision_keeps_confident_top1(small_ckpt: Path, images: np.ndarray) -> None:
    fast = make_classifier(small_ckpt, device="cuda", precision="auto")
    assert fast.dtype in (torch.bfloat16, torch.float16)
    ref, _ = reference_probs(small_ckpt, images, device="cuda")
    indices = predict(fast, images).indices
    top2 = np.sort(ref, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > 0.05
    np.testing.assert_array_equal(indices[confident, 0], ref.argmax(axis=1)[confident])


@pytest.mark.cuda
@needs_cuda
def test_cuda_pinned_padded_path(small_ckpt: Path, images: np.ndarray) -> None:
    gpu = make_classifier(small_ckpt, device="cuda", top_k=3)
    assert gpu.pad_batches and gpu.max_in_flight == 2
    assert gpu.describe().startswith("torch cuda")
    a = predict(gpu, images[:5])
    b = predict(gpu, images[:5])
    c = predict(gpu, images[:5])  # both pinned buffers of the ring reused
    assert [buf.is_pinned() for buf, _ in gpu._pinned[8]] == [True, True]
    for other in (b, c):
        np.testing.assert_array_equal(a.indices, other.indices)
        np.testing.assert_allclose(a.probs, other.probs, atol=1e-6)


@pytest.mark.cuda
@needs_cuda
def test_cuda_batches_in_flight_match_one_at_a_time(small_ckpt: Path,
                                                    images: np.ndarray) -> None:
    """Staging batch k+1 while batch k runs must not touch k's input or output."""
    gpu = make_classifier(small_ckpt, max_batch=8, device="cuda", top_k=3)
    one_by_one = [gpu.submit(images[i:i + 8]).result() for i in range(0, 200, 8)]
    pending = [gpu.submit(images[i:i + 8]) for i in range(0, 200, 8)]  # 25 in flight
    together = [p.result() for p in pending]
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    worker, sink = fed_worker(gpu, [crop("a", i, images[i]) for i in range(200)], max_size=8)
    sink.wait_for(200, 60.0)
    assert worker.stop(5.0)
    assert [p.crop.frame_seq for p in sink.predictions] == list(range(200))
    expected = np.concatenate([top.indices for top in one_by_one])[:, 0]
    assert [p.top_k[0][0] for p in sink.predictions] == [gpu.labels[i] for i in expected]


def test_pending_since_covers_queued_and_in_flight_crops(clf: TorchBackend,
                                                         images: np.ndarray) -> None:
    """Visits end against the oldest unclassified crop, so a backlog never splits a visit."""
    queue = CropQueue(10)
    release = threading.Event()
    seen: list[float] = []

    def slow_sink(predictions: list[Prediction]) -> None:
        seen.extend(p.crop.ts for p in predictions)
        release.wait(10)

    worker = InferenceWorker(clf, queue, BatchingConfig(max_size=1, max_wait_ms=0), slow_sink)
    assert worker.pending_since() is None
    queue.put(crop("a", 5, images[0]))
    queue.put(crop("b", 7, images[1]))
    assert queue.oldest_crop_ts() == worker.pending_since()
    first = worker.pending_since()
    worker.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen, "the worker took no batch"
    # one crop is in the (blocked) sink, the other still queued: the oldest still counts
    assert worker.pending_since() == first
    release.set()
    assert worker.stop(5.0)
    assert worker.pending_since() is None
