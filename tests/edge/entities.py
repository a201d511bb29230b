"""A small entity for edge tests: pushes to all / by claims / to one, coalesced updates,
floods of pushes (slow consumers), and terminations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain import Context, Entity, Rejected, RetryLater, client_message, event


class Room(Entity):
    CATEGORY = "Room"
    GRACE_PERIOD = 5.0

    def initialise(self) -> None:
        self.value = 0

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if claims.get("role") == "banned":
            raise Rejected("banned users may not enter")
        if claims.get("role") == "later":  # a transient refusal (as when the shard has no owner yet)
            raise RetryLater("come back in a moment")
        return {"value": self.value, "reconnected": reconnect}

    @client_message("set")
    def set_value(self, ctx: Context, value: int) -> int:
        self._set(value=value)
        ctx.broadcast({"value": value}, coalesce_key="value")
        return value

    @client_message("get")
    def get(self, ctx: Context) -> int:
        return self.value

    @client_message("say")
    def say(self, ctx: Context, text: str, role: str | None = None, to: str | None = None) -> None:
        if to:
            ctx.to_connection(to, {"text": text})
        elif role:
            ctx.to_claims({"role": role}, {"text": text})
        else:
            ctx.broadcast({"text": text})

    @client_message("spam")
    def spam(self, ctx: Context, n: int, size: int) -> None:
        blob = "x" * size
        for i in range(n):
            ctx.broadcast({"i": i, "blob": blob})

    @client_message("kick")
    def kick(self, ctx: Context, cid: str, reconnect: bool = False) -> None:
        ctx.terminate(cid, "kicked", reconnect)

    @event("Set")
    def _set(self, value: int) -> None:
        self.value = value
