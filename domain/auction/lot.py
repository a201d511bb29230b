"""A live auction lot: one entity shared by thousands of viewers and bidders (large entity).

Roles come from the connection's JWT claims (``role``): an ``auctioneer`` opens and closes
the lot, a ``bidder`` bids, a ``viewer`` watches.

Credit, without a round trip per bid. A bidder's credit is shared by every lot, so it lives
in the bidder's own entity (``Bidder``); asking it for every bid would make each bid three
entity messages, and a hot lot takes thousands of bids a second. Instead the lot holds a
*credit line* per bidder, as auction houses pre-approve bidders: the ``Bidder`` holds part
of its credit for this lot, and the lot accepts any bid up to that line at once, alone,
with one event. A bid above the line (or a ``register`` asking for a line up front) asks
the bidder's entity to raise its hold, with headroom so that the next bids need no asking:

    client ──bid──▶ Lot   (within the line: BidAccepted, reply "accepted")
    client ──bid──▶ Lot ──hold_credit──▶ Bidder ──credit_held───▶ Lot (LimitRaised, BidAccepted)
                                                └─credit_refused─▶ Lot (bidder told)

A hold stays while the lot is open (an outbid bidder may bid again without asking). When
the lot closes, the winner's entity spends the winning amount and the others release their
holds. Messages between entities are at most once: the bidder's entity asks about holds it
has not heard of for a while (``hold_status``), and the lot answers from its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsourcing.domain import event

from domain.context import Context
from domain.entity import Entity, client_message, entity_message
from domain.errors import EntityNotFound, Rejected
from domain.refs import EntityRef

ROLES = ("auctioneer", "bidder", "viewer")


class Lot(Entity):
    """A lot under auction. State: status, title, reserve, increment, the highest bid, the
    last chat messages of its room."""

    CATEGORY = "Lot"
    GRACE_PERIOD = 30.0
    CHAT_KEPT = 20
    CHAT_MAX_CHARS = 500
    HOLD_HEADROOM = 0.5
    """A raise asks for the bid plus this share (granted as far as the credit goes): a bidder
    climbing in small steps asks again only after ~50% more, not at every bid."""
    SNAPSHOT_EVERY = 1000
    """A hot lot's snapshot carries every connection record (thousands of viewers): taken every
    100 bids it cost more than the bids; replaying 1,000 small events on activation is ~20 ms."""

    def initialise(self) -> None:
        self.status = "new"
        self.title = ""
        self.increment = 1
        self.high_amount = 0
        self.high_bidder: str | None = None
        self.high_bid_id: str | None = None
        self.high_bid_at = 0.0
        self.bid_count = 0
        self.winner: str | None = None
        self.limits: dict[str, int] = {}  # bidder -> credit line its account holds for this lot
        self.chat: list[list[Any]] = []  # the last CHAT_KEPT messages: [message_id, user, text]

    # ------------------------------------------------------------------ views
    def view(self) -> dict[str, Any]:
        return {
            "lot": self.entity_id,
            "status": self.status,
            "title": self.title,
            "increment": self.increment,
            "high_amount": self.high_amount,
            "high_bidder": self.high_bidder,
            "bid_count": self.bid_count,
            "sent_at": self.high_bid_at,
            "winner": self.winner,
            "present": self.live_count(),
            "chat": [{"user": user, "text": text} for _mid, user, text in self.chat],
        }

    def _publish(self, ctx: Context) -> None:
        ctx.broadcast({"type": "state", **self.view()}, coalesce_key="state")

    # ------------------------------------------------------------------ connections
    def may_create(self, ctx: Context, claims: Mapping[str, Any]) -> bool:
        """Only an auctioneer's connect creates a lot (to open it): a viewer or bidder
        connecting to a lot nobody opened is refused ``not_found`` and stores nothing."""
        if claims.get("role") != "auctioneer":
            raise EntityNotFound(f"no lot {self.entity_id!r} yet: an auctioneer creates it by joining first")
        return True

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if claims.get("role") not in ROLES:
            raise Rejected(f"role must be one of {', '.join(ROLES)}")
        if not claims.get("sub"):
            raise Rejected("claims carry no subject")
        return {"type": "state", **self.view(), "reconnected": reconnect}

    def on_joined(self, ctx: Context, connection_id: str, claims: Mapping[str, Any], reconnect: bool) -> None:
        self._publish(ctx)  # everyone sees who is present (coalesced with other state updates)

    def on_disconnect(self, ctx: Context, connection_id: str, claims: Mapping[str, Any], reason: str) -> None:
        self._publish(ctx)

    def on_leave(self, ctx: Context, connection_id: str, claims: Mapping[str, Any]) -> None:
        ctx.broadcast({"type": "left", "user": claims.get("sub")})

    # ------------------------------------------------------------------ auctioneer
    @client_message("open")
    def open_lot(self, ctx: Context, title: str, increment: int = 1) -> dict[str, Any]:
        self.require_claim(ctx, "role", "auctioneer")
        self.check_can_open(title, increment)
        self._opened(title=title, increment=increment)
        self._publish(ctx)
        return self.view()

    @client_message("close")
    def close_lot(self, ctx: Context) -> dict[str, Any]:
        self.require_claim(ctx, "role", "auctioneer")
        if self.status != "open":
            raise Rejected("lot is not open")
        self._closed(winner=self.high_bidder, amount=self.high_amount)
        for bidder in self.limits:
            self._settle_hold(ctx, bidder)
        self._publish(ctx)
        return self.view()

    def check_can_open(self, title: str, increment: int) -> None:
        if self.status != "new":
            raise Rejected(f"lot is {self.status}")
        if not isinstance(title, str) or not title.strip() or len(title) > 200:
            raise Rejected("title must be 1-200 characters")
        if not isinstance(increment, int) or increment < 1:
            raise Rejected("increment must be a positive integer")

    @event("Opened")
    def _opened(self, title: str, increment: int) -> None:
        self.status = "open"
        self.title = title
        self.increment = increment

    @event("Closed")
    def _closed(self, winner: str | None, amount: int) -> None:
        self.status = "closed"
        self.winner = winner

    # ------------------------------------------------------------------ chat
    @client_message("chat")
    def post_chat(self, ctx: Context, text: str) -> dict[str, Any]:
        """Anyone in the room may talk; the message is stored (the reply means durable)
        and pushed to everyone. Late joiners get the last CHAT_KEPT in the state."""
        if not isinstance(text, str) or not text.strip() or len(text) > self.CHAT_MAX_CHARS:
            raise Rejected(f"chat text must be 1-{self.CHAT_MAX_CHARS} characters")
        user = str((ctx.claims or {}).get("sub"))
        self._chatted(message_id=ctx.message_id, user=user, text=text)
        ctx.broadcast({"type": "chat", "user": user, "text": text})
        return {"posted": ctx.message_id}

    @event("Chatted")
    def _chatted(self, message_id: str, user: str, text: str) -> None:
        self.chat = [*self.chat[-(self.CHAT_KEPT - 1):], [message_id, user, text]]

    # ------------------------------------------------------------------ bidding
    @client_message("register")
    def register(self, ctx: Context, limit: int) -> dict[str, Any]:
        """Ask for a credit line of ``limit`` before bidding. The reply says "registered" when
        the line is there already, else "pending"; the answer arrives as a ``registered`` or
        ``register_rejected`` push."""
        self.require_claim(ctx, "role", "bidder")
        if self.status == "closed":
            raise Rejected("lot is closed")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise Rejected("limit must be a positive integer")
        bidder = str((ctx.claims or {})["sub"])
        held = self.limits.get(bidder, 0)
        if limit <= held:
            return {"status": "registered", "limit": held}
        ctx.tell(EntityRef("Bidder", bidder), "hold_credit", lot=self.entity_id, minimum=limit, limit=limit,
                 bid=None, connection_id=ctx.connection_id)
        return {"status": "pending", "limit": limit}

    @client_message("bid")
    def bid(self, ctx: Context, amount: int, sent_at: float = 0.0) -> dict[str, Any]:
        """Within the bidder's credit line: accepted now (one event). Above it: the bidder's
        entity is asked to raise the line; the reply says "pending" and the outcome arrives
        as the lot's state (accepted) or a ``bid_rejected`` push."""
        self.require_claim(ctx, "role", "bidder")
        self.check_bid(amount)
        bidder = str((ctx.claims or {})["sub"])
        if amount <= self.limits.get(bidder, 0):
            self._accept(ctx, ctx.message_id, bidder, amount, float(sent_at))
            return {"status": "accepted", "bid_id": ctx.message_id, "amount": amount}
        ctx.tell(EntityRef("Bidder", bidder), "hold_credit", lot=self.entity_id, minimum=amount,
                 limit=amount + int(amount * self.HOLD_HEADROOM),
                 bid={"bid_id": ctx.message_id, "amount": amount, "sent_at": float(sent_at)},
                 connection_id=ctx.connection_id)
        return {"status": "pending", "bid_id": ctx.message_id}

    def check_bid(self, amount: Any) -> None:
        if self.status != "open":
            raise Rejected(f"lot is {self.status}")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise Rejected("amount must be an integer")
        minimum = self.high_amount + self.increment if self.high_bidder else max(self.increment, 1)
        if amount < minimum:
            raise Rejected(f"bid must be at least {minimum}")

    def _accept(self, ctx: Context, bid_id: str, bidder: str, amount: int, sent_at: float) -> None:
        self._bid_accepted(bid_id=bid_id, bidder=bidder, amount=amount, sent_at=sent_at)
        self._publish(ctx)

    def _settle_hold(self, ctx: Context, bidder: str) -> None:
        """After the close: the winner's account spends the winning amount (and releases the
        rest of its hold), every other account releases its hold. Both are idempotent."""
        if bidder == self.winner:
            ctx.tell(EntityRef("Bidder", bidder), "won", lot=self.entity_id, amount=self.high_amount)
        else:
            ctx.tell(EntityRef("Bidder", bidder), "release_hold", lot=self.entity_id)

    @entity_message("credit_held")
    def credit_held(self, ctx: Context, bidder: str, limit: int, bid: Mapping[str, Any] | None = None,
                    connection_id: str | None = None) -> None:
        """The bidder's account holds ``limit`` for this lot; then the bid that asked, if any."""
        if self.status == "closed":  # too late: give the credit back
            self._settle_hold(ctx, bidder)
            return
        if limit > self.limits.get(bidder, 0):
            self._limit_raised(bidder=bidder, limit=limit)
        if bid is None:
            if connection_id:
                ctx.to_connection(connection_id, {"type": "registered", "limit": self.limits[bidder]})
            return
        try:
            self.check_bid(bid["amount"])
            if bid["amount"] > self.limits.get(bidder, 0):
                raise Rejected("insufficient credit")
        except Rejected as refused:
            if connection_id:
                ctx.to_connection(connection_id, {"type": "bid_rejected", "bid_id": bid["bid_id"],
                                                  "reason": refused.reason})
            return
        self._accept(ctx, bid["bid_id"], bidder, bid["amount"], bid["sent_at"])

    @entity_message("credit_refused")
    def credit_refused(self, ctx: Context, reason: str, bid: Mapping[str, Any] | None = None,
                       connection_id: str | None = None) -> None:
        if not connection_id:
            return
        if bid is None:
            ctx.to_connection(connection_id, {"type": "register_rejected", "reason": reason})
        else:
            ctx.to_connection(connection_id, {"type": "bid_rejected", "bid_id": bid["bid_id"], "reason": reason})

    @entity_message("hold_status")
    def hold_status(self, ctx: Context, bidder: str, held: int) -> None:
        """A bidder's account has not heard about its hold for this lot for a while: closed
        lots settle it again; an open lot adopts a hold whose ``credit_held`` was lost, so
        that the close releases it."""
        if self.status == "closed":
            self._settle_hold(ctx, bidder)
        elif held > self.limits.get(bidder, 0):
            self._limit_raised(bidder=bidder, limit=held)

    @event("LimitRaised")
    def _limit_raised(self, bidder: str, limit: int) -> None:
        self.limits[bidder] = limit

    @event("BidAccepted")
    def _bid_accepted(self, bid_id: str, bidder: str, amount: int, sent_at: float) -> None:
        self.high_amount = amount
        self.high_bidder = bidder
        self.high_bid_id = bid_id
        self.high_bid_at = sent_at
        self.bid_count += 1
