"""Finding, fetching and loading the model, with every failure checked by its message.

Downloads run against real sockets on 127.0.0.1: a closed port, a server that accepts and
never answers, and http.server serving a real (small, random-init) checkpoint.
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from camtrap.config.models import DEFAULT_MODEL, ModelConfig
from camtrap.inference.checkpoint import (
    ModelError,
    network_name,
    registry_entry,
    resolve_checkpoint,
)
from camtrap.inference.network import (
    apply_threads,
    cpu_has_native_bf16,
    load_network,
    select_device,
    select_dtype,
)
from camtrap.tools.checkpoints import build_checkpoint

CPU = torch.device("cpu")
TEST_NAME = "flexivit_reg1_s16_rms_ls_camtrap-test"  # not in birder's registry: no sha


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt")


def cfg(**kw: object) -> ModelConfig:
    return ModelConfig(**kw)


# --------------------------------------------------------------------------- loading


def test_loads_labels_stats_and_network(small_ckpt: Path) -> None:
    model = load_network(small_ckpt, cfg(path=small_ckpt), CPU)
    assert model.labels[:3] == ["Eurasian Hoopoe", "House Sparrow", "Great Tit"]
    assert len(model.labels) == 8
    assert model.network == "flexivit_reg1_s16_rms_ls"
    assert model.input_size == 240
    assert model.mean == pytest.approx((0.5191, 0.5306, 0.4877))


def test_patch_size_applied_once_at_load(small_ckpt: Path) -> None:
    model = load_network(small_ckpt, cfg(path=small_ckpt, patch_size=24), CPU)
    assert model.patch_size == 24
    assert model.net.patch_size == 24
    assert model.net.conv_proj.weight.shape[-2:] == (24, 24)


def test_inference_mode_is_deterministic(small_ckpt: Path) -> None:
    net = load_network(small_ckpt, cfg(path=small_ckpt), CPU).net
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(net(x), net(x))  # training mode would sample a patch size


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelError, match=r"model\.path .*nope\.pt: file not found"):
        resolve_checkpoint(cfg(path=missing))
    with pytest.raises(ModelError, match=r"nope\.pt: checkpoint file not found"):
        load_network(missing, cfg(), CPU)


def test_truncated_file(small_ckpt: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    data = small_ckpt.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cut\.pt: not a readable PyTorch checkpoint"):
        load_network(cut, cfg(path=cut), CPU)


def test_corrupt_bytes(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ModelError, match=r"junk\.pt: not a readable PyTorch checkpoint"):
        load_network(junk, cfg(path=junk), CPU)


def _resave(src: Path, dst: Path, **changes: object) -> Path:
    checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    checkpoint.update(changes)
    torch.save(checkpoint, dst)
    return dst


def test_not_a_classification_checkpoint(small_ckpt: Path, tmp_path: Path) -> None:
    det = _resave(small_ckpt, tmp_path / "det.pt", task="object_detection")
    with pytest.raises(ModelError, match=r"det\.pt: not a classification checkpoint"):
        load_network(det, cfg(path=det), CPU)
    nolabels = _resave(small_ckpt, tmp_path / "nolabels.pt", class_to_idx={})
    with pytest.raises(ModelError, match=r"nolabels\.pt: not a classification checkpoint"):
        load_network(nolabels, cfg(path=nolabels), CPU)


def test_not_a_birder_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(ModelError, match=r"plain\.pt: not a birder checkpoint"):
        load_network(plain, cfg(path=plain), CPU)


def test_wrong_input_size(small_ckpt: Path) -> None:
    with pytest.raises(ModelError, match=r"small\.pt: input size 240x240 .*model\.input_size 224"):
        load_network(small_ckpt, cfg(path=small_ckpt, input_size=224, patch_size=16), CPU)


def test_unknown_network_name(small_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"small\.pt: unknown network .*list-models"):
        load_network(small_ckpt, cfg(name="nosuchnet_v9", path=small_ckpt), CPU)
    tagged = _resave(small_ckpt, tmp_path / "tagged.pt", network="nosuchnet_v9")
    with pytest.raises(ModelError, match=r"tagged\.pt: unknown network 'nosuchnet_v9'"):
        load_network(tagged, cfg(path=tagged), CPU)


def test_weights_that_do_not_fit(small_ckpt: Path, tmp_path: Path) -> None:
    other = _resave(small_ckpt, tmp_path / "other.pt", config={"num_layers": 2})
    with pytest.raises(ModelError, match=r"other\.pt: weights do not fit network"):
        load_network(other, cfg(path=other), CPU)


def test_network_name_rules() -> None:
    assert network_name(DEFAULT_MODEL) == "flexivit_reg1_s16_rms_ls"
    assert network_name("flexivit_reg1_s16_rms_ls_my_tag") == "flexivit_reg1_s16_rms_ls"
    assert network_name("whatever", {"network": "vit_s16"}) == "vit_s16"
    with pytest.raises(ModelError, match="list-models"):
        network_name("nosuchnet")


# --------------------------------------------------------------------------- resolve, download


def test_registry_knows_the_default_model() -> None:
    entry = registry_entry(DEFAULT_MODEL)
    assert entry is not None
    assert entry.url.endswith(f"/{DEFAULT_MODEL}.pt")
    assert entry.sha256 is not None and len(entry.sha256) == 64


def test_present_file_is_used_without_network(small_ckpt: Path, tmp_path: Path) -> None:
    dest = tmp_path / f"{TEST_NAME}.pt"
    dest.write_bytes(small_ckpt.read_bytes())
    config = cfg(name=TEST_NAME, models_dir=tmp_path, download_url="http://127.0.0.1:9")
    assert resolve_checkpoint(config) == dest


def test_present_file_with_wrong_sha(tmp_path: Path) -> None:
    dest = tmp_path / f"{DEFAULT_MODEL}.pt"
    dest.write_bytes(b"partial download")
    with pytest.raises(ModelError, match=r"\.pt: sha256 \w+ does not match the registry"):
        resolve_checkpoint(cfg(models_dir=tmp_path))


def test_unknown_name_without_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"not in birder's registry .* list-models"):
        resolve_checkpoint(cfg(name="nosuchnet_v9", models_dir=tmp_path))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_download_error(exc: ModelError, url: str, dest: Path) -> None:
    message = str(exc)
    assert url in message
    assert str(dest) in message
    assert "model.path" in message
    assert not list(dest.parent.glob("*.partial"))
    assert not dest.exists()


def test_download_refused_fails_fast(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/models"
    config = cfg(name=TEST_NAME, models_dir=tmp_path, download_url=base, download_timeout_s=5)
    start = time.monotonic()
    with pytest.raises(ModelError, match="refused") as info:
        resolve_checkpoint(config, progress=False)
    assert time.monotonic() - start < 2
    _assert_download_error(info.value, f"{base}/{TEST_NAME}.pt", tmp_path / f"{TEST_NAME}.pt")


def test_download_from_silent_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as server:  # the kernel accepts connections; nobody ever answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/m/{TEST_NAME}.pt"
        config = cfg(name=TEST_NAME, models_dir=tmp_path, download_url=url,
                     download_timeout_s=1.0)
        start = time.monotonic()
        with pytest.raises(ModelError, match="timed out") as info:
            resolve_checkpoint(config, progress=False)
        elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 3.0
    _assert_download_error(info.value, url, tmp_path / f"{TEST_NAME}.pt")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_mirror(small_ckpt: Path, tmp_path: Path,
                              http_dir: tuple[str, Path]) -> None:
    base, root = http_dir
    (root / f"{TEST_NAME}.pt").write_bytes(small_ckpt.read_bytes())
    models = tmp_path / "models"
    models.mkdir()
    stale = models / f".{TEST_NAME}.pt.dead.partial"  # left by a killed download
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    config = cfg(name=TEST_NAME, models_dir=models, download_url=base + "/")
    path = resolve_checkpoint(config, progress=False)
    assert path == models / f"{TEST_NAME}.pt"
    assert path.read_bytes() == small_ckpt.read_bytes()
    assert [p.name for p in models.iterdir()] == [path.name]  # no temp file left
    model = load_network(path, config, CPU)
    assert model.network == "flexivit_reg1_s16_rms_ls"


def test_download_full_url(small_ckpt: Path, tmp_path: Path,
                           http_dir: tuple[str, Path]) -> None:
    base, root = http_dir
    (root / "any-name.pt").write_bytes(small_ckpt.read_bytes())
    config = cfg(name=TEST_NAME, models_dir=tmp_path, download_url=f"{base}/any-name.pt")
    assert resolve_checkpoint(config, progress=False).read_bytes() == small_ckpt.read_bytes()


def test_download_from_file_mirror(small_ckpt: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{TEST_NAME}.pt").write_bytes(small_ckpt.read_bytes())
    config = cfg(name=TEST_NAME, models_dir=tmp_path / "m", download_url=mirror.as_uri())
    assert resolve_checkpoint(config, progress=False).read_bytes() == small_ckpt.read_bytes()


def test_download_unsupported_scheme(tmp_path: Path) -> None:
    config = cfg(name=TEST_NAME, models_dir=tmp_path, download_url="ftp://example.org/m")
    with pytest.raises(ModelError, match=r"ftp://example\.org/m/.*unsupported URL"):
        resolve_checkpoint(config, progress=False)


def test_download_sha_mismatch_keeps_nothing(small_ckpt: Path, tmp_path: Path,
                                             http_dir: tuple[str, Path]) -> None:
    base, root = http_dir  # a "mirror" serving other bytes under the registry's name
    (root / f"{DEFAULT_MODEL}.pt").write_bytes(small_ckpt.read_bytes())
    with pytest.raises(ModelError, match="sha256 of the download is") as info:
        resolve_checkpoint(cfg(models_dir=tmp_path, download_url=base), progress=False)
    _assert_download_error(info.value, f"{base}/{DEFAULT_MODEL}.pt",
                           tmp_path / f"{DEFAULT_MODEL}.pt")


def test_download_http_404(tmp_path: Path, http_dir: tuple[str, Path]) -> None:
    base, _ = http_dir
    with pytest.raises(ModelError, match="HTTP 404") as info:
        resolve_checkpoint(cfg(name=TEST_NAME, models_dir=tmp_path, download_url=base),
                           progress=False)
    _assert_download_error(info.value, f"{base}/{TEST_NAME}.pt", tmp_path / f"{TEST_NAME}.pt")


# --------------------------------------------------------------------------- device, dtype


def test_device_selection_on_this_machine() -> None:
    assert select_device(cfg(device="cpu")) == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device(cfg(device="auto")).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ModelError, match="'cuda:1' but CUDA is not available"):
        select_device(cfg(device="cuda:1"))


def test_cpu_precision() -> None:
    assert select_dtype(cfg(precision="auto"), CPU) == torch.float32
    assert select_dtype(cfg(precision="fp32"), CPU) == torch.float32
    assert select_dtype(cfg(precision="fp16"), CPU) == torch.float32
    bf16 = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert select_dtype(cfg(precision="bf16"), CPU) == bf16
    print(f"native bf16 on this CPU: {cpu_has_native_bf16()}")


def test_threads_setting() -> None:
    before = torch.get_num_threads()
    try:
        apply_threads(cfg(threads=1))
        assert torch.get_num_threads() == 1
        apply_threads(cfg(threads=0))  # 0 = leave torch's default alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_device_and_precision() -> None:
    device = select_device(cfg(device="auto"))
    assert device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert select_dtype(cfg(precision="auto"), device) == expected
    with pytest.raises(ModelError, match="GPU"):
        select_device(cfg(device=f"cuda:{torch.cuda.device_count()}"))
