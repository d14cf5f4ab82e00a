"""The JSON API (`/api/v1`) with Starlette's TestClient against a real SQLite file seeded
through `Store.record`: the contract's fields, filters and keyset paging, reviews (one and
bulk), the day grid with camera hours, species, needs-review, similar visits, exports, and
refusals (bad input, oversized bodies, no write rights)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from camtrap.comms.payloads import Topics
from camtrap.storage.store import Store
from camtrap.visits.tracker import VisitEvent
from camtrap.web import api
from camtrap.web.exports import EBIRD_COLUMNS, Site, split_name
from camtrap.web.queries import Cursor, Reader
from camtrap.web.reviewer import Reviewer
from tests.seed import add_visit, crop_jpeg

JLM = ZoneInfo("Asia/Jerusalem")
DAY = date(2026, 5, 14)
EVENT_FIELDS = {"visit_id", "camera", "species", "unknown", "score", "top_k", "hits",
                "start_time", "last_seen", "end_time"}


def at(h: int, m: int = 0, d: date = DAY) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, tzinfo=JLM)


class Site_:
    """A seeded state directory with its store, reader, reviewer and client."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.store = Store(state, tz=JLM)
        self.reader = Reader(state, JLM, low_score=0.5)
        self.reviewer = Reviewer(self.store, self.reader, JLM, topics=Topics("camtrap"),
                                 node="test", background=False)
        self.write = True

    def client(self, reviewer: bool = True, **kw: object) -> TestClient:
        routes = api.routes(self.reader, self.reviewer if reviewer else None,
                            can_write=lambda _r: self.write,
                            user_of=lambda _r: "owner", cameras=["feeder", "ground"],
                            **kw)  # type: ignore[arg-type]
        return TestClient(Starlette(routes=routes))

    def close(self) -> None:
        self.reader.close()
        self.store.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site_]:
    s = Site_(tmp_path / "state")
    yield s
    s.close()


@pytest.fixture
def client(site: Site_) -> TestClient:
    return site.client()


def seed_day(site: Site_) -> dict[str, VisitEvent]:
    s = site.store
    return {
        "tit1": add_visit(s, "feeder", "Great Tit", at(7, 5), score=0.91),
        "tit2": add_visit(s, "feeder", "Great Tit", at(7, 40), score=0.72),
        "tit3": add_visit(s, "ground", "Great Tit", at(9, 10), score=0.45),
        "hoopoe": add_visit(s, "ground", "Eurasian Hoopoe", at(8, 0), score=0.88),
        "unknown": add_visit(s, "feeder", "Unknown bird", at(10, 0), score=0.3, unknown=True),
        "yesterday": add_visit(s, "feeder", "White Wagtail", at(12, 0, date(2026, 5, 13))),
    }


# --- the visits list: fields, filters, keyset paging -------------------------------------------


def test_each_visit_carries_the_contract_fields(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    r = client.get("/api/v1/visits", params={"date": DAY.isoformat()})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"visits", "next"} and body["next"] is None
    first = body["visits"][0]  # newest first
    assert EVENT_FIELDS | {"review", "crop_url"} <= set(first)
    ev = evs["unknown"]
    assert first["visit_id"] == ev.visit_id
    assert (first["camera"], first["species"], first["unknown"], first["score"]) == (
        "feeder", "Unknown bird", True, 0.3)
    assert first["top_k"] == [{"species": "Unknown bird", "score": 0.3}]
    assert first["start_time"] == "2026-05-14T10:00:00.000+03:00"
    assert first["end_time"] == "2026-05-14T10:00:50.000+03:00"
    assert first["review"] is None
    assert first["crop_url"] == f"/media/crop/{ev.visit_id}"
    assert first["box"] == {"x": 10, "y": 20, "w": 240, "h": 240}
    assert first["frame"] == {"width": 640, "height": 360}
    assert [v["visit_id"] for v in body["visits"]] == [
        evs[k].visit_id for k in ("unknown", "tit3", "hoopoe", "tit2", "tit1")]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"camera": "ground"}, {"tit3", "hoopoe"}),
        ({"species": "Great Tit"}, {"tit1", "tit2", "tit3"}),
        ({"min_score": "0.8"}, {"tit1", "hoopoe", "yesterday"}),
        ({"max_score": "0.5"}, {"tit3", "unknown"}),
        ({"unknown": "true"}, {"unknown"}),
        ({"unknown": "false", "date": "2026-05-14", "camera": "feeder"}, {"tit1", "tit2"}),
        ({"from": "2026-05-13", "to": "2026-05-13"}, {"yesterday"}),
        ({"status": "unreviewed", "camera": "ground"}, {"tit3", "hoopoe"}),
    ],
)
def test_filters(site: Site_, client: TestClient, params: dict[str, str],
                 expected: set[str]) -> None:
    evs = seed_day(site)
    names = {v.visit_id: k for k, v in evs.items()}
    got = client.get("/api/v1/visits", params=params).json()["visits"]
    assert {names[v["visit_id"]] for v in got} == expected


