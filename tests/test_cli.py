"""The command line as users run it: real subprocesses, real files, messages checked."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from camtrap.cli import main
from tests.daemon import daemon_config
from tests.servers import free_port

MODEL = "flexivit_reg1_s16_rms_ls_dino-v2-il-all"
SECRET = "hunter2-secret"


def camtrap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "camtrap", *args], capture_output=True,
                          text=True, timeout=timeout)


def write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "camtrap.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_without_model_access_exits_2_naming_url_path_and_option(tmp_path: Path) -> None:
    """No network: the daemon says where it looked and what to do, quickly, and exits 2."""
    port = free_port()  # nothing listens there: like an unreachable registry
    cfg = daemon_config(tmp_path, camera_url="rtsp://127.0.0.1:1/cam", checkpoint=Path("x"))
    cfg["model"] = {"name": MODEL, "models_dir": str(tmp_path / "models"),
                    "download_url": f"http://127.0.0.1:{port}/models", "download_timeout_s": 5}
    started = time.monotonic()
    res = camtrap("run", "--config", str(write_config(tmp_path, cfg)))
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 60
    assert f"http://127.0.0.1:{port}/models/{MODEL}.pt" in res.stderr
    assert str(tmp_path / "models" / f"{MODEL}.pt") in res.stderr
    assert "model.path" in res.stderr
    assert not (tmp_path / "models" / f"{MODEL}.pt").exists()  # no half-written file


def test_run_with_hanging_download_server_times_out(tmp_path: Path) -> None:
    """A server that accepts and never answers must not hang the start."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        cfg = daemon_config(tmp_path, camera_url="rtsp://127.0.0.1:1/cam", checkpoint=Path("x"))
        cfg["model"] = {"name": MODEL, "models_dir": str(tmp_path / "models"),
                        "download_url": f"http://127.0.0.1:{port}/m/", "download_timeout_s": 2}
        started = time.monotonic()
        res = camtrap("run", "--config", str(write_config(tmp_path, cfg)))
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 40
    assert "model.path" in res.stderr and f"127.0.0.1:{port}" in res.stderr


def test_run_rejects_species_the_model_does_not_know(tmp_path: Path, checkpoint_path: Path) -> None:
    cfg = daemon_config(tmp_path, camera_url="rtsp://127.0.0.1:1/cam", checkpoint=checkpoint_path,
                        visits={"allow": ["Great Tit", "Dodo"]})
    res = camtrap("run", "--config", str(write_config(tmp_path, cfg)))
    assert res.returncode == 2
    assert "visits.allow[1]: 'Dodo': not a species of this model" in res.stderr


