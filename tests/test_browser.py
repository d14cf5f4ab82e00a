"""The web interface in a real browser: Debian's /usr/bin/chromium driven by Playwright's
Python package (never `playwright install`: no browser is downloaded). At a phone's size:
the day page's crops load, one tap corrects a species and the change shows on the page,
through the API, in SQLite, in the day summary and in the MQTT outbox; not-a-bird,
delete/restore, bulk select, login/logout. Any console error or failed request fails a
test. Screenshots of every page at phone and desktop size go to $CAMTRAP_SCREENSHOTS (or
the test's tmp dir) for a person to look at."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from camtrap.comms.payloads import Topics
from camtrap.reports.build import load_summary
from camtrap.web.app import WebServer
from tests.test_web_pages import OWNER_PW, TZ, Site, make_site, password_auth

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: "
                       "scripts/install-debian-deps.sh test installs Debian's chromium"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


class Served:
    """A seeded site behind the real server thread, as the daemon runs it."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.server = WebServer(site.app, "127.0.0.1", 0)
        self.server.start()
        self.url = self.server.url

    def row(self, visit_id: str) -> sqlite3.Row:
        return self.site.review_row(visit_id)

    def close(self) -> None:
        self.server.stop()
        self.site.reader.close()
        self.site.store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(make_site(tmp_path, topics=Topics("camtrap")))
    yield s
    s.close()


@pytest.fixture
def locked_served(tmp_path: Path) -> Iterator[Served]:
    s = Served(make_site(tmp_path, password_auth()))
    yield s
    s.close()


