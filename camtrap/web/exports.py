"""Exports: visits as CSV for any filter, eBird Record Format of reviewed visits only, and a
Camtrap DP data package (the camera-trap data standard GBIF takes) as a zip.

Every export reads through the `Reader` (read-only connection) page by page, so a large
export never holds a transaction open long or loads all visits at once. eBird and Camtrap
DP observations take **reviewed** visits only (confirmed or corrected, not deleted): a
detection is not a verified sighting, and one visit is not one individual.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from pathlib import Path

from camtrap.timeutil import iso, local, zone_name
from camtrap.web.queries import MAX_LIMIT, Reader, Visit, VisitFilter

CAMTRAP_DP_VERSION = "1.0.2"
CAMTRAP_DP_PROFILE = (
    f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{CAMTRAP_DP_VERSION}/"
    "camtrap-dp-profile.json"
)


@dataclass(frozen=True)
class Site:
    """Where the cameras are (config `location`), for eBird and Camtrap DP."""

    name: str = "camtrap"
    latitude: float | None = None
    longitude: float | None = None
    state: str = ""  # eBird State/Province code, e.g. "IL-JM" (empty: eBird asks on import)
    country: str = ""  # ISO 3166 alpha-2, e.g. "IL"


def iter_visits(reader: Reader, f: VisitFilter, page: int = MAX_LIMIT) -> Iterator[Visit]:
    """Every visit the filter matches, newest first, page by page (keyset)."""
    before: str | None = None
    while True:
        p = reader.visits(f, limit=page, before=before)
        yield from p.visits
        if p.next is None:
            return
        before = p.next


def reviewed_only(f: VisitFilter) -> VisitFilter:
    """The filter narrowed to visits a person confirmed or corrected (not deleted)."""
    if f.status in ("confirmed", "corrected"):
        return f
    return replace(f, status="reviewed")


def _is_verified(v: Visit) -> bool:
    return v.status in ("confirmed", "corrected") and not v.deleted


# --- visits CSV ---------------------------------------------------------------------------

VISIT_CSV_COLUMNS = (
    "visit_id", "camera", "species", "model_species", "unknown", "score", "hits",
    "start_time", "last_seen", "end_time", "duration_s", "status", "reviewed_species",
    "review_user", "review_time", "keep", "deleted", "top_k", "crop_file",
)


def _csv_line(row: list[object]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(row)
    return buf.getvalue()


def visits_csv(reader: Reader, f: VisitFilter) -> Iterator[str]:
    """The visits a filter matches as CSV lines (with a header), streamed. `top_k` is
    `species:score` pairs joined by `|`."""
    tz = reader.tz
    yield _csv_line(list(VISIT_CSV_COLUMNS))
    for v in iter_visits(reader, f):
        end = v.end_ts if v.end_ts is not None else v.last_ts
        yield _csv_line([
            v.visit_id, v.camera, v.species, v.model_species, int(v.unknown),
            f"{v.score:.4f}", v.hits, iso(v.start_ts, tz), iso(v.last_ts, tz),
            iso(v.end_ts, tz) or "", f"{end - v.start_ts:.2f}",
            "deleted" if v.deleted else v.status, v.reviewed_species or "",
            v.review_user or "", iso(v.review_ts, tz) or "", int(v.keep), int(v.deleted),
            "|".join(f"{s}:{p:.4f}" for s, p in v.top_k), v.crop_file or "",
        ])


# --- eBird Record Format ------------------------------------------------------------------

EBIRD_COLUMNS = (
    "Common Name", "Genus", "Species", "Number", "Species Comments", "Location Name",
    "Latitude", "Longitude", "Date", "Start Time", "State/Province", "Country Code",
    "Protocol", "Number of Observers", "Duration", "All observations reported?",
    "Effort Distance Miles", "Effort area acres", "Checklist Comments",
)
_BINOMIAL = re.compile(r"^([A-Z][a-z]+)[ _]([a-z-]+)$")


def split_name(label: str) -> tuple[str, str, str]:
    """(common name, genus, species) of a model label: a binomial label ("Passer
    domesticus", "Passer_domesticus") fills genus and species, anything else the common
    name (eBird matches either on import)."""
    m = _BINOMIAL.match(label.strip())
    if m:
        return "", m[1], m[2]
    return label.replace("_", " ").strip(), "", ""


def ebird_rows(reader: Reader, f: VisitFilter, site: Site) -> list[list[str]]:
    """eBird Record Format rows (no header: eBird's template has none) of the reviewed
    visits a filter matches. One checklist per local date and hour (Stationary, one
    observer, 60 minutes, not all species reported); per checklist one row per species
    with Number 1 however many visits it had (a visit is not an individual); the visits,
    cameras and best score go in the species comments."""
    tz = reader.tz
    groups: dict[tuple[str, int, str], list[Visit]] = {}
    for v in iter_visits(reader, reviewed_only(f)):
        if not _is_verified(v) or v.unknown:
            continue
        t = local(v.start_ts, tz)
        groups.setdefault((t.date().isoformat(), t.hour, v.species), []).append(v)
    rows: list[list[str]] = []
    for (day, hour, species), vs in sorted(groups.items()):
        common, genus, epithet = split_name(species)
        cams = ", ".join(sorted({v.camera for v in vs}))
        best = max(v.score for v in vs)
        d = datetime.fromisoformat(day)
        rows.append([
            common, genus, epithet, "1",
            f"camtrap: {len(vs)} reviewed visit(s) at {cams}; best model score {best:.2f}",
            site.name,
            "" if site.latitude is None else f"{site.latitude:.6f}",
            "" if site.longitude is None else f"{site.longitude:.6f}",
            d.strftime("%m/%d/%Y"), f"{hour:02d}:00", site.state, site.country,
            "Stationary", "1", "60", "N", "", "",
            "Feeder camera (camtrap); species reviewed by a person",
        ])
    return rows


def ebird_csv(reader: Reader, f: VisitFilter, site: Site) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(ebird_rows(reader, f, site))
    return buf.getvalue()


# --- Camtrap DP ---------------------------------------------------------------------------

DEPLOYMENT_COLUMNS = (
    "deploymentID", "locationID", "locationName", "latitude", "longitude",
    "deploymentStart", "deploymentEnd", "cameraID", "captureMethod", "deploymentComments",
)
MEDIA_COLUMNS = (
    "mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic",
    "fileName", "fileMediatype", "favorite", "mediaComments",
)
OBSERVATION_COLUMNS = (
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
    "observationLevel", "observationType", "scientificName", "count", "bboxX", "bboxY",
    "bboxWidth", "bboxHeight", "classificationMethod", "classifiedBy",
    "classificationTimestamp", "classificationProbability", "observationComments",
)


def _dp_time(ts: float | None, tz: tzinfo) -> str:
    return "" if ts is None else local(ts, tz).isoformat(timespec="seconds")


def camtrap_dp(
    reader: Reader,
    f: VisitFilter,
    site: Site,
    *,
    include_media: bool = True,
    created: datetime | None = None,
) -> bytes:
    """A Camtrap DP package (zip): `datapackage.json`, `deployments.csv` (one per camera
    over the exported span), `media.csv` (the best crop of each reviewed visit, its JPEG
    under `media/` when `include_media`) and `observations.csv` (one event-level
    observation per reviewed visit, classified by a human; the model's score kept as
    `classificationProbability` only when the reviewer confirmed the model)."""
    tz = reader.tz
    visits = [v for v in iter_visits(reader, reviewed_only(f)) if _is_verified(v)]
    visits.sort(key=lambda v: (v.start_ts, v.visit_id))
    span: dict[str, tuple[float, float]] = {}
    for v in visits:
        lo, hi = span.get(v.camera, (v.start_ts, v.last_ts))
        span[v.camera] = (min(lo, v.start_ts), max(hi, v.end_ts or v.last_ts))
    lat = site.latitude if site.latitude is not None else 0.0
    lon = site.longitude if site.longitude is not None else 0.0

    deployments = [
        [cam, site.name, site.name, lat, lon, _dp_time(lo, tz), _dp_time(hi, tz), cam,
         "activityDetection", "camtrap camera; deployment spans the exported visits"]
        for cam, (lo, hi) in sorted(span.items())
    ]
    media: list[list[object]] = []
    observations: list[list[object]] = []
    files: list[tuple[str, Path]] = []
    for v in visits:
        media_id = ""
        if v.crop_file:
            media_id = f"{v.visit_id}-crop"
            name = f"{v.camera}-{v.visit_id}.jpg"
            path = f"media/{name}"
            media.append([media_id, v.camera, "activityDetection", _dp_time(v.start_ts, tz),
                          path, "false", name, "image/jpeg", "false",
                          "best crop of the visit"])
            files.append((path, reader.state_dir / v.crop_file))
        bbox: list[object] = ["", "", "", ""]
        if v.box is not None and v.frame_size:
            (x, y, w, h), (fw, fh) = v.box, v.frame_size
            bbox = [round(x / fw, 4), round(y / fh, 4), round(w / fw, 4), round(h / fh, 4)]
        confirmed = v.status == "confirmed"
        observations.append([
            v.visit_id, v.camera, "", v.visit_id, _dp_time(v.start_ts, tz),
            _dp_time(v.end_ts or v.last_ts, tz), "event", "animal", v.species, 1, *bbox,
            "human", v.review_user or "", _dp_time(v.review_ts, tz),
            round(v.score, 4) if confirmed else "",
            f"model said {v.model_species} ({v.score:.2f}); {v.status} by a reviewer",
        ])
    start = min((v.start_ts for v in visits), default=None)
    end = max((v.end_ts or v.last_ts for v in visits), default=None)
    created = created or datetime.now(tz)
    package = {
        "profile": CAMTRAP_DP_PROFILE,
        "name": "camtrap-export",
        "created": created.isoformat(timespec="seconds"),
        "contributors": [{"title": site.name, "role": "principalInvestigator"}],
        "project": {
            "title": f"{site.name} bird feeder cameras",
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["event"],
        },
        "temporal": {"start": _dp_time(start, tz)[:10], "end": _dp_time(end, tz)[:10]},
        "taxonomic": [{"scientificName": s} for s in sorted({v.species for v in visits})],
        "resources": [
            _resource("deployments"), _resource("media"), _resource("observations"),
        ],
        "camtrap": {"timezone": zone_name(tz), "visits": len(visits)},
    }
    if site.latitude is not None and site.longitude is not None:
        package["spatial"] = {"type": "Point", "coordinates": [site.longitude, site.latitude]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("datapackage.json", json.dumps(package, indent=2, ensure_ascii=False))
        z.writestr("deployments.csv", _table(DEPLOYMENT_COLUMNS, deployments))
        z.writestr("media.csv", _table(MEDIA_COLUMNS, media))
        z.writestr("observations.csv", _table(OBSERVATION_COLUMNS, observations))
        if include_media:
            for arc, path in files:
                try:
                    data = path.read_bytes()
                except OSError:
                    continue  # retention removed it meanwhile: media.csv still names it
                z.writestr(arc, data, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def _resource(name: str) -> dict[str, object]:
    return {
        "name": name,
        "path": f"{name}.csv",
        "profile": "tabular-data-resource",
        "format": "csv",
        "mediatype": "text/csv",
        "encoding": "UTF-8",
        "schema": (f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{CAMTRAP_DP_VERSION}/"
                   f"{name}-table-schema.json"),
    }


def _table(columns: tuple[str, ...], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()