def test_classify_images_of_every_kind(tmp_path: Path, checkpoint_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "colour.jpg")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")  # mode L
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(
        tmp_path / "alpha.png")  # RGBA
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    files = ["colour.jpg", "grey.png", "broken.jpg", "missing.png", "alpha.png"]
    res = camtrap("classify", "--model", str(checkpoint_path), "--json", "--config",
                  str(tmp_path / "none.yaml"), *[str(tmp_path / f) for f in files])
    assert res.returncode == 1  # some files failed; the rest were still classified
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert [Path(r["file"]).name for r in results] == ["colour.jpg", "grey.png", "alpha.png"]
    for r in results:
        assert len(r["top_k"]) == 5
        scores = [t["score"] for t in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert f"{tmp_path / 'broken.jpg'}: not an image (JPEG or PNG expected)" in res.stderr
    assert f"{tmp_path / 'missing.png'}: no such file" in res.stderr


def test_classify_text_output(tmp_path: Path, checkpoint_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 90, np.uint8))
    res = camtrap("classify", "--model", str(checkpoint_path), "--top", "3", "--config",
                  str(tmp_path / "none.yaml"), str(tmp_path / "a.png"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"{tmp_path / 'a.png'}:" and len(lines) == 4
    assert all(line.strip()[0].isdigit() and "%" in line for line in lines[1:])


def test_replay_writes_visits_and_regions(tmp_path: Path, sample_clip: Path,
                                         checkpoint_path: Path) -> None:
    cfg = daemon_config(tmp_path, camera_url="rtsp://127.0.0.1:1/cam", checkpoint=checkpoint_path)
    config = write_config(tmp_path, cfg)
    out, regions = tmp_path / "events.jsonl", tmp_path / "regions.jsonl"
    res = camtrap("replay", str(sample_clip), "--config", str(config), "--out", str(out),
                  "--regions-out", str(regions))
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds.count("start") >= 1 and kinds.count("start") == kinds.count("end")
    frames = [json.loads(line) for line in regions.read_text().splitlines()]
    assert 95 <= len(frames) <= 105  # 20 s at detect_fps 5
    moving = [f for f in frames if f["regions"]]
    assert moving and len(moving) < len(frames)  # the clip has quiet stretches
    for f in frames:  # per region, in its order: its track and whether it was classified
        assert len(f["tracks"]) == len(f["classified"]) == len(f["regions"])
        assert all(isinstance(t, int) for t in f["tracks"])
        assert all(isinstance(c, bool) for c in f["classified"])
    first_seen: dict[int, int] = {}
    for f in frames:
        for t in f["tracks"]:
            first_seen.setdefault(t, f["frame"])
    for f in frames:  # a track's first look is always classified
        for t, c in zip(f["tracks"], f["classified"], strict=True):
            assert c or first_seen[t] != f["frame"]
    classified = sum(sum(f["classified"]) for f in frames)
    assert f"{classified} crops classified" in res.stderr
    # a second replay of the same clip gives the same visits (stable ids and times)
    res2 = camtrap("replay", str(sample_clip), "--config", str(config))
    assert [json.loads(line)["visit_id"] for line in res2.stdout.splitlines()] == [
        e["visit_id"] for e in events]


@pytest.mark.parametrize("video", ["missing.mp4"])
def test_replay_missing_video(tmp_path: Path, video: str, checkpoint_path: Path) -> None:
    cfg = daemon_config(tmp_path, camera_url="rtsp://127.0.0.1:1/cam", checkpoint=checkpoint_path)
    res = camtrap("replay", str(tmp_path / video), "--config", str(write_config(tmp_path, cfg)))
    assert res.returncode == 2
    assert f"{tmp_path / video}: no such video file" in res.stderr


def test_replay_never_prints_a_password(tmp_path: Path) -> None:
    """Credentials in a URL (a camera's, a private model mirror's) never reach the terminal:
    here the mirror cannot be reached and the message that says so names it, masked."""
    port = free_port()  # nothing listens there
    cfg = daemon_config(tmp_path, camera_url=f"rtsp://viewer:{SECRET}@127.0.0.1:1/cam",
                        checkpoint=Path("x"))
    cfg["model"] = {"name": MODEL, "models_dir": str(tmp_path / "models"), "device": "cpu",
                    "download_url": f"https://viewer:{SECRET}@127.0.0.1:{port}/models",
                    "download_timeout_s": 5}
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not opened: the model fails first")
    res = camtrap("replay", str(video), "--config", str(write_config(tmp_path, cfg)))
    assert res.returncode == 2, res.stderr
    assert f"https://viewer:***@127.0.0.1:{port}/models/{MODEL}.pt" in res.stderr
    assert SECRET not in res.stderr + res.stdout


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`main()` in-process replaces the root logger's handlers: put pytest's back after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize("command", [["check"], ["replay", "missing.mp4"],
                                     ["summary", "--date", "2026-01-01"]])
def test_commands_log_through_the_masking_setup(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    restore_logging: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a module logs while a command runs (a camera URL in an OpenCV message) goes
    through camtrap's log setup, passwords masked, not through a bare `basicConfig`."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # main() sets it: undone after the test
    monkeypatch.chdir(tmp_path)
    url = f"rtsp://viewer:{SECRET}@127.0.0.1:1/cam"
    config = write_config(tmp_path, daemon_config(tmp_path, camera_url=url, checkpoint=Path("x")))
    main([*command, "--config", str(config)])
    logging.getLogger("camtrap.video.stream").warning("cannot open %s", url)
    err = capsys.readouterr().err
    assert "rtsp://viewer:***@127.0.0.1:1/cam" in err
    assert SECRET not in err


def test_bench_names_a_missing_gpu_without_a_traceback() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    res = camtrap("bench", "classifier", "--device", "cuda", "--find-cameras")
    assert res.returncode == 2, res.stderr
    assert "camtrap: model.device is 'cuda' but CUDA is not available" in res.stderr
    assert "Traceback" not in res.stderr