def test_keyset_paging_walks_every_visit_once(site: Site_, client: TestClient) -> None:
    # 23 visits, three of them starting at the same second (the visit_id breaks the tie)
    ids = {add_visit(site.store, "feeder", "Great Tit", at(6, m)).visit_id for m in range(20)}
    for cam in ("a", "b", "c"):
        ids.add(add_visit(site.store, cam, "Great Tit", at(9)).visit_id)
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        params = {"limit": "5", **({"before": before} if before else {})}
        body = client.get("/api/v1/visits", params=params).json()
        seen += [v["visit_id"] for v in body["visits"]]
        pages += 1
        before = body["next"]
        if before is None:
            break
    assert pages == 5 and len(seen) == 23 and set(seen) == ids
    starts = [Cursor.decode(Cursor(0, x).encode()).visit_id for x in seen]
    assert starts == seen


@pytest.mark.parametrize(
    "params",
    [
        {"date": "14/05/2026"},
        {"before": "garbage"},
        {"limit": "0"},
        {"limit": "100000"},
        {"limit": "ten"},
        {"status": "approved"},
        {"min_score": "2"},
        {"unknown": "maybe"},
        {"camera": "x" * 500},
        {"date": "2026-05-14", "from": "2026-05-01"},
    ],
)
def test_bad_parameters_are_400_with_a_reason(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/api/v1/visits", params=params)
    assert r.status_code == 400 and r.json()["error"]


def test_markup_in_names_stays_data(site: Site_, client: TestClient) -> None:
    name = '<img src=x onerror="alert(1)">'
    ev = add_visit(site.store, "feeder", name, at(7))
    body = client.get("/api/v1/visits", params={"species": name}).json()
    assert body["visits"][0]["species"] == name
    r = client.get(f"/api/v1/visits/{ev.visit_id}")
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["species"] == name


# --- one visit, reviews --------------------------------------------------------------------------


def test_a_visit_with_its_history_and_neighbours(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    vid = evs["hoopoe"].visit_id
    client.post(f"/api/v1/visits/{vid}/review", json={"action": "confirm"})
    body = client.get(f"/api/v1/visits/{vid}").json()
    assert body["review"]["status"] == "confirmed" and body["review"]["user"] == "owner"
    assert [h["action"] for h in body["history"]] == ["confirm"]
    assert (body["previous"], body["next"]) == (evs["tit3"].visit_id, evs["tit2"].visit_id)
    assert client.get("/api/v1/visits/nope").status_code == 404
    assert client.get(f"/api/v1/visits/{vid}/reviews").json()["reviews"][0]["user"] == "owner"


def test_review_actions_return_the_visit_as_it_now_stands(
    site: Site_, client: TestClient
) -> None:
    evs = seed_day(site)
    vid = evs["tit2"].visit_id
    url = f"/api/v1/visits/{vid}/review"

    v = client.post(url, json={"action": "correct", "species": "Palestine Sunbird"}).json()
    assert (v["species"], v["model_species"], v["unknown"]) == (
        "Palestine Sunbird", "Great Tit", False)
    assert v["review"]["status"] == "corrected" and v["review"]["species"] == "Palestine Sunbird"
    listed = client.get("/api/v1/visits", params={"species": "Palestine Sunbird"}).json()
    assert [x["visit_id"] for x in listed["visits"]] == [vid]

    v = client.post(url, json={"action": "reject"}).json()
    assert v["review"]["status"] == "rejected" and v["species"] == "Great Tit"
    default = {x["visit_id"] for x in client.get("/api/v1/visits").json()["visits"]}
    assert vid not in default  # "not a bird" leaves the default list
    rejected = client.get("/api/v1/visits", params={"status": "rejected"}).json()["visits"]
    assert [x["visit_id"] for x in rejected] == [vid]

    v = client.post(url, json={"action": "delete"}).json()
    assert v["deleted"] and v["review"]["status"] == "deleted"
    trash = client.get("/api/v1/visits", params={"status": "deleted"}).json()["visits"]
    assert [x["visit_id"] for x in trash] == [vid]
    r = client.post(url, json={"action": "confirm"})
    assert r.status_code == 400 and "restore" in r.json()["error"]
    v = client.post(url, json={"action": "restore"}).json()
    assert not v["deleted"] and v["review"]["status"] == "rejected"
    v = client.post(url, json={"action": "keep"}).json()
    assert v["keep"] is True
    assert [x["visit_id"] for x in
            client.get("/api/v1/visits", params={"status": "kept"}).json()["visits"]] == [vid]
    # the unknown tier: a correction names a species
    u = client.post(f"/api/v1/visits/{evs['unknown'].visit_id}/review",
                    json={"action": "correct", "species": "House Sparrow"}).json()
    assert (u["species"], u["unknown"]) == ("House Sparrow", False)
    history = client.get(f"/api/v1/visits/{vid}").json()["history"]
    assert [h["action"] for h in history] == [
        "correct", "reject", "delete", "restore", "keep"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "object"),
        (b'{"action": "approve"}', 400, "action"),
        (b'{"action": "correct"}', 400, "species"),
        (b'{"action": "correct", "species": 5}', 400, "species"),
        (b'{"action": "confirm", "note": "' + b"x" * 70_000 + b'"}', 413, "at most"),
    ],
)
def test_malformed_and_oversized_reviews_are_refused(
    site: Site_, client: TestClient, body: bytes, status: int, message: str
) -> None:
    vid = seed_day(site)["tit1"].visit_id
    r = client.post(f"/api/v1/visits/{vid}/review", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]
    assert client.get(f"/api/v1/visits/{vid}").json()["review"] is None


