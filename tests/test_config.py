"""Config validation: every bad input names its field path and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from camtrap.config.base import ConfigError
from camtrap.config.loader import load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
MINIMAL = "cameras:\n  - name: feeder\n    url: rtsp://cam.local/stream\n"


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "test.yaml", env or {})
    return exc.value.problems


def test_shipped_config_is_valid() -> None:
    cfg = load_config(REPO / "config.yaml", env={})
    assert cfg.cameras[0].name == "feeder"
    assert cfg.cameras[0].url == str(REPO / "samples" / "feeder.mp4")  # relative to the file
    assert cfg.model.name == "flexivit_reg1_s16_rms_ls_dino-v2-il-all"
    assert cfg.mqtt.password is None  # ${MQTT_PASSWORD:-} unset means no password
    assert cfg.storage.state_dir == REPO / "state"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path in the file, the MQTT TLS files included, means the same whatever the
    daemon's working directory (systemd starts it in /)."""
    folder = tmp_path / "etc" / "camtrap"
    folder.mkdir(parents=True)
    path = folder / "camtrap.yaml"
    path.write_text(
        MINIMAL
        + "mqtt:\n  tls:\n    enabled: true\n    ca_file: certs/ca.pem\n"
        "    cert_file: ./certs/client.pem\n    key_file: /secure/client.key\n"
        "model:\n  path: models/m.pt\nstorage:\n  state_dir: ../state\n"
        "web:\n  auth:\n    api_token_file: secrets/token\n"
    )
    monkeypatch.chdir(tmp_path)  # somewhere else than the file's folder
    cfg = load_config(path, env={})
    base = folder.resolve()
    assert cfg.mqtt.tls.ca_file == base / "certs" / "ca.pem"
    assert cfg.mqtt.tls.cert_file == base / "certs" / "client.pem"
    assert cfg.mqtt.tls.key_file == Path("/secure/client.key")  # absolute: untouched
    assert cfg.model.path == base / "models" / "m.pt"
    assert cfg.storage.state_dir == base.parent / "state"
    assert cfg.web.auth.api_token_file == base / "secrets" / "token"
    assert parse_config(MINIMAL, env={}).mqtt.tls.ca_file is None  # no file, nothing to do


def test_minimal_config_takes_defaults() -> None:
    cfg = parse_config(MINIMAL, env={})
    assert cfg.model.patch_size == 16
    assert cfg.batching.max_size == 16
    assert cfg.mqtt.prefix == "camtrap"


def test_unsupported_scheme_names_the_camera_index() -> None:
    text = MINIMAL + "  - name: back\n    url: ftp://cam/x\n"
    assert problems(text) == [
        "cameras[1].url: unsupported scheme 'ftp' (use rtsp://, http(s)://, a file path "
        "or a device index)"
    ]


def test_unknown_keys_are_errors_at_every_level() -> None:
    text = MINIMAL + "    colour: red\nmotion:\n  treshold: 3\nfoo: 1\n"
    assert sorted(problems(text)) == [
        "cameras[0].colour: unknown key",
        "foo: unknown key",
        "motion.treshold: unknown key",
    ]


def test_wrong_types_and_ranges() -> None:
    text = MINIMAL + (
        "    detect_fps: 0\nmodel:\n  patch_size: 17\n  device: gpu\n"
        "mqtt:\n  port: seventy\nbatching:\n  max_size: 0\n"
    )
    got = problems(text)
    assert "cameras[0].detect_fps: Input should be greater than 0" in got
    assert "model.patch_size: must be one of 10, 12, 15, 16, 20, 24, 30, 40" in got
    assert "model.device: must be auto, cpu, cuda or cuda:N, got 'gpu'" in got
    assert any(p.startswith("mqtt.port: Input should be a valid integer") for p in got)
    assert "batching.max_size: Input should be greater than or equal to 1" in got


def test_duplicate_camera_names() -> None:
    text = MINIMAL + "  - name: feeder\n    url: rtsp://other/x\n"
    assert problems(text) == ["cameras: camera name 'feeder' is used twice"]


def test_camera_name_must_fit_topics_and_entity_ids() -> None:
    got = problems(MINIMAL + "  - name: Back Yard\n    url: '0'\n")
    assert len(got) == 1 and got[0].startswith("cameras[1].name: String should match pattern")


def test_no_cameras() -> None:
    assert problems("cameras: []\n") == [
        "cameras: List should have at least 1 item after validation, not 0"
    ]


def test_yaml_syntax_error_gives_line_and_column() -> None:
    got = problems("cameras:\n  - name: a\n   url: x\n")
    assert len(got) == 1
    assert got[0].startswith("YAML syntax error at line 3, column 4:")


def test_env_expansion_in_values_only() -> None:
    text = (
        "# a comment with ${NOT_SET} is ignored\n" + MINIMAL.replace("cam.local", "${CAM_HOST}")
        + "mqtt:\n  username: ${MQTT_USER:-birds}\n  password: ${MQTT_PASSWORD}\n"
    )
    cfg = parse_config(text, env={"CAM_HOST": "10.1.2.3", "MQTT_PASSWORD": "s3cret"})
    assert cfg.cameras[0].url == "rtsp://10.1.2.3/stream"
    assert cfg.mqtt.username == "birds"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)  # a secret never shows in a repr or a log line


def test_unset_env_var_names_field_and_variable() -> None:
    got = problems(MINIMAL + "mqtt:\n  password: ${MQTT_PASSWORD}\n")
    assert got == [
        "mqtt.password: environment variable MQTT_PASSWORD is not set "
        "(use ${MQTT_PASSWORD:-default} for an optional value)"
    ]


def test_unknown_floor_above_threshold() -> None:
    got = problems(MINIMAL + "visits:\n  threshold: 0.5\n  unknown:\n    floor: 0.7\n")
    assert got == ["visits: unknown.floor (0.7) must not exceed threshold (0.5)"]


def test_job_needs_exactly_one_trigger() -> None:
    got = problems(MINIMAL + "schedule:\n  digest:\n    cron: '*/5 * * * *'\n    interval_min: 5\n")
    assert got == ["schedule.digest: set exactly one of cron and interval_min"]


def test_unknown_timezone() -> None:
    got = problems(MINIMAL + "schedule:\n  timezone: Mars/Olympus\n")
    assert got == ["schedule.timezone: unknown time zone 'Mars/Olympus'"]


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "camtrap", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )


def test_check_command_exit_codes_and_messages(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    res = run_check(good)
    assert res.returncode == 0, res.stderr
    assert "OK (1 camera(s))" in res.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "  - name: b\n    url: ftp://x/y\n")
    res = run_check(bad)
    assert res.returncode == 2
    assert f"{bad}: invalid configuration" in res.stderr
    assert "cameras[1].url: unsupported scheme 'ftp'" in res.stderr

    res = run_check(tmp_path / "missing.yaml")
    assert res.returncode == 2
    assert "missing.yaml" in res.stderr and "No such file or directory" in res.stderr
