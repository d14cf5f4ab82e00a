"""The server-rendered pages: plain HTML forms and links that work without JavaScript;
htmx (vendored) only swaps a reviewed card in place and loads more visits without a reload.

Every link, form action and redirect is relative to the page (`root` is "./", "../", ...),
so the pages work under any proxy prefix or in a Home Assistant iframe. Reads go through
`Reader` (queries.py), the one write through `Reviewer` (reviewer.py). Templates are Jinja2
with autoescape on: camera and species names are always text, never markup.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from camtrap.web.queries import STATUS_FILTERS, Visit, VisitFilter
from camtrap.web.thumbs import NO_STORE, Thumbnails, cache_control, safe_file

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
LIVE_FPS = 2.5
MAX_QUERY_VALUE = 200
CARD_ALTERNATIVES = 3  # top-k buttons on a card; the visit page shows them all
SCORE_ROUND = 2


# --- templates ----------------------------------------------------------------------------


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, q=_q, duration=_duration, hhmm=_hhmm)
    return env


def _pct(score: float | None) -> str:
    return "–" if score is None else f"{round(score * 100)}%"


def _q(text: str) -> str:
    """A path segment: species names have spaces and may have slashes."""
    return quote(text, safe="")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _hhmm(seconds: float | None) -> str:
    """A day's hours in a table cell: 14h05."""
    if seconds is None:
        return "–"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h}h{m:02d}"


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    deps = request.app.state.deps
    tz = deps.tz

    def hm(ts: float | None) -> str:
        return "–" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%H:%M")

    def when(ts: float | None) -> str:
        return "–" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%a %d %b %H:%M")

    def day_of(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).date().isoformat()

    env: jinja2.Environment = request.app.state.templates
    ident = request.state.identity
    base = {
        "root": request.state.root,
        "csrf": request.state.csrf,
        "ident": ident,
        "can_write": ident.is_owner and deps.reviewer is not None,
        "auth_mode": deps.cfg.auth.mode,
        "hm": hm,
        "when": when,
        "day_of": day_of,
        "here": _here(request),
        "nav": "",
    }
    html = env.get_template(name).render({**base, **ctx})
    return HTMLResponse(html, status, headers={"Cache-Control": "no-store"})


def _here(request: Request) -> str:
    """This page's URL relative to the root: where a form goes back to."""
    path = request.url.path
    root_path = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    query = request.url.query
    return path.lstrip("/") + (f"?{query}" if query else "")


def _safe_next(value: str | None) -> str:
    """A root-relative target from a form: never absolute, never another host."""
    if not value or len(value) > 2000:
        return ""
    bad = value.startswith(("/", "\\")) or "://" in value or "\\" in value or ":" in value.split(
        "?")[0] or any(ord(c) < 32 for c in value)
    return "" if bad else value


def _redirect(request: Request, target: str) -> RedirectResponse:
    """303 to a root-relative target, as a relative Location (proxy prefixes kept)."""
    return RedirectResponse(request.state.root + _safe_next(target), status_code=303)


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# --- parsing query strings -----------------------------------------------------------------


def _param(request: Request, name: str) -> str | None:
    v = request.query_params.get(name)
    if v is None or v.strip() == "":
        return None
    if len(v) > MAX_QUERY_VALUE:
        raise HTTPException(400, f"{name}: too long")
    return v.strip()


