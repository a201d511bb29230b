"""``xplatform drill failover``: the recovery drill operators run before trusting a release,
in a test or staging cluster. Under synthetic load, one state node is killed (or drained)
through ZooKeeper, and the drill reports how long each of its entities took to serve again
and how many acknowledged messages were lost (the answer must be none).

The load: ``--entities`` websocket clients through the given edges (``edge.client``, as an
application's users connect), one per entity of ``--category`` (IDs ``drill-<run>-<n>``),
each sending ``--message`` back to back with a new message ID each time, resent with the same
ID until answered (the entity applies an ID once). Their tokens are signed with the cluster's
``XPLATFORM_JWT_HS256_SECRET`` (iss/aud from the settings; role ``--role``): a staging
cluster's test secret. The message must change state (every acknowledged one then has its
event in the store, carrying its message ID).

The fault: ``kill`` (default) ends the node like ``kill -9`` - only a node started with
``XPLATFORM_DRILLS_ENABLED=1`` takes it (others refuse, and the drill stops there); its
shards move when its session ends (at once when supervised, else after the session timeout).
``drain`` drains it as ``xplatform drain`` does. The node is the one serving the first drill
entity, or ``--node``.

Measured: per entity the fault's node served, the time from the node's acceptance of the
request (as this command saw it) until a message *sent after it* was acknowledged; and,
after the load stops, every acknowledged message ID looked up in its entity's stream.
Exit 1 if one was lost or an entity was not served again within ``--timeout``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from domain.refs import EntityRef
from edge.client import Client, connect
from infrastructure.cluster.allocation import ShardOwner
from infrastructure.persistence import new_mapper, open_journal
from infrastructure.runtime.sharding import shard_of
from infrastructure.settings import Settings
from ops.runbook import RunbookError
from ops.runbook.drain import DRAIN_TIMEOUT_S
from ops.runbook.view import ClusterView, StatusLine

WARM_UP_S = 0.5
"""Load before the fault: every entity answered once (resident on its owner) and then some."""
SETTLE_S = 0.5
"""Load after every entity served again, before the clients stop (the last replies arrive)."""
RETRY_PAUSE_S = 0.05
"""Pause before resending after a retryable refusal, a timeout or a lost socket."""
PACE_S = 0.02
"""Pause between a client's messages: under the edge's default per-connection rate limit."""
TOKEN_TTL_S = 3600


@dataclass
class EntityLoad:
    """What one drill client saw: (message ID, sent at, acknowledged at) per acknowledged message."""

    entity_id: str
    acked: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class SyntheticLoad:
    """One client per entity sending ``message`` back to back (see the module docstring)."""

    edges: list[str]
    category: str
    entity_ids: list[str]
    message: dict[str, Any]
    tokens: list[str]
    records: dict[str, EntityLoad] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.records = {e: EntityLoad(e) for e in self.entity_ids}
        self._tasks = [asyncio.create_task(self._client(i, e)) for i, e in enumerate(self.entity_ids)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def all_answered(self) -> bool:
        return all(r.acked for r in self.records.values())

    def first_sent_after(self, entity_id: str, moment: float) -> float | None:
        """When the first message sent after ``moment`` was acknowledged (None: not yet)."""
        return next((acked for _mid, sent, acked in self.records[entity_id].acked if sent > moment), None)

    async def _client(self, i: int, entity_id: str) -> None:
        order = self.edges[i % len(self.edges):] + self.edges[:i % len(self.edges)]
        client: Client | None = None
        try:
            client = await connect(order, self.category, entity_id, self.tokens[i], heartbeat_s=0)
            n = 0
            while not self._stop.is_set():
                n += 1
                mid, sent = f"{entity_id}-{n}", time.monotonic()
                while not self._stop.is_set():
                    try:
                        reply = await client.request(self.message, message_id=mid)
                    except Exception as exc:  # noqa: BLE001 - the socket went, or no reply in time: resend
                        self.errors[f"resent after {type(exc).__name__}"] += 1
                        await asyncio.sleep(RETRY_PAUSE_S)
                        continue
                    if reply.ok:
                        self.records[entity_id].acked.append((mid, sent, time.monotonic()))
                        break
                    self.errors[f"{reply.code}{'' if reply.retryable else ' (not retryable)'}"] += 1
                    if not reply.retryable:
                        break
                    await asyncio.sleep(RETRY_PAUSE_S)
                await asyncio.sleep(PACE_S)
        except Exception as exc:  # noqa: BLE001 - a client that cannot connect is a finding, not a crash
            self.errors[f"client failed: {type(exc).__name__}: {str(exc)[:80]}"] += 1
        finally:
            if client is not None:
                await client.close()


def _tokens(settings: Settings, role: str, count: int) -> list[str]:
    if not settings.jwt_hs256_secret:
        raise RunbookError("the drill's clients need tokens the edges accept: set XPLATFORM_JWT_HS256_SECRET (with "
                           "XPLATFORM_JWT_ISSUER/_AUDIENCE) to this test or staging cluster's")
    import jwt

    now = int(time.time())
    claims = {"exp": now + TOKEN_TTL_S, "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "role": role}
    return [jwt.encode({**claims, "sub": f"drill-{i}"}, settings.jwt_hs256_secret, algorithm="HS256") for i in range(count)]


def drill_failover(settings: Settings, *, edges: list[str], category: str, message: dict[str, Any], role: str = "",
                   entities: int = 4, node: str | None = None, mode: str = "kill", dry_run: bool = False,
                   timeout_s: float = DRAIN_TIMEOUT_S, line: StatusLine | None = None) -> dict[str, Any]:
    """Run the drill (see the module docstring); its report (``ok`` False: it failed)."""
    line = line or StatusLine(enabled=False)
    if not edges:
        raise RunbookError("the drill needs the edges its clients connect to: --edge http://HOST:PORT (repeatable)")
    run = uuid.uuid4().hex[:6]
    ids = [f"drill-{run}-{i}" for i in range(max(1, entities))]
    with ClusterView(settings) as view:
        members = view.members()
        assignment, _stat = view.assignment()
        owners_now: list[ShardOwner | None] = assignment.shards.get(category) or []
        if not owners_now:
            raise RunbookError(f"no category {category!r} in the shard map (categories: {', '.join(assignment.shards)})")

        def owner(entity_id: str) -> str | None:
            o = owners_now[shard_of(EntityRef(category, entity_id), len(owners_now))]
            return None if o is None else o.node

        victim = node or owner(ids[0])
        if victim is None or victim not in members or members[victim].role != "state":
            raise RunbookError(f"{victim!r} is not a state node of cluster {settings.cluster_name!r} (see `xplatform status`)")
        k = 0
        while not any(owner(e) == victim for e in ids):  # at least one entity on the victim
            ids[-1] = f"drill-{run}-x{k}"
            k += 1
        report: dict[str, Any] = {"victim": victim, "mode": mode, "category": category, "dry_run": dry_run,
                                  "owners": {e: owner(e) for e in ids}}
        if dry_run:
            return report
        tokens = _tokens(settings, role, len(ids))
        affected = [e for e in ids if owner(e) == victim]
        outcome = asyncio.run(_under_load(view, edges, category, ids, message, tokens, victim, mode, affected,
                                          timeout_s, line))
    lost, stored_any = _lost(settings, category, outcome["acked"])
    if outcome["acknowledged"] and not stored_any:
        raise RunbookError(f"none of the drill's acknowledged messages is in the store: --message {message} changes "
                           "no state (choose one whose handling stores an event)")
    served = outcome["served_again_s"]
    times = [t for t in served.values() if t is not None]
    report.update({"affected": affected, "served_again_s": served,
                   "served_again_max_s": max(times) if times else None,
                   "served_again_median_s": round(statistics.median(times), 3) if times else None,
                   "acknowledged": outcome["acknowledged"], "lost_acks": len(lost), "lost": lost[:20],
                   "client_errors": outcome["errors"]})
    report["ok"] = not lost and all(t is not None for t in served.values())
    return report


async def _under_load(view: ClusterView, edges: list[str], category: str, ids: list[str], message: dict[str, Any],
                      tokens: list[str], victim: str, mode: str, affected: list[str], timeout_s: float,
                      line: StatusLine) -> dict[str, Any]:
    load = SyntheticLoad(edges, category, ids, message, tokens)
    load.start()
    started = time.monotonic()
    try:
        while not load.all_answered():
            if time.monotonic() - started > timeout_s:
                raise RunbookError(f"the drill's clients were not all answered within {timeout_s:g} s before any fault "
                                   f"(errors: {dict(load.errors)}): check --edge, --category, --message and --role")
            line.show(f"load on {len(ids)} entities: waiting for every one to answer", time.monotonic() - started)
            await asyncio.sleep(0.05)
        await asyncio.sleep(WARM_UP_S)
        member = view.member(victim)
        if member is None:
            raise RunbookError(f"{victim} left before the drill's fault")
        await asyncio.to_thread(view.ask, member, mode, timeout_s, line)
        fault = time.monotonic()
        await asyncio.to_thread(view.withdraw, victim)
        while True:
            served = {e: load.first_sent_after(e, fault) for e in affected}
            waited = time.monotonic() - fault
            if all(t is not None for t in served.values()) or waited > timeout_s:
                break
            line.show(f"{mode} of {victim}: {sum(t is not None for t in served.values())}/{len(affected)} of its "
                      "entities served again", waited)
            await asyncio.sleep(0.02)
        await asyncio.sleep(SETTLE_S)
    finally:
        await load.stop()
        line.done()
    return {"served_again_s": {e: None if t is None else round(t - fault, 3) for e, t in served.items()},
            "acked": {e: [mid for mid, _s, _a in r.acked] for e, r in load.records.items()},
            "acknowledged": sum(len(r.acked) for r in load.records.values()), "errors": dict(load.errors)}


def _lost(settings: Settings, category: str, acked: dict[str, list[str]]) -> tuple[list[str], bool]:
    """Acknowledged message IDs with no stored event carrying them; whether any was found."""
    journal, mapper = open_journal(settings), new_mapper()
    lost, found = [], False
    try:
        for entity_id, mids in acked.items():
            stored = {getattr(mapper.to_domain_event(e), "_xp_mid", None)
                      for e in journal.read(EntityRef(category, entity_id).stream_id)}
            found |= any(m in stored for m in mids)
            lost += [m for m in mids if m not in stored]
    finally:
        journal.close()
    return lost, found


def print_drill(report: dict[str, Any]) -> None:
    if report["dry_run"]:
        print(f"would {report['mode']} {report['victim']} under load on {len(report['owners'])} "
              f"{report['category']} entities (owners: {report['owners']})")
        return
    print(f"drill: {report['mode']} of {report['victim']} under load on {len(report['owners'])} {report['category']} entities")
    for entity_id, took in report["served_again_s"].items():
        print(f"  {entity_id}: served again after {'NEVER' if took is None else f'{took * 1000:.0f} ms'}")
    print(f"  acknowledged {report['acknowledged']}, lost {report['lost_acks']}"
          + (f" ({', '.join(report['lost'])})" if report["lost"] else ""))
    if report["client_errors"]:
        print(f"  client retries and errors: {report['client_errors']}")
    print("PASSED" if report["ok"] else "FAILED")
