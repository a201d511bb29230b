"""``xplatform doctor``: what is wrong with a cluster, and the fix for each (read-only).

Checks, in order (each ``ok``, ``warn`` or ``fail``; the command exits 1 if any fails):

- ``zookeeper_quorum``: every server of ``XPLATFORM_ZOOKEEPER_HOSTS`` on its own - a majority
  must answer (else the ensemble has no quorum and every node is fenced); a single server
  is a warning (no quorum to lose one to). Its mode (leader/follower) where the server
  answers the ``srvr`` four-letter word.
- ``zookeeper_session``: the session timeout ZooKeeper grants against the one asked
  (``XPLATFORM_ZK_SESSION_TIMEOUT_S``); its min/maxSessionTimeout may bend it, and failure
  detection then follows the granted one.
- ``store``: the event store the nodes write, reached with these settings: a few reads of a
  stream that does not exist, the median against ``XPLATFORM_DOCTOR_STORE_SLOW_MS``.
- ``layout``: every category of the shard map has a live state node the layout
  (``XPLATFORM_CLUSTER_LAYOUT``, give the command the cluster's) allows, and no shard is unowned.
- ``edges``: at least one edge registered (clients reach the cluster only through edges).
- ``clock_skew``: members' clocks, as each reported it when it joined against ZooKeeper's
  time of its entry, within ``XPLATFORM_DOCTOR_MAX_CLOCK_SKEW_S`` of each other.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from infrastructure.cluster.layout import eligible
from infrastructure.cluster.zookeeper import bound_handshake
from infrastructure.persistence import open_journal
from infrastructure.settings import Settings
from ops.runbook import RunbookError
from ops.runbook.view import ClusterView, Member
from ops.wiring.cluster import layout_from

SERVER_TIMEOUT_S = 3.0
"""How long one ZooKeeper server may take to open a session for the quorum check."""
STORE_READS = 5
"""Reads of the store timed (their median is reported: one slow first connection is not the store)."""
PROBE_STREAM = "xplatform-doctor-probe"
"""A stream no entity has (entity streams are ``<Category>-<id>``): reading it changes nothing."""


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def doctor(settings: Settings) -> dict[str, Any]:
    """Every check (see the module docstring); ``ok`` is False if any failed."""
    findings = [_quorum(settings)]
    granted: list[float] = []
    view = ClusterView(settings, connect_timeout_s=SERVER_TIMEOUT_S)
    bound_handshake(view.zk, settings.zk_session_timeout_s, granted.append)
    try:
        with view:
            findings.append(_session(settings, granted))
            members = view.members()
            assignment, _stat = view.assignment()
    except RunbookError as exc:  # the cluster cannot be read: say so for each check that needs it
        unread = ("ZooKeeper could not be read", "see zookeeper_quorum; check XPLATFORM_ZOOKEEPER_HOSTS, "
                  "XPLATFORM_CLUSTER_NAME and XPLATFORM_ZOOKEEPER_PASSWORD_FILE")
        findings.append(Finding("zookeeper_session", "fail", str(exc), unread[1]))
        findings.append(_store(settings))
        findings += [Finding(check, "fail", f"not checked: {unread[0]}", unread[1])
                     for check in ("layout", "edges", "clock_skew")]
        return {"cluster": settings.cluster_name, "ok": False, "findings": [asdict(f) for f in findings]}
    findings.append(_store(settings))
    findings.append(check_layout(settings, members, assignment.shards))
    findings.append(_edges(members))
    findings.append(_clocks(settings, members))
    return {"cluster": settings.cluster_name, "ok": all(f.status != "fail" for f in findings),
            "findings": [asdict(f) for f in findings]}


def _quorum(settings: Settings) -> Finding:
    hosts_part, slash, chroot = settings.zookeeper_hosts.partition("/")
    servers = [h.strip() for h in hosts_part.split(",") if h.strip()]
    answered: dict[str, str] = {}
    for server in servers:
        client = KazooClient(hosts=server, timeout=SERVER_TIMEOUT_S, connection_retry={"max_tries": 1})
        try:
            client.start(SERVER_TIMEOUT_S)
            answered[server] = _mode(client)
        except (KazooException, KazooTimeoutError, OSError):
            continue
        finally:
            try:
                client.stop()
                client.close()
            except KazooException:
                pass
    down = [s for s in servers if s not in answered]
    modes = ", ".join(f"{s} {m}" for s, m in answered.items())
    if len(answered) * 2 <= len(servers):
        return Finding("zookeeper_quorum", "fail", f"{len(answered)} of {len(servers)} ZooKeeper servers answer "
                       f"(down: {', '.join(down)}): no quorum, every node is fenced",
                       "start the ZooKeeper servers that are down (a majority must run), or correct "
                       "XPLATFORM_ZOOKEEPER_HOSTS")
    if down:
        return Finding("zookeeper_quorum", "warn", f"{len(answered)} of {len(servers)} servers answer ({modes}); "
                       f"down: {', '.join(down)}", "start them again: one more loss may cost the quorum")
    if len(servers) == 1:
        return Finding("zookeeper_quorum", "warn", f"one ZooKeeper server ({modes}): nothing to lose",
                       "run an ensemble of 3 or 5 servers in production and list them all in XPLATFORM_ZOOKEEPER_HOSTS")
    return Finding("zookeeper_quorum", "ok", f"{len(servers)} of {len(servers)} servers answer ({modes})")


def _mode(client: KazooClient) -> str:
    """The server's mode from ``srvr`` (where four-letter words are allowed), else ``serving``."""
    try:
        answer = client.command(b"srvr")
    except (KazooException, OSError):
        return "serving"
    for line in answer.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return "serving"


