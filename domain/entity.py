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

What the base class keeps, as events of its own so it survives passivation and failover:
the connections the entity accepted (with the claims it keeps, ``STORED_CLAIMS``, and
whether they are live), the timers it started, and the window of message IDs it already
processed per sender, with their replies (idempotency: a duplicate from the same sender gets
the original outcome and changes nothing; see :mod:`domain.idempotency`).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import msgpack
from eventsourcing.domain import (
    BaseAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
    event,
)

from domain.errors import BadClaims, PayloadDecodeError, Rejected
from domain.idempotency import LEGACY, ReplyWindow
from domain.refs import CATEGORY_PATTERN, EntityRef

if TYPE_CHECKING:
    from domain.context import Context

F = TypeVar("F", bound=Callable[..., Any])

GRACE_TIMER = "_grace"
"""Timer name the base class uses for the reconnect grace period of a dropped connection."""


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

    __slots__ = ("func", "params", "var_kw", "checks")

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

    def check(self, data: Mapping[str, Any]) -> None:
        """Raise PayloadDecodeError when ``data`` does not fit the handler's parameters."""
        missing = [name for name, required in self.params.items() if required and name not in data]
        if missing:
            raise PayloadDecodeError(f"missing fields: {', '.join(sorted(missing))}")
        if not self.var_kw:
            extra = [name for name in data if name not in self.params]
            if extra:
                raise PayloadDecodeError(f"unexpected fields: {', '.join(sorted(map(str, extra)))}")
        for name, (test, what) in self.checks.items():
            if name in data and not test(data[name]):
                raise PayloadDecodeError(f"field {name!r} must be {what}")


RESIDENT_ONLY = ("_pending_events", "_refused", "_subs")
"""Entity attributes that never go into a snapshot: the library's pending events, the
refusals an entity remembers while resident, and the per-user connection count (derived)."""


class EntityEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    """Base of every entity event. Also rebuilds the idempotency window on replay: the
    last event of a message carries the message ID, its reply and its sender (``_xp_mid``/
    ``_xp_reply``/``_xp_from``, set by :func:`domain.dispatch.handle`). Events stored before
    senders were recorded have no ``_xp_from``: their IDs load as legacy entries."""

    originator_id: str
    originator_version: int
    timestamp: datetime

    def mutate(self, aggregate: Any) -> Any:
        aggregate = super().mutate(aggregate)
        fields = self.__dict__
        message_id = fields.get("_xp_mid")
        if message_id is not None:
            aggregate._xp_remember(fields.get("_xp_from", LEGACY), message_id, fields["_xp_reply"])
        return aggregate


