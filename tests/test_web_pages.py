"""The web interface through Starlette's TestClient: every route x role, escaping, path
traversal, malformed and oversized requests, CSRF, caching of images, the base path, and
the server thread's stop. `make_site` is shared with test_browser.py."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from PIL import Image, ImageDraw
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from camtrap.comms.payloads import Topics
from camtrap.config.base import ConfigError
from camtrap.config.loader import parse_config
from camtrap.config.web import WebAuthConfig, WebConfig
from camtrap.status import CameraSnapshot, InferenceSnapshot, StatusSnapshot, StorageSnapshot
from camtrap.storage.store import Store
from camtrap.visits.tracker import VisitEvent
from camtrap.web import auth as webauth
from camtrap.web.app import WebDeps, WebServer, create_app
from camtrap.web.metrics import Metrics
from camtrap.web.queries import Reader
from camtrap.web.reviewer import Reviewer

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TZ = ZoneInfo("Asia/Jerusalem")
EVIL_SPECIES = '<script>alert("sp")</script> & Co'
EVIL_CAMERA = '<img src=x onerror=alert(1)>'
OWNER_PW = "owner-password-1"
VIEWER_PW = "viewer-password-1"
TOKEN = "t0ken-for-scripts-0123456789"
LABELS = ["Eurasian Hoopoe", "Great Tit", "House Sparrow", "Palestine Sunbird",
          "Spanish Sparrow", "White Wagtail", EVIL_SPECIES]
COLORS = {"Great Tit": (60, 140, 70), "Eurasian Hoopoe": (210, 120, 40),
          "House Sparrow": (170, 150, 60), "White Wagtail": (70, 90, 200),
          "Palestine Sunbird": (130, 40, 160), "Unknown bird": (120, 120, 120)}
HTML = {"accept": "text/html"}
# Cheap hashes: PBKDF2 at 600 000 rounds costs ~0.5 s a check on a busy CI core.
FAST_ROUNDS = 1000


def bird_jpeg(color: tuple[int, int, int], size: int = 240) -> bytes:
    """A small Pillow picture of a round bird on a pale background."""
    img = Image.new("RGB", (size, size), tuple(min(255, c + 80) for c in color))
    d = ImageDraw.Draw(img)
    d.ellipse((size * 0.22, size * 0.32, size * 0.72, size * 0.82), fill=color)
    d.ellipse((size * 0.52, size * 0.2, size * 0.78, size * 0.46), fill=color)
    d.polygon([(size * 0.77, size * 0.3), (size * 0.9, size * 0.34), (size * 0.77, size * 0.37)],
              fill=(240, 180, 40))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88)
    return out.getvalue()


def frame_jpeg() -> bytes:
    img = Image.new("RGB", (640, 360), (96, 128, 92))
    ImageDraw.Draw(img).rectangle((0, 280, 640, 360), fill=(120, 100, 70))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return out.getvalue()


def record_visit(store: Store, camera: str, species: str, start: datetime, score: float = 0.9,
                 *, top: tuple[tuple[str, float], ...] | None = None, ended: bool = True,
                 embedding: np.ndarray | None = None, unknown: bool = False) -> VisitEvent:
    """One visit through Store.record, as the daemon writes it."""
    ts = start.timestamp()
    vid = hashlib.sha1(f"{camera}|{species}|{ts}".encode()).hexdigest()[:16]
    top = top or ((species, score), ("House Sparrow", round((1 - score) * 0.6, 3)),
                  ("White Wagtail", round((1 - score) * 0.3, 3)))
    ev = VisitEvent(
        kind="end" if ended else "update", visit_id=vid, camera=camera, species=species,
        unknown=unknown, score=score, hits=4, start_ts=ts, last_ts=ts + 25,
        end_ts=ts + 55 if ended else None, top_k=top, box=(480, 250, 800, 570),
        frame_size=(1280, 720), crop_jpeg=bird_jpeg(COLORS.get(species, (150, 60, 60))),
        embedding=embedding, context_jpeg=frame_jpeg(),
    )
    store.record(ev, [])
    return ev


def fake_snapshot(healthy: bool = True) -> StatusSnapshot:
    cam = {"state": "streaming", "connected": True, "stream_fps": 15.0, "processed_fps": 5.0}
    return StatusSnapshot(
        uptime_s=3600.0, healthy=healthy,
        cameras={"feeder": CameraSnapshot(cam, 1000, 1, 40, 0, True, None, False),
                 "ground": CameraSnapshot({**cam, "connected": False}, 10, 3, 0, 0, True,
                                          None, False)},
        inference=InferenceSnapshot("numpy test", True, 0.1, 10, 40, 0, 0, 0, {}, 0.04, 0.09,
                                    0.05),
        storage=StorageSnapshot(True, None, 0, 0, 0, 0, 0, 0),
        mqtt_connected=None, visits_open=0,
    )


def seed_uptime_and_summary(store: Store, start: datetime) -> None:
    """The visits' day: cameras paused before 05:00 (active hours), the ground camera down
    for an hour, and the night's summary files with their mosaic."""
    from camtrap.reports.build import load_summary
    from camtrap.reports.files import write_summary

    day = start.date()
    for cam, down in (("feeder", {15}), ("ground", {8, 14})):
        hours = [(h, 0.0, 0.0, 3600.0) if h < 5 or h > 19 else
                 (h, 0.0, 3600.0, 0.0) if h in down else (h, 3600.0, 3600.0, 0.0)
                 for h in range(24)]
        store.add_uptime(day.isoformat(), cam, sum(u for _, u, _, _ in hours),
                         sum(t for _, _, t, _ in hours), sum(p for _, _, _, p in hours), hours)
    summary = load_summary(store, day, TZ, ["feeder", "ground"])
    write_summary(summary, store.state_dir / "summaries", store.state_dir)