def _date(text: str | None, name: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: not a date (YYYY-MM-DD)") from None


def _score(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise HTTPException(400, f"{name}: not a number") from None
    if v > 1:
        v /= 100  # "80" means 80 %
    if not 0 <= v <= 1:
        raise HTTPException(400, f"{name}: between 0 and 1 (or 0 and 100 %)")
    return v


def visit_filter(request: Request) -> VisitFilter:
    """The visits list's filter from the query string (the JSON API reads the same names)."""
    status = _param(request, "status")
    if status is not None and status not in STATUS_FILTERS:
        raise HTTPException(400, f"status: one of {', '.join(STATUS_FILTERS)}")
    day = _date(_param(request, "date"), "date")
    tier = _param(request, "unknown")
    if tier not in (None, "yes", "no"):
        raise HTTPException(400, "unknown: yes or no")
    return VisitFilter(
        camera=_param(request, "camera"),
        species=_param(request, "species"),
        date_from=day or _date(_param(request, "from"), "from"),
        date_to=day or _date(_param(request, "to"), "to"),
        min_score=_score(_param(request, "min_score"), "min_score"),
        max_score=_score(_param(request, "max_score"), "max_score"),
        status=status,
        unknown=None if tier is None else tier == "yes",
    )


def _filter_query(f: VisitFilter) -> dict[str, str]:
    """A filter as query parameters again (paging links, exports, bulk "all matching")."""
    q: dict[str, str] = {}
    if f.camera:
        q["camera"] = f.camera
    if f.species:
        q["species"] = f.species
    if f.date_from and f.date_from == f.date_to:
        q["date"] = f.date_from.isoformat()
    else:
        if f.date_from:
            q["from"] = f.date_from.isoformat()
        if f.date_to:
            q["to"] = f.date_to.isoformat()
    if f.min_score is not None:
        q["min_score"] = f"{f.min_score:g}"
    if f.max_score is not None:
        q["max_score"] = f"{f.max_score:g}"
    if f.status:
        q["status"] = f.status
    if f.unknown is not None:
        q["unknown"] = "yes" if f.unknown else "no"
    return q


def _today(request: Request) -> date:
    return datetime.now(request.app.state.deps.tz).date()


def _visit_or_404(request: Request, visit_id: str) -> Visit:
    if len(visit_id) > 64:
        raise HTTPException(404, "no such visit")
    v = request.app.state.deps.reader.visit(visit_id)
    if v is None:
        raise HTTPException(404, "no such visit")
    return v


# --- pages ----------------------------------------------------------------------------------


def day_page(request: Request) -> Response:
    """`/` (today) and `/day/<YYYY-MM-DD>`; `/day?date=` from the date picker redirects."""
    deps = request.app.state.deps
    text = request.path_params.get("day") or _param(request, "date")
    day = _date(text, "date") or _today(request)
    if "day" not in request.path_params and text is not None:
        return _redirect(request, f"day/{day.isoformat()}")
    grid = deps.reader.day(day, list(deps.cameras))
    hours = _hour_span(grid)
    summary = _summary(deps.state_dir, grid.summary_json)
    peak = max((c for s in grid.species for c in s.hourly), default=0)
    today = _today(request)
    return render(request, "day.html", nav="day", title=_day_title(day, today), grid=grid,
                  hours=hours, peak=peak, summary=summary, today=today,
                  prev_day=day - timedelta(days=1), next_day=day + timedelta(days=1),
                  has_mosaic=grid.summary_image is not None)


def _day_title(day: date, today: date) -> str:
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    return day.strftime("%A %d %B %Y")


def _hour_span(grid: Any) -> list[int]:
    """The hours worth a column: from the first to the last hour with visits or with a
    camera watching (so a phone shows daylight, not 24 empty columns)."""
    used = [h for h in range(24)
            if grid.hourly[h] or any(c.hours[h] not in ("unknown", "paused")
                                     for c in grid.cameras)]
    if not used:
        return list(range(6, 20))
    return list(range(min(used), max(used) + 1))


def _summary(state_dir: Path, rel: str | None) -> Any:
    """The night's summary (camera uptime table, new species), when it was written."""
    path = safe_file(state_dir, rel)
    if path is None:
        return None
    from camtrap.reports.build import summary_from_dict

    try:
        return summary_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("web: cannot read the summary %s", path)
        return None


def visits_page(request: Request) -> Response:
    deps = request.app.state.deps
    f = visit_filter(request)
    before = _param(request, "before")
    try:
        page = deps.reader.visits(f, before=before)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    query = _filter_query(f)
    more = None if page.next is None else "visits?" + urlencode({**query, "before": page.next})
    ctx = {"visits": page.visits, "more": more, "f": f, "query": query,
           "first_page": before is None}
    if _is_htmx(request) and request.query_params.get("partial") == "1":
        return render(request, "_more.html", **ctx)
    return render(request, "visits.html", nav="visits", title="Visits",
                  cameras=sorted(set(deps.reader.cameras()) | set(deps.cameras)),
                  species=deps.reader.species_list(), statuses=STATUS_FILTERS,
                  export_query=urlencode(query), **ctx)


def visit_page(request: Request) -> Response:
    deps = request.app.state.deps
    v = _visit_or_404(request, request.path_params["visit_id"])
    near = deps.reader.neighbours(v.visit_id)
    return render(request, "visit.html", nav="visits", title=v.species, v=v, near=near,
                  history=deps.reader.history(v.visit_id), labels=deps.labels,
                  frame=_frame_box(v))


def _frame_box(v: Visit) -> dict[str, float] | None:
    """The box as fractions of the frame, for the overlay on the context frame; None
    when the frame size is not known."""
    size = getattr(v, "frame_size", None)
    if v.box is None or not size or not v.context_file:
        return None
    w, h = size
    x, y, bw, bh = v.box  # frame pixels, as in events
    return {"x": x / w * 100, "y": y / h * 100, "w": bw / w * 100, "h": bh / h * 100,
            "ratio": w / h}


def review_page(request: Request) -> Response:
    nr = request.app.state.deps.reader.needs_review()
    groups = [("Unknown birds", "The model was unsure which species", nr.unknown),
              ("Low scores", "Named, but with little confidence", nr.low_score),
              ("First ever", "A species never seen here before: worth a second look",
               nr.first_ever),
              ("First this year", "Back for the first time this year", nr.first_this_year)]
    return render(request, "review.html", nav="review", title="Needs review", groups=groups,
                  total=nr.total_unreviewed, labels=request.app.state.deps.labels)


def species_list_page(request: Request) -> Response:
    rows = request.app.state.deps.reader.species_list()
    return render(request, "species_list.html", nav="species", title="Species", rows=rows)


def species_page(request: Request) -> Response:
    name = request.path_params["name"]
    if len(name) > MAX_QUERY_VALUE:
        raise HTTPException(404, "no such species")
    st = request.app.state.deps.reader.species(name)
    if st.visits == 0 and st.first_ever_ts is None:
        raise HTTPException(404, "no visits of this species")
    day_peak = max((n for _, n in st.by_day), default=0)
    hour_peak = max(st.by_hour, default=0)
    return render(request, "species.html", nav="species", title=name, st=st,
                  day_peak=day_peak, hour_peak=hour_peak,
                  reviewed=st.confirmed + st.corrected_away + st.rejected)


def similar_page(request: Request) -> Response:
    deps = request.app.state.deps
    v = _visit_or_404(request, request.path_params["visit_id"])
    found = deps.reader.similar(v.visit_id)
    return render(request, "similar.html", nav="visits", title=f"Like {v.species}", v=v,
                  found=found, labels=deps.labels)


def cameras_page(request: Request) -> Response:
    deps = request.app.state.deps
    snap = deps.snapshot() if deps.snapshot is not None else None
    names = sorted(set(deps.cameras) | (set(snap.cameras) if snap else set()))
    cams = [(n, snap.cameras.get(n) if snap else None) for n in names]
    return render(request, "cameras.html", nav="cameras", title="Cameras", cams=cams,
                  snap=snap, live=deps.frames is not None)


def exports_page(request: Request) -> Response:
    f = visit_filter(request)
    return render(request, "exports.html", nav="exports", title="Exports",
                  query=urlencode(_filter_query(f)), f=f)


# --- review actions ------------------------------------------------------------------------


def _form_action(form: FormData) -> tuple[str, str | None]:
    """A button says `action=<verb>`, or `species=<name>` for a one-tap correction."""
    action = str(form.get("action") or "")
    species = str(form.get("species") or "").strip() or None
    if not action and species:
        action = "correct"
    return action, species


async def review_action(request: Request) -> Response:
    """POST from a card or the visit page: apply, then the new card (htmx) or a redirect."""
    deps = request.app.state.deps
    if deps.reviewer is None:
        raise HTTPException(503, "reviews are not available in this process")
    visit_id = request.path_params["visit_id"]
    form = await request.form()
    action, species = _form_action(form)
    user = request.state.identity.user or "owner"
    from camtrap.visits.reviews import ReviewError

    try:
        v = await run_in_threadpool(deps.reviewer.review, visit_id, action, species, user)
    except KeyError:
        raise HTTPException(404, "no such visit") from None
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from None
    if _is_htmx(request) and form.get("view") == "card":
        return render(request, "_card_only.html", v=v, flash=_said(action, v))
    return _redirect(request, str(form.get("next") or f"visits/{v.visit_id}"))


def _said(action: str, v: Visit) -> str:
    return {"confirm": "Confirmed", "correct": f"Now {v.species}", "reject": "Not a bird",
            "delete": "Deleted", "restore": "Restored", "keep": "Kept",
            "unkeep": "No longer kept"}.get(action, "Done")


async def bulk_action(request: Request) -> Response:
    """POST from the bulk bar: the ticked visits, or every visit of the filter (capped)."""
    deps = request.app.state.deps
    if deps.reviewer is None:
        raise HTTPException(503, "reviews are not available in this process")
    form = await request.form()
    action, species = _form_action(form)
    ids = [str(x) for x in form.getlist("visit_id")][:500]
    if form.get("all") == "1":
        q = {k: str(form.get(k)) for k in ("camera", "species_filter", "date", "from", "to",
                                           "min_score", "max_score", "status", "unknown")
             if form.get(k)}
        if "species_filter" in q:
            q["species"] = q.pop("species_filter")
        scope = {**request.scope, "query_string": urlencode(q).encode()}
        ids = deps.reader.visit_ids(visit_filter(Request(scope)))
    if not ids:
        return _redirect(request, str(form.get("next") or "visits"))
    from camtrap.visits.reviews import ReviewError

    user = request.state.identity.user or "owner"
    try:
        await run_in_threadpool(deps.reviewer.bulk, ids, action, species, user)
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from None
    return _redirect(request, str(form.get("next") or "visits"))


# --- login --------------------------------------------------------------------------------


def login_page(request: Request) -> Response:
    if request.app.state.deps.cfg.auth.mode != "password":
        return _redirect(request, "")
    return render(request, "login.html", title="Log in", error=None,
                  next=_safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    deps = request.app.state.deps
    auth = request.state.auth
    if deps.cfg.auth.mode != "password":
        return _redirect(request, "")
    client = (request.client.host if request.client else "") or "?"
    form = await request.form()
    target = _safe_next(str(form.get("next") or ""))
    if auth.throttle.blocked(client):
        return render(request, "login.html", 429, title="Log in", next=target,
                      error="Too many attempts: wait a few minutes.")
    role = await run_in_threadpool(auth.check_password, str(form.get("password") or "")[:1024])
    if role is None:
        auth.throttle.failed(client)
        return render(request, "login.html", 401, title="Log in", next=target,
                      error="Wrong password.")
    request.state.set_session = auth.new_session(role)
    log.info("web: %s logged in from %s", role, client)
    return _redirect(request, target)


def logout(request: Request) -> Response:
    request.state.set_session = request.state.auth.new_session()
    return _redirect(request, "login" if request.app.state.deps.cfg.auth.mode == "password"
                     else "")


# --- images ---------------------------------------------------------------------------------


def _image(path: Path | None, ended: bool) -> Response:
    if path is None:
        raise HTTPException(404, "no image")
    return FileResponse(path, media_type="image/jpeg",
                        headers={"Cache-Control": cache_control(ended)})


def crop_image(request: Request) -> Response:
    v = _visit_or_404(request, request.path_params["visit_id"])
    thumbs: Thumbnails = request.app.state.thumbs
    return _image(thumbs.image(v.crop_file), v.ended)


def thumb_image(request: Request) -> Response:
    v = _visit_or_404(request, request.path_params["visit_id"])
    thumbs: Thumbnails = request.app.state.thumbs
    return _image(thumbs.thumb(v.crop_file), v.ended)


def context_image(request: Request) -> Response:
    v = _visit_or_404(request, request.path_params["visit_id"])
    thumbs: Thumbnails = request.app.state.thumbs
    return _image(thumbs.image(v.context_file), v.ended)


def summary_image(request: Request) -> Response:
    day = _date(request.path_params["day"], "day")
    deps = request.app.state.deps
    path = safe_file(Path(deps.state_dir) / "summaries", f"{day}.jpg")
    if path is None:
        raise HTTPException(404, "no mosaic for this day")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": NO_STORE})


async def live_view(request: Request) -> Response:
    """MJPEG of a camera's latest frame at a low rate (owner only: `auth.required_role`).
    The loop ends when the client goes or the server stops."""
    deps = request.app.state.deps
    name = request.path_params["camera"]
    if deps.frames is None or name not in set(deps.cameras):
        raise HTTPException(404, "no live view for this camera")
    boundary = "frame"

    async def frames() -> AsyncIterator[bytes]:
        last: bytes | None = None
        while not deps.stopping.is_set() and not await request.is_disconnected():
            jpeg = await run_in_threadpool(deps.frames, name)
            if jpeg and jpeg is not last:
                last = jpeg
                yield (f"--{boundary}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
            await asyncio.sleep(1 / LIVE_FPS)

    return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={boundary}",
                             headers={"Cache-Control": NO_STORE})


# --- errors -----------------------------------------------------------------------------------


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    wants_json = "/api/" in path or "text/html" not in request.headers.get("accept", "")
    if wants_json or getattr(request.state, "identity", None) is None:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
    return render(request, "error.html", exc.status_code, title=f"{exc.status_code}",
                  message=exc.detail)


def exception_handlers() -> Mapping[Any, Any]:
    return {HTTPException: http_error}


def routes() -> list[Route]:
    """Every page route; `auth.required_role` guards them all (POST: owner)."""
    return [
        Route("/", day_page, methods=["GET"]),
        Route("/day", day_page, methods=["GET"]),
        Route("/day/{day}", day_page, methods=["GET"]),
        Route("/visits", visits_page, methods=["GET"]),
        Route("/visits/bulk", bulk_action, methods=["POST"]),
        Route("/visits/{visit_id}", visit_page, methods=["GET"]),
        Route("/visits/{visit_id}/review", review_action, methods=["POST"]),
        Route("/visits/{visit_id}/similar", similar_page, methods=["GET"]),
        Route("/review", review_page, methods=["GET"]),
        Route("/species", species_list_page, methods=["GET"]),
        Route("/species/{name:path}", species_page, methods=["GET"]),
        Route("/cameras", cameras_page, methods=["GET"]),
        Route("/cameras/{camera}/live", live_view, methods=["GET"]),
        Route("/exports", exports_page, methods=["GET"]),
        Route("/media/crop/{visit_id}", crop_image, methods=["GET"]),
        Route("/media/thumb/{visit_id}", thumb_image, methods=["GET"]),
        Route("/media/context/{visit_id}", context_image, methods=["GET"]),
        Route("/media/summary/{day}", summary_image, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
