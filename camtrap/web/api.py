"""The JSON API at `/api/v1/...`: the twin of every list page, which users' scripts and the
tests use. Field names are a public contract (README, "HTTP API"): add, never rename.

`routes(...)` returns plain Starlette routes; the app factory (app.py) mounts them under
the base path, behind its auth middleware. Who may write is asked of `can_write(request)`
and who reviews of `user_of(request)`; the defaults read Starlette's AuthenticationMiddleware
(`request.user.display_name`, scope "owner" to write) and allow everything when no auth
middleware is installed (loopback, auth off).

Reads are plain `def` endpoints (Starlette runs them in its thread pool, each thread with
its own read-only connection); writes read their body asynchronously and then run the
review in the thread pool, so the event loop never waits on SQLite.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from types import SimpleNamespace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from camtrap.timeutil import iso, local_day
from camtrap.visits.reviews import ACTIONS, ReviewError
from camtrap.web import exports
from camtrap.web.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STATUS_FILTERS,
    DayGrid,
    Reader,
    ReviewEntry,
    SpeciesStats,
    Visit,
    VisitFilter,
)
from camtrap.web.reviewer import MAX_BULK, Reviewer

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
MAX_PARAM = 200

CropUrl = Callable[[Request, Visit], "str | None"]
UserOf = Callable[[Request], "str | None"]
CanWrite = Callable[[Request], bool]


class BadRequest(ValueError):
    """A request the API refuses with 400 and `{"error": message}`."""

    status = 400


class TooLarge(BadRequest):
    status = 413


def default_crop_url(request: Request, v: Visit) -> str | None:
    """`<root_path>/media/crop/<visit_id>` (served by the pages' image route), None when
    the visit has no crop file."""
    if not v.crop_file:
        return None
    return f"{request.scope.get('root_path', '')}/media/crop/{v.visit_id}"


def default_user(request: Request) -> str | None:
    user = request.scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.display_name)
    return None


def default_can_write(request: Request) -> bool:
    auth = request.scope.get("auth")
    if auth is None:  # no auth middleware: loopback with auth off
        return True
    return "owner" in getattr(auth, "scopes", ())


# --- request parsing ----------------------------------------------------------------------


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_PARAM or any(ord(c) < 32 for c in value):
        raise BadRequest(f"{name}: not a valid value")
    return value


def _date(params: Mapping[str, str], name: str) -> date | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name}: not a date (YYYY-MM-DD): {value!r}") from None


def _float(params: Mapping[str, str], name: str, lo: float = 0.0, hi: float = 1.0) -> float | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        x = float(value)
    except ValueError:
        raise BadRequest(f"{name}: not a number: {value!r}") from None
    if not lo <= x <= hi:
        raise BadRequest(f"{name}: must be within {lo:g}..{hi:g}")
    return x


def _bool(params: Mapping[str, str], name: str) -> bool | None:
    value = _text(params, name)
    if value is None:
        return None
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"{name}: true or false, not {value!r}")


def filter_from_params(params: Mapping[str, str]) -> VisitFilter:
    """A VisitFilter from query parameters (or a bulk body's `filter` object): `date` (one
    day) or `from`/`to`, `camera`, `species`, `status`, `unknown`, `min_score`,
    `max_score`. Raises BadRequest."""
    day = _date(params, "date")
    date_from = _date(params, "from") or day
    date_to = _date(params, "to") or day
    if day is not None and (params.get("from") or params.get("to")):
        raise BadRequest("date: give either date or from/to")
    status = _text(params, "status")
    if status is not None and status not in STATUS_FILTERS:
        raise BadRequest(f"status: one of {', '.join(STATUS_FILTERS)}")
    return VisitFilter(
        camera=_text(params, "camera"),
        species=_text(params, "species"),
        date_from=date_from,
        date_to=date_to,
        min_score=_float(params, "min_score"),
        max_score=_float(params, "max_score"),
        status=status,
        unknown=_bool(params, "unknown"),
    )


def _limit(params: Mapping[str, str], default: int = DEFAULT_LIMIT, most: int = MAX_LIMIT) -> int:
    value = _text(params, "limit")
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"limit: not a whole number: {value!r}") from None
    if not 1 <= n <= most:
        raise BadRequest(f"limit: 1..{most}")
    return n


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, at most MAX_BODY bytes. Raises BadRequest."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise TooLarge(f"body: at most {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"body: at most {MAX_BODY} bytes")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body: not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body: a JSON object is expected")
    return data


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name}: a string is expected")
    return value


# --- JSON shapes --------------------------------------------------------------------------


def visit_json(v: Visit, crop_url: str | None, tz: Any) -> dict[str, Any]:
    """One visit as the API gives it: the `<prefix>/events` fields (with the effective
    species and tier), `review`, `crop_url` and the review state."""
    end = v.end_ts if v.end_ts is not None else v.last_ts
    review = v.review
    body: dict[str, Any] = {
        "visit_id": v.visit_id,
        "camera": v.camera,
        "species": v.species,
        "unknown": v.unknown,
        "score": round(v.score, 4),
        "top_k": [{"species": s, "score": round(p, 4)} for s, p in v.top_k],
        "hits": v.hits,
        "start_time": iso(v.start_ts, tz),
        "last_seen": iso(v.last_ts, tz),
        "end_time": iso(v.end_ts, tz),
        "duration_s": round(end - v.start_ts, 2),
        "box": None,
        "frame": None,
        "model_species": v.model_species,
        "review": None if review is None else {
            "status": review.status,
            "species": review.species,
            "user": review.user,
            "time": iso(review.ts, tz),
        },
        "keep": v.keep,
        "deleted": v.deleted,
        "deleted_time": iso(v.deleted_ts, tz),
        "crop_url": crop_url,
    }
    if v.box is not None:
        x, y, w, h = v.box
        body["box"] = {"x": x, "y": y, "w": w, "h": h}
    if v.frame_size is not None:
        body["frame"] = {"width": v.frame_size[0], "height": v.frame_size[1]}
    return body


def review_entry_json(e: ReviewEntry, tz: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": iso(e.ts, tz),
        "user": e.user,
        "action": e.action,
        "old_species": e.old_species,
        "new_species": e.new_species,
        "note": e.note,
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


# --- routes -------------------------------------------------------------------------------


def routes(
    reader: Reader,
    reviewer: Reviewer | None = None,
    *,
    crop_url: CropUrl = default_crop_url,
    user_of: UserOf = default_user,
    can_write: CanWrite = default_can_write,
    site: exports.Site | None = None,
    cameras: Sequence[str] = (),
) -> list[Route]:
    """Every `/api/v1` route. Without a `reviewer` (read-only deployments, tests of reads)
    the review routes answer 503. `site` names the place in eBird and Camtrap DP exports
    (config `location`); `cameras` (configured) are listed on a day even without records."""
    tz = reader.tz
    where = site or exports.Site()

    def vj(request: Request, v: Visit) -> dict[str, Any]:
        return visit_json(v, crop_url(request, v), tz)

    def guarded(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                return fn(request)
            except (BadRequest, ValueError) as exc:
                return _error(400, str(exc))
        endpoint.__name__ = fn.__name__
        return endpoint

    @guarded
    def list_visits(request: Request) -> Response:
        p = request.query_params
        page = reader.visits(filter_from_params(p), limit=_limit(p), before=_text(p, "before"))
        return _ok({"visits": [vj(request, v) for v in page.visits], "next": page.next})

    @guarded
    def get_visit(request: Request) -> Response:
        vid = request.path_params["visit_id"]
        v = reader.visit(vid)
        if v is None:
            return _error(404, f"no visit {vid}")
        near = reader.neighbours(vid)
        body = vj(request, v)
        body["history"] = [review_entry_json(e, tz) for e in reader.history(vid)]
        body["previous"] = near.newer
        body["next"] = near.older
        return _ok(body)

    @guarded
    def visit_reviews(request: Request) -> Response:
        vid = request.path_params["visit_id"]
        if reader.visit(vid) is None:
            return _error(404, f"no visit {vid}")
        return _ok({"reviews": [review_entry_json(e, tz) for e in reader.history(vid)]})

    @guarded
    def similar(request: Request) -> Response:
        vid = request.path_params["visit_id"]
        if reader.visit(vid) is None:
            return _error(404, f"no visit {vid}")
        found = reader.similar(vid, limit=_limit(request.query_params, 24, 200))
        return _ok({"visits": [{**vj(request, s.visit), "similarity": round(s.similarity, 4)}
                               for s in found]})

    def _write_refused(request: Request) -> Response | None:
        if reviewer is None:
            return _error(503, "reviews are not available here (read-only)")
        if not can_write(request):
            return _error(403, "reviewing needs the owner")
        return None

    async def review_visit(request: Request) -> Response:
        refused = _write_refused(request)
        if refused is not None:
            return refused
        assert reviewer is not None
        vid = request.path_params["visit_id"]
        try:
            data = await _json_body(request)
            action = _opt_str(data, "action")
            if action is None or action not in ACTIONS:
                raise BadRequest(f"action: one of {', '.join(ACTIONS)}")
            species, note = _opt_str(data, "species"), _opt_str(data, "note")
            v = await run_in_threadpool(reviewer.review, vid, action, species,
                                        user_of(request), note)
        except KeyError:
            return _error(404, f"no visit {vid}")
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ReviewError as exc:
            return _error(400, str(exc))
        return _ok(vj(request, v))

    async def bulk_review(request: Request) -> Response:
        """`{"action", "species"?, "note"?, "visit_ids": [...]}` or `{..., "filter":
        {query parameters}}` (at most MAX_BULK visits, newest first)."""
        refused = _write_refused(request)
        if refused is not None:
            return refused
        assert reviewer is not None
        try:
            data = await _json_body(request)
            action = _opt_str(data, "action")
            if action is None or action not in ACTIONS:
                raise BadRequest(f"action: one of {', '.join(ACTIONS)}")
            species, note = _opt_str(data, "species"), _opt_str(data, "note")
            ids = data.get("visit_ids")
            filt = data.get("filter")
            if (ids is None) == (filt is None):
                raise BadRequest("give either visit_ids or filter")
            if ids is not None:
                if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
                    raise BadRequest("visit_ids: a list of strings is expected")
                if len(ids) > MAX_BULK:
                    raise BadRequest(f"visit_ids: at most {MAX_BULK}")
            else:
                if not isinstance(filt, dict) or not all(
                    isinstance(v, str | int | float | bool) for v in filt.values()
                ):
                    raise BadRequest("filter: an object of query parameters is expected")
                f = filter_from_params({k: str(v).lower() if isinstance(v, bool) else str(v)
                                        for k, v in filt.items()})
                ids = await run_in_threadpool(reader.visit_ids, f, MAX_BULK)
            result = await run_in_threadpool(reviewer.bulk, ids, action, species,
                                             user_of(request), note)
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ReviewError as exc:
            return _error(400, str(exc))
        return _ok({"reviewed": result.reviewed, "failed": result.failed})

    @guarded
    def day(request: Request) -> Response:
        p = request.query_params
        d = _date(p, "date") or local_day(time.time(), tz)
        grid = reader.day(d, cameras)
        return _ok(day_json(grid, request, crop_url, tz))

    @guarded
    def species_list(request: Request) -> Response:
        return _ok({"species": [{"species": s.species, "visits": s.visits, "unknown": s.unknown}
                                for s in reader.species_list()]})

    @guarded
    def species(request: Request) -> Response:
        name = request.path_params["name"]
        if len(name) > MAX_PARAM:
            raise BadRequest("species: too long")
        st = reader.species(name)
        return _ok(species_json(st, request, crop_url, tz))

    @guarded
    def needs_review(request: Request) -> Response:
        nr = reader.needs_review(limit=_limit(request.query_params, 24, 200))
        return _ok({
            "total_unreviewed": nr.total_unreviewed,
            "unknown": [vj(request, v) for v in nr.unknown],
            "low_score": [vj(request, v) for v in nr.low_score],
            "first_ever": [vj(request, v) for v in nr.first_ever],
            "first_this_year": [vj(request, v) for v in nr.first_this_year],
        })

    @guarded
    def export_visits(request: Request) -> Response:
        f = filter_from_params(request.query_params)
        return StreamingResponse(
            exports.visits_csv(reader, f), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="camtrap-visits.csv"',
                     "Cache-Control": "no-store"},
        )

    @guarded
    def export_ebird(request: Request) -> Response:
        f = filter_from_params(request.query_params)
        return Response(
            exports.ebird_csv(reader, f, where), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="camtrap-ebird.csv"',
                     "Cache-Control": "no-store"},
        )

    @guarded
    def export_camtrap_dp(request: Request) -> Response:
        p = request.query_params
        f = filter_from_params(p)
        media = _bool(p, "media")
        data = exports.camtrap_dp(reader, f, where, include_media=media is not False)
        return Response(
            data, media_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="camtrap-dp.zip"',
                     "Cache-Control": "no-store"},
        )

    return [
        Route(f"{PREFIX}/visits", list_visits, methods=["GET"]),
        Route(f"{PREFIX}/visits/{{visit_id}}", get_visit, methods=["GET"]),
        Route(f"{PREFIX}/visits/{{visit_id}}/reviews", visit_reviews, methods=["GET"]),
        Route(f"{PREFIX}/visits/{{visit_id}}/similar", similar, methods=["GET"]),
        Route(f"{PREFIX}/visits/{{visit_id}}/review", review_visit, methods=["POST"]),
        Route(f"{PREFIX}/reviews", bulk_review, methods=["POST"]),
        Route(f"{PREFIX}/day", day, methods=["GET"]),
        Route(f"{PREFIX}/species", species_list, methods=["GET"]),
        Route(f"{PREFIX}/species/{{name:path}}", species, methods=["GET"]),
        Route(f"{PREFIX}/needs-review", needs_review, methods=["GET"]),
        Route(f"{PREFIX}/export/visits.csv", export_visits, methods=["GET"]),
        Route(f"{PREFIX}/export/ebird.csv", export_ebird, methods=["GET"]),
        Route(f"{PREFIX}/export/camtrap-dp.zip", export_camtrap_dp, methods=["GET"]),
    ]


def _crop_of(request: Request, crop_url: CropUrl, visit_id: str, crop: str | None) -> str | None:
    return crop_url(request, SimpleNamespace(visit_id=visit_id, crop_file=crop))  # type: ignore[arg-type]


def day_json(g: DayGrid, request: Request, crop_url: CropUrl, tz: Any) -> dict[str, Any]:
    return {
        "date": g.day.isoformat(),
        "visits": g.visits,
        "species_count": g.species_count,
        "hourly": list(g.hourly),
        "species": [
            {
                "species": s.species,
                "unknown": s.unknown,
                "visits": s.visits,
                "hourly": list(s.hourly),
                "first_seen": iso(s.first_ts, tz),
                "last_seen": iso(s.last_ts, tz),
                "best_score": s.best_score,
                "best_visit_id": s.best_visit_id,
                "crop_url": _crop_of(request, crop_url, s.best_visit_id, s.best_crop),
                "new_ever": s.new_ever,
                "first_this_year": s.first_this_year,
            }
            for s in g.species
        ],
        "cameras": [
            {
                "camera": c.camera,
                "hours": list(c.hours),
                "uptime": c.uptime,
                "seconds_up": c.seconds_up,
                "seconds_watched": c.seconds_watched,
                "seconds_paused": c.seconds_paused,
            }
            for c in g.cameras
        ],
        "summary": g.summary_json is not None,
        "previous_day": g.previous_day.isoformat() if g.previous_day else None,
        "next_day": g.next_day.isoformat() if g.next_day else None,
    }


def species_json(s: SpeciesStats, request: Request, crop_url: CropUrl, tz: Any) -> dict[str, Any]:
    return {
        "species": s.species,
        "first_ever": iso(s.first_ever_ts, tz),
        "first_this_year": iso(s.first_this_year_ts, tz),
        "last_seen": iso(s.last_seen_ts, tz),
        "visits": s.visits,
        "by_day": [{"date": d.isoformat(), "visits": n} for d, n in s.by_day],
        "by_hour": list(s.by_hour),
        "by_camera": s.by_camera,
        "best": [visit_json(v, crop_url(request, v), tz) for v in s.best],
        "reviews": {
            "confirmed": s.confirmed,
            "corrected": s.corrected_away,
            "corrected_to": s.corrected_to,
            "corrected_from": s.corrected_from,
            "rejected": s.rejected,
        },
    }
