"""A bidder's account: credit and the reservations held for bids (small entity, 1M+ of them).

The entity ID is the user's ``sub`` claim. An account opens on its first reservation with
``INITIAL_CREDIT`` (a demo rule; a real house would take deposits). A reservation waits for
the lot to settle it; if the lot never answers (messages between entities are at most
once), a timer asks the lot again every ``RESERVATION_TIMEOUT`` seconds.
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
        self.reserved: dict[str, list[Any]] = {}  # bid_id -> [lot, amount, settled]

    @property
    def available(self) -> int:
        return self.credit - sum(r[1] for r in self.reserved.values())

    def view(self) -> dict[str, Any]:
        return {"bidder": self.entity_id, "credit": self.credit, "available": self.available,
                "reserved": {bid: {"lot": r[0], "amount": r[1]} for bid, r in self.reserved.items()}}

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
        self._credit_reserved(bid_id=bid_id, lot=lot, amount=amount)
        ctx.start_timer("reservation_timeout", self.RESERVATION_TIMEOUT, key=f"reservation:{bid_id}", bid_id=bid_id)
        ctx.tell(ctx.sender, "credit_reserved", bid_id=bid_id, bidder=self.entity_id, amount=amount,
                 connection_id=connection_id, sent_at=sent_at)
        ctx.broadcast({"type": "account", **self.view()}, coalesce_key="account")

    @entity_message("bid_settled")
    def bid_settled(self, ctx: Context, bid_id: str) -> None:
        if bid_id in self.reserved:
            self._reservation_settled(bid_id=bid_id)
            ctx.cancel_timer(f"reservation:{bid_id}")

    @entity_message("release_credit")
    def release_credit(self, ctx: Context, bid_id: str | None) -> None:
        if bid_id in self.reserved:
            self._credit_released(bid_id=bid_id)
            ctx.cancel_timer(f"reservation:{bid_id}")
            ctx.broadcast({"type": "account", **self.view()}, coalesce_key="account")

    @entity_message("won")
    def won(self, ctx: Context, bid_id: str | None, lot: str) -> None:
        if bid_id not in self.reserved:
            raise Rejected(f"no reservation {bid_id} for lot {lot}")
        self._credit_spent(bid_id=bid_id)
        ctx.broadcast({"type": "account", **self.view()}, coalesce_key="account")

    @timer("reservation_timeout")
    def reservation_timeout(self, ctx: Context, bid_id: str) -> None:
        """The lot has not settled the bid yet: ask it again (its answer is bid_settled or
        release_credit) and keep waiting. Credit is only released on the lot's word, so a
        lost message can delay a release but never free credit a lot still counts on."""
        reservation = self.reserved.get(bid_id)
        if reservation is not None and not reservation[2]:
            ctx.tell(EntityRef("Lot", reservation[0]), "bid_status", bid_id=bid_id, bidder=self.entity_id)
            ctx.start_timer("reservation_timeout", self.RESERVATION_TIMEOUT, key=f"reservation:{bid_id}", bid_id=bid_id)

    @event("AccountOpened")
    def _account_opened(self, credit: int) -> None:
        self.opened = True
        self.credit = credit

    @event("CreditReserved")
    def _credit_reserved(self, bid_id: str, lot: str, amount: int) -> None:
        self.reserved[bid_id] = [lot, amount, False]

    @event("ReservationSettled")
    def _reservation_settled(self, bid_id: str) -> None:
        self.reserved[bid_id][2] = True

    @event("CreditReleased")
    def _credit_released(self, bid_id: str) -> None:
        self.reserved.pop(bid_id, None)

    @event("CreditSpent")
    def _credit_spent(self, bid_id: str) -> None:
        _lot, amount, _settled = self.reserved.pop(bid_id)
        self.credit -= amount