@dataclass
class Site:
    """A seeded state dir and the app over it."""

    state: Path
    store: Store
    reader: Reader
    app: Any
    deps: WebDeps
    visits: list[VisitEvent]
    open_visit: VisitEvent
    evil: VisitEvent
    frames: dict[str, bytes] = field(default_factory=dict)

    def review_row(self, visit_id: str) -> sqlite3.Row:
        db = Store.open_readonly(self.state)
        try:
            return db.execute("SELECT * FROM visits WHERE visit_id = ?", (visit_id,)).fetchone()
        finally:
            db.close()


def make_site(tmp: Path, web: WebConfig | None = None, *, base_hour: int = 6,
              topics: Topics | None = None) -> Site:
    """Today's and yesterday's visits at two cameras, one with markup in its names, one
    still open; embeddings so "similar" has something to show. With `topics` a review
    queues its MQTT messages in the outbox."""
    state = tmp / "state"
    store = Store(state, tz=TZ)
    now = datetime.now(TZ)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # visits before now (so "today" holds them), yesterday's when it is early morning
    start = day + timedelta(hours=base_hour) if now.hour >= base_hour + 3 else day - timedelta(
        hours=24 - base_hour)
    rng = np.random.default_rng(7)
    base = rng.normal(size=384).astype("float32")
    plan = [("feeder", "Great Tit", 0, 0.93), ("feeder", "Great Tit", 1, 0.81),
            ("ground", "Eurasian Hoopoe", 1, 0.97), ("feeder", "Palestine Sunbird", 2, 0.74),
            ("ground", "White Wagtail", 2, 0.66), ("feeder", "House Sparrow", 2, 0.85)]
    visits = []
    for i, (cam, sp, h, sc) in enumerate(plan):
        emb = base + rng.normal(scale=0.2 + i * 0.2, size=384).astype("float32")
        top = ((sp, sc), ("Great Tit" if sp != "Great Tit" else "Spanish Sparrow",
                          round((1 - sc) * 0.6, 3)), ("House Sparrow", round((1 - sc) * 0.3, 3)))
        visits.append(record_visit(store, cam, sp, start + timedelta(hours=h, minutes=7 * i), sc,
                                   top=top, embedding=emb))
    evil = record_visit(store, EVIL_CAMERA, EVIL_SPECIES, start + timedelta(minutes=30), 0.55,
                        top=((EVIL_SPECIES, 0.55), (EVIL_SPECIES + "2", 0.2)))
    open_visit = record_visit(store, "feeder", "Great Tit", start + timedelta(hours=2, minutes=50),
                              0.7, ended=False, embedding=base)
    for i in range(3):
        record_visit(store, "feeder", "House Sparrow", start - timedelta(days=1, hours=-i))
    seed_uptime_and_summary(store, start)
    reader = Reader(state, TZ)
    reviewer = Reviewer(store, reader, TZ, cameras=["feeder", "ground"], background=False,
                        topics=topics, node="test")
    frames = {"feeder": frame_jpeg()}
    metrics = Metrics(fake_snapshot)
    deps = WebDeps(cfg=web or WebConfig(enabled=True), state_dir=state, tz=TZ, reader=reader,
                   reviewer=reviewer, snapshot=fake_snapshot, metrics=metrics, labels=LABELS,
                   cameras=["feeder", "ground"], frames=frames.get)
    return Site(state, store, reader, create_app(deps), deps, visits, open_visit, evil, frames)


