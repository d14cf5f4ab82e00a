"""The Home Assistant harness (tests/homeassistant.py) end to end, with hand-written MQTT
discovery messages (not the daemon): a real HA 2025.4.4 and a real mosquitto.

One broker and one HA serve the whole module (HA boots in about 10-30 s); each test uses its
own unique_ids and topics. Skipped when the HA venv is missing (`make ha-env` makes it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.homeassistant import (
    HA_VERSION,
    HomeAssistant,
    discovery_topic,
    requires_homeassistant,
)
from tests.servers import Mosquitto, MqttRecorder
from tests.waiting import wait_until

pytestmark = [requires_homeassistant, pytest.mark.slow]

DEVICE = {
    "identifiers": ["camtrap_harness_feeder"],
    "name": "Harness Feeder",
    "manufacturer": "camtrap",
    "model": "harness test",
    "sw_version": "0.1.0",
}
ORIGIN = {"name": "camtrap", "sw_version": "0.1.0", "support_url": "https://example.invalid"}


@pytest.fixture(scope="module")
def ha_broker() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@pytest.fixture(scope="module")
def home_assistant(ha_broker: Mosquitto) -> Iterator[HomeAssistant]:
    with HomeAssistant.for_broker(ha_broker) as ha:
        print(f"\nHome Assistant {HA_VERSION} booted in {ha.boot_seconds:.1f} s")
        yield ha


@pytest.fixture
def publisher(ha_broker: Mosquitto) -> Iterator[MqttRecorder]:
    """A client of the module's broker, for publishing (it records `camtrap_harness/#`)."""
    with MqttRecorder.for_broker(ha_broker, "camtrap_harness/#") as client:
        yield client


def publish_config(client: MqttRecorder, component: str, object_id: str, config: Any) -> None:
    client.publish(discovery_topic(component, object_id), json.dumps(config), retain=True)


def assert_no_discovery_errors(ha: HomeAssistant) -> None:
    errors = ha.errors()
    assert not errors, "HA logged MQTT/discovery problems:\n" + "\n".join(errors)


def test_boots_and_answers(home_assistant: HomeAssistant, record_property: Any) -> None:
    ha = home_assistant
    assert ha.boot_seconds is not None
    record_property("ha_boot_seconds", round(ha.boot_seconds, 1))
    assert ha.running
    assert ha.api("GET", "/api/") == {"message": "API running."}
    born = ha.mqtt.messages("homeassistant/status")
    assert [m.text for m in born][-1:] == ["online"], born
    assert "recovery mode" not in ha.log.lower(), ha.log_tail()
    # the only warning of a clean boot: HA was told not to pip install (--skip-pip)
    others = [r for r in ha.errors(words=()) if "Skipping pip installation" not in r]
    assert not others, "\n".join(others)


def test_sensor_discovery_state_and_registries(
    home_assistant: HomeAssistant, publisher: MqttRecorder
) -> None:
    ha = home_assistant
    state_topic = "camtrap_harness/sensor/state"
    config = {
        "name": "Last species",
        "unique_id": "camtrap_harness_last_species",
        "state_topic": state_topic,
        "default_entity_id": "sensor.camtrap_harness_last_species",
        "icon": "mdi:bird",
        "device": DEVICE,
        "origin": ORIGIN,
    }
    publish_config(publisher, "sensor", "harness_test", config)

    entry = ha.wait_entity("camtrap_harness_last_species")
    entity_id = entry["entity_id"]
    assert entity_id.startswith("sensor."), entry
    ha.wait_state(entity_id, "unknown")  # added, no state yet

    mark = ha.mqtt.mark()
    publisher.publish(state_topic, "Parus major")
    ha.wait_state(entity_id, "Parus major", since=mark)
    state = ha.api_state(entity_id)
    assert state is not None and state["state"] == "Parus major", state
    assert state["attributes"]["friendly_name"] == "Harness Feeder Last species", state
    assert state["attributes"]["icon"] == "mdi:bird", state
    # statestream publishes each attribute on its own topic, just after the state
    wait_until(
        lambda: ha.attribute(entity_id, "friendly_name") == "Harness Feeder Last species",
        10,
        "statestream's friendly_name attribute",
    )

    device = ha.device_of(entry)
    assert device["name"] == "Harness Feeder", device
    assert (device["manufacturer"], device["model"], device["sw_version"]) == (
        "camtrap",
        "harness test",
        "0.1.0",
    ), device
    assert ["mqtt", "camtrap_harness_feeder"] in device["identifiers"], device

    # .storage/core.entity_registry is written up to 10 s after the change
    stored = ha.stored_entity_registry(
        lambda es: any(e["unique_id"] == "camtrap_harness_last_species" for e in es)
    )
    [stored_entry] = [e for e in stored if e["unique_id"] == "camtrap_harness_last_species"]
    assert stored_entry["entity_id"] == entity_id and stored_entry["platform"] == "mqtt"
    devices = ha.stored_device_registry(lambda ds: any(d["id"] == device["id"] for d in ds))
    assert any(d["name"] == "Harness Feeder" for d in devices)
    assert_no_discovery_errors(ha)


