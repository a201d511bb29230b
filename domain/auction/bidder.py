"""A bidder's account: credit, and the part of it held for lots (small entity, 1M+ of them).

The entity ID is the user's ``sub`` claim. An account opens on its first hold with
``INITIAL_CREDIT`` (a demo rule; a real house would take deposits). A lot asks for a hold
(``hold_credit``: at least ``minimum``, ideally ``limit``) and gets ``credit_held`` with the
amount it may now accept bids up to, or ``credit_refused``. The hold lasts until the lot
closes: the winner's account spends the winning amount (``won``), the others release
(``release_hold``). Holds are per lot, not per bid: a bidder's exposure on a lot is its
credit line there, and a busy bidder writes no event per bid.

Messages between entities are at most once, so one timer per account (not one per hold)
asks each lot about holds older than ``HOLD_CHECK`` seconds (``hold_status``); the lot
answers by settling (closed) or by adopting the hold (open). Credit is only released on the
lot's word, so a lost message can delay a release but never free credit a lot counts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsourcing.domain import event

from domain.context import Context
from domain.entity import Entity, entity_message, timer
from domain.errors import Rejected
from domain.refs import EntityRef


class Bidder(Entity):
    CATEGORY = "Bidder"
    GRACE_PERIOD = 0.0
    DEDUP_WINDOW = 64
    DEDUP_PER_SENDER = 16
    """A lot, its timers: 16 recent IDs each (a lot sends an account a few messages per bid round)."""
    INITIAL_CREDIT = 1_000_000
    HOLD_CHECK = 300.0

    def initialise(self) -> None:
        self.opened = False
        self.credit = 0
        self.holds: dict[str, list[Any]] = {}  # lot -> [amount held, when last changed or checked]
        self.held_total = 0

    @property
    def available(self) -> int:
        return self.credit - self.held_total

    def view(self) -> dict[str, Any]:
        return {"bidder": self.entity_id, "credit": self.credit, "available": self.available,
                "holds": {lot: held[0] for lot, held in self.holds.items()}}

    def _publish(self, ctx: Context) -> None:
        if self.has_live_connections():  # building the view costs O(holds): only for watchers
            ctx.broadcast({"type": "account", **self.view()}, coalesce_key="account")

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if claims.get("sub") != self.entity_id and claims.get("role") != "auctioneer":
            raise Rejected("only the account holder may watch this account")
        return {"type": "account", **self.view()}

    @entity_message("hold_credit")
    def hold_credit(self, ctx: Context, lot: str, minimum: int, limit: int, bid: Mapping[str, Any] | None = None,
                    connection_id: str | None = None) -> None:
        """Hold at least ``minimum`` (up to ``limit``) for ``lot``: the lot may accept this
        bidder's bids up to the amount held. Asking again never lowers a hold."""
        assert ctx.sender is not None
        if not self.opened:
            self._account_opened(credit=self.INITIAL_CREDIT)
        current = self.holds[lot][0] if lot in self.holds else 0
        if current >= minimum:  # held already (an ask repeated, or crossed with another)
            ctx.tell(ctx.sender, "credit_held", bidder=self.entity_id, limit=current, bid=bid,
                     connection_id=connection_id)
            return
        grant = min(max(limit, minimum), current + self.available)
        if grant < minimum:
            ctx.tell(ctx.sender, "credit_refused", reason="insufficient credit", bid=bid, connection_id=connection_id)
            return
        self._credit_held(lot=lot, amount=grant, at=ctx.now)
        if self.timer("hold_check") is None:
            ctx.start_timer("hold_check", self.HOLD_CHECK)
        ctx.tell(ctx.sender, "credit_held", bidder=self.entity_id, limit=grant, bid=bid, connection_id=connection_id)
        self._publish(ctx)

    @entity_message("release_hold")
    def release_hold(self, ctx: Context, lot: str) -> None:
        if lot in self.holds:
            self._hold_released(lot=lot)
            self._publish(ctx)

    @entity_message("won")
    def won(self, ctx: Context, lot: str, amount: int) -> None:
        """Spend the winning amount, release the rest of the hold. A repeated ``won`` finds
        no hold and changes nothing."""
        if lot in self.holds:
            self._credit_spent(lot=lot, amount=min(amount, self.holds[lot][0]))
            self._publish(ctx)

    @timer("hold_check")
    def hold_check(self, ctx: Context) -> None:
        """Ask each lot about holds not heard of for HOLD_CHECK seconds (its answer settles or
        confirms them); keep checking while any hold is left."""
        for lot, (amount, at) in self.holds.items():
            if ctx.now - at >= self.HOLD_CHECK:
                ctx.tell(EntityRef("Lot", lot), "hold_status", bidder=self.entity_id, held=amount)
        if self.holds:
            ctx.start_timer("hold_check", self.HOLD_CHECK)

    @event("AccountOpened")
    def _account_opened(self, credit: int) -> None:
        self.opened = True
        self.credit = credit

    @event("CreditHeld")
    def _credit_held(self, lot: str, amount: int, at: float) -> None:
        previous = self.holds[lot][0] if lot in self.holds else 0
        self.holds[lot] = [amount, at]
        self.held_total += amount - previous

    @event("HoldReleased")
    def _hold_released(self, lot: str) -> None:
        released = self.holds.pop(lot, None)
        if released is not None:
            self.held_total -= released[0]

    @event("CreditSpent")
    def _credit_spent(self, lot: str, amount: int) -> None:
        held = self.holds.pop(lot)
        self.held_total -= held[0]
        self.credit -= amount
