"""Home Assistant MQTT discovery: a device per camera plus one for the daemon.

Device names are chosen so that the entity ids Home Assistant derives from device and entity
names equal our `default_entity_id`s: versions before 2025.10 ignore that key.

Configs are retained under `<discovery_prefix>/<component>/<node>/<key>/config` and re-sent
when Home Assistant announces `<discovery_prefix>/status` = `online`. A camera removed from
the config gets empty retained configs, which removes its entities.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from camtrap import __version__
from camtrap.comms.payloads import Topics
from camtrap.config.models import Config

log = logging.getLogger(__name__)

ORIGIN = {"name": "camtrap", "sw_version": __version__}


def _node(prefix: str, camera: str | None = None) -> str:
    base = "".join(ch if ch.isalnum() else "_" for ch in prefix.lower())
    return f"{base}_{camera}" if camera else base


def camera_entities(t: Topics, camera: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(component, key) -> the entity part of the discovery config for one camera."""
    state = t.camera(camera, "state")
    return {
        ("event", "visit"): {
            "name": "Visit",
            "state_topic": t.camera(camera, "visit"),
            "event_types": ["visit_start", "visit_end"],
            "icon": "mdi:bird",
        },
        ("sensor", "last_species"): {
            "name": "Last species",
            "state_topic": t.camera(camera, "species"),
            "value_template": "{{ value_json.species }}",
            "json_attributes_topic": t.camera(camera, "species"),
            "icon": "mdi:bird",
        },
        ("sensor", "visits_today"): {
            "name": "Visits today",
            "state_topic": t.camera(camera, "visits_today"),
            "state_class": "total_increasing",
            "unit_of_measurement": "visits",
            "icon": "mdi:counter",
        },
        ("binary_sensor", "bird_present"): {
            "name": "Bird present",
            "state_topic": t.camera(camera, "present"),
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "occupancy",
        },
        ("image", "last_crop"): {
            "name": "Last crop",
            "image_topic": t.camera(camera, "crop"),
            "content_type": "image/jpeg",
        },
        ("sensor", "processed_fps"): {
            "name": "Processed fps",
            "state_topic": state,
            "value_template": "{{ value_json.processed_fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        },
        ("binary_sensor", "camera_connected"): {
            "name": "Camera connected",
            "state_topic": state,
            "value_template": "{{ 'ON' if value_json.connected else 'OFF' }}",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
        },
    }


def discovery_messages(cfg: Config, topics: Topics) -> list[tuple[str, bytes]]:
    """Every retained discovery config for the configured cameras."""
    prefix, disc = topics.prefix, cfg.homeassistant.discovery_prefix
    daemon_device = {
        "identifiers": [_node(prefix)],
        "name": prefix,
        "manufacturer": "camtrap",
        "model": cfg.model.name,
        "sw_version": __version__,
    }
    availability = [{"topic": topics.status, "payload_available": "online",
                     "payload_not_available": "offline"}]
    out: list[tuple[str, bytes]] = []
    daemon_entities = {
        ("binary_sensor", "running"): {
            "name": "Running",
            "state_topic": topics.status,
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "running",
            "entity_category": "diagnostic",
        },
    }
    daemon_entities.update(summary_entities(topics))
    # no availability here: the entity reports the status topic itself, so it shows "off"
    # (not "unavailable") when the daemon is gone
    out += _configs(disc, _node(prefix), daemon_device, daemon_entities, None)
    for cam in cfg.cameras:
        node = _node(prefix, cam.name)
        device = {
            "identifiers": [node],
            "name": f"{prefix} {cam.name}",
            "manufacturer": "camtrap",
            "model": "camera",
            "via_device": _node(prefix),
        }
        out += _configs(disc, node, device, camera_entities(topics, cam.name), availability)
    return out


def _configs(
    disc: str,
    node: str,
    device: dict[str, Any],
    entities: dict[tuple[str, str], dict[str, Any]],
    availability: list[dict[str, str]] | None,
) -> list[tuple[str, bytes]]:
    out = []
    for (component, key), entity in entities.items():
        body = {
            **entity,
            "unique_id": f"{node}_{key}",
            "default_entity_id": f"{component}.{node}_{key}",
            "device": device,
            "origin": ORIGIN,
        }
        if availability:
            body["availability"] = availability
        out.append((f"{disc}/{component}/{node}/{key}/config", json.dumps(body).encode()))
    return out


def removal_messages(disc: str, topics: Topics, cameras: Iterable[str]) -> list[tuple[str, bytes]]:
    """Empty retained configs: Home Assistant removes those entities."""
    return [
        (f"{disc}/{component}/{_node(topics.prefix, cam)}/{key}/config", b"")
        for cam in cameras
        for component, key in camera_entities(topics, cam)
    ]


class Discovery:
    """Remembers which cameras it announced (in the state dir) so removed ones are cleared."""

    def __init__(self, cfg: Config, state_dir: Path, topics: Topics) -> None:
        self.cfg = cfg
        self.topics = topics
        self.path = Path(state_dir) / "ha_discovery.json"

    def _announced(self) -> set[str]:
        try:
            return set(json.loads(self.path.read_text())["cameras"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def messages(self) -> list[tuple[str, bytes]]:
        """Removals for cameras announced before but gone now, then the current configs."""
        current = {c.name for c in self.cfg.cameras}
        gone = sorted(self._announced() - current)
        if gone:
            log.info("homeassistant: removing entities of camera(s) %s", ", ".join(gone))
        msgs = removal_messages(self.cfg.homeassistant.discovery_prefix, self.topics, gone)
        return msgs + discovery_messages(self.cfg, self.topics)

    def mark_announced(self) -> None:
        """Best effort: if it cannot be written (a full disk), a camera removed later keeps
        its entities in Home Assistant until the next announce that can write it."""
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"cameras": sorted(c.name for c in self.cfg.cameras)}))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("homeassistant: cannot remember the announced cameras in %s: %s",
                        self.path, exc)


def summary_entities(t: Topics) -> dict[tuple[str, str], dict[str, Any]]:
    """Discovery entities for the daemon device: the summary picture and the digest."""
    return {
        ("image", "daily_summary"): {
            "name": "Daily summary",
            "image_topic": f"{t.summary}/image",
            "content_type": "image/jpeg",
            "icon": "mdi:image-multiple",
        },
        ("sensor", "last_summary"): {
            "name": "Last summary",
            "state_topic": t.summary,
            "value_template": "{{ value_json.date }}",
            "json_attributes_topic": t.summary,
            "json_attributes_template": (
                "{{ {'visits': value_json.visits, 'species_count': value_json.species_count,"
                " 'new_species': value_json.new_species} | tojson }}"
            ),
            "icon": "mdi:calendar-check",
        },
        ("sensor", "visits_today"): {
            "name": "Visits today",
            "state_topic": t.digest,
            "value_template": "{{ value_json.visits }}",
            "json_attributes_topic": t.digest,
            "json_attributes_template": "{{ value_json.species | tojson }}",
            "state_class": "total_increasing",
            "unit_of_measurement": "visits",
            "icon": "mdi:counter",
        },
        ("sensor", "species_today"): {
            "name": "Species today",
            "state_topic": t.digest,
            "value_template": "{{ value_json.species_count }}",
            "state_class": "measurement",
            "icon": "mdi:bird",
        },
    }


