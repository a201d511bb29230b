"""The sandbox: run entities with no server, from plain pytest (given / when / then).

    kit = Sandbox(Lot, Bidder)
    lot = EntityRef("Lot", "vase")
    kit.connect(lot, "c-auct", {"sub": "ann", "role": "auctioneer"})
    kit.client(lot, "c-auct", {"type": "open", "title": "Vase"})
    kit.connect(lot, "c-bob", {"sub": "bob", "role": "bidder"})
    result = kit.client(lot, "c-bob", {"type": "bid", "amount": 10})
    assert result.reply.payload["status"] == "pending"
    assert kit.state(lot).high_bidder == "bob"        # the reservation round trip ran
    assert "CreditReserved" in kit.event_names(EntityRef("Bidder", "bob"))

It uses the same dispatch core as the state node (:func:`domain.dispatch.handle`) and the
real persistence path: every event is encoded by the msgpack transcoder, appended to an
in-memory journal with its expected version, decoded again and compared with the
original (a field that does not survive the codec fails the test at once, not in
production). ``restart()`` drops every entity from memory and reloads from the journal
(through a snapshot, also round-tripped), as passivation or a failover would. Time is
virtual: ``advance(seconds)`` fires due timers in order. Messages that entities send each
other are delivered at once, in order, and their results are in ``Result.chain``. A state
proxy's remote calls are in ``Result.calls``: the test plays the primary with ``answer()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import msgpack

from domain.dispatch import Outcome, handle
from domain.effects import RemoteCall, Reply, Send, Tell, Terminate
from domain.entity import RESIDENT_ONLY, Entity
from domain.errors import UnknownCategory
from domain.messages import (
    ClientMessage,
    Connect,
    EntityMessage,
    Inbound,
    RemoteResult,
    Terminated,
    TimerFired,
    remote_result_id,
    timer_message_id,
)
from domain.refs import EntityRef
from infrastructure.persistence import EventJournal, RecorderJournal, StreamWrite, new_mapper
from infrastructure.persistence.rehydrate import rehydrate
from infrastructure.runtime.registry import EntityTypes


class CodecRoundTripError(AssertionError):
    """Raised when an event or snapshot does not come back equal from the codec."""


@dataclass
class Result:
    """What one message did: ``then`` part of a sandbox test."""

    target: EntityRef
    message: Inbound
    reply: Reply
    events: list[Any] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    tells: list[Tell] = field(default_factory=list)
    terminations: list[Terminate] = field(default_factory=list)
    calls: list[RemoteCall] = field(default_factory=list)
    """Remote calls a state proxy asked for (answer them with :meth:`Sandbox.answer`)."""
    duplicate: bool = False
    chain: list[Result] = field(default_factory=list)
    failure: BaseException | None = None
    """What a handler raised when it failed with a bug (its sender only hears ``handler_failed``)."""

    @property
    def ok(self) -> bool:
        return self.reply.ok

    @property
    def event_names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def everything(self) -> list[Result]:
        """This result and every result it caused through entity messages, in order."""
        out = [self]
        for child in self.chain:
            out.extend(child.everything())
        return out

    def payloads_for(self, connection_id: str, entity: Entity | None = None) -> list[Any]:
        """Client payloads that would reach ``connection_id`` (targets resolved against
        the connections the emitting entity holds)."""
        found = []
        for result in self.everything():
            for send in result.sends:
                if _targets(send, connection_id, entity):
                    found.append(send.payload)
        return found


def _targets(send: Send, connection_id: str, entity: Entity | None) -> bool:
    from domain.effects import ToAllConnections, ToClaims, ToConnection

    target = send.target
    if isinstance(target, ToConnection):
        return target.connection_id == connection_id
    if entity is None:
        return True
    claims = entity.live_connections().get(connection_id)
    if claims is None:
        return False
    if isinstance(target, ToAllConnections):
        return True
    return isinstance(target, ToClaims) and target.matches(claims)


class Sandbox:
    """Entities of a domain, in memory, with virtual time. See the module docstring."""

    def __init__(self, *entity_classes: type[Entity], start_time: float = 1_800_000_000.0,
                 deliver_entity_messages: bool = True, journal: EventJournal | None = None) -> None:
        self.types = EntityTypes(entity_classes)
        self.mapper = new_mapper()
        # Any adapter of the port (e.g. EventStoreDB, to run a domain's suite on the real
        # store); in memory by default.
        self.journal = journal if journal is not None else RecorderJournal({"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.now = start_time
        self.deliver_entity_messages = deliver_entity_messages
        self._entities: dict[EntityRef, Entity] = {}
        self._known: set[EntityRef] = set()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ given
    def given(self, ref: EntityRef, event_class: type[Any], **fields: Any) -> Sandbox:
        """Record an event of ``event_class`` (e.g. ``Lot.Opened``) as already in the
        entity's history; it is stored and applied like any other. Chainable."""
        entity = self._entity(ref)
        event = event_class(originator_id=entity.id, originator_version=entity.version + 1,
                            timestamp=_event_time(self.now), **fields)
        event.mutate(entity)
        self._persist(ref, entity.version - 1, [event])
        return self

    # ------------------------------------------------------------------ when
    def connect(self, ref: EntityRef, connection_id: str, claims: Mapping[str, Any], message_id: str | None = None) -> Result:
        return self.deliver(ref, Connect(message_id or self._next_id(), self.now, connection_id, dict(claims)))

    def disconnect(self, ref: EntityRef, connection_id: str, reason: str = "closed") -> Result:
        return self.deliver(ref, Terminated(self._next_id(), self.now, connection_id, reason))

    def client(self, ref: EntityRef, connection_id: str, payload: Mapping[str, Any] | bytes,
               message_id: str | None = None) -> Result:
        """A client message; a mapping is msgpack-encoded as a client library would."""
        raw = payload if isinstance(payload, bytes) else msgpack.packb(dict(payload))
        return self.deliver(ref, ClientMessage(message_id or self._next_id(), self.now, connection_id, raw))

    def tell(self, ref: EntityRef, sender: EntityRef, message_type: str, message_id: str | None = None,
             **data: Any) -> Result:
        """A message from another entity (``sender``)."""
        return self.deliver(ref, EntityMessage(message_id or self._next_id(), self.now, sender, message_type, data))

    def answer(self, ref: EntityRef, call: RemoteCall, state: Any = None, *, version: int | None = None,
               etag: str | None = None, at: float | None = None, error: str = "", reason: str = "") -> Result:
        """The runtime's answer to a state proxy's remote ``call`` (see ``Result.calls``): the
        primary's ``state`` (with its ``version``/``etag``/``at``), or, with ``error``, a
        failure code (``primary_timeout``, ``primary_unavailable``, ...). No connector runs
        in the sandbox: the test plays the primary."""
        return self.deliver(ref, RemoteResult(remote_result_id(call.op, call.attempt), self.now, call.op, call.attempt,
                                              not error, state, version, etag, at, error, reason))

    def advance(self, seconds: float) -> list[Result]:
        """Move virtual time forward, firing due timers in due order."""
        until = self.now + seconds
        fired: list[Result] = []
        while True:
            due = self._next_timer(until)
            if due is None:
                break
            when, ref, key, name, data = due
            self.now = max(self.now, when)
            fired.append(self.deliver(ref, TimerFired(timer_message_id(key, when), self.now, name, key, data)))
        self.now = until
        return fired

    def deliver(self, ref: EntityRef, message: Inbound) -> Result:
        """Process ``message`` as the state node would; returns what it did."""
        if self.types.get(ref.category) is None:
            raise UnknownCategory(f"no entity category {ref.category!r} in this sandbox")
        entity = self._entity(ref)
        version_before = entity.version
        outcome = handle(entity, message)
        if outcome.restore:
            self._entities.pop(ref)  # rebuilt from the journal on next use
        elif outcome.events:
            outcome.events = self._persist(ref, version_before, outcome.events)
        result = _result(ref, message, outcome)
        if self.deliver_entity_messages and outcome.reply.ok:
            for tell in result.tells:
                result.chain.append(self.deliver(tell.to, EntityMessage(tell.message_id, self.now, ref, tell.type, tell.data)))
        return result

    # ------------------------------------------------------------------ then
    def state(self, ref: EntityRef) -> Any:
        """The entity as it is now (loaded from the journal if not in memory)."""
        return self._entity(ref)

    def events(self, ref: EntityRef) -> list[Any]:
        """Every stored event of the entity, decoded."""
        return [self.mapper.to_domain_event(s) for s in self.journal.read(ref.stream_id)]

    def event_names(self, ref: EntityRef) -> list[str]:
        return [type(e).__name__ for e in self.events(ref)]

    def restart(self) -> None:
        """Drop every entity from memory and reload it from a snapshot + journal, as after
        passivation or on another node. Snapshots are taken (and round-tripped) first."""
        for entity in list(self._entities.values()):
            self._snapshot(entity)
        self._entities.clear()
        for ref in sorted(self._known, key=str):
            self._entity(ref)

    # ------------------------------------------------------------------ internals
    def _next_id(self) -> str:
        return f"sandbox-{next(self._ids)}"

    def _entity(self, ref: EntityRef) -> Entity:
        entity = self._entities.get(ref)
        if entity is None:
            cls = self.types.get(ref.category)
            if cls is None:
                raise UnknownCategory(f"no entity category {ref.category!r} in this sandbox")
            entity, _ = rehydrate(self.journal, self.mapper, cls, ref)
            self._entities[ref] = entity
            self._known.add(ref)
        return entity

    def _persist(self, ref: EntityRef, version_before: int, events: Sequence[Any]) -> list[Any]:
        stored = tuple(map(self.mapper.to_stored_event, events))
        decoded = [self.mapper.to_domain_event(s) for s in stored]
        for original, copy in zip(events, decoded, strict=True):
            if vars(original) != vars(copy):
                diff = {k: (v, vars(copy).get(k)) for k, v in vars(original).items() if vars(copy).get(k) != v}
                raise CodecRoundTripError(f"{type(original).__qualname__} changed through the codec: {diff}")
        [error] = self.journal.append([StreamWrite(ref.stream_id, version_before, stored)])
        if error is not None:
            raise error
        self._known.add(ref)
        return decoded

    def _snapshot(self, entity: Entity) -> None:
        stored = self.mapper.to_stored_event(type(entity).Snapshot.take(entity))
        restored = self.mapper.to_domain_event(stored).mutate(None)  # type: ignore[attr-defined]
        before = {k: v for k, v in vars(entity).items() if k not in RESIDENT_ONLY}
        after = {k: v for k, v in vars(restored).items() if k not in RESIDENT_ONLY}
        if before != after:
            diff = sorted(k for k in before if before.get(k) != after.get(k))
            raise CodecRoundTripError(f"snapshot of {entity.id} changed through the codec: {diff}")
        self.journal.save_snapshot(stored)

    def _next_timer(self, until: float) -> tuple[float, EntityRef, str, str, dict[str, Any]] | None:
        best = None
        for ref, entity in self._entities.items():
            for key, (due, name, data) in entity.timers().items():
                if due <= until and (best is None or due < best[0]):
                    best = (due, ref, key, name, dict(data))
        return best


def _result(ref: EntityRef, message: Inbound, outcome: Outcome) -> Result:
    result = Result(ref, message, outcome.reply, list(outcome.events), duplicate=outcome.duplicate,
                    failure=outcome.failure)
    for effect in outcome.effects:
        if isinstance(effect, Send):
            result.sends.append(effect)
        elif isinstance(effect, Tell):
            result.tells.append(effect)
        elif isinstance(effect, Terminate):
            result.terminations.append(effect)
        elif isinstance(effect, RemoteCall):
            result.calls.append(effect)
    return result


def _event_time(now: float) -> Any:
    from datetime import datetime

    return datetime.fromtimestamp(now, UTC)
