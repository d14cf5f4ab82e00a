"""The CPU engines beyond torch: `model.backend` config, conversion and its cache, the
engines in the worker, `camtrap export-model` and `camtrap evaluate`.

Parity and the protocol contract of every engine against birder run in test_classifier.py
(its BACKENDS list); here are what only the converted engines have, and a full-size parity
check (12 layers, 550 classes) marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from camtrap.cli import main
from camtrap.config.base import ConfigError
from camtrap.config.loader import parse_config
from camtrap.config.models import (
    AutoBackendConfig,
    ModelConfig,
    OnnxRuntimeBackendConfig,
    OpenVINOBackendConfig,
    TorchBackendConfig,
)
from camtrap.inference import convert, factory
from camtrap.inference.backend import Backend, TopK, predict
from camtrap.inference.checkpoint import ModelError
from camtrap.inference.factory import make_backend, resolve_backend
from camtrap.inference.openvino_backend import native_bf16
from camtrap.motion.regions import Crop
from camtrap.tools.checkpoints import RGB_STATS, build_checkpoint
from tests.backends import Collector
from tests.images import textured_images

CAMERAS = "cameras: [{name: feeder, url: clip.mp4}]\n"
ENGINES = [
    pytest.param("openvino", marks=pytest.mark.skipif(
        importlib.util.find_spec("openvino") is None, reason="openvino is not installed")),
    pytest.param("onnxruntime", marks=pytest.mark.skipif(
        importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")),
]
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(CAMERAS + text)
    return info.value.problems


def engine_cfg(path: Path, models_dir: Path, backend: object, **kw: object) -> ModelConfig:
    options: dict[str, object] = {"path": path, "models_dir": models_dir, "top_k": 8,
                                  "embedding": False, "backend": backend}
    options.update(kw)
    return ModelConfig.model_validate(options)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return textured_images(48, seed=11)


@pytest.fixture(scope="module")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion cache for the tests that only use engines (not those of the cache)."""
    return tmp_path_factory.mktemp("models")


# --------------------------------------------------------------------------- config


def test_old_model_sections_load_unchanged_as_torch() -> None:
    """Config keys are a public contract: a model section from before backends existed
    means the torch engine with the same options."""
    cfg = parse_config(CAMERAS + "model: {device: cpu, precision: bf16, compile: true, "
                       "threads: 2, top_k: 3, patch_size: 24}\n").model
    assert cfg.backend == TorchBackendConfig() and cfg.backend.type == "torch"
    assert (cfg.device, cfg.precision, cfg.compile, cfg.threads, cfg.top_k,
            cfg.patch_size) == ("cpu", "bf16", True, 2, 3, 24)
    assert ModelConfig() == ModelConfig(backend="torch")
    assert parse_config(CAMERAS).model.backend.type == "torch"


def test_backend_union_options_and_shorthand() -> None:
    model = parse_config(CAMERAS + "model: {backend: openvino}\n").model
    assert model.backend == OpenVINOBackendConfig(type="openvino")
    assert (model.backend.device, model.backend.precision, model.backend.int8,
            model.backend.hint) == ("CPU", "fp32", False, "throughput")
    model = parse_config(CAMERAS + "model:\n  backend: {type: openvino, device: gpu.1, "
                         "precision: auto, int8: true, hint: latency, threads: 2}\n").model
    assert (model.backend.device, model.backend.precision, model.backend.int8,
            model.backend.hint, model.backend.threads) == ("GPU.1", "auto", True, "latency", 2)
    model = parse_config(CAMERAS + "model: {backend: {type: onnxruntime, threads: 1}}\n").model
    assert model.backend == OnnxRuntimeBackendConfig(type="onnxruntime", threads=1)
    model = parse_config(CAMERAS + "model: {device: cpu, backend: {type: auto, "
                         "precision: bf16}}\n").model
    assert model.backend == AutoBackendConfig(type="auto", precision="bf16")


