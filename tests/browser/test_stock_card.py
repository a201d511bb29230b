"""The demo page's state proxy card in headless Chromium against the real ``xplatform run``
(default settings: it serves the stock sample and starts the sample warehouse, ops/warehouse.py,
as StockLevel's primary). Joining a lot shows the lot's item's stock as last pulled from the
warehouse, with an age that ticks; with the warehouse down, Refresh shows the typed error and
keeps the last known level with its age; with it back, Refresh clears the error. The warehouse is
made to fail through its own knob (its /admin endpoint), a real HTTP call to a real process.
Server and browser as in test_demo_page.py (failures to start fail, never skip)."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from ops.local.xplatform_run import XplatformRun
from tests.browser.test_demo_page import WAIT_S, Browser, browsers, diagnostics, server

__all__ = ["browsers", "server"]

WAREHOUSE = re.compile(r"sample warehouse \(the StockLevel proxies' primary\) at (http://\S+/stock)")
AGE = re.compile(r"^updated (\d+) s ago$")


def knob(warehouse: str, **knobs: int) -> dict[str, object]:
    query = "&".join(f"{k}={v}" for k, v in knobs.items())
    request = urllib.request.Request(f"{warehouse.removesuffix('/stock')}/admin?{query}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def wait_for(page: Browser, what: str, condition: Callable[[], bool]) -> None:
    try:
        WebDriverWait(page.driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition())
    except TimeoutException:
        raise AssertionError(f"{page.name}: {what}; age {page.text('stock-age')!r}, error "
                             f"{page.text('stock-error')!r}, on hand {page.text('stock-on-hand')!r}") from None


def age_of(page: Browser) -> int | None:
    found = AGE.match(page.text("stock-age"))
    return int(found.group(1)) if found else None


def test_stock_card_shows_the_last_known_level_its_age_and_the_typed_error(
        server: XplatformRun, browsers: Callable[[str], Browser], tmp_path: Path) -> None:
    warehouse = server.wait_for(WAREHOUSE, 10).group(1)
    lot = f"stock-{uuid.uuid4().hex[:8]}"
    page = browsers("clerk")
    with diagnostics(server, page):
        page.join(server.url, lot, "ann", "auctioneer")
        page.wait_text("stock-sku", lot)
        page.wait_text("stock-on-hand", "100")  # the sample warehouse's level of a SKU nobody reserved from
        page.wait_text("stock-available", "100")
        page.wait_text("stock-reserved", "0")
        assert page.driver.find_element("id", "stock-age").get_attribute("data-state") == "fresh"
        first = age_of(page)
        assert first is not None, page.text("stock-age")
        wait_for(page, "the age ticks", lambda: (age_of(page) or 0) > first)
        assert page.driver.find_element("id", "stock-error").is_displayed() is False
        gets = knob(warehouse)["calls"]["GET"]  # type: ignore[index]
        assert gets == 1, gets  # the page's first read became a pull (no level yet); nothing else asked

        knob(warehouse, down=1)
        page.click("stock-refresh")
        wait_for(page, "the typed error shows", lambda: page.driver.find_element("id", "stock-error").is_displayed())
        error = page.text("stock-error")
        assert "(primary_unavailable)" in error and "showing the last known level, from" in error, error
        assert page.driver.find_element("id", "stock-error").get_attribute("data-code") == "primary_unavailable"
        assert page.text("stock-on-hand") == "100"  # the last known level stays
        assert page.driver.find_element("id", "stock-age").get_attribute("data-state") == "stale"
        stale = age_of(page)
        assert stale is not None and stale >= 1  # the age is the level's, not the failed pull's
        assert knob(warehouse)["calls"]["GET"] > gets  # type: ignore[operator]  # the page really asked it

        knob(warehouse, down=0)
        asked = knob(warehouse)["calls"]["GET"]
        wait_for(page, "Refresh is enabled again", lambda: page.driver.find_element("id", "stock-refresh").is_enabled())
        page.click("stock-refresh")
        wait_for(page, "the error clears", lambda: not page.driver.find_element("id", "stock-error").is_displayed())
        assert page.driver.find_element("id", "stock-age").get_attribute("data-state") == "fresh"
        assert page.text("stock-on-hand") == "100" and knob(warehouse)["calls"]["GET"] == asked + 1  # type: ignore[index]
