"""An order for units of one SKU: it reserves them through the SKU's ``StockLevel`` proxy.

    client ──place──▶ Order ──proxy_command(reserve)──▶ StockLevel ──(primary: reserve, pull)
    client ◀─order── Order ◀──────proxy_result──────── StockLevel

The order is ``pending`` until the proxy answers: ``confirmed`` with the stock level the
primary reported after the reservation, or ``failed`` with the typed error's code and the
last known level (e.g. ``primary_unavailable``: the warehouse could not be asked). The
answer is an entity message (at most once): a client re-sends ``place`` (same message ID)
to re-ask; an order placed once is never reserved twice (same idempotency key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsourcing.domain import event

from domain.context import Context
from domain.entity import Entity, client_message, entity_message
from domain.errors import ProxyError, Rejected
from domain.proxy import ProxyAnswer, ask_command
from domain.refs import EntityRef


class Order(Entity):
    CATEGORY = "Order"
    GRACE_PERIOD = 0.0

    def initialise(self) -> None:
        self.status = "new"
        self.sku = ""
        self.qty = 0
        self.customer = ""
        self.detail: dict[str, Any] = {}

    def view(self) -> dict[str, Any]:
        return {"type": "order", "order": self.entity_id, "status": self.status, "sku": self.sku, "qty": self.qty,
                "detail": self.detail}

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if self.customer and claims.get("sub") != self.customer:
            raise Rejected("only the customer may watch this order")
        return self.view()

    @client_message("place")
    def place(self, ctx: Context, sku: str, qty: int) -> Any:
        if self.status not in ("new", "failed"):
            raise Rejected(f"order is {self.status}")
        if qty <= 0:
            raise Rejected("qty must be positive")
        stock = EntityRef("StockLevel", sku)  # an invalid SKU is refused here, before anything changes
        self._placed(sku=sku, qty=qty, customer=str((ctx.claims or {}).get("sub", "")))
        ask_command(ctx, stock, {"op": "reserve", "qty": qty})
        return {"status": "pending"}

    @entity_message("proxy_result")
    def reserved(self, ctx: Context, **data: Any) -> None:
        if ctx.sender != EntityRef("StockLevel", self.sku) or self.status != "pending":
            return  # not our proxy, or answered already
        answer = ProxyAnswer.of(data)
        try:
            answer.raise_for_error()
        except ProxyError as exc:
            self._failed(code=exc.code, last_known=exc.last_known)
        else:
            self._confirmed(level=answer.state)
        ctx.broadcast(self.view())

    @event("Placed")
    def _placed(self, sku: str, qty: int, customer: str) -> None:
        self.status, self.sku, self.qty, self.customer = "pending", sku, qty, customer

    @event("Confirmed")
    def _confirmed(self, level: Any) -> None:
        self.status = "confirmed"
        self.detail = {"level": level}

    @event("Failed")
    def _failed(self, code: str, last_known: dict[str, Any]) -> None:
        self.status = "failed"
        self.detail = {"error": code, "last_known": last_known}
