"""The Entity base class: an ``eventsourcing`` aggregate with the platform's standard parts.

What a domain modeller writes in a subclass:

- ``CATEGORY`` (defaults to the class name) and ``initialise()`` for the state of an
  entity that has no events yet. Entities exist from their first message on; nothing is
  stored until a handler decides something, so an entity with no events costs nothing.
- commands as methods decorated with ``@event("PastTense")`` (the eventsourcing way),
  invariants as ``check_*`` methods raising :class:`domain.errors.Rejected`.
- handlers: ``on_connect`` / ``on_disconnect`` / ``on_leave`` for the standard client
  messages, and ``@client_message("type")``, ``@entity_message("type")``, ``@timer("name")``
  methods. Every handler gets a :class:`domain.context.Context` first. Annotate client
  message parameters ``int``/``float``/``str``/``bool`` and the platform checks their types
  (and that a ``float`` is finite) before the handler runs.
- what a connection may do to a new entity (``may_create``) and what is kept of it
  (``STORED_CLAIMS``, ``MAX_CONNECTIONS_PER_USER``).

What the platform keeps of every entity, as events of its own so it survives passivation
and failover: the connections the entity accepted (with the claims it keeps,
``STORED_CLAIMS``, and whether they are live), the timers it started, and the window of
message IDs it already processed per sender, with their replies (idempotency: a duplicate
from the same sender gets the original outcome and changes nothing; see
:mod:`domain.idempotency`). One object owns it, with the rules that keep it:
``entity.platform``, a :class:`domain.platform_part.PlatformPart` (the attribute name
``platform`` is the platform's; an entity's own state uses other names). The platform's
events are declared here (``Entity.ConnectionAccepted``, ...: their stored topics).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import msgpack
from eventsourcing.domain import (
    BaseAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
)

from domain.commands import FastCommand
from domain.errors import PayloadDecodeError, Rejected
from domain.idempotency import LEGACY
from domain.platform_part import PlatformPart
from domain.refs import CATEGORY_PATTERN, EntityRef

if TYPE_CHECKING:
    from domain.context import Context

F = TypeVar("F", bound=Callable[..., Any])


def client_message(message_type: str) -> Callable[[F], F]:
    """Declare a handler for client messages whose decoded payload has ``type``.

    The other fields of the payload are passed as keyword arguments; a payload whose
    fields do not fit the signature is refused with ``bad_payload`` before the handler runs.
    """
    return _mark("client", message_type)


def entity_message(message_type: str) -> Callable[[F], F]:
    """Declare a handler for messages of ``type`` from other entities (``ctx.tell``)."""
    return _mark("entity", message_type)


def timer(name: str) -> Callable[[F], F]:
    """Declare a handler for timers started with ``ctx.start_timer(name, ...)``."""
    return _mark("timer", name)


def _mark(kind: str, name: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func._xp_handles = (kind, name)  # type: ignore[attr-defined]
        return func

    return decorate


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    """A finite int or float (NaN and infinities compare and sort wrongly once stored)."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return type(value) is bool


_CHECKS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    int: (_is_int, "an integer"), float: (_is_number, "a finite number"),
    str: (_is_str, "a string"), bool: (_is_bool, "true or false"),
}


def _value_check(annotation: Any) -> tuple[Callable[[Any], bool], str] | None:
    """The check of a handler parameter's annotation: ``int``, ``float``, ``str``, ``bool``,
    or one of them ``| None``; other annotations are the handler's to check."""
    check = _CHECKS.get(annotation)
    if check is not None:
        return check
    args = typing.get_args(annotation)
    if len(args) == 2 and type(None) in args:
        inner = _CHECKS.get(next(a for a in args if a is not type(None)))
        if inner is not None:
            test, what = inner
            return (lambda value: value is None or test(value)), f"{what} or nil"
    return None


