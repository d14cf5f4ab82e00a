"""The shipped unit passes systemd's own checks: verify, and an exposure score <= 2.5."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "camtrap.service"
pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (make deps-test)")


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with an ExecStart binary that exists here (verify checks it)."""
    text = UNIT.read_text().replace("/opt/camtrap/venv/bin/camtrap", "/bin/true")
    path = tmp_path / "camtrap.service"
    path.write_text(text)
    return path


def test_unit_verifies(unit_copy: Path) -> None:
    res = subprocess.run(["systemd-analyze", "verify", str(unit_copy)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "camtrap.service" not in res.stderr, res.stderr  # no warnings about our unit


def test_unit_security_exposure_at_most_2_5(unit_copy: Path) -> None:
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=25", str(unit_copy)],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert "Overall exposure level for camtrap.service" in res.stdout


def test_unit_keeps_gpu_devices_and_notify() -> None:
    text = UNIT.read_text()
    assert "PrivateDevices=yes" not in text  # would hide /dev/nvidia*
    for line in ("Type=notify", "NotifyAccess=main", "DeviceAllow=char-nvidiactl rw",
                 "DeviceAllow=char-drm rw", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "SystemCallFilter=@system-service", "EnvironmentFile=-/etc/camtrap/camtrap.env"):
        assert line in text.splitlines(), line
    assert any(line.startswith("WatchdogSec=") for line in text.splitlines())