class EntitySnapshot(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
    """Snapshot of an entity (its ``__dict__``, platform parts included, except what is
    kept only while resident: ``RESIDENT_ONLY``). The idempotency window is stored as plain
    data (:meth:`ReplyWindow.to_data`); a snapshot written before senders were kept has the
    flat ``_seen`` dict, which loads as legacy entries."""

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
        window = state.get("_seen")
        if window is not None:
            state["_seen"] = window.to_data()
        snapshot = super().take(aggregate)
        object.__setattr__(snapshot, "state", state)
        return snapshot

    def mutate(self, _: None) -> Any:
        aggregate = super().mutate(_)
        fields = vars(aggregate)
        fields["_seen"] = ReplyWindow.from_data(fields.get("_seen"))
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

    if TYPE_CHECKING:  # set per instance by blank() and the events; declared for the type checker only
        # (a class-level annotation would become an aggregate field to eventsourcing)
        _connections: dict[str, list[Any]]  # connection ID -> [kept claims, live, session]
        _timers: dict[str, list[Any]] | None  # key -> [due, handler name, data]; None: no timer yet
        _seen: ReplyWindow | None  # outcomes of processed messages; None: none yet

    _live: int = -1
    """Live connections, kept by the connection events (so replay keeps it right); -1 (the
    class default: nothing stored per small entity) means "count them on first ask"."""

    _epoch: int = 0
    """Ownership epoch of the last takeover marker in the stream (class default: none yet,
    so entities that never moved carry no extra attribute)."""

    _xp_handlers: ClassVar[dict[tuple[str, str], Handler]] = {}

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
        cls._xp_handlers = handlers

    # ----------------------------------------------------------------- construction
    @classmethod
    def blank(cls, entity_id: str) -> Entity:
        """The entity before its first event: version 0, state from ``initialise()``."""
        entity = cls.__new__(cls)
        now = datetime.now(UTC)
        entity.__base_init__(EntityRef(cls.CATEGORY, entity_id).stream_id, cls.INITIAL_VERSION - 1, now)
        # Kept small on purpose (1M+ small entities must fit): timers and the idempotency
        # window are created on first use; a connection record is [claims, live].
        entity._connections = {}
        entity._timers = None
        entity._seen = None  # a ReplyWindow once a message succeeded
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
        record = self._connections.get(connection_id)
        return None if record is None else record[0]

    def is_live(self, connection_id: str) -> bool:
        record = self._connections.get(connection_id)
        return bool(record and record[1])

    def has_live_connections(self) -> bool:
        """Cheap check before building a view nobody would receive."""
        return any(record[1] for record in self._connections.values())

    def live_connections(self) -> dict[str, Mapping[str, Any]]:
        return {cid: rec[0] for cid, rec in self._connections.items() if rec[1]}

    def live_count(self) -> int:
        """How many connections are live, without walking them: a large entity shows
        "present" in every state update, and with thousands of viewers counting them per
        message cost more than the message itself."""
        if self._live < 0:
            self._live = sum(1 for record in self._connections.values() if record[1])
        return self._live

    def _count_live(self, record: list[Any], was: bool, now: bool) -> None:
        if was != now:
            if self._live >= 0:
                self._live += 1 if now else -1
            subs = self._subs
            if subs is not None:
                sub = record[0].get("sub")
                left = subs.get(sub, 0) + (1 if now else -1)
                if left > 0:
                    subs[sub] = left
                else:
                    subs.pop(sub, None)

    _subs: dict[Any, int] | None = None
    """Live connections per ``sub``, built on first need (only an entity with at least
    MAX_CONNECTIONS_PER_USER connections needs it), resident only (not in snapshots)."""

    def live_count_of(self, sub: Any) -> int:
        """How many live connections the user ``sub`` holds to this entity."""
        if len(self._connections) < self.MAX_CONNECTIONS_PER_USER:
            return sum(1 for record in self._connections.values() if record[1] and record[0].get("sub") == sub)
        if self._subs is None:
            subs: dict[Any, int] = {}
            for record in self._connections.values():
                if record[1]:
                    key = record[0].get("sub")
                    subs[key] = subs.get(key, 0) + 1
            self._subs = subs
        return self._subs.get(sub, 0)

    def stored_claims(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The claims kept of a connection (``STORED_CLAIMS``); raise BadClaims when a kept
        value is larger than ``MAX_CLAIM_CHARS`` or not a plain value (or list of them)."""
        kept = {name: claims[name] for name in ("sub", *self.STORED_CLAIMS) if name in claims}  # sub: always
        for name, value in kept.items():
            items = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, (str, int, float, bool)) for v in items) \
                    or sum(len(str(v)) for v in items) > self.MAX_CLAIM_CHARS:
                raise BadClaims(f"claim {name!r} must be a value (or list) of at most {self.MAX_CLAIM_CHARS} characters")
        return kept

    def require_claim(self, ctx: Context, name: str, *accepted: Any) -> None:
        """check_* helper: refuse unless the sender's connection has claim ``name`` in ``accepted``."""
        claims = ctx.claims or {}
        have = claims.get(name)
        values = have if isinstance(have, list) else [have]
        if not any(v in accepted for v in values):
            raise Rejected(f"requires {name} in {sorted(map(str, accepted))}")

    @event("ConnectionAccepted")
    def _accept_connection(self, connection_id: str, claims: dict[str, Any], session: str = "") -> None:
        old = self._connections.get(connection_id)
        record = self._connections[connection_id] = [claims, True, session]
        self._count_live(record, bool(old and old[1]), True)

    @event("ConnectionDropped")
    def _drop_connection(self, connection_id: str, reason: str) -> None:  # noqa: ARG002 - in the event
        record = self._connections[connection_id]
        self._count_live(record, bool(record[1]), False)
        record[1] = False

    @event("ConnectionResumed")
    def _resume_connection(self, connection_id: str, session: str = "") -> None:
        record = self._connections[connection_id]
        self._count_live(record, bool(record[1]), True)
        record[1] = True
        if len(record) > 2:
            record[2] = session
        else:
            record.append(session)

    @event("ConnectionForgotten")
    def _forget_connection(self, connection_id: str) -> None:
        record = self._connections.pop(connection_id, None)
        if record is not None:
            self._count_live(record, bool(record[1]), False)

    # ----------------------------------------------------------------- ownership
    @event("OwnerChanged")
    def _take_ownership(self, epoch: int, node: str) -> None:
        """Takeover marker, written by a new owner before it serves the entity: a zombie
        owner's next append expects the version before this event and fails."""
        self._epoch = epoch

    @property
    def owner_epoch(self) -> int:
        return self._epoch

    # ----------------------------------------------------------------- timers
    @event("TimerStarted")
    def _start_timer(self, key: str, name: str, due: float, data: dict[str, Any]) -> None:
        if self._timers is None:
            self._timers = {}
        self._timers[key] = [due, name, data]

    @event("TimerStopped")
    def _stop_timer(self, key: str) -> None:
        if self._timers is not None:
            self._timers.pop(key, None)
            if not self._timers:
                self._timers = None

    def timers(self) -> dict[str, tuple[float, str, Mapping[str, Any]]]:
        """Pending timers: key → (due epoch seconds, handler name, data)."""
        return {key: (t[0], t[1], t[2]) for key, t in (self._timers or {}).items()}

    def timer(self, key: str) -> tuple[float, str, Mapping[str, Any]] | None:
        """The pending timer ``key``, if any: (due, handler name, data)."""
        spec = (self._timers or {}).get(key)
        return None if spec is None else (spec[0], spec[1], spec[2])

    # ----------------------------------------------------------------- idempotency
    _refused: ReplyWindow | None = None
    """Refusals remembered while resident (class default: none, so nothing per entity)."""

    def _xp_remember(self, sender: str, message_id: str, reply_record: list[Any]) -> None:
        """Keep the outcome of a processed message (durable with its last event)."""
        seen = self._seen
        if seen is None:
            seen = self._seen = ReplyWindow()
        seen.put(sender, message_id, reply_record, self.DEDUP_PER_SENDER, self.DEDUP_WINDOW)

    def _xp_refuse(self, sender: str, message_id: str, reply_record: list[Any]) -> None:
        """Keep a refusal while resident, apart from the durable window."""
        refused = self._refused
        if refused is None:
            refused = self._refused = ReplyWindow()
        refused.put(sender, message_id, reply_record, self.DEDUP_PER_SENDER, self.REFUSALS_KEPT)

    def seen_reply(self, sender: str, message_id: str) -> list[Any] | None:
        """The reply record of ``sender``'s message ``message_id`` if already processed
        (a result, or a refusal while resident), else None."""
        seen = self._seen
        record = None if seen is None else seen.get(sender, message_id)
        if record is None and self._refused is not None:
            record = self._refused.get(sender, message_id)
        return record
