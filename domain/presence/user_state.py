"""One user's presence: a small entity per user, a million of them on a node.

The entity ID is the user's ``sub`` claim. The user's own connections are their devices:
the user is ``online`` (or the ``away``/``busy`` they chose, with a short text) while at
least one of them is live, ``offline`` otherwise, and ``last_seen`` is when their last
device went away. Anyone may connect to watch a user (their connections get every change
as a ``presence`` push), but only the user may change their state, and only the user's own
connect creates the entity: watching someone who never came online is ``not_found`` and
stores nothing, so watchers cannot make entities for names they guess.

A user joins rooms (:class:`~domain.presence.room.Room`); every change of their presence is
told to each of their rooms (``member_presence``, the whole presence, latest wins). Entity
messages are at most once: a lost one leaves a room's line for the user stale until the
user's next change, which carries the whole presence again and heals it.

Why it stays small: the state lives in class-level defaults (``status``, ``text``,
``last_seen``, ``settings``, ``rooms``) and an instance gets its own attribute only when an
event changes it, so a user who only came online holds nothing but the platform's
connection record. ``GRACE_PERIOD`` is 0 (a dropped device is forgotten at once: no timer
per user), ``STORED_CLAIMS`` keeps only ``sub``, and the idempotency window is small (one
person's few devices send little).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from eventsourcing.domain import event

from domain.context import Context
from domain.entity import Entity, client_message, entity_message
from domain.errors import EntityNotFound, NotAuthorised, Rejected
from domain.refs import CATEGORY_PATTERN, EntityRef

STATUSES = ("online", "away", "busy")
"""What a user may choose; ``offline`` is never chosen, it is having no live device."""

ROOM_ID_PATTERN = CATEGORY_PATTERN
"""Room IDs: a letter, then letters, digits or underscores (64 at most)."""


class UserState(Entity):
    CATEGORY = "UserState"
    GRACE_PERIOD = 0.0
    STORED_CLAIMS = ("sub",)
    DEDUP_WINDOW = 64
    DEDUP_PER_SENDER = 32
    """A user's devices and rooms send a few messages a minute: 32 recent IDs per sender
    cover any retry; 64 in all keeps the window (which is in every snapshot) small."""

    MAX_TEXT_CHARS = 140
    MAX_SETTINGS = 32
    MAX_SETTING_KEY_CHARS = 64
    MAX_SETTING_VALUE_CHARS = 256
    MAX_ROOMS = 16

    # State as class-level defaults: an instance holds its own attribute only once an event
    # sets it (see the module docstring).
    status: str = "online"
    text: str = ""
    last_seen: float = 0.0
    settings: dict[str, Any] | None = None
    rooms: Sequence[str] = ()
    """The rooms joined, in order (a list once the user joined one: it goes through the codec as one)."""

    # ------------------------------------------------------------------ views
    def devices(self) -> int:
        """The user's own live connections."""
        return self.live_count_of(self.entity_id)

    def presence(self) -> dict[str, Any]:
        online = self.devices() > 0
        return {"user": self.entity_id, "status": self.status if online else "offline", "text": self.text,
                "last_seen": self.last_seen, "devices": self.devices()}

    def _is_owner(self, claims: Mapping[str, Any] | None) -> bool:
        return (claims or {}).get("sub") == self.entity_id

    def _require_owner(self, ctx: Context) -> None:
        if not self._is_owner(ctx.claims):
            raise NotAuthorised(f"only {self.entity_id} may change their presence")

    def _announce(self, ctx: Context) -> None:
        """Tell watchers and rooms the presence as it is now."""
        ctx.broadcast({"type": "presence", **self.presence()}, coalesce_key="presence")
        for room in self.rooms:
            self._tell_room(ctx, room)

    def _tell_room(self, ctx: Context, room: str) -> None:
        view = self.presence()
        ctx.tell(EntityRef("Room", room), "member_presence", user=self.entity_id, status=view["status"],
                 text=view["text"], last_seen=view["last_seen"])

    def _to_owner(self, ctx: Context, payload: Mapping[str, Any]) -> None:
        if self.devices():
            ctx.to_claims({"sub": self.entity_id}, dict(payload))

    # ------------------------------------------------------------------ connections
    def may_create(self, ctx: Context, claims: Mapping[str, Any]) -> bool:
        if not self._is_owner(claims):
            raise EntityNotFound(f"{self.entity_id} has not been online yet")
        return True

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        if not isinstance(claims.get("sub"), str) or not claims.get("sub"):
            raise Rejected("claims carry no subject")
        welcome: dict[str, Any] = {"type": "presence", **self.presence()}
        if self._is_owner(claims):  # the welcome counts the device connecting now
            if not (ctx.connection_id and self.is_live(ctx.connection_id)):
                welcome.update(status=self.status, devices=welcome["devices"] + 1)
            welcome.update(settings=dict(self.settings or {}), rooms=list(self.rooms))
        return welcome

    def on_joined(self, ctx: Context, connection_id: str, claims: Mapping[str, Any], reconnect: bool) -> None:
        if self._is_owner(claims) and not reconnect and self.devices() == 1:  # came online
            self._announce(ctx)

    def on_disconnect(self, ctx: Context, connection_id: str, claims: Mapping[str, Any], reason: str) -> None:
        if self._is_owner(claims) and self.devices() == 0:  # the last device went away
            self._went_offline(at=ctx.now)
            self._announce(ctx)

    # ------------------------------------------------------------------ the user's own changes
    @client_message("set_status")
    def set_status(self, ctx: Context, status: str, text: str = "") -> dict[str, Any]:
        """Choose ``online``/``away``/``busy`` with a text; the same again changes nothing."""
        self._require_owner(ctx)
        self.check_status(status, text)
        if (status, text) != (self.status, self.text):
            self._status_set(status=status, text=text)
            self._announce(ctx)
        return self.presence()

    def check_status(self, status: str, text: str) -> None:
        if status not in STATUSES:
            raise Rejected(f"status must be one of {', '.join(STATUSES)}")
        if len(text) > self.MAX_TEXT_CHARS or not text.isprintable():
            raise Rejected(f"text must be at most {self.MAX_TEXT_CHARS} printable characters")

    @client_message("set_setting")
    def set_setting(self, ctx: Context, key: str, value: Any = None) -> dict[str, Any]:
        """Set one of the user's settings (a string, number or true/false); ``value`` nil
        removes it. Only the user sees them (in their welcome and ``settings`` pushes)."""
        self._require_owner(ctx)
        current = self.settings or {}
        if value is None:
            if key in current:
                self._setting_removed(key=key)
        else:
            self.check_setting(key, value)
            if key not in current or current[key] != value or type(current[key]) is not type(value):
                self._setting_changed(key=key, value=value)
        settings = dict(self.settings or {})
        self._to_owner(ctx, {"type": "settings", "settings": settings})
        return settings

    def check_setting(self, key: str, value: Any) -> None:
        if not key or len(key) > self.MAX_SETTING_KEY_CHARS or not key.isprintable():
            raise Rejected(f"a setting's key must be 1-{self.MAX_SETTING_KEY_CHARS} printable characters")
        if not (isinstance(value, (str, int, bool)) or (type(value) is float and math.isfinite(value))):
            raise Rejected("a setting's value must be a string, a finite number, true or false")
        if isinstance(value, str) and len(value) > self.MAX_SETTING_VALUE_CHARS:
            raise Rejected(f"a setting's value must be at most {self.MAX_SETTING_VALUE_CHARS} characters")
        if key not in (self.settings or {}) and len(self.settings or {}) >= self.MAX_SETTINGS:
            raise Rejected(f"at most {self.MAX_SETTINGS} settings")

    @client_message("join_room")
    def join_room(self, ctx: Context, room: str) -> dict[str, Any]:
        """Join ``room``: it hears this user's presence from now on (a member already: no change)."""
        self._require_owner(ctx)
        if room not in self.rooms:
            self.check_room(room)
            self._room_joined(room=room)
            self._tell_room(ctx, room)
        return {"rooms": list(self.rooms)}

    def check_room(self, room: str) -> None:
        if not ROOM_ID_PATTERN.match(room):
            raise Rejected("a room ID is a letter, then letters, digits or underscores (64 at most)")
        if len(self.rooms) >= self.MAX_ROOMS:
            raise Rejected(f"at most {self.MAX_ROOMS} rooms")

    @client_message("leave_room")
    def leave_room(self, ctx: Context, room: str) -> dict[str, Any]:
        """Leave ``room`` (not a member: no change)."""
        self._require_owner(ctx)
        if room in self.rooms:
            self._room_left(room=room)
            ctx.tell(EntityRef("Room", room), "member_left", user=self.entity_id)
        return {"rooms": list(self.rooms)}

    # ------------------------------------------------------------------ what rooms say
    @entity_message("room_full")
    def room_full(self, ctx: Context, room: str) -> None:
        """A room refused this user (full): forget it, and tell the user's devices."""
        if ctx.sender != EntityRef("Room", room):
            raise NotAuthorised("only the room itself may say it is full")
        if room in self.rooms:
            self._room_left(room=room)
            self._to_owner(ctx, {"type": "room_full", "room": room, "rooms": list(self.rooms)})

    # ------------------------------------------------------------------ events
    @event("StatusSet")
    def _status_set(self, status: str, text: str) -> None:
        self.status = status
        self.text = text

    @event("WentOffline")
    def _went_offline(self, at: float) -> None:
        self.last_seen = at

    @event("SettingChanged")
    def _setting_changed(self, key: str, value: Any) -> None:
        self.settings = {**(self.settings or {}), key: value}

    @event("SettingRemoved")
    def _setting_removed(self, key: str) -> None:
        settings = dict(self.settings or {})
        settings.pop(key, None)
        self.settings = settings or None

    @event("RoomJoined")
    def _room_joined(self, room: str) -> None:
        self.rooms = [*self.rooms, room]

    @event("RoomLeft")
    def _room_left(self, room: str) -> None:
        self.rooms = [r for r in self.rooms if r != room]
