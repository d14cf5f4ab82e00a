"""Bad input at start is exit 2 with a message naming the path; nothing is overwritten."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.daemon import daemon_config
from tests.disks import small_tmpfs


def run(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "camtrap.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "camtrap", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)


def config(tmp_path: Path, checkpoint: Path, state_dir: Path) -> dict:
    return daemon_config(tmp_path, camera_url="file:///nowhere.mp4", checkpoint=checkpoint,
                         storage={"state_dir": str(state_dir)})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_a_database_that_is_not_one_is_named_and_left_alone(
    tmp_path: Path, checkpoint_path: Path, content: str,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = state / "camtrap.sqlite3"
    if content == "text":
        db.write_text("these are somebody's notes, not a database\n" * 50)
    else:
        good = sqlite3.connect(tmp_path / "good.sqlite3")
        good.execute("CREATE TABLE t (x)")
        good.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
        good.commit()
        good.close()
        db.write_bytes((tmp_path / "good.sqlite3").read_bytes()[:5000])
    before = digest(db)
    res = run(tmp_path, config(tmp_path, checkpoint_path, state))
    assert res.returncode == 2, res.stderr
    assert str(db) in res.stderr and "move it aside" in res.stderr
    assert "Traceback" not in res.stderr
    assert digest(db) == before


def test_a_read_only_state_folder_is_named(tmp_path: Path, checkpoint_path: Path) -> None:
    with small_tmpfs(tmp_path / "ro", "1m") as mount:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        res = run(tmp_path, config(tmp_path, checkpoint_path, mount))
        assert res.returncode == 2, res.stderr
        assert str(mount / "camtrap.sqlite3") in res.stderr and "writable" in res.stderr
        res = run(tmp_path, config(tmp_path, checkpoint_path, mount / "state"))
        assert res.returncode == 2, res.stderr
        assert f"storage.state_dir: cannot create {mount / 'state'}" in res.stderr
        assert "Traceback" not in res.stderr