class Handler:
    """A declared handler, the parameter names it accepts and the types of those annotated
    ``int``, ``float``, ``str`` or ``bool`` (optionally ``| None``), checked before calling:
    a client value of another type, or a non-finite number for a ``float``, is refused with
    ``bad_payload`` and never reaches the handler (so it is never stored)."""

    __slots__ = ("func", "params", "var_kw", "checks", "required", "accepted", "check_items")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        sig = inspect.signature(func)
        params = list(sig.parameters.values())[2:]  # skip self, ctx
        self.var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self.params = {
            p.name: p.default is inspect.Parameter.empty
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # an annotation that does not resolve: leave the checking to the handler
            hints = {}
        checks = {name: _value_check(hints.get(name)) for name in self.params}
        self.checks = {name: check for name, check in checks.items() if check is not None}
        # the per-message form of the above: set comparisons and a tuple (every client message)
        self.required = frozenset(name for name, required in self.params.items() if required)
        self.accepted = frozenset(self.params)
        self.check_items = tuple(self.checks.items())

    def check(self, data: Mapping[str, Any]) -> None:
        """Raise PayloadDecodeError when ``data`` does not fit the handler's parameters."""
        keys = data.keys()
        if not keys >= self.required:
            missing = sorted(self.required.difference(keys))
            raise PayloadDecodeError(f"missing fields: {', '.join(missing)}")
        if not self.var_kw and not keys <= self.accepted:
            extra = sorted(map(str, keys - self.accepted))
            raise PayloadDecodeError(f"unexpected fields: {', '.join(extra)}")
        for name, (test, what) in self.check_items:
            if name in data and not test(data[name]):
                raise PayloadDecodeError(f"field {name!r} must be {what}")


PLATFORM_EVENTS = ("ConnectionAccepted", "ConnectionDropped", "ConnectionResumed", "ConnectionForgotten",
                   "OwnerChanged", "TimerStarted", "TimerStopped")
"""The platform's events, declared on :class:`Entity` and shared by every subclass."""

RESIDENT_ONLY = ("_pending_events",)
"""Entity attributes that never go into a snapshot: the library's pending events. (What the
platform part keeps only while resident is left out by :meth:`PlatformPart.to_snapshot`.)"""


class EntityEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    """Base of every entity event.

    The last event of a message carries the message's outcome for idempotency, in three
    declared fields of the envelope, set by :meth:`carry_outcome` (None on every other
    event, and then not stored: a class default, not an instance attribute): ``_xp_mid``
    the message ID, ``_xp_reply`` the reply record, ``_xp_from`` the sender prefix (see
    :mod:`domain.idempotency`). On replay the event puts them back into the entity's reply
    window. Why these names: they are the keys events have always been stored with, and a
    platform field must never take a name an entity's own event may use (``message_id``,
    ``reply`` or ``sender`` are ordinary event fields; the auction's ``Chatted`` has a
    ``message_id``). Events stored before senders were recorded have no ``_xp_from``: their
    IDs load as legacy entries."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    _xp_mid: str | None = field(default=None, init=False)
    _xp_reply: list[Any] | None = field(default=None, init=False)
    _xp_from: str | None = field(default=None, init=False)

    def carry_outcome(self, sender: str, message_id: str, reply_record: list[Any]) -> None:
        """Make this (the message's last) event carry the message's outcome. Set once, by
        the platform, before the event is stored (events are frozen to everyone else)."""
        fields = self.__dict__
        fields["_xp_mid"] = message_id
        fields["_xp_reply"] = reply_record
        fields["_xp_from"] = sender

    def mutate(self, aggregate: Any) -> Any:
        aggregate = super().mutate(aggregate)
        message_id = self._xp_mid
        if message_id is not None:  # replayed: the outcome was remembered when it was new
            aggregate.platform.remember(aggregate, self._xp_from or LEGACY, message_id, self._xp_reply)
        return aggregate


class EntitySnapshot(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
    """Snapshot of an entity: its ``__dict__`` except what is kept only while resident
    (``RESIDENT_ONLY``), with the platform part in its stored layout
    (:meth:`PlatformPart.to_snapshot`, the same as before the part had one owner)."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> EntitySnapshot:
        state = dict(vars(aggregate))
        for name in ("_id", "_version", *RESIDENT_ONLY):
            state.pop(name, None)
        state.pop("platform").to_snapshot(state)
        snapshot = super().take(aggregate)
        object.__setattr__(snapshot, "state", state)
        return snapshot

    def mutate(self, _: None) -> Any:
        aggregate = super().mutate(_)
        fields = vars(aggregate)
        fields["platform"] = PlatformPart.from_snapshot(fields)
        return aggregate


class Entity(BaseAggregate[str]):
    """Base class of platform entities. See the module docstring for what to override."""

    CATEGORY: ClassVar[str] = ""
    """Category of the entity; defaults to the class name. Letters, digits, underscore."""

    DEDUP_WINDOW: ClassVar[int] = 1000
    """How many recent message IDs (with replies) an entity remembers for idempotency, over
    all senders. Why 1000: senders retry within seconds; a hot entity at 1,000 msg/s still
    covers ~1 s, and the window lives in snapshots, so it must stay small for 1M small
    entities (each small entity's window holds only its own few recent IDs)."""

    DEDUP_PER_SENDER: ClassVar[int] = 64
    """How many recent message IDs each sender keeps (a user, another entity, the entity's
    timers): one sender's volume evicts only its own IDs. Why 64: a client has a few
    messages in flight and resends within seconds; 64 covers a user at the edge's message
    rate for several seconds, and leaves room for 15+ busy senders in ``DEDUP_WINDOW``."""

    REFUSALS_KEPT: ClassVar[int] = 256
    """How many refusals (messages that failed without events) an entity remembers, over all
    senders (each at most ``DEDUP_PER_SENDER``), only while resident: a duplicate of a refused
    message gets the same refusal meanwhile. Kept apart from ``DEDUP_WINDOW`` so that
    refusals (cheap for anyone to cause) never evict a durable result."""

    GRACE_PERIOD: ClassVar[float] = 30.0
    """Seconds a dropped connection is remembered, waiting for a reconnect with the same
    connection ID, before ``on_leave`` runs. 0 means leave at once."""

    SNAPSHOT_EVERY: ClassVar[int | None] = None
    """Snapshot after this many events; None uses the node's setting."""

    STORED_CLAIMS: ClassVar[tuple[str, ...]] = ("sub", "role", "roles", "exp", "auth", "device_class")
    """The claims of a connection the entity keeps (in its ``ConnectionAccepted`` event, so
    in the journal for good, and in ``ctx.claims`` / ``connection_claims()`` later). Why an
    allow-list: a token carries whatever its issuer puts in it (e-mail, names, blobs), and
    each connect would store all of it forever. Default: the subject, roles, expiry, and
    what the internal edge sets for devices. ``sub`` is always kept (it is the user's
    identity: connection ownership, idempotency). ``on_connect`` still sees every claim."""

    MAX_CLAIM_CHARS: ClassVar[int] = 256
    """Longest kept claim value (a string, or the text of a list's items together); a
    connect whose kept claims are larger is refused with ``bad_claims``, nothing stored."""

    MAX_CONNECTIONS_PER_USER: ClassVar[int] = 8
    """Live connections one user (``sub``) may hold to one entity; one more is refused with
    ``too_many_connections`` (a reconnect with a known connection ID is not a new one). Why
    8: a few tabs and devices per person; every connection is stored and fanned out to.
    0: no cap."""

    Event = EntityEvent
    Snapshot = EntitySnapshot

    if TYPE_CHECKING:  # set per instance by blank() and snapshots; declared for the type checker only
        # (a class-level annotation would become an aggregate field to eventsourcing)
        platform: PlatformPart
        """The platform part: connections, timers, reply window, owner epoch, and their rules."""

    HANDLERS: ClassVar[dict[tuple[str, str], Handler]] = {}
    """The class's handlers by (kind, name), e.g. ``("client", "bid")``: collected from the
    ``@client_message``/``@entity_message``/``@timer`` methods when the class is created
    (never set by hand)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("CATEGORY"):
            cls.CATEGORY = cls.__name__
        if not CATEGORY_PATTERN.match(cls.CATEGORY):
            raise TypeError(f"{cls.__name__}.CATEGORY {cls.CATEGORY!r} must match {CATEGORY_PATTERN.pattern}")
        handlers: dict[tuple[str, str], Handler] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                marked = getattr(value, "_xp_handles", None)
                if marked is not None:
                    handlers[marked] = Handler(value)
        cls.HANDLERS = handlers
        # eventsourcing redefines inherited event classes per subclass (``Lot.TimerStarted``,
        # topic ``domain.auction.lot:Lot.TimerStarted``); the platform's events are one class
        # for every entity, stored with the topics they always had (``domain.entity:Entity.*``).
        for name in PLATFORM_EVENTS:
            setattr(cls, name, Entity.__dict__[name])
        FastCommand.install(cls)  # after the library analysed the class: see domain/commands.py

    # ----------------------------------------------------------------- construction
    @classmethod
    def blank(cls, entity_id: str) -> Entity:
        """The entity before its first event: version 0, state from ``initialise()``."""
        entity = cls.__new__(cls)
        now = datetime.now(UTC)
        entity.__base_init__(EntityRef(cls.CATEGORY, entity_id).stream_id, cls.INITIAL_VERSION - 1, now)
        entity.platform = PlatformPart()
        entity.initialise()
        return entity

    def initialise(self) -> None:
        """Set the state of an entity that has no events yet. Override; no events here."""

    @property
    def ref(self) -> EntityRef:
        return EntityRef.from_stream_id(self.id)

    @property
    def entity_id(self) -> str:
        return self.id.partition("-")[2]

    # ----------------------------------------------------------------- hooks to override
    def may_create(self, ctx: Context, claims: Mapping[str, Any]) -> bool:
        """A connect arrives and the entity has no events yet (it does not exist): may this
        connection create it? False (or raising :class:`~domain.errors.EntityNotFound` with a
        reason of your own) refuses it with ``not_found`` and stores nothing. Default: yes
        (any accepted connection creates the entity)."""
        return True

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        """A client connects (or reconnects with the same connection ID). Return the initial
        state to send it; raise Rejected(reason) to terminate it. Default: accept."""
        return None

    def on_joined(self, ctx: Context, connection_id: str, claims: Mapping[str, Any], reconnect: bool) -> None:
        """The connection is accepted and recorded (``live_connections()`` includes it):
        e.g. tell the others someone joined. Default: nothing."""

    def on_disconnect(self, ctx: Context, connection_id: str, claims: Mapping[str, Any], reason: str) -> None:
        """A connection dropped. It is kept for GRACE_PERIOD seconds, waiting for a reconnect."""

    def on_leave(self, ctx: Context, connection_id: str, claims: Mapping[str, Any]) -> None:
        """A dropped connection did not come back within GRACE_PERIOD: clean up here."""

    def decode_payload(self, payload: bytes) -> Mapping[str, Any]:
        """Decode a client payload (the platform never does). Default: a msgpack map with
        a string ``type``. Override for another encoding; raise PayloadDecodeError."""
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise PayloadDecodeError(f"payload is not msgpack: {type(exc).__name__}") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise PayloadDecodeError("payload must be a map with a string 'type'")
        return data

    # ----------------------------------------------------------------- connections
    def connection_claims(self, connection_id: str) -> Mapping[str, Any] | None:
        """Claims of an accepted connection (live or within its grace period)."""
        return self.platform.claims_of(connection_id)

    def is_live(self, connection_id: str) -> bool:
        return self.platform.is_live(connection_id)

    def has_live_connections(self) -> bool:
        """Cheap check before building a view nobody would receive."""
        return self.platform.has_live()

    def live_connections(self) -> dict[str, Mapping[str, Any]]:
        return self.platform.live_connections()

    def live_count(self) -> int:
        """How many connections are live, without walking them: a large entity shows
        "present" in every state update, and with thousands of viewers counting them per
        message cost more than the message itself."""
        live = self.platform.live  # kept by the connection events; -1: not counted yet
        return live if live >= 0 else self.platform.live_count()

    def live_count_of(self, sub: Any) -> int:
        """How many live connections the user ``sub`` holds to this entity."""
        return self.platform.live_count_of(sub, self.MAX_CONNECTIONS_PER_USER)

    def stored_claims(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The claims kept of a connection (``STORED_CLAIMS``); raise BadClaims when a kept
        value is larger than ``MAX_CLAIM_CHARS`` or not a plain value (or list of them)."""
        return self.platform.stored_claims(self, claims)

    def require_claim(self, ctx: Context, name: str, *accepted: Any) -> None:
        """check_* helper: refuse unless the sender's connection has claim ``name`` in ``accepted``."""
        claims = ctx.claims or {}
        have = claims.get(name)
        if not (any(v in accepted for v in have) if isinstance(have, list) else have in accepted):
            raise Rejected(f"requires {name} in {sorted(map(str, accepted))}")

    # ----------------------------------------------------------------- timers and ownership
    def timers(self) -> dict[str, tuple[float, str, Mapping[str, Any]]]:
        """Pending timers: key → (due epoch seconds, handler name, data)."""
        return {key: (t[0], t[1], t[2]) for key, t in (self.platform.timers or {}).items()}

    def timer(self, key: str) -> tuple[float, str, Mapping[str, Any]] | None:
        """The pending timer ``key``, if any: (due, handler name, data)."""
        return self.platform.timer(key)

    @property
    def owner_epoch(self) -> int:
        """Ownership epoch of the last takeover marker in the stream (0: never moved)."""
        return self.platform.epoch

    # ----------------------------------------------------------------- the platform's events
    # Decided by the platform part's rules (triggered there with ``trigger_event``), applied
    # to it. Declared here because their stored topics are ``domain.entity:Entity.<name>``.
    class ConnectionAccepted(EntityEvent):
        """A connection was accepted, or its claims refreshed by a reconnect."""

        connection_id: str
        claims: dict[str, Any]
        session: str = ""

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.accepted(self.connection_id, self.claims, self.session)

    class ConnectionDropped(EntityEvent):
        """A connection's socket is gone; it waits ``GRACE_PERIOD`` for a reconnect."""

        connection_id: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.dropped(self.connection_id)

    class ConnectionResumed(EntityEvent):
        """A dropped (or live) connection came back on a new socket, its new session."""

        connection_id: str
        session: str = ""

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.resumed(self.connection_id, self.session)

    class ConnectionForgotten(EntityEvent):
        """A dropped connection did not come back in time (``on_leave`` ran)."""

        connection_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.forgotten(self.connection_id)

    class OwnerChanged(EntityEvent):
        """Takeover marker, written by a new owner (``node``, at ``epoch``) before it serves
        the entity: a zombie owner's next append expects the version before it and fails."""

        epoch: int
        node: str

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.epoch = self.epoch

    class TimerStarted(EntityEvent):
        """A durable timer was started (or restarted): ``@timer(name)`` runs at ``due``."""

        key: str
        name: str
        due: float
        data: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.timer_started(self.key, self.name, self.due, self.data)

    class TimerStopped(EntityEvent):
        """A timer fired or was cancelled."""

        key: str

        def apply(self, aggregate: Any) -> None:
            aggregate.platform.timer_stopped(self.key)
