"""Home Assistant discovery payloads: structure, and removal of a camera's entities."""

from __future__ import annotations

import json
from pathlib import Path

from camtrap.comms.homeassistant import Discovery, discovery_messages
from camtrap.comms.payloads import Topics
from camtrap.config.loader import parse_config

CFG = """
cameras:
  - {name: feeder, url: "rtsp://cam/1"}
  - {name: ground, url: "rtsp://cam/2"}
mqtt: {prefix: garden}
"""


def configs(text: str = CFG) -> dict[str, dict]:
    cfg = parse_config(text, env={})
    return {t: json.loads(p) for t, p in discovery_messages(cfg, Topics(cfg.mqtt.prefix))}


def discovery(text: str, state_dir: Path) -> Discovery:
    cfg = parse_config(text, env={})
    return Discovery(cfg, state_dir, Topics(cfg.mqtt.prefix))


def test_every_entity_has_the_required_fields() -> None:
    msgs = configs()
    assert msgs, "no discovery messages"
    unique_ids = [c["unique_id"] for c in msgs.values()]
    assert len(unique_ids) == len(set(unique_ids))
    for topic, c in msgs.items():
        component = topic.split("/")[1]
        assert topic.startswith("homeassistant/") and topic.endswith("/config")
        assert c["default_entity_id"].startswith(f"{component}.garden")
        assert "object_id" not in c  # deprecated by Home Assistant
        if "/garden_" in topic:  # camera entities; the daemon's own reports the status
            assert c["availability"] == [{"topic": "garden/status",
                                          "payload_available": "online",
                                          "payload_not_available": "offline"}]
        elif topic.endswith("/running/config"):  # reports the status topic itself
            assert c["state_topic"] == "garden/status" and "availability" not in c
        assert c["origin"]["name"] == "camtrap"
        assert c["device"]["identifiers"]


def test_camera_entities() -> None:
    msgs = configs()
    feeder = {t.split("/")[1] + "/" + t.split("/")[3]: c for t, c in msgs.items()
              if "/garden_feeder/" in t}
    assert set(feeder) == {
        "event/visit", "sensor/last_species", "sensor/visits_today",
        "binary_sensor/bird_present", "image/last_crop", "sensor/processed_fps",
        "binary_sensor/camera_connected",
    }
    assert feeder["event/visit"]["event_types"] == ["visit_start", "visit_end"]
    assert feeder["event/visit"]["state_topic"] == "garden/feeder/visit"
    assert feeder["sensor/visits_today"]["state_class"] == "total_increasing"
    assert feeder["binary_sensor/bird_present"]["device_class"] == "occupancy"
    assert feeder["image/last_crop"]["image_topic"] == "garden/feeder/crop"
    assert feeder["sensor/processed_fps"]["entity_category"] == "diagnostic"
    assert feeder["event/visit"]["device"]["via_device"] == "garden"
    devices = {c["device"]["identifiers"][0] for c in msgs.values()}
    assert devices == {"garden", "garden_feeder", "garden_ground"}


def test_removed_camera_gets_empty_retained_configs(tmp_path: Path) -> None:
    first = discovery(CFG, tmp_path)
    assert all(payload for _, payload in first.messages())
    first.mark_announced()
    smaller = CFG.replace('  - {name: ground, url: "rtsp://cam/2"}\n', "")
    second = discovery(smaller, tmp_path)
    msgs = second.messages()
    removed = [t for t, p in msgs if p == b""]
    assert removed and all("/garden_ground/" in t for t in removed)
    assert len(removed) == 7
    assert not any("/garden_ground/" in t for t, p in msgs if p)
    second.mark_announced()
    assert not [t for t, p in discovery(smaller, tmp_path).messages()
                if p == b""]