def _session(settings: Settings, granted: list[float]) -> Finding:
    asked = settings.zk_session_timeout_s
    if not granted:
        return Finding("zookeeper_session", "warn", "could not learn the granted session timeout (kazoo version)")
    got = granted[-1]
    if abs(got - asked) > 0.001:
        return Finding("zookeeper_session", "warn", f"asked a {asked:g} s session, ZooKeeper granted {got:.3f} s "
                       "(its minSessionTimeout/maxSessionTimeout): failure detection follows the granted one",
                       f"set minSessionTimeout <= {asked * 1000:.0f} <= maxSessionTimeout (ms) in zoo.cfg, or "
                       f"XPLATFORM_ZK_SESSION_TIMEOUT_S={got:.3f} on every member")
    return Finding("zookeeper_session", "ok", f"sessions of {asked:g} s granted as asked")


def _store(settings: Settings) -> Finding:
    try:
        journal = open_journal(settings)
        try:
            took = []
            for _ in range(STORE_READS):
                started = time.perf_counter()
                journal.read(PROBE_STREAM)
                took.append((time.perf_counter() - started) * 1000)
        finally:
            journal.close()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the finding
        return Finding("store", "fail", f"{settings.store} store unreachable: {type(exc).__name__}: {str(exc)[:200]}",
                       "check the store runs and XPLATFORM_STORE with its settings (XPLATFORM_POSTGRES_*, "
                       "XPLATFORM_EVENTSTOREDB_URI) - the ones the state nodes use")
    median = statistics.median(took)
    if median > settings.doctor_store_slow_ms:
        return Finding("store", "warn", f"{settings.store} store reads take {median:.1f} ms (median of {STORE_READS})",
                       "every durable reply waits on the store: check its load, disk and the network to it "
                       f"(threshold XPLATFORM_DOCTOR_STORE_SLOW_MS={settings.doctor_store_slow_ms:g})")
    return Finding("store", "ok", f"{settings.store} store reads take {median:.1f} ms (median of {STORE_READS})")


def check_layout(settings: Settings, members: dict[str, Member], shards: dict[str, list[Any]]) -> Finding:
    groups = {n: m.group for n, m in members.items() if m.role == "state"}
    if not shards:
        return Finding("layout", "fail", "no shard map yet: no state node ever joined this cluster",
                       "start state nodes (`xplatform state-node`)")
    layout = layout_from(settings)
    orphans = sorted(c for c in shards if not eligible(layout, c, groups))
    if orphans:
        return Finding("layout", "fail", f"no live state node may host {', '.join(orphans)} (state nodes by group: "
                       f"{groups or 'none'})", "start a state node of a group the layout gives these categories "
                       "(XPLATFORM_NODE_GROUP), or change XPLATFORM_CLUSTER_LAYOUT on every member")
    unowned = {c: sum(1 for o in owners if o is None) for c, owners in shards.items()}
    unowned = {c: n for c, n in unowned.items() if n}
    if unowned:
        return Finding("layout", "fail", f"shards without an owner: {unowned}",
                       "see the allocator's log on the state nodes; `xplatform rebalance` recomputes the map")
    return Finding("layout", "ok", f"{len(shards)} categories, each with a live node; every shard owned")


def _edges(members: dict[str, Member]) -> Finding:
    edges = sorted(n for n, m in members.items() if m.role == "edge")
    if not edges:
        return Finding("edges", "fail", "no edge registered: clients cannot reach the cluster",
                       "start `xplatform edge` (with the edge secret and ZooKeeper credentials)")
    return Finding("edges", "ok", f"{len(edges)} registered: {', '.join(edges)}")


def _clocks(settings: Settings, members: dict[str, Member]) -> Finding:
    offsets = {n: float(m.info["clock"]) - m.ctime_ms / 1000 for n, m in members.items()
               if isinstance(m.info.get("clock"), int | float)}
    unknown = sorted(set(members) - set(offsets))
    if len(offsets) < 2:
        return Finding("clock_skew", "warn" if unknown else "ok",
                       f"fewer than two members report their clock (unknown: {', '.join(unknown) or 'none'})")
    skew = max(offsets.values()) - min(offsets.values())
    median = statistics.median(offsets.values())
    off = sorted(n for n, o in offsets.items() if abs(o - median) > settings.doctor_max_clock_skew_s / 2)
    shown = ", ".join(f"{n} {o * 1000:+.0f} ms" for n, o in sorted(offsets.items()))
    if skew > settings.doctor_max_clock_skew_s:
        return Finding("clock_skew", "fail", f"member clocks differ by {skew:.3f} s (against ZooKeeper, as each "
                       f"joined: {shown})", f"synchronise the clocks (NTP, chrony) of {', '.join(off) or 'the members'}; "
                       "a member reports its clock again when it rejoins")
    return Finding("clock_skew", "warn" if unknown else "ok", f"within {skew * 1000:.0f} ms ({shown})"
                   + (f"; unknown (older version): {', '.join(unknown)}" if unknown else ""))


def print_doctor(report: dict[str, Any]) -> None:
    for f in report["findings"]:
        print(f"{f['status'].upper():<4} {f['check']}: {f['detail']}")
        if f["fix"] and f["status"] != "ok":
            print(f"     fix: {f['fix']}")
    print("healthy" if report["ok"] else "NOT healthy: fix what FAILs above")
