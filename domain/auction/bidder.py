"""A bidder's account: credit and the reservations held for bids (small entity, 1M+ of them).

The entity ID is the user's ``sub`` claim. An account opens on its first reservation with
``INITIAL_CREDIT`` (a demo rule; a real house would take deposits). A reservation waits for
the lot to settle it; if the lot never answers (messages between entities are at most
once), one timer per account asks the lots about reservations still unsettled after
``RESERVATION_TIMEOUT`` seconds. One timer for all reservations, not one per bid: a busy
bidder would otherwise write two timer events per bid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.context import Context
from domain.entity import Entity, entity_message, timer
from domain.errors import Rejected
from domain.refs import EntityRef
from eventsourcing.domain import event


class Bidder(Entity):
    CATEGORY = "Bidder"
    GRACE_PERIOD = 0.0
    DEDUP_WINDOW = 64
    INITIAL_CREDIT = 1_000_000
    RESERVATION_TIMEOUT = 60.0

    def initialise(self) -> None:
        self.opened = False
        self.credit = 0
        self.reserved: dict[str, list[Any]] = {}  # bid_id -> [lot, amount, settled, reserved_at]
        self.reserved_total = 0  # kept with the events: a busy bidder holds many reservations

    @property
    def available(self) -> int:
        return self.credit - self.reserved_total

    def view(self) -> dict[str, Any]:
        return {"bidder": self.entity_id, "credit": self.credit, "available": self.available,
                "reserved": {bid: {"lot": r[0], "amount": r[1]} for bid, r in self.reserved.items()}}

    def _publish(self, ctx: Context) -> None:
        if self.has_live_connections():  # building the view costs O(reservations): only for watchers
            ctx.broadcast({"type": "account", **self.view()}, coalesce_key="account")

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if claims.get("sub") != self.entity_id and claims.get("role") != "auctioneer":
            raise Rejected("only the account holder may watch this account")
        return {"type": "account", **self.view()}

    @entity_message("reserve_credit")
    def reserve_credit(
        self, ctx: Context, lot: str, bid_id: str, amount: int, connection_id: str | None, sent_at: float = 0.0
    ) -> None:
        assert ctx.sender is not None
        if not self.opened:
            self._account_opened(credit=self.INITIAL_CREDIT)
        if amount > self.available:
            ctx.tell(ctx.sender, "credit_refused", bid_id=bid_id, reason="insufficient credit", connection_id=connection_id)
            return
        self._credit_reserved(bid_id=bid_id, lot=lot, amount=amount, at=ctx.now)
        if self.timer("reservation_check") is None:
            ctx.start_timer("reservation_check", self.RESERVATION_TIMEOUT)
        ctx.tell(ctx.sender, "credit_reserved", bid_id=bid_id, bidder=self.entity_id, amount=amount,
                 connection_id=connection_id, sent_at=sent_at)
        self._publish(ctx)

    @entity_message("bid_settled")
    def bid_settled(self, ctx: Context, bid_id: str) -> None:
        if bid_id in self.reserved:
            self._reservation_settled(bid_id=bid_id)

    @entity_message("release_credit")
    def release_credit(self, ctx: Context, bid_id: str | None) -> None:
        if bid_id in self.reserved:
            self._credit_released(bid_id=bid_id)
            self._publish(ctx)

    @entity_message("won")
    def won(self, ctx: Context, bid_id: str | None, lot: str) -> None:
        if bid_id not in self.reserved:
            raise Rejected(f"no reservation {bid_id} for lot {lot}")
        self._credit_spent(bid_id=bid_id)
        self._publish(ctx)

    @timer("reservation_check")
    def reservation_check(self, ctx: Context) -> None:
        """Reservations the lots have not settled in time: ask each lot again (its answer is
        bid_settled or release_credit). Credit is only released on the lot's word, so a lost
        message can delay a release but never free credit a lot still counts on."""
        unsettled = {bid: r for bid, r in self.reserved.items() if not r[2]}
        for bid_id, (lot, _amount, _settled, at) in unsettled.items():
            if ctx.now - at >= self.RESERVATION_TIMEOUT:
                ctx.tell(EntityRef("Lot", lot), "bid_status", bid_id=bid_id, bidder=self.entity_id)
        if unsettled:
            ctx.start_timer("reservation_check", self.RESERVATION_TIMEOUT)

    @event("AccountOpened")
    def _account_opened(self, credit: int) -> None:
        self.opened = True
        self.credit = credit

    @event("CreditReserved")
    def _credit_reserved(self, bid_id: str, lot: str, amount: int, at: float) -> None:
        self.reserved[bid_id] = [lot, amount, False, at]
        self.reserved_total += amount

    @event("ReservationSettled")
    def _reservation_settled(self, bid_id: str) -> None:
        self.reserved[bid_id][2] = True

    @event("CreditReleased")
    def _credit_released(self, bid_id: str) -> None:
        released = self.reserved.pop(bid_id, None)
        if released is not None:
            self.reserved_total -= released[1]

    @event("CreditSpent")
    def _credit_spent(self, bid_id: str) -> None:
        amount = self.reserved.pop(bid_id)[1]
        self.reserved_total -= amount
        self.credit -= amount
