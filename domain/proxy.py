"""State proxies: entities that stand for state held by an external system (the *primary*).

A :class:`StateProxy` is an entity like any other (category + ID, routed by the shard map,
one live instance cluster-wide) whose state is the **last known remote state**: the
primary's state as last pushed or pulled, with its timestamp, the primary's version and
ETag when it has them, and when the proxy received it. It is event-sourced, so it survives
passivation and failover. Four operations, for clients, devices and other entities:

- **push** (``push`` client message, from a device of a ``PUSH_CLASSES`` class through the
  internal edge): applied only if newer than what is held (a greater ``version``, or
  without versions a later ``at``); an out-of-order or duplicate push changes nothing.
- **force pull** (``pull``; entities: ``ask_pull``): the primary is called through the
  category's connector with a timeout; the caller gets the pulled state, or a typed error
  (:class:`~domain.errors.ProxyError`) that still carries the last known state and its age.
- **command + pull** (``command``; ``ask_command``): a command to the primary, then a pull
  of the resulting state, as one job. The command carries an idempotency key derived from
  the message (:func:`idempotency_key`): a retry of the same message (after a failover:
  same message ID) sends the same key, so a primary honouring keys applies it once. Nothing
  else of this proxy reaches the primary between the command and its pull: while one is in
  flight (or a pull) another command is **refused** (``proxy_busy``, retryable; never
  queued, so the caller decides), and a pull **joins** it (it gets the state pulled after
  the command).
- **read last known** (``read``; ``ask_read``): answered at once from the held state, with
  its timestamp and age; with ``max_age`` a state older than that (or none) becomes a pull.

Remote I/O never runs inside the handler (one message at a time per entity): a handler
asks for it with a :class:`~domain.effects.RemoteCall` effect, the runtime runs the
connector beside the entity once the call's start is durable, and the outcome comes back
as a :class:`~domain.messages.RemoteResult` message. Meanwhile the proxy answers reads, and
a slow primary never blocks other entities.

Answers to a pull or command arrive as a ``proxy_result`` message: pushed to the asking
connection (``{"type": "proxy_result", "op", "proxy", "ok", "last_known", "error"}``; the
message's own reply is ``{"status": "pending", "op", "last_known"}``), or told to the
asking entity, which declares ``@entity_message("proxy_result")`` and reads it with
:class:`ProxyAnswer`. Like every entity message that answer is at most once: an asker that
must know re-asks with the same message ID (the proxy answers a repeated ID from the
outcome it kept) or reads.

Calls whose result is lost (the node died mid-call) are found by a durable deadline timer,
re-armed by the next owner: a pull is re-issued, a command too when the primary honours
idempotency keys (``PRIMARY_HONOURS_KEYS``), else it ends with ``outcome_unknown``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from eventsourcing.domain import event

from domain.context import Context
from domain.effects import RemoteCall
from domain.entity import Entity, client_message, entity_message, timer
from domain.errors import (
    PROXY_ERRORS,
    NotAuthorised,
    PayloadDecodeError,
    PrimaryUnavailable,
    ProxyBusy,
    ProxyError,
)
from domain.messages import RemoteResult
from domain.refs import EntityRef

DEADLINE_TIMER = "_proxy_deadline"
"""Timer name of a remote call's deadline (a lost result: see the module docstring)."""
RESULT = "proxy_result"
"""Type of the answer message (pushed to a connection, told to an entity)."""


