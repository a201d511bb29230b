"""One SKU's stock level, as the warehouse system (the primary) knows it.

The primary's state is ``{"on_hand": int, "reserved": int}`` with a version that grows
with every change; its commands are ``{"op": "reserve", "qty": n}`` and ``{"op":
"release", "qty": n}``, applied once per idempotency key. Devices of class ``warehouse``
(the warehouse's gateway on the internal edge) push changes; clerks (``role`` ``clerk``)
and ``Order`` entities send commands; anyone connected reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.context import Context
from domain.errors import PayloadDecodeError
from domain.proxy import StateProxy

COMMANDS = ("reserve", "release")


class StockLevel(StateProxy):
    CATEGORY = "StockLevel"
    PUSH_CLASSES = ("warehouse",)
    COMMAND_ROLES = ("clerk",)
    PRIMARY_HONOURS_KEYS = True
    """The warehouse applies a reservation once per idempotency key: a reservation whose
    result was lost in a failover is sent again with the same key."""
    PULL_TIMEOUT_S = 3.0
    COMMAND_TIMEOUT_S = 5.0
    DEDUP_WINDOW = 128

    def may_command(self, ctx: Context, command: Mapping[str, Any]) -> bool:
        qty = command.get("qty")
        if command.get("op") not in COMMANDS or type(qty) is not int or qty <= 0:
            raise PayloadDecodeError(f"command must be {{'op': one of {', '.join(COMMANDS)}, 'qty': a positive integer}}")
        return super().may_command(ctx, command)

    def available(self) -> int | None:
        """Units neither reserved nor gone, as last known (None: never heard of it)."""
        state = self.remote_state
        if not isinstance(state, dict):
            return None
        return int(state.get("on_hand", 0)) - int(state.get("reserved", 0))