def test_backend_errors_name_the_field_path() -> None:
    assert problems("model: {backend: {type: openvino, precision: fp16}}") == [
        "model.backend.precision: Input should be 'fp32', 'bf16' or 'auto'"]
    assert problems("model: {backend: {type: onnxruntime, precision: bf16}}") == [
        "model.backend.precision: Input should be 'fp32'"]
    assert problems("model: {backend: {type: openvino, device: tpu}}") == [
        "model.backend.device: must be CPU, GPU, GPU.N or AUTO, got 'TPU'"]
    assert problems("model: {backend: {type: onnxruntime, streams: 2}}") == [
        "model.backend.streams: unknown key"]
    assert problems("model: {backend: {type: openvino, threads: -1}}") == [
        "model.backend.threads: Input should be greater than or equal to 0"]
    assert problems("model: {backend: tensorrt}") == [
        "model.backend: unknown type 'tensorrt': one of torch, openvino, onnxruntime, auto"]
    assert problems("model: {backend: {device: CPU}}") == [
        "model.backend: needs a type: one of torch, openvino, onnxruntime, auto"]
    # the torch engine's keys are an error with an engine that would ignore them
    (problem,) = problems("model: {precision: bf16, compile: true, backend: openvino}")
    assert problem.startswith("model.backend: model.precision is 'bf16', model.compile is "
                              "True: the torch engine's option, ignored by openvino")


def test_auto_picks_the_fastest_available_and_logs_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="camtrap.inference.factory")
    available = {"openvino": True, "onnxruntime": True}
    monkeypatch.setattr(factory, "engine_available", lambda name: available[name])
    auto = ModelConfig(device="cpu", backend={"type": "auto", "precision": "bf16"})
    chosen = resolve_backend(auto)
    assert chosen.backend == OpenVINOBackendConfig(type="openvino", precision="bf16")
    assert "model.backend auto: openvino (CPU, openvino importable" in caplog.text
    available["openvino"] = False
    assert resolve_backend(auto).backend.type == "onnxruntime"
    assert "onnxruntime runs fp32 only" in caplog.text
    available["onnxruntime"] = False
    fallback = resolve_backend(auto)
    assert fallback.backend.type == "torch" and fallback.precision == "bf16"
    assert "neither openvino nor onnxruntime" in caplog.text
    available.update(openvino=True, onnxruntime=True)
    on_gpu = resolve_backend(ModelConfig(device="cuda", backend="auto"))
    assert on_gpu.backend.type == "torch" and on_gpu.precision == "auto"
    assert "model.device cuda: CUDA" in caplog.text
    explicit = ModelConfig(backend="onnxruntime")
    assert resolve_backend(explicit) is explicit


# --------------------------------------------------------------------------- packages


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_a_missing_engine_package_names_what_to_install(
        checkpoint_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        engine: str) -> None:
    monkeypatch.setitem(sys.modules, engine, None)  # import fails as if not installed
    with pytest.raises(ModelError, match=f"needs the Python package '{engine}'.*pip install "
                       f"{engine}"):
        make_backend(engine_cfg(checkpoint_path, tmp_path, engine), 4)
    assert not factory.engine_available(engine)


