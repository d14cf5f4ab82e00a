"""The daemon against a real Home Assistant 2025.4: discovery creates the devices and
entities, and HA's states follow the daemon's messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from camtrap.tools.checkpoints import build_checkpoint
from tests.daemon import Daemon, daemon_config
from tests.homeassistant import HomeAssistant, requires_homeassistant
from tests.servers import Mosquitto, RtspServer

pytestmark = [requires_homeassistant, pytest.mark.slow]

SPECIES = "Eurasian Hoopoe"
ENTITIES = {
    "event.camtrap_feeder_visit": "camtrap_feeder_visit",
    "sensor.camtrap_feeder_last_species": "camtrap_feeder_last_species",
    "sensor.camtrap_feeder_visits_today": "camtrap_feeder_visits_today",
    "binary_sensor.camtrap_feeder_bird_present": "camtrap_feeder_bird_present",
    "image.camtrap_feeder_last_crop": "camtrap_feeder_last_crop",
    "sensor.camtrap_feeder_processed_fps": "camtrap_feeder_processed_fps",
    "binary_sensor.camtrap_feeder_camera_connected": "camtrap_feeder_camera_connected",
    "binary_sensor.camtrap_running": "camtrap_running",
}


@pytest.fixture
def ha(mosquitto: Mosquitto) -> Iterator[HomeAssistant]:
    with HomeAssistant.for_broker(mosquitto) as home_assistant:
        yield home_assistant


def test_discovery_and_states_in_home_assistant(
    tmp_path: Path, mosquitto: Mosquitto, ha: HomeAssistant,
) -> None:
    # A one-species model: every visit is the same species, so the event entity must fire
    # again for a bird that comes back (a sensor alone would not change state).
    model = build_checkpoint(tmp_path / "one_species.pt", classes=[SPECIES])
    cfg = daemon_config(tmp_path, camera_url="", checkpoint=model, broker=mosquitto,
                        visits={"end_after_s": 1.0, "min_hits": 2})
    # the ball is shown 3 s, hidden 3 s: a visit every 6 s
    with RtspServer("live", object_period=3.0) as camera:
        cfg["cameras"][0]["url"] = camera.url
        with Daemon(cfg, tmp_path) as daemon:
            for entity_id, unique_id in ENTITIES.items():
                entry = ha.wait_entity(unique_id, timeout=90)
                assert entry["entity_id"] == entity_id, entry
            devices = {d["name"] for d in ha.device_registry()}
            assert {"camtrap", "camtrap feeder"} <= devices, devices

            ha.wait_state("binary_sensor.camtrap_running", "on", timeout=30)
            ha.wait_state("sensor.camtrap_feeder_last_species", SPECIES, timeout=90)
            ha.wait_state("binary_sensor.camtrap_feeder_bird_present", "on", timeout=30)
            ha.wait_state("sensor.camtrap_feeder_visits_today",
                          lambda s: s.isdigit() and int(s) >= 1, timeout=30)
            ha.wait_state("binary_sensor.camtrap_feeder_camera_connected", "on", timeout=60)
            ha.wait_state("binary_sensor.camtrap_feeder_bird_present", "off", timeout=30)

            # the event entity fires for each visit start, same species every time
            fired = ha.wait_state("event.camtrap_feeder_visit", None, timeout=30)
            ha.wait_state(
                "event.camtrap_feeder_visit",
                lambda s: len(set(ha.state_history("event.camtrap_feeder_visit"))) >= 4,
                timeout=60, since=fired.index,
            )
            state = ha.api_state("event.camtrap_feeder_visit")
            assert state is not None
            assert state["attributes"]["event_type"] in ("visit_start", "visit_end")
            assert state["attributes"]["species"] == SPECIES
            image = ha.api_state("image.camtrap_feeder_last_crop")
            assert image is not None and image["state"] not in ("unknown", "unavailable")

            assert daemon.terminate()[0] == 0
            ha.wait_state("binary_sensor.camtrap_running", "off", timeout=30)
            ha.wait_state("sensor.camtrap_feeder_last_species", "unavailable", timeout=30)

    problems = ha.errors()
    assert not problems, "Home Assistant logged problems with our MQTT discovery:\n" + "\n".join(
        problems)