def idempotency_key(proxy_id: str, sender: str | None, message_id: str) -> str:
    """The idempotency key of the command a message carries: a hash of the proxy, the
    message's sender (its idempotency prefix) and its ID. The same message (a retry) always
    gives the same key; two senders' equal IDs give two keys. 32 hex characters."""
    raw = f"{proxy_id}\x00{sender or ''}\x00{message_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class StateProxy(Entity):
    """Base class of state proxies. See the module docstring.

    Override ``PUSH_CLASSES`` (device classes that may push), ``may_command`` (who may send
    commands; default: other entities, and clients with a role in ``COMMAND_ROLES``) and
    the timeouts. Subclasses add handlers of their own like any entity's."""

    PULL_TIMEOUT_S: ClassVar[float] = 5.0
    """How long a pull may take, retries included. Why 5 s: well under a client's patience,
    and over a healthy primary's answer by orders of magnitude."""
    COMMAND_TIMEOUT_S: ClassVar[float] = 10.0
    """How long a command and its pull may take together."""
    RESULT_GRACE_S: ClassVar[float] = 5.0
    """How long after a call's timeout its result counts as lost (the node died mid-call):
    the deadline timer then re-issues or ends it. Why 5 s: longer than any event-loop stall,
    so a result that is merely late is never duplicated."""
    MAX_ATTEMPTS: ClassVar[int] = 3
    """How often one call is issued, re-issues after lost results included."""
    PRIMARY_HONOURS_KEYS: ClassVar[bool] = False
    """Whether the primary applies a command once per idempotency key: only then is a command
    whose result was lost sent again (same key). Off by default: unknown primaries may not."""
    PUSH_CLASSES: ClassVar[tuple[str, ...]] = ()
    """Device classes (the internal edge's ``XPLATFORM_EDGE_INTERNAL_NETWORKS``) whose devices
    may push the primary's state. Empty: nobody pushes."""
    COMMAND_ROLES: ClassVar[tuple[str, ...]] = ()
    """Client roles (``role`` claim) that may send commands; other entities always may."""
    GRACE_PERIOD = 0.0

    def initialise(self) -> None:
        self.remote_state: Any = None
        self.remote_version: int | None = None
        self.remote_etag: str | None = None
        self.remote_at: float | None = None
        self.received_at: float | None = None
        self.calls: dict[str, list[Any]] = {}
        """In flight: op → [kind, command, key, attempt, requesters ([kind, target] each)]."""

    # ------------------------------------------------------------------ queries
    def last_known(self, now: float) -> dict[str, Any]:
        """The held state with its timestamps: ``state`` (None: never heard of it),
        ``version``, ``etag``, ``at`` (the primary's time), ``received_at`` and ``age``
        (seconds since received or confirmed; None without state)."""
        age = None if self.received_at is None else max(0.0, now - self.received_at)
        return {"state": self.remote_state, "version": self.remote_version, "etag": self.remote_etag,
                "at": self.remote_at, "received_at": self.received_at, "age": age}

    def in_flight(self, kind: str | None = None) -> str | None:
        """The op of a call in flight (of ``kind``, when given), if any."""
        for op, call in self.calls.items():
            if kind is None or call[0] == kind:
                return op
        return None

    # ------------------------------------------------------------------ hooks
    def may_command(self, ctx: Context, command: Mapping[str, Any]) -> bool:
        """May the sender send ``command`` to the primary? Default: other entities, and
        clients whose ``role`` is in ``COMMAND_ROLES``."""
        if ctx.sender is not None:
            return True
        return (ctx.claims or {}).get("role") in self.COMMAND_ROLES

    def may_push(self, ctx: Context) -> bool:
        """May the sender push the primary's state? Default: devices of ``PUSH_CLASSES``
        (the internal edge's ``device:`` subjects; the public edge refuses such tokens)."""
        claims = ctx.claims or {}
        sub = claims.get("sub")
        return (isinstance(sub, str) and sub.startswith("device:") and claims.get("auth") == "network"
                and claims.get("device_class") in self.PUSH_CLASSES)

    def on_connect(self, ctx: Context, claims: Mapping[str, Any], reconnect: bool) -> Any:
        return {"type": "proxy_state", **self.last_known(ctx.now)}

    # ------------------------------------------------------------------ client operations
    @client_message("read")
    def client_read(self, ctx: Context, max_age: float | None = None) -> Any:
        return self._read(ctx, self._requester(ctx), max_age)

    @client_message("pull")
    def client_pull(self, ctx: Context) -> Any:
        return self._pull(ctx, self._requester(ctx))

    @client_message("command")
    def client_command(self, ctx: Context, command: Any) -> Any:
        return self._command(ctx, self._requester(ctx), command)

    @client_message("push")
    def client_push(self, ctx: Context, state: Any, version: int | None = None, etag: str | None = None,
                    at: float | None = None) -> Any:
        if not self.may_push(ctx):
            raise NotAuthorised("only the primary's devices may push its state")
        if version is None and at is None:
            raise PayloadDecodeError("a push needs a version or at: without either its order is unknown")
        applied = self._receive(ctx, state, version, etag, at, confirm=False)
        return {"applied": applied, "version": self.remote_version, "at": self.remote_at}

    # ------------------------------------------------------------------ entity operations
    @entity_message("proxy_read")
    def entity_read(self, ctx: Context, max_age: float | None = None) -> None:
        self._read(ctx, self._requester(ctx), max_age)

    @entity_message("proxy_pull")
    def entity_pull(self, ctx: Context) -> None:
        self._pull(ctx, self._requester(ctx))

    @entity_message("proxy_command")
    def entity_command(self, ctx: Context, command: Any) -> None:
        self._command(ctx, self._requester(ctx), command)

    # ------------------------------------------------------------------ the operations
    def _read(self, ctx: Context, requester: list[str], max_age: float | None) -> Any:
        if max_age is not None and (not math.isfinite(max_age) or max_age < 0):
            raise PayloadDecodeError("max_age must be a finite number of seconds, not negative")
        known = self.last_known(ctx.now)
        if max_age is None or (known["age"] is not None and known["age"] <= max_age):
            if requester[0] == "e":
                self._answer(ctx, requester, ctx.message_id, None, known)
            return {"status": "ok", "last_known": known}
        return self._pull(ctx, requester)

    def _pull(self, ctx: Context, requester: list[str]) -> Any:
        op = self.in_flight()
        if op is not None:  # a pull in flight, or a command whose pull is still to come: join it
            self._call_joined(op=op, requester=requester)
        else:
            op = idempotency_key(self.id, ctx.sender_key, ctx.message_id)
            self._start(ctx, op, "pull", None, requester)
        return {"status": "pending", "op": op, "last_known": self.last_known(ctx.now)}

    def _command(self, ctx: Context, requester: list[str], command: Any) -> Any:
        if not isinstance(command, dict):
            raise PayloadDecodeError("command must be a map")
        if not self.may_command(ctx, command):
            raise NotAuthorised("this sender may not command the primary")
        busy = self.in_flight()
        if busy is not None:
            refusal = ProxyBusy(f"a call to the primary is in flight ({busy}); send the command again later")
            if requester[0] == "e":  # entity messages get no reply: tell the asker
                self._answer(ctx, requester, idempotency_key(self.id, ctx.sender_key, ctx.message_id),
                             {"code": refusal.code, "reason": refusal.reason}, self.last_known(ctx.now))
                return None
            raise refusal
        op = idempotency_key(self.id, ctx.sender_key, ctx.message_id)
        self._start(ctx, op, "command", command, requester)
        return {"status": "pending", "op": op, "last_known": self.last_known(ctx.now)}

    def _start(self, ctx: Context, op: str, kind: str, command: dict[str, Any] | None, requester: list[str]) -> None:
        self._call_started(op=op, kind=kind, command=command, requesters=[requester])
        self._issue(ctx, op)

    def _issue(self, ctx: Context, op: str) -> None:
        kind, command, key, attempt, _ = self.calls[op]
        timeout = self.COMMAND_TIMEOUT_S if kind == "command" else self.PULL_TIMEOUT_S
        ctx.effects.append(RemoteCall(op, kind, key, timeout, command, attempt))
        ctx.start_timer(DEADLINE_TIMER, timeout + self.RESULT_GRACE_S, key=f"{DEADLINE_TIMER}:{op}", op=op)

    # ------------------------------------------------------------------ outcomes
    def on_remote_result(self, ctx: Context, result: RemoteResult) -> None:
        """The runtime's answer to a call (see :mod:`domain.dispatch`). A result of a call no
        longer in flight (answered already, or ended by its deadline) changes nothing."""
        call = self.calls.get(result.op)
        if call is None:
            return
        ctx.cancel_timer(f"{DEADLINE_TIMER}:{result.op}")
        error: dict[str, str] | None = None
        if result.ok:
            self._receive(ctx, result.state, result.version, result.etag, result.at, confirm=True)
        else:
            error = {"code": result.error or PrimaryUnavailable.code, "reason": result.reason}
        self._finish(ctx, result.op, error)

    @timer(DEADLINE_TIMER)
    def deadline(self, ctx: Context, op: str) -> None:
        """No result within timeout + grace: the result was lost. Re-issue (same op, same
        key) or end the call; see the module docstring."""
        call = self.calls.get(op)
        if call is None:
            return
        kind, attempt = call[0], call[3]
        if kind == "command" and not self.PRIMARY_HONOURS_KEYS:
            self._finish(ctx, op, {"code": "outcome_unknown",
                                   "reason": "the command's result was lost; it may have been applied"})
        elif attempt >= self.MAX_ATTEMPTS:
            self._finish(ctx, op, {"code": "primary_timeout", "reason": f"no result after {attempt} attempts"})
        else:
            self._call_retried(op=op, attempt=attempt + 1)
            self._issue(ctx, op)

    def _finish(self, ctx: Context, op: str, error: dict[str, str] | None) -> None:
        requesters = self.calls[op][4]
        self._call_ended(op=op)
        known = self.last_known(ctx.now)
        for requester in requesters:
            self._answer(ctx, requester, op, error, known)

    def _answer(self, ctx: Context, requester: list[str], op: str, error: dict[str, str] | None,
                known: dict[str, Any]) -> None:
        kind, target = requester
        if kind == "e":
            ctx.tell(EntityRef.from_stream_id(target), RESULT, op=op, proxy=str(self.ref), ok=error is None,
                     last_known=known, error=error)
        elif self.is_live(target):
            ctx.to_connection(target, {"type": RESULT, "op": op, "proxy": str(self.ref), "ok": error is None,
                                       "last_known": known, "error": error})

    def _receive(self, ctx: Context, state: Any, version: int | None, etag: str | None, at: float | None,
                 confirm: bool) -> bool:
        """Apply a pushed or pulled state if newer than the held one (True); an equal one
        pulled confirms the held state (its age restarts); older or equal pushes change
        nothing."""
        if version is not None and (type(version) is not int):
            raise PayloadDecodeError("version must be an integer")
        if at is not None and (not isinstance(at, (int, float)) or not math.isfinite(at)):
            raise PayloadDecodeError("at must be a finite number")
        order = 1 if self.received_at is None else _compare((version, at), (self.remote_version, self.remote_at),
                                                            state == self.remote_state)
        if order > 0:
            self._state_received(state=state, version=version, etag=etag, at=at, received_at=ctx.now)
            if self.has_live_connections():
                ctx.broadcast({"type": "proxy_state", **self.last_known(ctx.now)}, coalesce_key="proxy_state")
            return True
        if order == 0 and confirm:
            self._state_confirmed(received_at=ctx.now)
        return False

    @staticmethod
    def _requester(ctx: Context) -> list[str]:
        if ctx.sender is not None:
            return ["e", ctx.sender.stream_id]
        assert ctx.connection_id is not None
        return ["c", ctx.connection_id]

    # ------------------------------------------------------------------ events
    @event("RemoteStateReceived")
    def _state_received(self, state: Any, version: int | None, etag: str | None, at: float | None,
                        received_at: float) -> None:
        self.remote_state, self.remote_version, self.remote_etag = state, version, etag
        self.remote_at, self.received_at = at, received_at

    @event("RemoteStateConfirmed")
    def _state_confirmed(self, received_at: float) -> None:
        self.received_at = received_at

    @event("RemoteCallStarted")
    def _call_started(self, op: str, kind: str, command: dict[str, Any] | None, requesters: list[list[str]]) -> None:
        self.calls[op] = [kind, command, op, 1, [list(r) for r in requesters]]

    @event("RemoteCallJoined")
    def _call_joined(self, op: str, requester: list[str]) -> None:
        if requester not in self.calls[op][4]:
            self.calls[op][4].append(list(requester))

    @event("RemoteCallRetried")
    def _call_retried(self, op: str, attempt: int) -> None:
        self.calls[op][3] = attempt

    @event("RemoteCallEnded")
    def _call_ended(self, op: str) -> None:
        self.calls.pop(op, None)