def test_no_rights_no_review(site: Site_) -> None:
    vid = seed_day(site)["tit1"].visit_id
    site.write = False
    r = site.client().post(f"/api/v1/visits/{vid}/review", json={"action": "confirm"})
    assert r.status_code == 403
    r = site.client().post("/api/v1/reviews", json={"action": "confirm", "visit_ids": [vid]})
    assert r.status_code == 403
    site.write = True
    r = site.client(reviewer=False).post(f"/api/v1/visits/{vid}/review",
                                         json={"action": "confirm"})
    assert r.status_code == 503
    assert site.client(reviewer=False).get("/api/v1/visits").status_code == 200
    assert site.reader.visit(vid).review is None  # type: ignore[union-attr]


def test_bulk_by_ids_and_by_filter(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    r = client.post("/api/v1/reviews", json={
        "action": "confirm", "visit_ids": [evs["tit1"].visit_id, "nope"]})
    assert r.json() == {"reviewed": [evs["tit1"].visit_id], "failed": {"nope": "no such visit"}}
    r = client.post("/api/v1/reviews", json={
        "action": "correct", "species": "Eurasian Hoopoe",
        "filter": {"species": "Great Tit", "camera": "ground"}})
    assert r.json()["reviewed"] == [evs["tit3"].visit_id]
    r = client.post("/api/v1/reviews", json={"action": "delete",
                                             "filter": {"unknown": True}})
    assert r.json()["reviewed"] == [evs["unknown"].visit_id]
    hoopoes = client.get("/api/v1/visits", params={"species": "Eurasian Hoopoe"}).json()
    assert len(hoopoes["visits"]) == 2
    for bad in ({"action": "confirm"}, {"action": "confirm", "visit_ids": "x"},
                {"action": "confirm", "visit_ids": ["x"] * 501},
                {"action": "confirm", "visit_ids": [], "filter": {}},
                {"action": "confirm", "filter": {"status": "nope"}}):
        assert client.post("/api/v1/reviews", json=bad).status_code == 400, bad


# --- day, species, needs review, similar --------------------------------------------------------


def test_the_day_grid_with_camera_hours(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    day = DAY.isoformat()
    site.store.add_uptime(day, "feeder", 3600, 3600, 0, [(7, 3600, 3600, 0)])
    site.store.add_uptime(day, "ground", 0, 3600, 3600,
                          [(7, 0, 3600, 0), (22, 0, 0, 3600), (8, 1800, 3600, 0)])
    g = client.get("/api/v1/day", params={"date": day}).json()
    assert g["visits"] == 5 and g["species_count"] == 2
    tit = next(s for s in g["species"] if s["species"] == "Great Tit")
    assert tit["visits"] == 3 and tit["hourly"][7] == 2 and tit["hourly"][9] == 1
    assert tit["best_visit_id"] == evs["tit1"].visit_id and tit["best_score"] == 0.91
    assert tit["crop_url"] == f"/media/crop/{evs['tit1'].visit_id}"
    assert tit["first_seen"] == "2026-05-14T07:05:00.000+03:00"
    assert tit["new_ever"] and tit["first_this_year"]
    cams = {c["camera"]: c["hours"] for c in g["cameras"]}
    assert cams["feeder"][7] == "up" and cams["feeder"][8] == "unknown"
    assert (cams["ground"][7], cams["ground"][8], cams["ground"][22]) == (
        "down", "mixed", "paused")
    assert g["previous_day"] == "2026-05-13" and g["next_day"] is None
    # a correction moves the counts at once
    client.post(f"/api/v1/visits/{evs['tit3'].visit_id}/review",
                json={"action": "correct", "species": "Eurasian Hoopoe"})
    g = client.get("/api/v1/day", params={"date": day}).json()
    assert {s["species"]: s["visits"] for s in g["species"]} == {
        "Great Tit": 2, "Eurasian Hoopoe": 2, "Unknown bird": 1}


def test_species_page_data_with_what_reviews_say(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    post = client.post
    post(f"/api/v1/visits/{evs['tit1'].visit_id}/review", json={"action": "confirm"})
    post(f"/api/v1/visits/{evs['tit2'].visit_id}/review",
         json={"action": "correct", "species": "House Sparrow"})
    post(f"/api/v1/visits/{evs['tit3'].visit_id}/review", json={"action": "reject"})
    post(f"/api/v1/visits/{evs['hoopoe'].visit_id}/review",
         json={"action": "correct", "species": "Great Tit"})
    s = client.get("/api/v1/species/Great Tit").json()
    assert s["visits"] == 2  # tit1 and the corrected hoopoe
    assert s["reviews"] == {"confirmed": 1, "corrected": 1,
                            "corrected_to": {"House Sparrow": 1},
                            "corrected_from": {"Eurasian Hoopoe": 1}, "rejected": 1}
    assert s["by_camera"] == {"feeder": 1, "ground": 1}
    assert s["by_hour"][7] == 1 and s["by_hour"][8] == 1
    assert s["first_ever"] == "2026-05-14T07:05:00.000+03:00"
    assert [b["visit_id"] for b in s["best"]] == [evs["tit1"].visit_id,
                                                  evs["hoopoe"].visit_id]
    names = [x["species"] for x in client.get("/api/v1/species").json()["species"]]
    assert names[0] == "Great Tit" and "House Sparrow" in names
    assert client.get("/api/v1/species/..%2F..%2Fetc%2Fpasswd").json()["visits"] == 0


def test_needs_review_groups(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    nr = client.get("/api/v1/needs-review").json()
    assert [v["visit_id"] for v in nr["unknown"]] == [evs["unknown"].visit_id]
    assert [v["visit_id"] for v in nr["low_score"]] == [evs["tit3"].visit_id]
    assert {v["species"] for v in nr["first_ever"]} == {
        "Great Tit", "Eurasian Hoopoe", "White Wagtail"}
    assert nr["total_unreviewed"] == 6
    client.post(f"/api/v1/visits/{evs['unknown'].visit_id}/review", json={"action": "reject"})
    nr = client.get("/api/v1/needs-review").json()
    assert nr["unknown"] == [] and nr["total_unreviewed"] == 5


def add_with_embedding(store: Store, n: int, vec: np.ndarray) -> str:
    ev = VisitEvent("end", f"e{n:015d}", "feeder", "Great Tit", False, 0.8, 2,  # type: ignore[arg-type]
                    at(6).timestamp() + n, at(6).timestamp() + n + 5, None,
                    (("Great Tit", 0.8),), (0, 0, 10, 10), (640, 360), crop_jpeg((9, 9, 9), 16),
                    embedding=vec.astype(np.float32))
    store.record(ev, [])
    return ev.visit_id


def test_similar_visits_by_cosine(site: Site_, client: TestClient) -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=384)
    ids = [add_with_embedding(site.store, i, base + rng.normal(scale=s, size=384))
           for i, s in enumerate((0.0, 0.1, 0.5, 2.0))]
    far = add_with_embedding(site.store, 9, -base)
    body = client.get(f"/api/v1/visits/{ids[0]}/similar", params={"limit": "3"}).json()
    got = [(v["visit_id"], v["similarity"]) for v in body["visits"]]
    assert [g[0] for g in got] == ids[1:4]
    assert got[0][1] > got[1][1] > got[2][1] and got[0][1] > 0.99
    client.post(f"/api/v1/visits/{ids[1]}/review", json={"action": "delete"})
    body = client.get(f"/api/v1/visits/{ids[0]}/similar", params={"limit": "10"}).json()
    assert ids[1] not in [v["visit_id"] for v in body["visits"]]
    assert [v["visit_id"] for v in body["visits"]] == [ids[2], ids[3]]  # far: cosine -1
    assert site.reader.similar(ids[0], min_similarity=-1.0)[-1].visit.visit_id == far
    plain = add_visit(site.store, "feeder", "Great Tit", at(11))
    assert client.get(f"/api/v1/visits/{plain.visit_id}/similar").json()["visits"] == []


# --- exports ------------------------------------------------------------------------------------


def test_visits_csv_for_a_filter(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    r = client.get("/api/v1/export/visits.csv", params={"camera": "feeder"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {x["visit_id"] for x in rows} == {
        evs[k].visit_id for k in ("tit1", "tit2", "unknown", "yesterday")}
    assert rows[0]["top_k"] == "Unknown bird:0.3000"


def test_ebird_takes_reviewed_visits_only(site: Site_) -> None:
    evs = seed_day(site)
    client = site.client(site=Site("Back garden", 31.77, 35.21, "IL-JM", "IL"))
    assert client.get("/api/v1/export/ebird.csv").text == ""  # nothing reviewed yet
    for k in ("tit1", "tit2"):
        client.post(f"/api/v1/visits/{evs[k].visit_id}/review", json={"action": "confirm"})
    client.post(f"/api/v1/visits/{evs['hoopoe'].visit_id}/review",
                json={"action": "correct", "species": "Upupa epops"})
    client.post(f"/api/v1/visits/{evs['tit3'].visit_id}/review", json={"action": "reject"})
    rows = list(csv.reader(io.StringIO(client.get("/api/v1/export/ebird.csv").text)))
    assert all(len(r) == len(EBIRD_COLUMNS) for r in rows)
    assert [(r[0], r[1], r[2], r[3], r[8], r[9]) for r in rows] == [
        ("Great Tit", "", "", "1", "05/14/2026", "07:00"),  # two visits, one row, count 1
        ("", "Upupa", "epops", "1", "05/14/2026", "08:00"),
    ]
    assert rows[0][5:8] == ["Back garden", "31.770000", "35.210000"]
    assert rows[0][10:16] == ["IL-JM", "IL", "Stationary", "1", "60", "N"]
    assert split_name("Passer_domesticus") == ("", "Passer", "domesticus")


def test_camtrap_dp_package(site: Site_, client: TestClient) -> None:
    evs = seed_day(site)
    client.post(f"/api/v1/visits/{evs['tit1'].visit_id}/review", json={"action": "confirm"})
    client.post(f"/api/v1/visits/{evs['hoopoe'].visit_id}/review",
                json={"action": "correct", "species": "Upupa epops"})
    r = client.get("/api/v1/export/camtrap-dp.zip")
    assert r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert {"datapackage.json", "deployments.csv", "media.csv", "observations.csv"} <= names
    pkg = json.loads(z.read("datapackage.json"))
    assert pkg["profile"].endswith("/camtrap-dp-profile.json")
    assert [res["name"] for res in pkg["resources"]] == ["deployments", "media", "observations"]
    obs = list(csv.DictReader(io.StringIO(z.read("observations.csv").decode())))
    assert {(o["observationID"], o["scientificName"], o["classificationMethod"])
            for o in obs} == {(evs["tit1"].visit_id, "Great Tit", "human"),
                              (evs["hoopoe"].visit_id, "Upupa epops", "human")}
    media = list(csv.DictReader(io.StringIO(z.read("media.csv").decode())))
    assert all(m["filePath"] in names and m["fileMediatype"] == "image/jpeg" for m in media)
    deps = list(csv.DictReader(io.StringIO(z.read("deployments.csv").decode())))
    assert {d["deploymentID"] for d in deps} == {"feeder", "ground"}
    r = client.get("/api/v1/export/camtrap-dp.zip", params={"media": "false"})
    assert not [n for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist()
                if n.startswith("media/")]


def test_reads_leave_the_database_unwritten(site: Site_, client: TestClient) -> None:
    """The reader's connections are read-only: a read endpoint cannot write even by
    mistake (and never takes the daemon's write lock)."""
    seed_day(site)
    client.get("/api/v1/visits")
    db = site.reader._db()
    with pytest.raises(Exception, match="readonly"):
        db.execute("DELETE FROM visits")
    assert replace(Cursor(1.5, "a")).encode() == "1.5_a"


def test_keep_and_reset_are_no_verdict(site: Site_, client: TestClient) -> None:
    vid = seed_day(site)["tit1"].visit_id
    url = f"/api/v1/visits/{vid}/review"
    v = client.post(url, json={"action": "keep"}).json()
    assert v["keep"] is True and v["review"] is None
    assert client.post(url, json={"action": "confirm"}).json()["review"]["status"] == "confirmed"
    v = client.post(url, json={"action": "reset"}).json()
    assert v["review"] is None and v["keep"] is True
    reviewed = client.get("/api/v1/visits", params={"status": "reviewed"}).json()["visits"]
    assert reviewed == []


def test_uptime_samples_are_split_by_local_hour() -> None:
    """What the scheduler's uptime sampling writes for the day grid's camera hours."""
    from camtrap.schedule.jobs import _hours_of

    assert _hours_of(DAY, at(10, 59).replace(second=30), at(11, 0).replace(second=30),
                     JLM) == [(10, 30.0), (11, 30.0)]
    # a sample across midnight: only the part on this day
    assert _hours_of(DAY, at(23, 59), at(0, 1, date(2026, 5, 15)), JLM) == [(23, 60.0)]
