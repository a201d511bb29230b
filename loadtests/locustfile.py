"""Locust load test of the sample auction domain over websockets (README "Load tests with locust").

    locust -f loadtests/locustfile.py --headless -u 500 -r 50 -t 60s --host http://127.0.0.1:8080

Users, each its own user (``sub``) on one of ``--lots`` lots (``<lot-prefix>-<n>``, opened by an
auctioneer connection the first user of a process makes for each):

- ``Viewer`` (weight 6) watches: every ``--freshness-every``-th viewer reports each pushed state
  that shows a new bid as ``PUSH state (freshness)`` (now minus the bid's ``sent_at``) and each
  chat line as ``PUSH chat (freshness)`` (now minus the time in its text);
- ``Bidder`` (weight 2) registers a credit line once (``MSG register``), then bids above the
  highest bid it has seen (``MSG bid``; outbid by someone faster: ``MSG bid (rejected)``);
- ``Chatter`` (weight 1) posts chat lines (``MSG chat``);
- ``Churn`` (weight 1) drops its socket and resumes the connection with the same ``cid``
  (``WS reconnect``), or leaves (BYE) and joins anew (``WS connect``).

Every connect is ``WS connect`` (upgrade until WELCOME); every command is timed from the MSG to
its durable REPLY (loadtests/locust_ws.py). Freshness compares wall clocks of the sending and
the receiving process: in distributed mode keep the machines' clocks synchronised (NTP).

Tokens: the dev issuer of ``xplatform run`` (``/dev/token``) by default; against a cluster's
edges, ``--jwt-secret-file`` (HS256, with ``--jwt-issuer`` and ``--jwt-audience``) signs them
here. ``--host`` may list several edges, comma-separated; users spread over them.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import gevent.lock
import requests
from locust import User, between, events, task

from loadtests.locust_ws import SocketClosed, XPlatformSocket

CREDIT_LINE = 900_000
"""Asked by each bidder up front: the sample ``Bidder`` account holds 1,000,000, so bids within
the line are accepted by the lot alone (no Lot -> Bidder round trip per bid)."""

_lots_opened: set[tuple[str, str]] = set()
_opening = gevent.lock.Semaphore()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--lot-prefix", default="locust", help="Lots are <prefix>-0 ... (use a fresh prefix per run "
                        "against a store that outlives runs: bids only ever rise)")
    parser.add_argument("--lots", type=int, default=1, help="How many lots the users spread over")
    parser.add_argument("--freshness-every", type=int, default=10, help="Every n-th viewer reports the freshness "
                        "of its pushes (1: all; each report is a locust request event)")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="Seconds to wait for a WELCOME or REPLY")
    parser.add_argument("--jwt-secret-file", default="", help="HS256 secret to sign tokens with (cluster edges); "
                        "empty: ask the dev issuer at <host>/dev/token")
    parser.add_argument("--jwt-issuer", default="", help="iss of the signed tokens (XPLATFORM_JWT_ISSUER)")
    parser.add_argument("--jwt-audience", default="", help="aud of the signed tokens (XPLATFORM_JWT_AUDIENCE)")


def _option(environment: Any, name: str, default: Any) -> Any:
    return getattr(environment.parsed_options, name, default) if environment.parsed_options else default


def token_for(environment: Any, base_url: str, sub: str, role: str) -> str:
    secret_file = _option(environment, "jwt_secret_file", "")
    if secret_file:
        import jwt

        claims = {"sub": sub, "role": role, "exp": int(time.time()) + 3600,
                  "iss": _option(environment, "jwt_issuer", ""), "aud": _option(environment, "jwt_audience", "")}
        return str(jwt.encode(claims, Path(secret_file).read_text().strip(), algorithm="HS256"))
    response = requests.get(f"{base_url.rstrip('/')}/dev/token", params={"sub": sub, "role": role}, timeout=10)
    response.raise_for_status()
    return str(response.json()["token"])


def ensure_lot_open(environment: Any, base_url: str, lot: str) -> None:
    """Once per process and lot: an auctioneer connects (creating the lot) and opens it; a lot
    opened by another process or run answers ``open lot (rejected)``, which is fine."""
    with _opening:
        if (base_url, lot) in _lots_opened:
            return
        prefix = _option(environment, "lot_prefix", "locust")
        auctioneer = XPlatformSocket(environment, base_url, "Lot", lot,
                                     token_for(environment, base_url, f"{prefix}-auctioneer", "auctioneer"),
                                     timeout_s=_option(environment, "request_timeout", 10.0))
        auctioneer.connect("connect (auctioneer)")
        try:
            auctioneer.request({"type": "open", "title": f"Locust lot {lot}", "increment": 1}, "open lot")
        finally:
            auctioneer.close()
        _lots_opened.add((base_url, lot))


class XPlatformUser(User):
    """One websocket to one lot as a user of ``role``."""

    abstract = True
    role = "viewer"

    def on_start(self) -> None:
        env = self.environment
        prefix = _option(env, "lot_prefix", "locust")
        self.base_url = random.choice([h.strip() for h in (self.host or "").split(",") if h.strip()])
        self.lot = f"{prefix}-{random.randrange(max(1, _option(env, 'lots', 1)))}"
        self.sub = f"{prefix}-{self.role}-{uuid.uuid4().hex[:10]}"
        ensure_lot_open(env, self.base_url, self.lot)
        self.socket = self.new_socket()
        self.socket.connect()

    def new_socket(self, cid: str | None = None) -> XPlatformSocket:
        env = self.environment
        return XPlatformSocket(env, self.base_url, "Lot", self.lot, token_for(env, self.base_url, self.sub, self.role),
                               cid=cid, on_push=self.on_push, timeout_s=_option(env, "request_timeout", 10.0))

    def on_stop(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()

    def on_push(self, socket: XPlatformSocket, payload: Any, received_at: float, length: int) -> None:
        """A PUSH arrived (the reader greenlet: keep it short)."""

    def connected(self) -> bool:
        """Reconnect (same ``cid``: the entity resumes the connection) if the edge closed it."""
        if not self.socket.open:
            try:
                self.socket.connect("reconnect")
            except SocketClosed:
                return False
        return True


class Viewer(XPlatformUser):
    weight = 6
    wait_time = between(1, 2)
    _count = 0

    def on_start(self) -> None:
        Viewer._count += 1
        self.reports = (Viewer._count - 1) % max(1, _option(self.environment, "freshness_every", 10)) == 0
        self.bid_count = -1
        super().on_start()

    def on_push(self, socket: XPlatformSocket, payload: Any, received_at: float, length: int) -> None:
        if not self.reports or not isinstance(payload, dict):
            return
        if payload.get("type") == "state":
            count, sent_at = payload.get("bid_count", 0), payload.get("sent_at") or 0.0
            if count > self.bid_count >= 0 and sent_at > 0:  # a new bid (not the first state seen)
                socket.report_freshness("state (freshness)", float(sent_at), received_at, length)
            self.bid_count = max(self.bid_count, count)
        elif payload.get("type") == "chat":
            words = str(payload.get("text", "")).split()
            if len(words) == 2 and words[0] == "locust":
                socket.report_freshness("chat (freshness)", float(words[1]), received_at, length)

    @task
    def watch(self) -> None:
        self.connected()


class Bidder(XPlatformUser):
    weight = 2
    wait_time = between(0.5, 1.5)
    role = "bidder"

    def on_start(self) -> None:
        self.high = 0
        self.increment = 1
        super().on_start()
        welcome = self.socket.welcome or {}
        self.high, self.increment = int(welcome.get("high_amount", 0)), int(welcome.get("increment", 1))
        self.socket.request({"type": "register", "limit": CREDIT_LINE}, "register")

    def on_push(self, socket: XPlatformSocket, payload: Any, received_at: float, length: int) -> None:
        if isinstance(payload, dict) and payload.get("type") == "state":
            self.high = max(self.high, int(payload.get("high_amount", 0)))
            self.increment = int(payload.get("increment", self.increment))

    @task
    def bid(self) -> None:
        if not self.connected():
            return
        amount = self.high + self.increment * random.randint(1, 3)
        if amount > CREDIT_LINE:
            return  # the lot went past this bidder's line: it watches from now on
        reply = self.socket.request({"type": "bid", "amount": amount, "sent_at": time.time()}, "bid")
        if reply is not None and reply[2]:
            self.high = max(self.high, amount)


class Chatter(XPlatformUser):
    weight = 1
    wait_time = between(1, 3)

    @task
    def chat(self) -> None:
        if self.connected():
            self.socket.request({"type": "chat", "text": f"locust {time.time():.6f}"}, "chat")


class Churn(XPlatformUser):
    weight = 1
    wait_time = between(1, 2)

    @task(2)
    def drop_and_resume(self) -> None:
        """The network drops; the client comes back with the same ``cid`` within the grace period."""
        self.socket.drop()
        try:
            self.socket.connect("reconnect")
        except SocketClosed:
            pass  # reported as a failure

    @task(1)
    def leave_and_join(self) -> None:
        """BYE, then a new connection (a new ``cid``)."""
        self.socket.close()
        self.socket = self.new_socket()
        try:
            self.socket.connect()
        except SocketClosed:
            pass  # reported as a failure
