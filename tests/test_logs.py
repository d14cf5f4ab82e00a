"""Logging: passwords masked wherever a URL appears, journal-friendly format under systemd."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from camtrap.config.models import LoggingConfig
from camtrap.logs import mask_text, mask_url, name_os_thread, setup_logging


def test_mask_url_keeps_user_and_host() -> None:
    assert mask_url("rtsp://viewer:hunter2@192.0.2.10:554/s1") == "rtsp://viewer:***@192.0.2.10:554/s1"
    assert mask_url("rtsp://192.0.2.10/s1") == "rtsp://192.0.2.10/s1"
    assert mask_url("/videos/feeder.mp4") == "/videos/feeder.mp4"


def test_mask_text_inside_free_text() -> None:
    text = "[rtsp @ 0x5] method DESCRIBE failed: rtsp://admin:p%40ss@cam.local/live 401"
    assert "p%40ss" not in mask_text(text)
    assert "rtsp://admin:***@cam.local/live" in mask_text(text)


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_every_log_line_is_masked(capsys: pytest.CaptureFixture[str], restore_root: object,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    setup_logging(LoggingConfig(level="INFO", modules={"camtrap.noisy": "ERROR"}))
    log = logging.getLogger("camtrap.test")
    log.warning("cannot open %s", "rtsp://u:topsecret@cam/1")
    logging.getLogger("camtrap.noisy").warning("hidden by its module level")
    err = capsys.readouterr().err
    assert "topsecret" not in err and "rtsp://u:***@cam/1" in err
    assert "hidden by its module level" not in err
    assert err[:4].isdigit()  # a timestamp on a terminal


def test_journal_format_has_priority_and_no_timestamp(
    capsys: pytest.CaptureFixture[str], restore_root: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging(LoggingConfig(level="DEBUG"))
    logging.getLogger("camtrap.x").error("boom")
    logging.getLogger("camtrap.x").info("fine")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["<3>camtrap.x: boom", "<6>camtrap.x: fine"]


def test_threads_get_their_names_in_the_kernel() -> None:
    """`top -H` and /proc show `inference`, `camera-feeder`, not twenty `python`s."""
    seen: list[str] = []

    def body() -> None:
        name_os_thread()
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    t = threading.Thread(target=body, name="camera-feeder-with-a-long-name")
    t.start()
    t.join()
    assert seen == ["camera-feeder-w"]  # the kernel keeps 15 bytes