def test_event_entity_fires_twice_for_the_same_event_type(
    home_assistant: HomeAssistant, publisher: MqttRecorder
) -> None:
    ha = home_assistant
    state_topic = "camtrap_harness/event/state"
    config = {
        "name": "Visit",
        "unique_id": "camtrap_harness_visit",
        "state_topic": state_topic,
        "event_types": ["visit"],
        "device": DEVICE,
        "origin": ORIGIN,
    }
    publish_config(publisher, "event", "harness_test_visit", config)
    entity_id = ha.wait_entity("camtrap_harness_visit")["entity_id"]
    assert entity_id.startswith("event."), entity_id
    ha.wait_state(entity_id, "unknown")

    mark = ha.mqtt.mark()
    visit = {"event_type": "visit", "species": "Parus major", "visit_id": 1}
    publisher.publish(state_topic, json.dumps(visit))
    first = ha.wait_state(entity_id, since=mark)
    publisher.publish(state_topic, json.dumps(visit | {"visit_id": 2}))
    second = ha.wait_state(entity_id, since=first.index + 1)
    # an event entity's state is the time of its last event: the same type fires again
    assert first.text != second.text, (first, second)
    assert ha.state_history(entity_id, since=mark) == [first.text, second.text]

    state = ha.api_state(entity_id)
    assert state is not None, entity_id
    attrs = state["attributes"]
    assert attrs["event_type"] == "visit", attrs
    assert attrs["event_types"] == ["visit"], attrs
    assert (attrs["species"], attrs["visit_id"]) == ("Parus major", 2), attrs
    assert_no_discovery_errors(ha)


def test_occupancy_binary_sensor(home_assistant: HomeAssistant, publisher: MqttRecorder) -> None:
    ha = home_assistant
    state_topic = "camtrap_harness/occupancy/state"
    config = {
        "name": "Bird present",
        "unique_id": "camtrap_harness_bird_present",
        "state_topic": state_topic,
        "device_class": "occupancy",
        "payload_on": "ON",
        "payload_off": "OFF",
        "device": DEVICE,
        "origin": ORIGIN,
    }
    publish_config(publisher, "binary_sensor", "harness_test_present", config)
    entity_id = ha.wait_entity("camtrap_harness_bird_present")["entity_id"]
    assert entity_id.startswith("binary_sensor."), entity_id

    mark = ha.mqtt.mark()
    publisher.publish(state_topic, "ON")
    ha.wait_state(entity_id, "on", since=mark)
    publisher.publish(state_topic, "OFF")
    ha.wait_state(entity_id, "off", since=mark)
    state = ha.api_state(entity_id)
    assert state is not None and state["attributes"]["device_class"] == "occupancy", state
    assert_no_discovery_errors(ha)


def test_entity_id_fields_in_this_ha_version(
    home_assistant: HomeAssistant, publisher: MqttRecorder
) -> None:
    """What HA 2025.4 does with `default_entity_id` (added in 2025.10) and `object_id`
    (deprecated from 2025.10): the discovery schema drops unknown keys silently
    (voluptuous REMOVE_EXTRA), so `default_entity_id` is ignored without a word and the
    entity_id comes from device name + entity name; `object_id` sets `<domain>.<object_id>`.
    Sending both works on old and new HA alike."""
    ha = home_assistant
    if not HA_VERSION.startswith("2025.4."):
        pytest.skip(f"documents HA 2025.4 behaviour; this is {HA_VERSION}")
    base = {"state_topic": "camtrap_harness/ids/state", "device": DEVICE, "origin": ORIGIN}
    publish_config(
        publisher,
        "sensor",
        "harness_ids_default",
        base
        | {
            "name": "Default id",
            "unique_id": "camtrap_harness_ids_default",
            "default_entity_id": "sensor.wanted_default_entity_id",
        },
    )
    publish_config(
        publisher,
        "sensor",
        "harness_ids_object",
        base
        | {
            "name": "Object id",
            "unique_id": "camtrap_harness_ids_object",
            "object_id": "wanted_object_id",
        },
    )
    publish_config(
        publisher,
        "sensor",
        "harness_ids_both",
        base
        | {
            "name": "Both ids",
            "unique_id": "camtrap_harness_ids_both",
            "object_id": "wanted_both_object_id",
            "default_entity_id": "sensor.wanted_both_default_entity_id",
        },
    )
    by_default = ha.wait_entity("camtrap_harness_ids_default")["entity_id"]
    by_object = ha.wait_entity("camtrap_harness_ids_object")["entity_id"]
    by_both = ha.wait_entity("camtrap_harness_ids_both")["entity_id"]
    assert by_default == "sensor.harness_feeder_default_id"
    assert by_object == "sensor.wanted_object_id"
    assert by_both == "sensor.wanted_both_object_id"
    time.sleep(1)  # let any late log line land
    assert not ha.errors(words=("default_entity_id", "object_id", "extra keys"))
    assert_no_discovery_errors(ha)