def password_auth(**extra: Any) -> WebConfig:
    return WebConfig(enabled=True, auth=WebAuthConfig(
        mode="password", owner_password_hash=webauth.hash_password(OWNER_PW, FAST_ROUNDS),
        viewer_password_hash=webauth.hash_password(VIEWER_PW, FAST_ROUNDS), api_token=TOKEN,
        **extra))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path)
    yield s
    s.reader.close()
    s.store.close()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path, password_auth())
    yield s
    s.reader.close()
    s.store.close()


def csrf_of(client: TestClient, page: str = "visits") -> str:
    html = client.get(page, headers=HTML).text
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client: TestClient, password: str) -> None:
    token = csrf_of(client, "login")
    r = client.post("login", data={"password": password, "csrf": token, "next": ""},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


# --- every route x role --------------------------------------------------------------------


def concrete(path: str, site: Site) -> str:
    vid = site.visits[0].visit_id
    day = datetime.fromtimestamp(site.visits[0].start_ts, TZ).date().isoformat()
    return (path.replace("{visit_id}", vid).replace("{day}", day)
            .replace("{name:path}", "Great%20Tit").replace("{camera}", "feeder")
            .replace("{visit_id:str}", vid))


def app_routes(site: Site) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app (static files as one)."""
    out = []
    for r in site.app.routes:
        if isinstance(r, Mount):
            out.append(("GET", r.path + "/camtrap.css"))
        elif isinstance(r, Route):
            out += [(m, r.path) for m in sorted(r.methods or ()) if m != "HEAD"]
    return out


def test_every_route_for_every_role(locked: Site) -> None:
    """With auth on: anonymous gets only the login page and static files, a viewer reads
    everything but the live view and may write nothing, the owner and the API token may
    do everything. Walks the app's own route table, so a new route cannot be forgotten."""
    routes = app_routes(locked)
    assert ("GET", "/visits/{visit_id}") in routes
    assert ("POST", "/visits/{visit_id}/review") in routes
    assert any(p.startswith("/api/v1") for _, p in routes)
    anon = TestClient(locked.app)
    viewer = TestClient(locked.app)
    login(viewer, VIEWER_PW)
    owner = TestClient(locked.app)
    login(owner, OWNER_PW)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    for method, template in routes:
        path = concrete(template, locked)
        need = webauth.required_role(method, path)
        if method == "GET":
            if path.endswith("/live"):  # a stream: only the answer's status
                for who, client in (("anon", anon), ("viewer", viewer)):
                    r = client.get(path, headers=HTML, follow_redirects=False)
                    assert r.status_code in (303, 401, 403), (who, path, r.status_code)
                continue
            r = anon.get(path, headers=HTML, follow_redirects=False)
            if need is None:
                assert r.status_code < 400, (path, r.status_code)
            else:
                assert r.status_code in (303, 401), (path, r.status_code)
                assert anon.get(path, headers={"accept": "application/json"}).status_code == 401
            for client, extra in ((viewer, {}), (owner, {}), (anon, bearer)):
                r = client.get(path, headers={**HTML, **extra})
                assert r.status_code in (200, 404, 503), (path, r.status_code)  # 404: no mosaic
        else:
            body = {"action": "confirm"}
            r = anon.post(path, json=body, follow_redirects=False)
            assert r.status_code == 401 if need else r.status_code < 500, (path, r.status_code)
            if need == webauth.OWNER:
                r = viewer.post(path, json=body, follow_redirects=False)
                assert r.status_code == 403, (path, r.status_code)
                r = owner.post(path, json=body, follow_redirects=False)
                assert r.status_code not in (401, 403), (path, r.status_code)
                r = anon.post(path, json=body, headers=bearer, follow_redirects=False)
                assert r.status_code not in (401, 403), (path, r.status_code)
    assert anon.get("api/v1/visits", headers={"authorization": "Bearer wrong"}).status_code == 401


def test_loopback_without_auth_needs_no_login(site: Site) -> None:
    """The default: on 127.0.0.1 with auth off every page and the API just work, a script's
    JSON review included (no CSRF token: a JSON body cannot come cross-origin)."""
    c = TestClient(site.app)
    for template in ("/", "/visits", "/visits/{visit_id}", "/review", "/species",
                     "/species/{name:path}", "/visits/{visit_id}/similar", "/cameras",
                     "/exports", "/api/v1/visits", "/healthz", "/metrics"):
        r = c.get(concrete(template, site), headers=HTML)
        assert r.status_code == 200, (template, r.status_code, r.text[:300])
    vid = site.visits[1].visit_id
    r = c.post(f"api/v1/visits/{vid}/review", json={"action": "correct",
                                                   "species": "Spanish Sparrow"})
    assert r.status_code == 200, r.text
    assert r.json()["review"]["species"] == "Spanish Sparrow"
    assert site.review_row(vid)["reviewed_species"] == "Spanish Sparrow"
    assert "Log in" not in c.get("/", headers=HTML).text


# --- escaping, traversal, malformed input, CSRF ----------------------------------------------


def test_markup_in_camera_and_species_names_is_escaped(site: Site) -> None:
    c = TestClient(site.app)
    vid = site.evil.visit_id
    day = datetime.fromtimestamp(site.evil.start_ts, TZ).date().isoformat()
    pages = ["/", f"/day/{day}", "visits", f"visits/{vid}", "review", "species",
             "species/" + EVIL_SPECIES.replace("/", "%2F"), f"visits/{vid}/similar",
             f"visits?species={EVIL_SPECIES}", f"visits?camera={EVIL_CAMERA}"]
    for page in pages:
        html = c.get(page, headers=HTML).text
        assert "<script>alert" not in html and "<img src=x" not in html, page
    visit_html = c.get(f"visits/{vid}", headers=HTML).text
    assert "&lt;script&gt;alert(" in visit_html and "&lt;img src=x onerror" in visit_html
    r = c.post(f"visits/{vid}/review", headers={"hx-request": "true"},
               data={"species": EVIL_SPECIES + "2", "view": "card", "csrf": csrf_of(c)})
    assert r.status_code == 200 and "<script>alert" not in r.text and "&lt;script&gt;" in r.text


def test_path_traversal_on_images_and_files(site: Site) -> None:
    c = TestClient(site.app)
    secret = site.state.parent / "secret.jpg"
    secret.write_bytes(bird_jpeg((1, 2, 3)))
    vid = site.visits[2].visit_id
    db = sqlite3.connect(site.state / "camtrap.sqlite3")
    db.execute("UPDATE visits SET crop_file = 'crops/../../secret.jpg', context_file ="
               " '/etc/passwd' WHERE visit_id = ?", (vid,))
    db.commit()
    db.close()
    link = site.state / "crops" / "link.jpg"
    link.symlink_to(secret)
    for path in (f"media/crop/{vid}", f"media/thumb/{vid}", f"media/context/{vid}",
                 "media/crop/..%2F..%2Fsecret.jpg", "media/crop/../../secret.jpg",
                 "media/thumb/%2e%2e%2fcamtrap.sqlite3", "media/summary/..%2Fcamtrap",
                 "media/summary/2024-01-01", "static/../camtrap.sqlite3",
                 "static/%2e%2e/%2e%2e/state/camtrap.sqlite3", "static/..%2F..%2Fapp.py",
                 "api/v1/visits/..%2F..%2Fcamtrap.sqlite3"):
        r = c.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert r.content[:3] != b"\xff\xd8\xff" and b"SQLite" not in r.content, path
    from camtrap.web.thumbs import safe_file

    assert safe_file(site.state / "crops", "link.jpg") is None  # a symlink out of the root
    assert safe_file(site.state, "crops/../../secret.jpg") is None
    export = c.get("api/v1/export/visits.csv?camera=../../etc/passwd")
    assert export.status_code in (200, 400, 404) and b"root:" not in export.content


def test_oversized_and_malformed_requests(site: Site) -> None:
    c = TestClient(site.app)
    token = csrf_of(c)
    vid = site.visits[0].visit_id
    big = {"csrf": token, "action": "confirm", "note": "x" * 300_000}
    assert c.post(f"visits/{vid}/review", data=big).status_code == 413
    assert c.post(f"api/v1/visits/{vid}/review", content=b"{" + b" " * 300_000 + b"}",
                  headers={"content-type": "application/json"}).status_code == 413
    r = c.post(f"visits/{vid}/review", content=b"x",
               headers={"content-length": "nope", "x-csrf-token": token})
    assert r.status_code in (400, 413)
    bad = [("visits?before=zzz", 400), ("visits?from=2024-13-45", 400),
           ("visits?status=bogus", 400), ("visits?min_score=lots", 400),
           ("visits?min_score=150", 400), ("visits?species=" + "x" * 500, 400),
           ("day/not-a-day", 400), ("visits/" + "a" * 500, 404), ("visits/nope", 404),
           ("species/Nobody%20Bird", 404), ("nowhere", 404), ("visits?unknown=maybe", 400)]
    for path, code in bad:
        r = c.get(path, headers=HTML)
        assert r.status_code == code, (path, r.status_code)
        assert "Traceback" not in r.text
    form = {"csrf": token}
    assert c.post(f"visits/{vid}/review", data={**form, "action": "fly"}).status_code == 400
    assert c.post(f"visits/{vid}/review", data={**form, "action": "correct"}).status_code == 400
    assert c.post("visits/nope/review", data={**form, "action": "confirm"}).status_code == 404
    assert c.post(f"api/v1/visits/{vid}/review", content=b"{not json",
                  headers={"content-type": "application/json"}).status_code == 400
    c.cookies.set(webauth.COOKIE, "garbage.value")  # a forged session: just a fresh one
    assert c.get("visits", headers=HTML).status_code == 200


def test_csrf_rejects_cross_origin_and_tokenless_posts(locked: Site) -> None:
    c = TestClient(locked.app)
    login(c, OWNER_PW)
    token = csrf_of(c)
    vid = locked.visits[0].visit_id
    url = f"visits/{vid}/review"
    ok = {"csrf": token, "action": "confirm"}
    refused = [
        ({"origin": "https://evil.example"}, ok),
        ({"sec-fetch-site": "cross-site"}, ok),
        ({"sec-fetch-site": "same-site"}, ok),
        ({"origin": "null"}, ok),
        ({}, {"action": "confirm"}),
        ({}, {"action": "confirm", "csrf": "forged"}),
    ]
    for headers, data in refused:
        r = c.post(url, data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (headers, data, r.status_code)
    r = c.post(f"api/v1/visits/{vid}/review", json={"action": "confirm"},
               headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = c.post(f"api/v1/visits/{vid}/review", content=b'{"action": "confirm"}',
               headers={"content-type": "text/plain"})
    assert r.status_code == 403  # what a cross-origin form could send
    assert locked.review_row(vid)["status"] == "unreviewed"
    r = c.post(url, data=ok, headers={"origin": "http://testserver",
                                      "sec-fetch-site": "same-origin"}, follow_redirects=False)
    assert r.status_code == 303
    assert locked.review_row(vid)["status"] == "confirmed"


# --- reviews from the pages ---------------------------------------------------------------


def test_one_tap_correction_on_a_card_swaps_the_card(site: Site) -> None:
    c = TestClient(site.app)
    v = site.visits[3]  # Palestine Sunbird, second guess Great Tit
    r = c.post(f"visits/{v.visit_id}/review", headers={"hx-request": "true"},
               data={"species": "Great Tit", "view": "card", "csrf": csrf_of(c)})
    assert r.status_code == 200
    assert r.text.lstrip().startswith("<article") and f'id="v-{v.visit_id}"' in r.text
    assert "Great Tit" in r.text and "Corrected" in r.text
    row = site.review_row(v.visit_id)
    assert (row["status"], row["reviewed_species"]) == ("corrected", "Great Tit")
    api = c.get(f"api/v1/visits/{v.visit_id}").json()
    assert api["species"] == "Great Tit" and api["review"]["status"] == "corrected"
    page = c.get(f"visits/{v.visit_id}", headers=HTML).text
    assert "The model said Palestine Sunbird" in page and "correct" in page  # history
    # without JavaScript: a plain form post and a redirect back to where it came from
    r = c.post(f"visits/{v.visit_id}/review", follow_redirects=False,
               data={"action": "reject", "csrf": csrf_of(c), "next": "review"})
    assert r.status_code == 303 and r.headers["location"] == "../../review"
    assert site.review_row(v.visit_id)["status"] == "rejected"
    r = c.post(f"visits/{v.visit_id}/review", follow_redirects=False,
               data={"action": "confirm", "csrf": csrf_of(c), "next": "https://evil.example/"})
    assert r.headers["location"] == "../../"  # never off-site


def test_bulk_review_by_selection_and_by_filter(site: Site) -> None:
    c = TestClient(site.app)
    ids = [v.visit_id for v in site.visits[:2]]
    r = c.post("visits/bulk", follow_redirects=False,
               data={"visit_id": ids, "action": "confirm", "csrf": csrf_of(c), "next": "visits"})
    assert r.status_code == 303
    assert [site.review_row(i)["status"] for i in ids] == ["confirmed", "confirmed"]
    r = c.post("visits/bulk", follow_redirects=False,
               data={"all": "1", "species_filter": "House Sparrow", "action": "delete",
                     "csrf": csrf_of(c)})
    assert r.status_code == 303
    db = Store.open_readonly(site.state)
    deleted = db.execute("SELECT COUNT(*) FROM visits WHERE deleted_ts IS NOT NULL").fetchone()[0]
    db.close()
    assert deleted == 4  # today's sparrow and yesterday's three
    page = c.get("visits?species=House+Sparrow", headers=HTML).text
    assert "No visits match" in page
    assert "Restore" in c.get("visits?status=deleted", headers=HTML).text


# --- images, health, headers, base path ---------------------------------------------------


def test_thumbnails_are_small_made_once_and_cached_only_once_ended(site: Site) -> None:
    c = TestClient(site.app)
    ended, still_open = site.visits[0].visit_id, site.open_visit.visit_id
    r = c.get(f"media/thumb/{ended}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert len(r.content) < 12_000
    assert Image.open(io.BytesIO(r.content)).size[0] <= 200
    assert "immutable" in r.headers["cache-control"] and r.headers.get("etag")
    thumb = next((site.state / "thumbs").rglob(f"*{ended}.jpg"))
    made = thumb.stat().st_mtime_ns
    time.sleep(0.01)
    assert c.get(f"media/thumb/{ended}").status_code == 200
    assert thumb.stat().st_mtime_ns == made  # made once
    for kind in ("thumb", "crop", "context"):
        r = c.get(f"media/{kind}/{still_open}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", kind
    assert c.get(f"media/crop/{ended}").headers["cache-control"].endswith("immutable")


def test_healthz_and_metrics_answer_as_the_health_server_does(site: Site) -> None:
    c = TestClient(site.app)
    r = c.get("healthz")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["healthy"] is True and set(body["cameras"]) == {"feeder", "ground"}
    assert {"schema", "time", "uptime_s", "queue", "inference", "outbox"} <= set(body)
    m = c.get("metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'camtrap_camera_connected{camera="feeder"} 1.0' in m.text
    site.deps.snapshot = lambda: fake_snapshot(healthy=False)
    assert c.get("healthz").status_code == 503


def test_security_headers_and_embedding(tmp_path: Path) -> None:
    s = make_site(tmp_path / "a")
    r = TestClient(s.app).get("/", headers=HTML)
    assert r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    e = make_site(tmp_path / "b", WebConfig(enabled=True,
                                            frame_ancestors=["https://ha.example:8123"]))
    r = TestClient(e.app).get("/", headers=HTML)
    assert "x-frame-options" not in r.headers
    assert "frame-ancestors 'self' https://ha.example:8123" in r.headers["content-security-policy"]


def test_base_path_and_relative_links(tmp_path: Path) -> None:
    s = make_site(tmp_path, WebConfig(enabled=True, base_path="/birds"))
    c = TestClient(s.app)
    vid = s.visits[0].visit_id
    for path in ("/birds/", "/birds/visits", f"/birds/visits/{vid}", "/visits"):  # stripped too
        r = c.get(path, headers=HTML)
        assert r.status_code == 200, path
        for url in re.findall(r'(?:href|src|action|hx-post|hx-get)="([^"]*)"', r.text):
            assert not url.startswith(("/", "http:", "https:")), (path, url)
    assert c.get("/birds/api/v1/visits").json()["visits"][0]["crop_url"].startswith("/birds/")
    anon = make_site(tmp_path / "p", WebConfig(enabled=True, base_path="/birds",
                                               auth=password_auth().auth))
    r = TestClient(anon.app).get(f"/birds/visits/{anon.visits[0].visit_id}", headers=HTML,
                                 follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("../login?next=visits%2F")
    cookie = TestClient(anon.app).get("/birds/login", headers=HTML).headers["set-cookie"]
    assert "Path=/birds" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


# --- auth: login, throttle, proxy, config -------------------------------------------------


def test_login_logout_and_throttle(locked: Site) -> None:
    c = TestClient(locked.app)
    token = csrf_of(c, "login")
    r = c.post("login", data={"password": "wrong", "csrf": token})
    assert r.status_code == 401 and "Wrong password" in r.text
    login(c, OWNER_PW)
    page = c.get("/", headers=HTML).text
    assert "Log out" in page
    r = c.post("logout", data={"csrf": csrf_of(c)}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("visits", headers=HTML, follow_redirects=False).status_code == 303
    t = TestClient(locked.app, client=("192.0.2.9", 1000))
    token = csrf_of(t, "login")
    for _ in range(webauth.LOGIN_FAILURES):
        t.post("login", data={"password": "guess", "csrf": token})
    r = t.post("login", data={"password": OWNER_PW, "csrf": token})
    assert r.status_code == 429  # even the right one, until the window passes
    signer = webauth.Signer(b"not-the-key-0123456789")
    t.cookies.set(webauth.COOKIE, signer.sign({"c": "x", "r": "owner", "u": "owner"}))
    assert t.get("visits", headers=HTML, follow_redirects=False).status_code == 303


def test_proxy_mode_trusts_only_listed_proxies(tmp_path: Path) -> None:
    cfg = WebConfig(enabled=True, host="0.0.0.0", auth=WebAuthConfig(
        mode="proxy", trusted_proxies=["10.0.0.0/8"], proxy_owners=["ana"]))
    s = make_site(tmp_path, cfg)
    via_proxy = TestClient(s.app, client=("10.1.2.3", 5555))
    other = TestClient(s.app, client=("192.0.2.7", 5555))
    assert via_proxy.get("visits", headers={**HTML, "remote-user": "ana"}).status_code == 200
    assert other.get("visits", headers={"remote-user": "ana"}).status_code == 401
    assert via_proxy.get("visits", headers={"accept": "application/json"}).status_code == 401
    vid = s.visits[0].visit_id
    body = {"action": "confirm"}
    assert via_proxy.post(f"api/v1/visits/{vid}/review", json=body,
                          headers={"remote-user": "ben"}).status_code == 403  # a viewer
    r = via_proxy.post(f"api/v1/visits/{vid}/review", json=body, headers={"remote-user": "ana"})
    assert r.status_code == 200 and r.json()["review"]["user"] == "ana"


def test_config_refuses_an_open_door(tmp_path: Path) -> None:
    base = "cameras:\n  - name: feeder\n    url: rtsp://cam.local/s\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(base + "web:\n  enabled: true\n  host: 0.0.0.0\n", env={})
    assert exc.value.problems[0].startswith("web.host: ")
    assert parse_config(base + "web:\n  enabled: true\n  host: 0.0.0.0\n"
                        "  allow_unauthenticated: true\n", env={}).web.host == "0.0.0.0"
    assert parse_config(base + "web:\n  enabled: true\n  host: ::1\n", env={}).web.enabled
    assert parse_config(base + "health:\n  enabled: true\n", env={}).health.enabled  # still
    with pytest.raises(ConfigError, match="owner_password"):
        parse_config(base + "web:\n  auth:\n    mode: password\n", env={})
    path = tmp_path / "c.yaml"
    path.write_text(base + "web:\n  enabled: true\n  host: 192.0.2.1\n")
    r = subprocess.run([sys.executable, "-m", "camtrap", "check", "--config", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "web.host" in r.stderr


def test_password_hash_and_secret_files(tmp_path: Path) -> None:
    encoded = webauth.hash_password("s3cret-pass", FAST_ROUNDS)
    assert webauth.verify_password("s3cret-pass", encoded)
    assert not webauth.verify_password("s3cret-pasS", encoded)
    assert not webauth.verify_password("x", "garbage")
    (tmp_path / "owner.hash").write_text(encoded + "\n")
    cfg = WebAuthConfig(mode="password", owner_password_file=tmp_path / "owner.hash")
    a = webauth.Auth(cfg, tmp_path)
    assert a.check_password("s3cret-pass") == webauth.OWNER
    assert (tmp_path / "web-secret").stat().st_mode & 0o077 == 0
    with pytest.raises(OSError, match=r"missing\.hash"):
        webauth.Auth(WebAuthConfig(mode="password", owner_password_file=tmp_path / "missing.hash"),
                     tmp_path)


# --- the server thread ----------------------------------------------------------------------


def test_server_stops_quickly_with_a_live_view_open(site: Site) -> None:
    server = WebServer(site.app, "127.0.0.1", 0)
    server.start()
    got = threading.Event()

    def watch() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(b"GET /cameras/feeder/live HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"image/jpeg" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            got.set()
            while sock.recv(65536):
                pass

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert got.wait(10), "no frame from the live view"
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    assert not server.thread.is_alive() and took < 5, took
    t.join(5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_port_in_use_fails_the_start(site: Site) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(OSError, match="cannot listen"):
            WebServer(site.app, "127.0.0.1", busy.getsockname()[1])


def test_the_box_on_the_context_frame_is_x_y_w_h_of_the_frame() -> None:
    from types import SimpleNamespace

    from camtrap.web.pages import _frame_box

    visit = SimpleNamespace(box=(160, 90, 320, 180), frame_size=(640, 360),
                            context_file="crops/x-context.jpg")
    assert _frame_box(visit) == {"x": 25.0, "y": 25.0, "w": 50.0, "h": 50.0, "ratio": 640 / 360}
