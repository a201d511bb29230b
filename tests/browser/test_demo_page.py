"""The demo page in headless Chromium, against the real ``xplatform run`` server.

Two browser pages share one lot: the auctioneer opens it in page 1 and page 2 sees it open;
the bidder bids in page 2 and page 1 shows the new high bid; a too-low bid is rejected
visibly; the bidder's socket drops and the page reconnects with the same connection ID;
both pages show a measured round trip; both pages' read-model board shows the lot's high bid and
bid count, and the bidder's summary his bids. The server is the README's run command,
started here as a subprocess on a free port with a temp data dir.

Chromium and its driver come from Debian (``chromium``, ``chromium-driver``; ``ops/dev.sh``
installs them). Both paths are given explicitly and ``SE_OFFLINE`` is set, so Selenium
Manager never tries to download a browser or driver. A browser or server that cannot start
FAILS the test with its logs; it is never a skip. Only the processes started here are
stopped, by their PIDs.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ops.local.xplatform_run import XplatformRun

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("XPLATFORM_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("XPLATFORM_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/")
WAIT_S = 15.0

pytestmark = pytest.mark.timeout(180)

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


# ---------------------------------------------------------------------------- the server
@pytest.fixture
def server(tmp_path: Path) -> Iterator[XplatformRun]:
    """``python -m ops.cli run`` as a subprocess (ops/local/xplatform_run.py), on loopback;
    SIGTERM stops it (Ctrl-C's path: GOING_AWAY to sockets, then exit)."""
    env = {**os.environ, "XPLATFORM_EDGE_PORT": "0", "XPLATFORM_EDGE_HOST": "127.0.0.1",
           "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "XPLATFORM_STORE": "sqlite"}
    running = XplatformRun.start((), cwd=ROOT, env=env, timeout_s=30)
    try:
        assert URL.match(running.url), running.url
        yield running
    finally:
        running.stop(signal.SIGTERM, timeout_s=10)
        running.close()


# ---------------------------------------------------------------------------- browsers
class Browser:
    """One headless Chromium (own profile) with its chromedriver; logs kept for failures."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        for path in (CHROMIUM, CHROMEDRIVER):
            if not path.exists():
                pytest.fail(f"{path} is missing: install the Debian packages chromium and chromium-driver "
                            "(bash ops/dev.sh test does)")
        self.name = name
        self.driver_log = tmp_path / f"chromedriver-{name}.log"
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-extensions", "--window-size=1280,900",
                    f"--user-data-dir={tmp_path / f'profile-{name}'}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(executable_path=str(CHROMEDRIVER), log_output=str(self.driver_log))
        try:
            self.driver = webdriver.Chrome(service=self.service, options=options)
        except WebDriverException as exc:
            self.kill_driver()
            pytest.fail(f"headless Chromium ({name}) could not start: {exc.msg}\nchromedriver log:\n{self._driver_log()}")
        self.driver.set_page_load_timeout(WAIT_S)

    def _driver_log(self) -> str:
        try:
            return self.driver_log.read_text(errors="replace")[-8000:]
        except OSError:
            return "(none)"

    def console(self) -> str:
        try:
            entries = self.driver.get_log("browser")
        except Exception as exc:  # the browser may be gone
            return f"(console unavailable: {exc})"
        return "\n".join(f"{e.get('level')} {e.get('message')}" for e in entries) or "(empty)"

    def text(self, element_id: str) -> str:
        """The element's text content (as the page wrote it; CSS may change its case on screen)."""
        return (self.driver.find_element(By.ID, element_id).get_property("textContent") or "").strip()

    def wait_text(self, element_id: str, expected: str | Callable[[str], bool], what: str = "") -> str:
        check = expected if callable(expected) else (lambda text: text == expected)
        try:
            return WebDriverWait(self.driver, WAIT_S, poll_frequency=0.05).until(
                lambda d: (t := self.text(element_id)) and check(t) and t)
        except TimeoutException:
            raise AssertionError(f"{self.name}: #{element_id} is {self.text(element_id)!r}, expected "
                                 f"{what or expected!r} within {WAIT_S:.0f} s") from None

    def board_row(self, lot: str) -> list[str] | None:
        """The cells of ``lot``'s row on the read-model board (lot, title, status, high bid, bidder, bids)."""
        row: list[str] | None = self.driver.execute_script(
            "const r = [...document.querySelectorAll('#board-rows tr')].find((t) => t.dataset.lot === arguments[0]);"
            "return r ? Array.from(r.cells, (c) => c.textContent) : null;", lot)
        return row

    def wait_board_row(self, lot: str, check: Callable[[list[str]], bool], what: str, timeout_s: float = WAIT_S) -> None:
        try:
            WebDriverWait(self.driver, timeout_s, poll_frequency=0.1).until(
                lambda d: (row := self.board_row(lot)) is not None and check(row))
        except TimeoutException:
            raise AssertionError(f"{self.name}: board row of {lot} is {self.board_row(lot)!r}, expected {what} "
                                 f"(board status: {self.text('board-status')!r})") from None

    def fill(self, element_id: str, value: str) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)

    def click(self, element_id: str) -> None:
        WebDriverWait(self.driver, WAIT_S).until(lambda d: d.find_element(By.ID, element_id).is_enabled())
        self.driver.find_element(By.ID, element_id).click()

    def join(self, url: str, lot: str, name: str, role: str) -> None:
        self.driver.get(f"{url}#{lot}")
        self.wait_text("conn-state", "not joined")
        assert self.driver.find_element(By.ID, "lot").get_attribute("value") == lot, "lot from the URL hash"
        self.fill("name", name)
        Select(self.driver.find_element(By.ID, "role")).select_by_value(role)
        self.click("join")
        self.wait_text("conn-state", "live")

    def quit(self) -> None:
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 - the driver may have died; kill it below
            pass
        self.kill_driver()

    def kill_driver(self) -> None:
        process = getattr(self.service, "process", None)
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[[str], Browser]]:
    started: list[Browser] = []

    def start(name: str) -> Browser:
        browser = Browser(name, tmp_path)
        started.append(browser)
        return browser

    try:
        yield start
    finally:
        for browser in started:
            browser.quit()


