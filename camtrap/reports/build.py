"""Daily summaries: one local day's visits -> counts and flags.

Everything here is a function of the database contents alone (no "generated at" stamps,
sorted JSON keys), so producing a date twice gives byte-identical files: a summary re-made
after a restart, or by `camtrap summary`, never disagrees with the one that was published.

Hours are local hours of the configured zone. On the night clocks go back the repeated hour
counts into the same histogram slot; on the night they go forward one slot stays empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from camtrap.storage.store import RollupRow, Store, Uptime, VisitRow

from camtrap.timeutil import day_bounds, local, zone_name

log = logging.getLogger(__name__)

SCHEMA = 1
@dataclass(frozen=True)
class SpeciesDay:
    species: str
    unknown: bool  # the "unknown bird" tier, not a species
    visits: int
    hits: int
    first_seen: str  # ISO 8601 local: start of the first visit
    last_seen: str  # ISO 8601 local: latest sighting
    busiest_hour: int  # local hour (0-23) with the most visit starts; earliest on a tie
    best_score: float
    best_visit_id: str
    best_camera: str
    best_crop: str | None  # relative to the state directory
    hourly: tuple[int, ...]  # 24 visit-start counts by local hour
    cameras: dict[str, int]
    new_ever: bool  # never seen before this day (visits and rollups of deleted visits)
    first_this_year: bool  # not seen earlier in this calendar year


@dataclass(frozen=True)
class CameraDay:
    camera: str
    visits: int
    species: int
    hits: int
    seconds_up: float | None  # connected, inside active hours (None: not recorded)
    seconds_watched: float | None  # daemon running, inside active hours
    seconds_paused: float | None  # outside active hours
    uptime: float | None  # seconds_up / seconds_watched


@dataclass(frozen=True)
class DaySummary:
    schema: int
    date: str
    timezone: str
    visits: int
    species_count: int  # named species, the unknown tier not counted
    new_species: tuple[str, ...]
    first_this_year: tuple[str, ...]
    hourly: tuple[int, ...]
    species: tuple[SpeciesDay, ...]
    cameras: tuple[CameraDay, ...]
    image: str  # file name of the mosaic beside the JSON
    extra: dict[str, Any] = field(default_factory=dict)  # room for fields added later

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def summary_from_dict(data: Mapping[str, Any]) -> DaySummary:
    """Read back a summary JSON (e.g. for a day whose visits retention has deleted)."""
    known = set(DaySummary.__dataclass_fields__)

    def only(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:  # fields added later: ignored
        return {k: v for k, v in d.items() if k in cls.__dataclass_fields__}

    species = tuple(
        SpeciesDay(**{**only(SpeciesDay, s), "hourly": tuple(s["hourly"])})
        for s in data.get("species", [])
    )
    cameras = tuple(CameraDay(**only(CameraDay, c)) for c in data.get("cameras", []))
    return DaySummary(
        schema=data["schema"],
        date=data["date"],
        timezone=data["timezone"],
        visits=data["visits"],
        species_count=data["species_count"],
        new_species=tuple(data.get("new_species", ())),
        first_this_year=tuple(data.get("first_this_year", ())),
        hourly=tuple(data["hourly"]),
        species=species,
        cameras=cameras,
        image=data.get("image", f"{data['date']}.jpg"),
        extra={k: v for k, v in data.items() if k not in known},
    )


# --- building ---------------------------------------------------------------------------


def build_summary(
    day: date,
    tz: tzinfo,
    visits: Sequence[VisitRow],
    cameras: Iterable[str],
    uptime: Mapping[str, Uptime],
    last_seen_before: Callable[[str], float | None],
) -> DaySummary:
    """The summary of one local day from its visits (pure but for `last_seen_before`, which
    answers "when was this species last seen before this day", from the store)."""
    year_start, _ = day_bounds(date(day.year, 1, 1), tz)
    by_species: dict[str, list[VisitRow]] = {}
    for v in visits:
        by_species.setdefault(v.species, []).append(v)
    hourly_total = [0] * 24
    out: list[SpeciesDay] = []
    for name, rows in by_species.items():
        hourly = [0] * 24
        cams: dict[str, int] = {}
        for v in rows:
            hourly[local(v.start_ts, tz).hour] += 1
            cams[v.camera] = cams.get(v.camera, 0) + 1
        for h, n in enumerate(hourly):
            hourly_total[h] += n
        # best: highest score, then earliest, then id: a total order, so re-runs agree
        best = min(rows, key=lambda v: (-v.best_score, v.start_ts, v.visit_id))
        unknown = all(v.unknown for v in rows)
        previous = None if unknown else last_seen_before(name)
        out.append(
            SpeciesDay(
                species=name,
                unknown=unknown,
                visits=len(rows),
                hits=sum(v.hits for v in rows),
                first_seen=_iso(min(v.start_ts for v in rows), tz),
                last_seen=_iso(max(v.last_ts for v in rows), tz),
                busiest_hour=max(range(24), key=lambda h: (hourly[h], -h)),
                best_score=round(best.best_score, 4),
                best_visit_id=best.visit_id,
                best_camera=best.camera,
                best_crop=best.crop_file,
                hourly=tuple(hourly),
                cameras=dict(sorted(cams.items())),
                new_ever=not unknown and previous is None,
                first_this_year=not unknown and (previous is None or previous < year_start),
            )
        )
    out.sort(key=lambda s: (s.unknown, -s.visits, -s.best_score, s.species))
    camera_names = sorted(set(cameras) | {v.camera for v in visits} | set(uptime))
    cams_out = []
    for cam in camera_names:
        rows = [v for v in visits if v.camera == cam]
        up = uptime.get(cam)
        cams_out.append(
            CameraDay(
                camera=cam,
                visits=len(rows),
                species=len({v.species for v in rows if not v.unknown}),
                hits=sum(v.hits for v in rows),
                seconds_up=None if up is None else round(up.up),
                seconds_watched=None if up is None else round(up.total),
                seconds_paused=None if up is None else round(up.paused),
                uptime=round(up.up / up.total, 4) if up is not None and up.total > 0 else None,
            )
        )
    return DaySummary(
        schema=SCHEMA,
        date=day.isoformat(),
        timezone=zone_name(tz),
        visits=len(visits),
        species_count=sum(1 for s in out if not s.unknown),
        new_species=tuple(s.species for s in out if s.new_ever),
        first_this_year=tuple(s.species for s in out if s.first_this_year),
        hourly=tuple(hourly_total),
        species=tuple(out),
        cameras=tuple(cams_out),
        image=f"{day.isoformat()}.jpg",
    )


def _iso(ts: float, tz: tzinfo) -> str:
    return local(ts, tz).isoformat(timespec="seconds")


def load_summary(store: Store, day: date, tz: tzinfo, cameras: Iterable[str]) -> DaySummary:
    """The summary of `day` from the database."""
    start, end = day_bounds(day, tz)
    visits = store.visits_between(start, end)
    return build_summary(
        day,
        tz,
        visits,
        cameras,
        store.uptime(day.isoformat()),
        lambda species: store.last_seen_before(species, start),
    )


def rollup_rows(day: date, visits: Sequence[VisitRow]) -> list[RollupRow]:
    """Per camera+species totals of one day's visits, for the `daily_rollups` table."""
    from camtrap.storage.store import RollupRow

    groups: dict[tuple[str, str], list[VisitRow]] = {}
    for v in visits:
        groups.setdefault((v.camera, v.species), []).append(v)
    return [
        RollupRow(
            day=day.isoformat(),
            camera=cam,
            species=species,
            unknown=all(v.unknown for v in rows),
            visits=len(rows),
            hits=sum(v.hits for v in rows),
            best_score=max(v.best_score for v in rows),
            first_ts=min(v.start_ts for v in rows),
            last_ts=max(v.last_ts for v in rows),
        )
        for (cam, species), rows in sorted(groups.items())
    ]


