"""The MQTT contract: topic names and payload fields. Users automate on these; the README
documents every one. Add fields freely; rename or remove only with a new `schema`."""

from __future__ import annotations

import json
from datetime import date, datetime, tzinfo
from typing import Any

from camtrap.status import StatusSnapshot
from camtrap.timeutil import iso
from camtrap.visits.reviews import ReviewedVisit
from camtrap.visits.tracker import VisitEvent

SCHEMA = 1



class Topics:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.status = f"{prefix}/status"
        self.events = f"{prefix}/events"
        self.stats = f"{prefix}/stats"
        self.digest = f"{prefix}/digest"
        self.summary = f"{prefix}/summary"

    def camera(self, camera: str, leaf: str) -> str:
        """Per-camera retained state: `species`, `present`, `visits_today`, `crop`, `state`."""
        return f"{self.prefix}/{camera}/{leaf}"


def event_body(ev: VisitEvent, tz: tzinfo | None, node: str) -> dict[str, Any]:
    """The `<prefix>/events` object (also a line of `camtrap replay`)."""
    x, y, w, h = ev.box
    end = ev.end_ts if ev.end_ts is not None else ev.last_ts
    return {
        "schema": SCHEMA,
        "type": ev.kind,
        "visit_id": ev.visit_id,
        "camera": ev.camera,
        "species": ev.species,
        "unknown": ev.unknown,
        "score": round(ev.score, 4),
        "top_k": [{"species": s, "score": round(p, 4)} for s, p in ev.top_k],
        "hits": ev.hits,
        "start_time": iso(ev.start_ts, tz),
        "last_seen": iso(ev.last_ts, tz),
        "end_time": iso(ev.end_ts, tz),
        "duration_s": round(end - ev.start_ts, 2),
        "box": {"x": x, "y": y, "w": w, "h": h},
        "frame": {"width": ev.frame_size[0], "height": ev.frame_size[1]},
        "node": node,
        "count": ev.count,  # the most birds of the species seen at once
        "track_ids": list(ev.track_ids),  # the camera's tracks (empty when tracks are off)
        "looks": ev.looks,  # crops of the visit that went to the classifier
    }


def review_body(
    visit: ReviewedVisit,
    action: str,
    previous_species: str,
    tz: tzinfo | None,
    node: str,
) -> dict[str, Any]:
    """`<prefix>/events` with `type: "review"`: a person's verdict changed a visit. The
    visit's event fields carry the *effective* species (the reviewed one) and tier;
    `retracted` is true when the visit no longer counts as a bird (rejected or deleted);
    `review` says what was done. Same schema as the visit events: only fields were added
    (`model_species`, `retracted`, `review`), and `frame`, not stored, is left out."""
    end = visit.end_ts if visit.end_ts is not None else visit.last_ts
    st = visit.state
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "type": "review",
        "visit_id": visit.visit_id,
        "camera": visit.camera,
        "species": visit.species,
        "unknown": visit.unknown,
        "score": round(visit.score, 4),
        "top_k": [{"species": s, "score": round(p, 4)} for s, p in visit.top_k],
        "hits": visit.hits,
        "start_time": iso(visit.start_ts, tz),
        "last_seen": iso(visit.last_ts, tz),
        "end_time": iso(visit.end_ts, tz),
        "duration_s": round(end - visit.start_ts, 2),
        "model_species": visit.model_species,
        "retracted": not st.counts,
        "review": {
            "status": st.public_status,
            "species": visit.species,
            "user": visit.review_user,
            "time": iso(visit.review_ts, tz),
            "action": action,
            "previous_species": previous_species,
            "keep": st.keep,
        },
        "node": node,
    }
    if visit.box is not None:
        x, y, w, h = visit.box
        body["box"] = {"x": x, "y": y, "w": w, "h": h}
    return body


def to_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def last_species_payload(ev: VisitEvent, tz: tzinfo | None) -> bytes:
    return json.dumps(
        {
            "species": ev.species,
            "unknown": ev.unknown,
            "score": round(ev.score, 4),
            "visit_id": ev.visit_id,
            "time": iso(ev.start_ts, tz),
        },
        ensure_ascii=False,
    ).encode()


def reviewed_species_payload(visit: ReviewedVisit, tz: tzinfo | None) -> bytes:
    """`<prefix>/<camera>/species` again after a review of the camera's latest visit: the
    same fields as `last_species_payload`, with the effective species."""
    return json.dumps(
        {
            "species": visit.species,
            "unknown": visit.unknown,
            "score": round(visit.score, 4),
            "visit_id": visit.visit_id,
            "time": iso(visit.start_ts, tz),
        },
        ensure_ascii=False,
    ).encode()


def visit_entity_payload(body: dict[str, Any]) -> bytes:
    """`<prefix>/<camera>/visit`: a visit start or end as Home Assistant's event entity wants
    it (`event_type` plus attributes), so a species that comes back fires again."""
    keep = ("visit_id", "species", "unknown", "score", "hits", "start_time", "end_time")
    return to_json({"event_type": f"visit_{body['type']}", **{k: body[k] for k in keep}})


def digest_payload(
    day: date,
    now: datetime,
    counts: list[tuple[str, str, int]],
    cameras: list[str],
    unknown_label: str | None = None,
) -> dict[str, Any]:
    """`<prefix>/digest`: today's visits per camera and species (most seen first)."""

    def ordered(d: dict[str, int]) -> dict[str, int]:
        return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

    species: dict[str, int] = {}
    per_cam: dict[str, dict[str, int]] = {c: {} for c in cameras}
    for cam, sp, n in counts:
        species[sp] = species.get(sp, 0) + n
        per_cam.setdefault(cam, {})[sp] = n
    return {
        "schema": 1,
        "date": day.isoformat(),
        "time": now.isoformat(timespec="seconds"),
        "visits": sum(species.values()),
        "species_count": sum(1 for s in species if s != unknown_label),
        "species": ordered(species),
        "cameras": {
            cam: {"visits": sum(sp.values()), "species": ordered(sp)}
            for cam, sp in sorted(per_cam.items())
        },
    }


def stats_payload(snapshot: StatusSnapshot, now: datetime) -> dict[str, Any]:
    """`<prefix>/stats` (and `/healthz`): the status snapshot with its schema and time."""
    return {"schema": 1, "time": now.isoformat(timespec="seconds"), **snapshot.as_dict()}


