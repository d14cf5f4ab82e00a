"""Web interface server time with 100 000 visits: the reads (camtrap/web/queries.py) and the
JSON API handlers (camtrap/web/api.py) on a real SQLite file, p50/p95.

    python -m bench.web [--visits 100000] [--days 365] [--runs 60] [--state DIR] [--json]

Seeds a state directory the way the daemon fills it: `--visits` visits over `--days` days
on 3 cameras, 40 species plus the unknown tier, a best crop JPEG per visit (a few hundred
bytes, 48x48) in the crop day folders, a 384-d float32 embedding per visit (so rows are as
wide as the daemon's), about 15 % of them reviewed through the review path's SQL, hourly
camera uptime. The seed is written with bulk inserts (one transaction), so it takes seconds,
not the hours 100 000 `Store.record` calls would; its rows and indexes are the schema's.
An existing `--state` with a database is reused as it is.

Then, for each case, `--runs` timed calls after 3 warm-up calls (the page cache warm, as a
daemon that serves pages is): the Reader call alone, and the API handler through
Starlette's TestClient in-process (routing, the query, JSON; no network). Server time is
the handler's. Targets (issue 14): the visits page and a filtered page < 100 ms p95, the
day page < 150 ms p95. When the pages app (camtrap/web/app.py) can be built here, the HTML
pages are timed the same way.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from PIL import Image

from camtrap.storage.db import DB_FILE
from camtrap.storage.store import Store
from camtrap.timeutil import day_bounds, local_day
from camtrap.tools.benchmark import cpu_model
from camtrap.web.queries import Reader, VisitFilter

TZ = ZoneInfo("Asia/Jerusalem")
CAMERAS = ("feeder", "ground", "balcony")
UNKNOWN = "Unknown bird"


def species_names(n: int = 40) -> list[str]:
    return [f"Species {i:02d}" for i in range(n)]


def tiny_jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), rgb).save(buf, "JPEG", quality=70)
    return buf.getvalue()


def seed(state: Path, visits: int, days: int, today: date) -> None:
    """Fill `state` (see the module docstring)."""
    store = Store(state, tz=TZ)  # creates and migrates the schema
    store.close()
    rng = np.random.default_rng(7)
    names = species_names()
    weights = 1.0 / np.arange(1, len(names) + 1)  # a few common species, a long tail
    weights /= weights.sum()
    first_day = today - timedelta(days=days - 1)
    day_starts = np.array([day_bounds(first_day + timedelta(days=i), TZ)[0]
                           for i in range(days)])
    d_idx = rng.integers(0, days, visits)
    # birds in daylight: 05:30-19:30 local
    offs = rng.uniform(5.5 * 3600, 19.5 * 3600, visits)
    starts = np.sort(day_starts[d_idx] + offs)
    crops = {c: tiny_jpeg(tuple(int(x) for x in rng.integers(0, 255, 3))) for c in range(8)}
    db = sqlite3.connect(state / DB_FILE)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    rows = []
    reviews = []
    for i, ts in enumerate(starts):
        ts = float(ts)
        vid = f"{i:08x}{int(rng.integers(0, 2**31)):08x}"
        cam = CAMERAS[int(rng.integers(0, len(CAMERAS)))]
        unknown = rng.random() < 0.1
        sp = UNKNOWN if unknown else names[int(rng.choice(len(names), p=weights))]
        score = float(rng.uniform(0.2, 0.5)) if unknown else float(rng.uniform(0.35, 0.99))
        alt = names[int(rng.integers(0, len(names)))]
        top_k = [[sp, round(score, 4)], [alt, round((1 - score) / 2, 4)]]
        day = local_day(ts, TZ).isoformat()
        rel = f"crops/{day}/{cam}-{vid}.jpg"
        path = state / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(crops[i % len(crops)])
        emb = rng.normal(size=384).astype("<f4").tobytes()
        status, reviewed, rts = "unreviewed", None, None
        r = rng.random()
        if r < 0.10:
            status, rts = "confirmed", ts + 3600
        elif r < 0.14:
            status, reviewed, rts = "corrected", alt, ts + 3600
        elif r < 0.15:
            status, rts = "rejected", ts + 3600
        deleted = ts + 7200 if rng.random() < 0.01 else None
        dur = float(rng.uniform(5, 120))
        rows.append((vid, cam, sp, int(unknown), ts, ts + dur, ts + dur + 30, score,
                     int(rng.integers(2, 40)), json.dumps(top_k), json.dumps([10, 20, 120, 120]),
                     rel, emb, json.dumps([1920, 1080]), status, reviewed, deleted, rts,
                     "owner" if rts else None))
        if rts is not None:
            action = {"confirmed": "confirm", "corrected": "correct", "rejected": "reject"}[status]
            reviews.append((vid, rts, "owner", action, sp, reviewed or sp, sp))
    db.executemany(
        "INSERT INTO visits (visit_id, camera, species, unknown, start_ts, last_ts, end_ts,"
        " best_score, hits, top_k, box, crop_file, embedding, frame_size, status,"
        " reviewed_species, deleted_ts, review_ts, review_user)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.executemany(
        "INSERT INTO reviews (visit_id, ts, user, action, old_species, new_species,"
        " model_species) VALUES (?,?,?,?,?,?,?)",
        reviews,
    )
    for i in range(days):
        day = (first_day + timedelta(days=i)).isoformat()
        for cam in CAMERAS:
            hours = []
            for h in range(24):
                down = rng.random() < 0.03
                paused = h < 5 or h > 20
                hours.append((day, h, cam, 0.0 if down or paused else 3600.0,
                              0.0 if paused else 3600.0, 3600.0 if paused else 0.0))
            db.executemany(
                "INSERT INTO camera_uptime_hours (day, hour, camera, seconds_up,"
                " seconds_total, seconds_paused) VALUES (?,?,?,?,?,?)", hours)
            db.execute(
                "INSERT INTO camera_uptime (day, camera, seconds_up, seconds_total,"
                " seconds_paused) VALUES (?,?,?,?,?)",
                (day, cam, sum(x[3] for x in hours), sum(x[4] for x in hours),
                 sum(x[5] for x in hours)))
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()


def timed(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return {"p50_ms": round(statistics.median(ts), 2),
            "p95_ms": round(ts[min(len(ts) - 1, int(0.95 * len(ts)))], 2),
            "max_ms": round(ts[-1], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visits", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--state", type=Path, default=None, help="reuse or keep this state dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from camtrap.web import api

    today = local_day(time.time(), TZ)
    tmp = None
    state = args.state
    if state is None:
        tmp = Path(tempfile.mkdtemp(prefix="camtrap-bench-web-"))
        state = tmp / "state"
    seeded_s = None
    if not (state / DB_FILE).exists():
        t = time.perf_counter()
        seed(state, args.visits, args.days, today)
        seeded_s = round(time.perf_counter() - t, 1)
    try:
        reader = Reader(state, TZ)
        n = reader.count(VisitFilter(status="all"))
        common = reader.species_list()[0].species
        busy = max(
            (today - timedelta(days=i) for i in range(args.days)),
            key=lambda d: reader.count(VisitFilter(date_from=d, date_to=d)),
        )
        mid = reader.visits(VisitFilter(), limit=1,
                            before=None).visits[0]
        deep = reader.visits(VisitFilter(), limit=500).next
        for _ in range(40):  # about 20 000 visits back
            deep = reader.visits(VisitFilter(), limit=500, before=deep).next
        client = TestClient(Starlette(routes=api.routes(reader, None, cameras=list(CAMERAS))))

        def get(url: str, **params: str) -> Callable[[], Any]:
            def call() -> None:
                r = client.get(url, params=params)
                assert r.status_code == 200, (url, r.status_code, r.text[:200])
            return call

        cases: dict[str, Callable[[], Any]] = {
            "reader: visits, first page": lambda: reader.visits(VisitFilter()),
            "reader: visits, page ~20000 deep": lambda: reader.visits(VisitFilter(),
                                                                      before=deep),
            f"reader: species={common!r}": lambda: reader.visits(VisitFilter(species=common)),
            "reader: camera + unreviewed + min_score 0.8": lambda: reader.visits(
                VisitFilter(camera="ground", status="unreviewed", min_score=0.8)),
            "reader: unknown tier": lambda: reader.visits(VisitFilter(unknown=True)),
            "reader: a rare species (long tail)": lambda: reader.visits(
                VisitFilter(species="Species 39")),
            f"reader: day grid {busy}": lambda: reader.day(busy, CAMERAS),
            "api: GET /api/v1/visits": get("/api/v1/visits"),
            "api: GET /api/v1/visits?before=(deep)": get("/api/v1/visits", before=deep or ""),
            "api: GET /api/v1/visits?species=": get("/api/v1/visits", species=common),
            "api: GET /api/v1/visits?camera=&status=&min_score=": get(
                "/api/v1/visits", camera="ground", status="unreviewed", min_score="0.8"),
            "api: GET /api/v1/visits?date=": get("/api/v1/visits", date=busy.isoformat()),
            "api: GET /api/v1/day": get("/api/v1/day", date=busy.isoformat()),
            "api: GET /api/v1/visits/{id}": get(f"/api/v1/visits/{mid.visit_id}"),
            "api: GET /api/v1/needs-review": get("/api/v1/needs-review"),
            f"api: GET /api/v1/species/{common}": get(f"/api/v1/species/{common}"),
            "api: GET /api/v1/visits/{id}/similar": get(f"/api/v1/visits/{mid.visit_id}/similar"),
        }
        pages = _pages_client(state, reader)
        if pages is not None:
            def page(url: str, **params: str) -> Callable[[], Any]:
                def call() -> None:
                    r = pages.get(url, params=params)
                    assert r.status_code == 200, (url, r.status_code, r.text[:200])
                return call
            cases["page: GET /visits"] = page("/visits")
            cases["page: GET /visits?species=&camera="] = page("/visits", species=common,
                                                              camera="ground")
            cases[f"page: GET /day/{busy}"] = page(f"/day/{busy}")
        results = {}
        for name, fn in cases.items():
            results[name] = timed(fn, args.runs)
            if not args.json:
                r = results[name]
                print(f"{name:58s} p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms"
                      f"  max {r['max_ms']:8.2f} ms", flush=True)
        out = {
            "machine": cpu_model(),
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "visits": n,
            "days": args.days,
            "busy_day": busy.isoformat(),
            "busy_day_visits": reader.count(VisitFilter(date_from=busy, date_to=busy)),
            "seed_s": seeded_s,
            "db_mb": round((state / DB_FILE).stat().st_size / 1e6, 1),
            "results": results,
        }
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(json.dumps({k: v for k, v in out.items() if k != "results"}))
        reader.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _pages_client(state: Path, reader: Reader) -> Any:
    """The HTML pages app, when it can be built here (it is another engineer's module, and
    its constructor may change): None otherwise."""
    try:
        from starlette.testclient import TestClient

        from camtrap.config.web import WebConfig
        from camtrap.web.app import WebDeps, create_app

        deps = WebDeps(cfg=WebConfig(), state_dir=state, tz=TZ, reader=reader,
                       cameras=list(CAMERAS))
        return TestClient(create_app(deps))
    except Exception as exc:  # pragma: no cover - reported, not fatal
        print(f"(pages not timed: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