@contextmanager
def diagnostics(server: XplatformRun, *pages: Browser) -> Iterator[None]:
    """On any failure, print what the server and the browsers said."""
    try:
        yield
    except BaseException:
        print(f"\n==== server output ====\n{server.log()}")
        for page in pages:
            print(f"\n==== {page.name}: browser console ====\n{page.console()}")
        raise


# ---------------------------------------------------------------------------- the test
LATENCY = re.compile(r"^\d+(\.\d+)? ms$")


def test_two_pages_share_a_live_lot(server: XplatformRun, browsers: Callable[[str], Browser], tmp_path: Path) -> None:
    url = server.url
    assert url is not None
    lot = f"browser-{uuid.uuid4().hex[:8]}"
    auctioneer = browsers("auctioneer")
    bidder = browsers("bidder")
    with diagnostics(server, auctioneer, bidder):
        auctioneer.join(url, lot, "ann", "auctioneer")
        auctioneer.wait_text("status", "new")
        assert auctioneer.driver.find_element(By.ID, "auctioneer-panel").is_displayed()
        assert not auctioneer.driver.find_element(By.ID, "bidder-panel").is_displayed()

        bidder.join(url, lot, "bob", "bidder")
        bidder.wait_text("status", "new")
        assert bidder.driver.find_element(By.ID, "bidder-panel").is_displayed()
        assert not bidder.driver.find_element(By.ID, "auctioneer-panel").is_displayed()

        # page 1 acts, page 2 sees it
        auctioneer.fill("open-title", "Ming vase")
        auctioneer.fill("open-increment", "10")
        auctioneer.click("open-btn")
        bidder.wait_text("status", "open")
        bidder.wait_text("title", "Ming vase")
        bidder.wait_text("bid-next", "Bid 10")

        # page 2 acts, page 1 sees it
        started = time.monotonic()
        bidder.click("bid-next")
        auctioneer.wait_text("high-amount", "10")
        auctioneer.wait_text("high-bidder", "bob")
        auctioneer.wait_text("bid-count", "1")
        auctioneer.wait_text("present", lambda t: t.isdigit() and int(t) >= 2, "at least 2 people")
        seen_after = time.monotonic() - started
        bidder.wait_text("high-amount", "10")

        # the read-model view follows: the auction house board (every lot, high bid, bid count) on
        # both pages and the bidder's own summary across lots, read from the query API (the first
        # read waits for the run's secantusdb to come up)
        for page in (auctioneer, bidder):
            page.wait_board_row(lot, lambda row: row[2:] == ["open", "10", "bob", "1"], "open, 10 by bob, 1 bid",
                                timeout_s=WAIT_S * 4)
        bidder.wait_text("sum-bids", "1")
        bidder.wait_text("sum-best", "10")

        # a bid below the minimum is refused, visibly, and changes nothing
        bidder.fill("bid-amount", "15")
        bidder.click("bid-btn")
        bidder.wait_text("notice", lambda t: "at least 20" in t, "a rejection naming the minimum 20")
        assert auctioneer.text("high-amount") == "10"

        # the bidder's socket drops: the page reconnects by itself with the same connection ID
        # (a fresh token), the entity resumes it, and the next bid moves both pages on
        cid = bidder.driver.execute_script("return window.xplatformDemo.conn.cid")
        bidder.driver.execute_script("window.droppedSocket = window.xplatformDemo.conn._ws;"
                                     "window.droppedSocket.close(4000, 'test drops the socket')")
        WebDriverWait(bidder.driver, WAIT_S).until(lambda d: d.execute_script(
            "const c = window.xplatformDemo.conn; return c.state === 'open' && c._ws !== window.droppedSocket"))
        bidder.wait_text("conn-state", "live")
        assert bidder.driver.execute_script("return window.xplatformDemo.conn.cid") == cid
        bidder.click("bid-next")
        auctioneer.wait_text("high-amount", "20")
        auctioneer.wait_board_row(lot, lambda row: row[3:] == ["20", "bob", "2"], "20 by bob, 2 bids")
        bidder.wait_text("sum-bids", "2")

        # the auctioneer closes; both see the winner
        auctioneer.click("close-btn")
        bidder.wait_text("status", "closed")
        bidder.wait_text("winner", "bob")

        # both pages show a measured heartbeat round trip
        for page in (auctioneer, bidder):
            page.wait_text("latency", lambda t: bool(LATENCY.match(t)), "a round trip like '1.2 ms'")

        shot = tmp_path / "demo-auctioneer.png"
        assert auctioneer.driver.save_screenshot(str(shot)), "screenshot"
        assert shot.stat().st_size > 10_000
        bidder.driver.save_screenshot(str(tmp_path / "demo-bidder.png"))
        print(f"\nbid visible in the other page after {seen_after * 1000:.0f} ms; screenshots in {tmp_path}")
