"""A live auction lot: one entity shared by thousands of viewers and bidders (large entity).

Roles come from the connection's JWT claims (``role``): an ``auctioneer`` opens and closes
the lot, a ``bidder`` bids, a ``viewer`` watches. A bid is accepted only after the bidder's
credit is reserved by the bidder's own entity (``Bidder``), through entity messages:

    client ──bid──▶ Lot ──reserve_credit──▶ Bidder ──credit_reserved──▶ Lot  (BidAccepted)
                                                   └─credit_refused───▶ Lot  (bidder told)

When a bid is accepted, the previous highest bidder's reservation is released, and every
connection receives the new state (coalesced: latest wins). Closing the lot tells the
winner's entity to spend the reserved credit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.context import Context
from domain.entity import Entity, client_message, entity_message
from domain.errors import Rejected
from domain.refs import EntityRef
from eventsourcing.domain import event

ROLES = ("auctioneer", "bidder", "viewer")


class Lot(Entity):
    """A lot under auction. State: status, title, reserve, increment, the highest bid, the
    last chat messages of its room."""

    CATEGORY = "Lot"
    GRACE_PERIOD = 30.0
    CHAT_KEPT = 20
    CHAT_MAX_CHARS = 500

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
            "present": len(self.live_connections()),
            "chat": [{"user": user, "text": text} for _mid, user, text in self.chat],
        }

    def _publish(self, ctx: Context) -> None:
        ctx.broadcast({"type": "state", **self.view()}, coalesce_key="state")

    # ------------------------------------------------------------------ connections
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
        if self.high_bidder is not None:
            ctx.tell(EntityRef("Bidder", self.high_bidder), "won", bid_id=self.high_bid_id, lot=self.entity_id)
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
    @client_message("bid")
    def bid(self, ctx: Context, amount: int, sent_at: float = 0.0) -> dict[str, Any]:
        """Check the bid, then ask the bidder's entity to reserve the credit. The bid is
        accepted (or not) when the reservation answers; the reply says it is pending."""
        self.require_claim(ctx, "role", "bidder")
        self.check_bid(amount)
        claims = ctx.claims or {}
        ctx.tell(
            EntityRef("Bidder", str(claims["sub"])),
            "reserve_credit",
            lot=self.entity_id,
            bid_id=ctx.message_id,
            amount=amount,
            connection_id=ctx.connection_id,
            sent_at=float(sent_at),
        )
        return {"status": "pending", "bid_id": ctx.message_id}

    def check_bid(self, amount: Any) -> None:
        if self.status != "open":
            raise Rejected(f"lot is {self.status}")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise Rejected("amount must be an integer")
        minimum = self.high_amount + self.increment if self.high_bidder else max(self.increment, 1)
        if amount < minimum:
            raise Rejected(f"bid must be at least {minimum}")

    @entity_message("credit_reserved")
    def credit_reserved(
        self, ctx: Context, bid_id: str, bidder: str, amount: int, connection_id: str | None, sent_at: float = 0.0
    ) -> None:
        try:
            self.check_bid(amount)
        except Rejected as refused:
            ctx.tell(EntityRef("Bidder", bidder), "release_credit", bid_id=bid_id)
            if connection_id:
                ctx.to_connection(connection_id, {"type": "bid_rejected", "bid_id": bid_id, "reason": refused.reason})
            return
        previous = (self.high_bidder, self.high_bid_id)
        self._bid_accepted(bid_id=bid_id, bidder=bidder, amount=amount, sent_at=sent_at)
        if previous[0] is not None:
            ctx.tell(EntityRef("Bidder", previous[0]), "release_credit", bid_id=previous[1])
        ctx.tell(EntityRef("Bidder", bidder), "bid_settled", bid_id=bid_id)
        self._publish(ctx)

    @entity_message("credit_refused")
    def credit_refused(self, ctx: Context, bid_id: str, reason: str, connection_id: str | None) -> None:
        if connection_id:
            ctx.to_connection(connection_id, {"type": "bid_rejected", "bid_id": bid_id, "reason": reason})

    @entity_message("bid_status")
    def bid_status(self, ctx: Context, bid_id: str, bidder: str) -> None:
        """A bidder's reservation is still unsettled: settle it or release it."""
        holds = bid_id == self.high_bid_id and bidder == self.high_bidder
        ctx.tell(EntityRef("Bidder", bidder), "bid_settled" if holds else "release_credit", bid_id=bid_id)

    @event("BidAccepted")
    def _bid_accepted(self, bid_id: str, bidder: str, amount: int, sent_at: float) -> None:
        self.high_amount = amount
        self.high_bidder = bidder
        self.high_bid_id = bid_id
        self.high_bid_at = sent_at
        self.bid_count += 1