class Watched:
    """A page that records console errors, page errors and failed requests."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", lambda r: self.problems.append(f"{r.status}: {r.url}")
                     if r.status >= 400 else None)

    def _failed(self, request: Any) -> None:
        if request.failure != "net::ERR_ABORTED":  # a navigation cancelled lazy images
            self.problems.append(f"failed: {request.url} {request.failure}")

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def phone(browser: Any) -> Iterator[Watched]:
    w = Watched(browser, **PHONE)
    yield w
    w.close()


def card(page: Any, visit_id: str) -> Any:
    return page.locator(f"#v-{visit_id}")


def test_day_page_on_a_phone_shows_the_crops(served: Served, phone: Watched) -> None:
    page = phone.page
    day = datetime.fromtimestamp(served.site.visits[0].start_ts, TZ).date()
    page.goto(served.url if day == datetime.now(TZ).date() else served.url + f"day/{day}")
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").first.inner_text() in ("Today", "Yesterday")
    best = page.locator(".tile img").first
    best.wait_for()
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", best.element_handle())
    assert page.locator("table.grid tbody tr").count() >= 5  # cameras and species
    # nothing wider than the phone: the grid scrolls inside its own box
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_one_tap_correction_shows_everywhere(served: Served, phone: Watched) -> None:
    v = served.site.visits[3]  # Palestine Sunbird; the model's second guess: Great Tit
    page = phone.page
    page.goto(served.url + "visits")
    target = card(page, v.visit_id)
    target.get_by_role("button", name="Great Tit").tap()
    card(page, v.visit_id).get_by_text("Corrected").wait_for()
    assert card(page, v.visit_id).locator(".sp").inner_text() == "Great Tit"
    api = page.request.get(served.url + f"api/v1/visits/{v.visit_id}").json()
    assert api["species"] == "Great Tit" and api["review"]["status"] == "corrected"
    row = served.row(v.visit_id)
    assert (row["status"], row["reviewed_species"]) == ("corrected", "Great Tit")
    day = datetime.fromtimestamp(v.start_ts, TZ).date()
    summary = load_summary(served.site.store, day, TZ, ["feeder", "ground"])
    names = {s.species for s in summary.species}
    assert "Palestine Sunbird" not in names and "Great Tit" in names
    db = sqlite3.connect(served.site.state / "camtrap.sqlite3")
    payloads = [json.loads(p) for (p,) in db.execute(
        "SELECT payload FROM outbox WHERE topic = 'camtrap/events'")]
    db.close()
    review = [p for p in payloads if p.get("type") == "review"]
    assert review and review[-1]["visit_id"] == v.visit_id
    assert review[-1]["species"] == "Great Tit"


def test_not_a_bird_then_delete_and_restore(served: Served, phone: Watched) -> None:
    v = served.site.visits[4]
    page = phone.page
    page.goto(served.url + f"visits/{v.visit_id}")
    page.get_by_role("button", name="Not a bird").tap()
    page.locator(".facts .badge", has_text="Not a bird").wait_for()
    assert served.row(v.visit_id)["status"] == "rejected"
    page.get_by_role("button", name="Delete").tap()
    page.get_by_role("button", name="Restore").wait_for()
    assert served.row(v.visit_id)["deleted_ts"] is not None
    page.goto(served.url + "visits")
    assert card(page, v.visit_id).count() == 0  # gone from the list
    page.goto(served.url + f"visits/{v.visit_id}")
    page.get_by_role("button", name="Restore").tap()
    page.get_by_role("button", name="Delete").wait_for()
    row = served.row(v.visit_id)
    assert row["deleted_ts"] is None and row["status"] == "rejected"  # its verdict is back


def test_bulk_select_confirms_the_ticked_visits(served: Served, phone: Watched) -> None:
    ids = [served.site.visits[0].visit_id, served.site.visits[2].visit_id]
    page = phone.page
    page.goto(served.url + "visits")
    for vid in ids:
        card(page, vid).get_by_role("checkbox").check()
    bar = page.locator("#bulk")
    bar.get_by_text("2 selected").wait_for()
    with page.expect_navigation():
        bar.get_by_role("button", name="✓ Right").tap()
    assert [served.row(i)["status"] for i in ids] == ["confirmed", "confirmed"]
    assert card(page, ids[0]).get_by_text("Confirmed").count() == 1


def test_works_without_javascript(served: Served, browser: Any) -> None:
    w = Watched(browser, java_script_enabled=False, **PHONE)
    try:
        v = served.site.visits[5]  # House Sparrow; second guess Great Tit
        w.page.goto(served.url + "visits")
        with w.page.expect_navigation():
            card(w.page, v.visit_id).get_by_role("button", name="Great Tit").tap()
        assert served.row(v.visit_id)["reviewed_species"] == "Great Tit"
        assert card(w.page, v.visit_id).locator(".sp").inner_text() == "Great Tit"
    finally:
        w.close()


def test_login_and_logout(locked_served: Served, phone: Watched) -> None:
    page = phone.page
    page.goto(locked_served.url + "visits?species=Great+Tit")
    page.wait_for_url("**/login?next=*")
    page.get_by_label("Password").fill("not it")
    page.get_by_role("button", name="Log in").tap()
    page.get_by_text("Wrong password").wait_for()
    phone.problems.clear()  # the expected 401 of a wrong password (response and console)
    page.get_by_label("Password").fill(OWNER_PW)
    page.get_by_role("button", name="Log in").tap()
    page.wait_for_url("**/visits?species=Great+Tit")
    assert page.locator(".card").count() >= 2
    page.get_by_role("button", name="Log out").tap()
    page.wait_for_url("**/login")
    page.goto(locked_served.url + "review")
    page.wait_for_url("**/login?next=review")


def test_every_page_at_phone_and_desktop(served: Served, browser: Any, tmp_path: Path) -> None:
    """Renders every page at both sizes without an error, nothing wider than a phone,
    and keeps the screenshots for a person to judge."""
    out = Path(os.environ.get("CAMTRAP_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    vid = served.site.visits[0].visit_id
    day = datetime.fromtimestamp(served.site.visits[0].start_ts, TZ).date()
    pages = {"day": f"day/{day}", "today": "", "visits": "visits", "visit": f"visits/{vid}",
             "review": "review", "species-list": "species", "species": "species/Great%20Tit",
             "similar": f"visits/{vid}/similar", "cameras": "cameras", "exports": "exports"}
    for size, context in (("phone", PHONE), ("desktop", DESKTOP)):
        w = Watched(browser, **context)
        try:
            for name, path in pages.items():
                w.page.goto(served.url + path)
                w.page.wait_for_load_state("networkidle")
                width = w.page.evaluate("document.documentElement.scrollWidth")
                assert width <= context["viewport"]["width"], (name, size, width)
                w.page.screenshot(path=str(out / f"{name}-{size}.png"), full_page=True)
        finally:
            w.close()
    assert len(list(out.glob("*.png"))) == 2 * len(pages)