def _compare(new: tuple[int | None, float | None], held: tuple[int | None, float | None], same_state: bool) -> int:
    """1: ``new`` is newer than ``held``, 0: the same, -1: older. Versions decide when both
    have one, else the primary's timestamps; when neither can be compared (a primary that
    tells neither) the last one received wins, unless it is the same state (0)."""
    for n, h in zip(new, held, strict=True):
        if n is not None and h is not None:
            return (n > h) - (n < h)
    return 0 if same_state and new == held else 1


@dataclass(frozen=True)
class ProxyAnswer:
    """A ``proxy_result`` as the asking entity receives it: ``ProxyAnswer.of(data)`` in its
    ``@entity_message("proxy_result")`` handler (which takes ``**data``)."""

    op: str
    proxy: str
    ok: bool
    last_known: dict[str, Any]
    error: dict[str, str] | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ProxyAnswer:
        return cls(str(data.get("op", "")), str(data.get("proxy", "")), bool(data.get("ok")),
                   dict(data.get("last_known") or {}), data.get("error"))

    @property
    def state(self) -> Any:
        return self.last_known.get("state")

    @property
    def age(self) -> float | None:
        age = self.last_known.get("age")
        return age if isinstance(age, (int, float)) else None

    def raise_for_error(self) -> None:
        """Raise the typed error (a :class:`~domain.errors.ProxyError` carrying the last known
        state and its age) when the proxy could not reach its primary."""
        if self.ok or self.error is None:
            return
        code = self.error.get("code", "")
        raise PROXY_ERRORS.get(code, ProxyError)(self.error.get("reason", code), self.last_known)


def ask_read(ctx: Context, proxy: EntityRef, max_age: float | None = None) -> str:
    """Ask ``proxy`` for its last known state (a pull when older than ``max_age``); the answer
    comes as a ``proxy_result`` message. Returns the ID it will name (``op``) for a fresh
    read; a read turned into a pull is answered with the pull's ``op``."""
    ctx.tell(proxy, "proxy_read", max_age=max_age)
    return ctx.effects[-1].message_id  # type: ignore[union-attr]


def ask_pull(ctx: Context, proxy: EntityRef) -> None:
    """Ask ``proxy`` to pull from its primary; the answer comes as a ``proxy_result``."""
    ctx.tell(proxy, "proxy_pull")


def ask_command(ctx: Context, proxy: EntityRef, command: Mapping[str, Any]) -> None:
    """Send ``command`` to ``proxy``'s primary and pull the result; the answer comes as a
    ``proxy_result`` (or the tell is refused with ``proxy_busy`` while another command is
    in flight: entity messages get no reply, so the asker's timer should re-ask)."""
    ctx.tell(proxy, "proxy_command", command=dict(command))