@needs_openvino
def test_int8_without_nncf_names_what_to_install(checkpoint_path: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    cfg = engine_cfg(checkpoint_path, tmp_path, {"type": "openvino", "int8": True})
    with pytest.raises(ModelError, match=r"needs the Python package 'nncf'.*pip install nncf"):
        make_backend(cfg, 4)
    assert not list((tmp_path / "converted" / "openvino").glob("*int8*"))  # nothing kept


@needs_openvino
def test_an_openvino_device_that_is_not_here_is_a_clear_error(checkpoint_path: Path,
                                                               tmp_path: Path) -> None:
    import openvino as ov

    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an OpenVINO GPU")
    cfg = engine_cfg(checkpoint_path, tmp_path, {"type": "openvino", "device": "GPU"})
    with pytest.raises(ModelError, match=r"model.backend.device GPU: OpenVINO has no such "
                       r"device here \(it has CPU"):
        make_backend(cfg, 4)


@needs_openvino
@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")
def test_int8_is_its_own_conversion(checkpoint_path: Path, shared_models: Path,
                                    images: np.ndarray) -> None:
    """Opt-in int8: quantised once (calibrated on synthetic crops), cached apart from fp32."""
    int8 = make_backend(engine_cfg(checkpoint_path, shared_models,
                                   {"type": "openvino", "int8": True}), 8)
    assert int8.converted.path.name.endswith("-int8-v1")
    assert int8.describe().startswith("openvino CPU int8+")
    top = predict(int8, images[:8])
    assert top.probs.shape == (8, 8) and np.all(np.diff(top.probs, axis=1) <= 0)


# --------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("engine", ENGINES)
def test_conversion_is_cached_and_reused(checkpoint_path: Path, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture, engine: str,
                                         images: np.ndarray) -> None:
    caplog.set_level(logging.INFO, logger="camtrap.inference.convert")
    cfg = engine_cfg(checkpoint_path, tmp_path, engine)
    first = make_backend(cfg, 4)
    folder = first.converted.path
    assert not first.converted.cached
    assert folder.parent == tmp_path / "converted" / engine
    assert folder.name.endswith("-p16-s240-fp32-v1")
    assert folder.name.startswith(convert.sha256_file(checkpoint_path)[:16])
    assert f"{engine}: converted {checkpoint_path.name}" in caplog.text
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    meta = json.loads((folder / "model.json").read_text())
    assert meta["rgb_stats"] == {k: list(v) for k, v in RGB_STATS.items()}
    assert json.loads((folder / "labels.json").read_text()) == first.labels
    caplog.clear()
    started = time.perf_counter()
    second = make_backend(cfg, 4)
    assert second.converted.cached and second.converted.path == folder
    assert f"{engine}: using the converted model in {folder}" in caplog.text
    assert "converted small" not in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    print(f"{engine}: second start {time.perf_counter() - started:.2f} s")
    np.testing.assert_array_equal(predict(first, images[:4]).indices,
                                  predict(second, images[:4]).indices)
    other_patch = make_backend(cfg.model_copy(update={"patch_size": 24}), 4)
    assert other_patch.converted.path.name.endswith("-p24-s240-fp32-v1")
    assert not other_patch.converted.cached


@needs_openvino
def test_a_changed_checkpoint_is_converted_again(tmp_path: Path, images: np.ndarray) -> None:
    ckpt = build_checkpoint(tmp_path / "model.pt")
    cfg = engine_cfg(ckpt, tmp_path / "models", "openvino")
    before = make_backend(cfg, 4)
    build_checkpoint(ckpt, seed=99)  # new weights at the same path
    after = make_backend(cfg, 4)
    assert not after.converted.cached and after.converted.path != before.converted.path
    assert after.converted.key.sha256 == convert.sha256_file(ckpt)
    assert not np.array_equal(predict(before, images).probs, predict(after, images).probs)


@needs_openvino
def test_bf16_compiles_the_fp32_file(checkpoint_path: Path, shared_models: Path) -> None:
    """bf16 is a compile-time choice: it shares fp32's converted file."""
    fp32 = make_backend(engine_cfg(checkpoint_path, shared_models, "openvino"), 4)
    bf16 = make_backend(engine_cfg(checkpoint_path, shared_models,
                                   {"type": "openvino", "precision": "bf16"}), 4)
    assert bf16.converted.path == fp32.converted.path
    assert "fp32 patch 16" in fp32.describe()
    native = native_bf16(convert.require_package("openvino").Core())
    assert f"CPU {'bf16' if native else 'fp32'} patch 16" in bf16.describe()


@needs_openvino
def test_a_crash_mid_conversion_leaves_nothing_that_is_trusted(
        checkpoint_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = engine_cfg(checkpoint_path, tmp_path, "openvino")
    engine_dir = tmp_path / "converted" / "openvino"

    def crash(engine: str) -> dict[str, str]:  # after the model files, before model.json
        raise KeyboardInterrupt("killed mid-conversion")

    monkeypatch.setattr(convert, "_versions", crash)
    with pytest.raises(KeyboardInterrupt):
        make_backend(cfg, 4)
    assert list(engine_dir.iterdir()) == []  # no final folder; the temp one is gone too
    monkeypatch.undo()

    # what a SIGKILL leaves: a temp folder with some files; old ones are removed later
    key = convert.ConvertKey("openvino", convert.sha256_file(checkpoint_path), 16, 240)
    dead = engine_dir / f".{key.dirname}.dead0001.tmp"
    dead.mkdir(parents=True)
    (dead / "model.xml").write_text("<half")
    # and a final-looking folder without model.json (copied by hand, half done)
    final = engine_dir / key.dirname
    final.mkdir()
    (final / "model.xml").write_text("<half")
    old = time.time() - 2 * convert.STALE_TEMP_S
    os.utime(dead, (old, old))
    assert convert.read_converted(final, key) is None
    backend = make_backend(cfg, 4)  # converts: neither folder is trusted
    assert backend.converted.path == final and not backend.converted.cached
    assert not dead.exists()
    assert [p.name for p in engine_dir.iterdir()] == [key.dirname]
    assert (final / "model.json").is_file() and (final / "model.bin").stat().st_size > 0


@needs_openvino
def test_a_damaged_cached_model_is_converted_again(
        checkpoint_path: Path, tmp_path: Path, images: np.ndarray,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = engine_cfg(checkpoint_path, tmp_path, "openvino")
    good = predict(make_backend(cfg, 4), images[:4])
    folder = tmp_path / "converted" / "openvino"
    (xml,) = folder.glob("*/model.xml")
    xml.write_text("<net damaged")
    caplog.set_level(logging.WARNING, logger="camtrap.inference.convert")
    again = make_backend(cfg, 4)
    assert "cannot load the cached" in caplog.text and not again.converted.cached
    np.testing.assert_allclose(predict(again, images[:4]).probs, good.probs, atol=1e-6)


# --------------------------------------------------------------------------- in the worker


@pytest.mark.parametrize("engine", ENGINES)
def test_the_worker_runs_unchanged_with_each_engine(
        checkpoint_path: Path, shared_models: Path, images: np.ndarray, engine: str) -> None:
    from camtrap.config.models import BatchingConfig
    from camtrap.inference.queue import CropQueue
    from camtrap.inference.worker import InferenceWorker

    backend = make_backend(engine_cfg(checkpoint_path, shared_models, engine, top_k=1,
                                      embedding=True), 4)
    assert isinstance(backend, Backend) and backend.embedding_size == 384
    crops = [Crop("a", time.time(), i, (0, 0, 240, 240), (640, 480), images[i])
             for i in range(30)]
    crops.insert(7, Crop("a", time.time(), 99, (0, 0, 9, 9), (640, 480),
                         np.zeros((100, 100, 3), np.uint8)))  # refused: its batch fails
    queue, sink = CropQueue(64), Collector()
    worker = InferenceWorker(backend, queue, BatchingConfig(max_size=4, max_wait_ms=0), sink)
    for c in crops:
        queue.put(c)
    worker.start()
    sink.wait_for(26, 60.0)
    assert worker.stop(5.0)
    got = [p.crop.frame_seq for p in sink.predictions]
    assert got == sorted(got) and 99 not in got
    assert worker.errors == 1 and worker.failed_crops + len(got) == len(crops)
    expected = predict(backend, np.stack([p.crop.image for p in sink.predictions]))
    assert [p.top_k[0][0] for p in sink.predictions] == [backend.labels[i] for i in
                                                          expected.indices[:, 0]]
    for p, emb in zip(sink.predictions, expected.embedding, strict=True):
        np.testing.assert_allclose(p.embedding, emb, atol=1e-5)


@needs_openvino
def test_openvino_batches_in_flight_match_one_at_a_time(
        checkpoint_path: Path, shared_models: Path, images: np.ndarray) -> None:
    """Many batches out at once (more than the request pool) lose and mix up nothing."""
    backend = make_backend(engine_cfg(checkpoint_path, shared_models, "openvino", top_k=3),
                           5)
    assert backend.max_in_flight >= 1
    one_by_one = [backend.submit(images[i:i + 5]).result() for i in range(0, 45, 5)]
    pending = [backend.submit(images[i:i + 5]) for i in range(0, 45, 5)]
    for a, p in zip(one_by_one, pending, strict=True):
        b = p.result()
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    empty = backend.submit(images[:0]).result()
    assert isinstance(empty, TopK) and empty.probs.shape == (0, 3)


# --------------------------------------------------------------------------- full size


def _full_rows(top: TopK, classes: int) -> np.ndarray:
    rows = np.zeros((len(top), classes))
    np.put_along_axis(rows, top.indices, top.probs, axis=1)
    return rows


@pytest.mark.slow
def test_full_size_parity_with_birder(full_checkpoint_path: Path, tmp_path: Path) -> None:
    """The released model's shape (12 layers, 550 classes), 200 varied crops: fp32 engines
    within 1e-4 of birder with the same top-1 and embedding; bf16 keeps top-1 wherever
    fp32's margin exceeds 0.05 and reports its largest difference."""
    from tests.test_classifier import reference_probs

    crops = textured_images(200, seed=7)
    ref, ref_emb = reference_probs(full_checkpoint_path, crops)
    ordered = np.sort(ref, axis=1)
    confident = (ordered[:, -1] - ordered[:, -2]) > 0.05
    engines: list[dict[str, object]] = []
    if importlib.util.find_spec("openvino"):
        engines += [{"type": "openvino"}, {"type": "openvino", "precision": "bf16"}]
    if importlib.util.find_spec("onnxruntime"):
        engines.append({"type": "onnxruntime"})
    for options in engines:
        backend = make_backend(engine_cfg(full_checkpoint_path, tmp_path, options,
                                          top_k=20, embedding=True), 16)
        # the whole probability row: every class, not just the top 20
        backend.top_k = len(backend.labels)
        ours = predict(backend, crops)
        diff = float(np.abs(_full_rows(ours, ref.shape[1]) - ref).max())
        agree = ours.indices[:, 0] == ref.argmax(axis=1)
        emb = float(np.abs(ours.embedding - ref_emb).max())
        print(f"{backend.describe()}: max |dp| {diff:.3g}, top-1 {agree.mean():.3f}, "
              f"confident top-1 {agree[confident].mean():.3f} of {confident.sum()}, "
              f"max |d embedding| {emb:.3g}")
        if "bf16" in backend.describe():
            assert agree[confident].all()
        else:
            assert diff <= 1e-4 and agree.all() and emb <= 1e-3


# --------------------------------------------------------------------------- commands


def write_config(tmp_path: Path, checkpoint: Path, **model: object) -> Path:
    cfg = {"cameras": [{"name": "feeder", "url": "clip.mp4"}],
           "model": {"path": str(checkpoint), "models_dir": str(tmp_path / "models"),
                     **model},
           "storage": {"state_dir": str(tmp_path / "state")}}
    path = tmp_path / "camtrap.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_export_model_writes_the_files_labels_and_rgb_stats(
        checkpoint_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        images: np.ndarray, engine: str) -> None:
    config = write_config(tmp_path, checkpoint_path)
    out = tmp_path / "export"
    assert main(["export-model", "--config", str(config), "--backend", engine,
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    meta = json.loads((out / "model.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    assert meta["engine"] == engine and meta["patch_size"] == 16
    assert meta["rgb_stats"] == {k: list(v) for k, v in RGB_STATS.items()}
    assert meta["input"]["dtype"] == "uint8" and meta["num_classes"] == len(labels) == 8
    assert meta["checkpoint_sha256"] == convert.sha256_file(checkpoint_path)
    # the same files are in the cache, where a start finds them
    (cache,) = (tmp_path / "models" / "converted" / engine).iterdir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in out.iterdir())
    # the exported file runs on its own: uint8 crops in, the engine's probabilities out
    backend = make_backend(engine_cfg(checkpoint_path, tmp_path / "models", engine), 8)
    probs = run_exported(out, engine, images[:3])
    np.testing.assert_allclose(np.sort(probs, axis=1)[:, ::-1],
                               predict(backend, images[:3]).probs, atol=1e-6)
    # exporting again replaces the earlier export
    assert main(["export-model", "--config", str(config), "--backend", engine,
                 "--out", str(out)]) == 0


def run_exported(folder: Path, engine: str, crops: np.ndarray) -> np.ndarray:
    if engine == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(crops)[compiled.output("probs")]
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"images": crops})[0]


def test_export_model_bad_input_exits_2(checkpoint_path: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = write_config(tmp_path, tmp_path / "nope.pt")
    assert main(["export-model", "--config", str(missing), "--backend", "onnxruntime"]) == 2
    assert "nope.pt: file not found" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    config = write_config(tmp_path, checkpoint_path)
    assert main(["export-model", "--config", str(config), "--backend", "onnxruntime",
                 "--out", str(occupied)]) == 2
    assert "exists and is not an exported model" in capsys.readouterr().err
    assert (occupied / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as exit_info:
        main(["export-model", "--config", str(config), "--backend", "tensorrt"])
    assert exit_info.value.code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMERAS + "model: {backend: {type: openvino, precision: fp8}}\n")
    assert main(["export-model", "--config", str(bad)]) == 2
    assert "model.backend.precision" in capsys.readouterr().err


def store_crops(state: Path, crops: np.ndarray) -> list[Path]:
    """Crops where the daemon keeps them: <state>/crops/<day>/<camera>-<visit>.jpg."""
    paths = []
    for i, crop in enumerate(crops):
        path = state / "crops" / f"2025-05-0{1 + i % 2}" / f"feeder-{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(path, quality=90)
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
        paths.append(path)
    return paths


@needs_openvino
def test_evaluate_on_the_stored_crops(checkpoint_path: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      images: np.ndarray) -> None:
    config = write_config(tmp_path, checkpoint_path)
    assert main(["evaluate", "--config", str(config)]) == 2
    assert "no crops under" in capsys.readouterr().err
    paths = store_crops(tmp_path / "state", images[:6])
    assert main(["evaluate", "--config", str(config), "--backend", "openvino", "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert fp32["crops"] == 6 and fp32["top1_agree"] == 6 and fp32["disagreements"] == []
    assert fp32["max_abs_dp"] < 1e-4 and fp32["candidate"].startswith("openvino CPU fp32")
    assert fp32["reference"] == "torch cpu fp32 patch 16"
    assert main(["evaluate", "--config", str(config), "--backend", "openvino",
                 "--precision", "bf16", "--limit", "4"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 stored crops: openvino CPU") and "top-1 agreement: " in text
    assert "max |dp|" in text
    # --limit takes the newest; an unreadable file is skipped, not fatal
    paths[-1].write_bytes(b"not a jpeg")
    assert main(["evaluate", "--config", str(config), "--limit", "2", "--json"]) == 0
    torch_self = json.loads(capsys.readouterr().out)
    assert torch_self["crops"] == 1 and torch_self["max_abs_dp"] == 0.0
    assert main(["evaluate", "--config", str(config), "--backend", "onnxruntime",
                 "--precision", "bf16"]) == 2
    assert "model.backend.precision" in capsys.readouterr().err
