"""A room: who is in it and how they are, told by the members' own ``UserState`` entities.

Members join and leave from their ``UserState`` (``join_room``/``leave_room``), which tells
the room ``member_presence`` (the member's whole presence, on joining and on every change)
or ``member_left``. Only a user's own ``UserState`` speaks for them: a message naming
another user is refused, so nobody can put words in a member's mouth. Anyone may connect
to watch the roster (the welcome has it all, then a ``member`` push per change, coalesced
per member: a watcher that falls behind gets each member's latest line).

A room holds at most ``MAX_MEMBERS``; a newcomer beyond that is told ``room_full`` and its
``UserState`` forgets the room.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsourcing.domain import event

from domain.context import Context
from domain.entity import Entity, entity_message
from domain.errors import NotAuthorised, Rejected
from domain.refs import EntityRef


class Room(Entity):
    CATEGORY = "Room"
    GRACE_PERIOD = 0.0
    STORED_CLAIMS = ("sub",)
    MAX_MEMBERS = 1000

    members: dict[str, list[Any]] | None = None
    """user -> [status, text, last_seen]; None (the class default) until someone joins."""

    def roster(self) -> dict[str, dict[str, Any]]:
        return {user: _line(line) for user, line in (self.members or {}).items()}

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if not isinstance(claims.get("sub"), str) or not claims.get("sub"):
            raise Rejected("claims carry no subject")
        return {"type": "roster", "room": self.entity_id, "members": self.roster()}

    def _from_member(self, ctx: Context, user: str) -> None:
        if ctx.sender != EntityRef("UserState", user):
            raise NotAuthorised("only a user's own UserState speaks for them")

    @entity_message("member_presence")
    def member_presence(self, ctx: Context, user: str, status: str, text: str, last_seen: float) -> None:
        """A member joined or their presence changed (the same again changes nothing)."""
        self._from_member(ctx, user)
        members = self.members or {}
        if user not in members and len(members) >= self.MAX_MEMBERS:
            assert ctx.sender is not None
            ctx.tell(ctx.sender, "room_full", room=self.entity_id)
            return
        line = [status, text, last_seen]
        if members.get(user) != line:
            self._member_presence(user=user, status=status, text=text, last_seen=last_seen)
            ctx.broadcast({"type": "member", "user": user, **_line(line)}, coalesce_key=f"member:{user}")

    @entity_message("member_left")
    def member_left(self, ctx: Context, user: str) -> None:
        self._from_member(ctx, user)
        if user in (self.members or {}):
            self._member_left(user=user)
            ctx.broadcast({"type": "member_left", "user": user}, coalesce_key=f"member:{user}")

    @event("MemberPresence")
    def _member_presence(self, user: str, status: str, text: str, last_seen: float) -> None:
        if self.members is None:
            self.members = {}
        self.members[user] = [status, text, last_seen]

    @event("MemberLeft")
    def _member_left(self, user: str) -> None:
        if self.members is not None:
            self.members.pop(user, None)


def _line(line: list[Any]) -> dict[str, Any]:
    status, text, last_seen = line
    return {"status": status, "text": text, "last_seen": last_seen}
