"""The presence demo page (``/static/presence.html``) in headless Chromium against the real
``xplatform run`` (default entities: the samples). Two pages, ann and bob, go online and join
one room; each sees the other in the roster, bob's status change reaches ann's page, and when
ann goes offline bob's page shows her offline, in the roster and where he watches her.
Server and browsers as in test_demo_page.py (failures to start fail, never skip)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ops.local.xplatform_run import XplatformRun
from tests.browser.test_demo_page import WAIT_S, Browser, browsers, diagnostics, server

__all__ = ["browsers", "server"]  # the fixtures, shared with the auction page's test


def _line(page: Browser, list_id: str, user: str) -> str:
    """The text of ``user``'s line in a list ("" while absent, or while the page redraws it)."""
    try:
        found = page.driver.find_elements(By.CSS_SELECTOR, f'#{list_id} li[data-user="{user}"] .line')
        return (found[0].get_property("textContent") or "").strip() if found else ""
    except StaleElementReferenceException:  # the list was redrawn between finding and reading
        return ""


def _wait_line(page: Browser, list_id: str, user: str, expected: str) -> None:
    try:
        WebDriverWait(page.driver, WAIT_S, poll_frequency=0.05).until(lambda d: _line(page, list_id, user) == expected)
    except TimeoutException:
        raise AssertionError(f"{page.name}: #{list_id} line of {user} is {_line(page, list_id, user)!r}, "
                             f"expected {expected!r}") from None


def _online_in_room(page: Browser, url: str, name: str, room: str) -> None:
    page.driver.get(f"{url}static/presence.html")
    page.fill("name", name)
    page.click("go-online")
    page.wait_text("conn-state", "online")
    page.wait_text("my-status", "online")
    page.fill("room", room)
    page.click("join-room")
    page.wait_text("room-id", room)


def test_two_pages_see_each_others_presence(server: XplatformRun, browsers: Callable[[str], Browser],
                                            tmp_path: Path) -> None:
    url = server.url
    assert url is not None
    ann, bob = browsers("ann"), browsers("bob")
    with diagnostics(server, ann, bob):
        _online_in_room(ann, url, "ann", "lobby")
        _online_in_room(bob, url, "bob", "lobby")
        _wait_line(ann, "roster", "bob", "bob — online")
        _wait_line(bob, "roster", "ann", "ann — online")

        bob.fill("status-text", "focus")
        bob.driver.find_element(By.CSS_SELECTOR, '#status option[value="busy"]').click()
        bob.click("set-status")
        bob.wait_text("my-status", "busy")
        _wait_line(ann, "roster", "bob", "bob — busy: focus")

        bob.fill("watch-name", "ann")
        bob.click("watch")
        _wait_line(bob, "watched", "ann", "ann — online")

        ann.click("go-offline")
        _wait_line(bob, "roster", "ann", "ann — offline")
        _wait_line(bob, "watched", "ann", "ann — offline")
        assert bob.driver.save_screenshot(str(tmp_path / "presence-bob.png"))
