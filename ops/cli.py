"""``xplatform`` command line.

Subcommands:
  run       serve the one-process platform (SQLite, in-process transport) with its public
            edge: the demo page at /, websockets at /ws/<category>/<id>, dev tokens at
            /dev/token, metrics at /metrics; prints the URL and runs until Ctrl-C
  demo      drive the sample auction through the one-process platform from the console,
            printing every reply and outbound message (no server)
  state-node  run a clustered state node (XPLATFORM_ZOOKEEPER_HOSTS; shards from ZooKeeper);
            --supervised runs it under a local supervisor that ends a crashed node's
            ZooKeeper session at once (sub-second failover with long sessions) and restarts it
  edge      run a clustered public edge (routes to state nodes by the shard map)
  status    members and shard ownership of a cluster, from ZooKeeper (ops/RUNBOOK.md)
  settings  print every setting, its value and why it defaults as it does
  inspect   print the stored events of one entity (``xplatform inspect Lot demo-1``)
  new       write a minimal entity package NAME/ (one entity, its sandbox test, the
            XPLATFORM_ENTITIES line) that ``xplatform run`` serves unchanged
  drain, rolling-restart, rebalance, doctor, drill failover
            runbook commands on a cluster, through ZooKeeper (ops/runbook/, ops/RUNBOOK.md)
  projector run the projections XPLATFORM_PROJECTIONS names into MongoDB (XPLATFORM_MONGO_URI):
            persistent subscriptions on EventStoreDB, catch-up on SQLite/PostgreSQL; until SIGTERM
  projection status [--json] | rebuild NAME [--dry-run] | replay-parked NAME
            read models' position, lag and parked events; rebuild one from scratch and switch
            readers over; apply parked events again after a fix (ops/RUNBOOK.md "Read models")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
from pymongo.errors import PyMongoError

from domain import ClientMessage, Connect, EntityRef, Terminated
from domain.effects import Send, Terminate
from domain.entity import Entity
from infrastructure import event_loop
from infrastructure.errors import InfrastructureError
from infrastructure.logformat import configure_logging
from infrastructure.persistence import new_mapper, open_journal
from infrastructure.settings import SAMPLE_ENTITIES, Settings
from ops.runbook import commands as runbook
from ops.wiring.dev import Platform, build_platform
from projections.errors import ProjectionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xplatform", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the one-process platform, its edge and the demo page until Ctrl-C")
    run.add_argument("--host", default=None, help="address to listen on (default: XPLATFORM_EDGE_HOST)")
    run.add_argument("--port", type=int, default=None, help="port (default: XPLATFORM_EDGE_PORT; 0 = any free)")
    run.add_argument("--dev-tokens-on-network", action="store_true",
                     help="serve dev tokens (any identity to whoever asks) on a non-loopback --host too; "
                          "refused otherwise. Only on a trusted lab network (XPLATFORM_EDGE_DEV_TOKENS_ON_NETWORK=1)")
    run.add_argument("--workers", type=int, default=None,
                     help="edge worker processes beside the state node (one machine, several cores: "
                          "ops/wiring/workers.py); default XPLATFORM_EDGE_WORKERS, 0 = all in one process")
    demo = sub.add_parser("demo", help="drive the sample domain through the platform from the console")
    demo.add_argument("--lot", default="", help="lot ID to use (default: a new one per run)")
    state_node = sub.add_parser("state-node", help="run a clustered state node (needs XPLATFORM_ZOOKEEPER_HOSTS)")
    state_node.add_argument("--supervised", action="store_true",
                            help="run the node as a child of a local supervisor: if it dies without draining, "
                                 "its ZooKeeper session is ended at once (its shards move now, not after the "
                                 "session timeout) and it is restarted; SIGTERM drains it and exits")
    edge = sub.add_parser("edge", help="run a clustered public edge (needs XPLATFORM_ZOOKEEPER_HOSTS)")
    edge.add_argument("--port", type=int, default=None, help="port (default: XPLATFORM_EDGE_PORT; 0 = any free)")
    sub.add_parser("status", help="cluster members and shard ownership, from ZooKeeper")
    sub.add_parser("settings", help="print settings with their reasons")
    inspect = sub.add_parser("inspect", help="print an entity's stored events")
    inspect.add_argument("category")
    inspect.add_argument("entity_id")
    new = sub.add_parser("new", help="write a minimal entity package with its sandbox test")
    new.add_argument("name", help="the package's name (a Python identifier)")
    new.add_argument("--dir", default=".", help="directory to write NAME/ in (default: the current one)")
    runbook.add_commands(sub)
    sub.add_parser("projector", help="run the projections of XPLATFORM_PROJECTIONS into MongoDB until SIGTERM")
    projection = sub.add_parser("projection", help="read model operations: status, rebuild, replay-parked")
    projection_sub = projection.add_subparsers(dest="operation", required=True)
    projection_status = projection_sub.add_parser("status", help="position, lag and parked events per read model")
    projection_status.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    projection_rebuild = projection_sub.add_parser("rebuild", help="replay into fresh collections, then switch readers")
    projection_rebuild.add_argument("name", help="the projection's NAME")
    projection_rebuild.add_argument("--dry-run", action="store_true",
                                    help="rebuild, compare with the live read model, drop it again; switch nothing")
    projection_replay = projection_sub.add_parser("replay-parked", help="apply parked events again (after a fix)")
    projection_replay.add_argument("name", help="the projection's NAME")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings)
        if args.command == "run":
            from ops.wiring.dev import run as run_dev

            run_dev(settings, args.host, args.port, args.dev_tokens_on_network, args.workers)
        elif args.command == "demo":
            asyncio.run(_demo(settings, args.lot or f"demo-{uuid.uuid4().hex[:8]}"))
        elif args.command == "state-node" and args.supervised:
            from infrastructure.cluster.supervisor import supervise_state_node

            return asyncio.run(supervise_state_node(settings, [sys.executable, "-m", "ops.cli", "state-node"]))
        elif args.command == "state-node":
            from ops.wiring.state_node import serve_state_node

            event_loop.run(serve_state_node(settings), settings)
        elif args.command == "edge":
            from infrastructure.runtime.entity_modules import entity_types_from
            from ops.wiring.edge import serve_cluster_edge

            if args.port is not None:
                settings = settings.with_(edge_port=args.port)
            event_loop.run(serve_cluster_edge(settings, entity_types_from(settings).categories), settings)
        elif args.command == "status":
            from ops.status import print_status

            print_status(settings)
        elif args.command == "settings":
            for name, value, why in settings.describe():
                print(f"{name} = {value!r}\n    {why}")
        elif args.command == "inspect":
            _inspect(settings, EntityRef(args.category, args.entity_id))
        elif args.command == "new":
            _new(args.name, Path(args.dir))
        elif args.command in runbook.COMMANDS:
            return runbook.run_command(args, settings)
        elif args.command == "projector":
            from ops.wiring.projector import serve_projector

            event_loop.run(serve_projector(settings), settings)
        elif args.command == "projection":
            return _projection(settings, args)
    except (InfrastructureError, ProjectionError, PyMongoError) as exc:
        print(f"xplatform: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


def _projection(settings: Settings, args: argparse.Namespace) -> int:
    from ops import projection_ops

    if args.operation == "status":
        projection_ops.status(settings, as_json=args.json)
        return 0
    if args.operation == "rebuild":
        return projection_ops.rebuild_command(settings, args.name, dry_run=args.dry_run)
    return projection_ops.replay_parked_command(settings, args.name)


def _new(name: str, directory: Path) -> None:
    from infrastructure.scaffold import new_package

    target = new_package(name, directory)
    print(f"wrote {target}/: test it with `python -m pytest {target}`, serve it with\n"
          f"  PYTHONPATH={directory.resolve()} XPLATFORM_ENTITIES={name}.entities:ENTITIES xplatform run")


def _inspect(settings: Settings, ref: EntityRef) -> None:
    journal, mapper = open_journal(settings), new_mapper()
    try:
        for stored in journal.read(ref.stream_id):
            event = mapper.to_domain_event(stored)
            fields = {k: v for k, v in vars(event).items() if k not in ("originator_id", "originator_version")}
            print(f"{stored.originator_version:>6} {type(event).__name__:<22} {json.dumps(fields, default=str)}")
    finally:
        journal.close()


class _Printer:
    """Stands in for an edge: prints what would be sent to client connections."""

    def publish(self, source: EntityRef, effect: Send | Terminate) -> None:
        if isinstance(effect, Send):
            target = type(effect.target).__name__
            print(f"  -> clients of {source} [{target}]: {_short(effect.payload)}")
        else:
            print(f"  -> terminate {effect.connection_id} of {source}: {effect.reason}")


def _view(entity: Entity | None) -> Any:
    """The sample's entities show themselves with ``view()``; the SDK's Entity does not promise one."""
    return entity.view() if entity is not None and hasattr(entity, "view") else None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) < 160 else text[:157] + "..."


async def _demo(settings: Settings, lot_id: str) -> None:
    platform = build_platform(settings.with_(entities=SAMPLE_ENTITIES))  # it drives the sample, whatever is set
    async with platform:
        platform.transport.subscribe(_Printer())
        where = settings.sqlite_path if settings.store == "sqlite" else settings.store
        print(f"X Platform, one process: store={settings.store} ({where}), node={settings.node_id}")
        lot = EntityRef("Lot", lot_id)
        people = {"ann": "auctioneer", "bob": "bidder", "cat": "bidder", "vic": "viewer"}
        for user, role in people.items():
            await _say(platform, f"{user} ({role}) connects to {lot}",
                       lot, Connect(_mid(), time.time(), f"conn-{user}", {"sub": user, "role": role}))
        await _client(platform, lot, "ann", {"type": "open", "title": "Ming vase", "increment": 10})
        await _client(platform, lot, "bob", {"type": "bid", "amount": 100})
        await _client(platform, lot, "cat", {"type": "bid", "amount": 105})  # below increment
        await _client(platform, lot, "cat", {"type": "bid", "amount": 150})
        await _client(platform, lot, "vic", {"type": "bid", "amount": 500})  # viewers cannot bid
        duplicate = _mid()
        await _client(platform, lot, "bob", {"type": "bid", "amount": 200}, duplicate)
        await _client(platform, lot, "bob", {"type": "bid", "amount": 200}, duplicate)  # same ID: same outcome
        await _say(platform, "bob's socket drops", lot, Terminated(_mid(), time.time(), "conn-bob", "network lost"))
        await _say(platform, "bob reconnects with the same connection ID", lot,
                   Connect(_mid(), time.time(), "conn-bob", {"sub": "bob", "role": "bidder"}))
        await _client(platform, lot, "ann", {"type": "close"})
        await asyncio.sleep(0.1)
        await platform.node.drain()
        state = platform.node.resident(lot)
        print(f"\nfinal state of {lot}: {_short(_view(state))}")
        for user in ("bob", "cat"):
            bidder = platform.node.resident(EntityRef("Bidder", user))
            print(f"account of {user}: {_short(_view(bidder))}")
        print(f"\nevents stored for {lot}: {len(platform.journal.read(lot.stream_id))}"
              f" (see them: xplatform inspect Lot {lot_id})")


async def _client(platform: Platform, lot: EntityRef, user: str, payload: dict[str, Any], mid: str | None = None) -> None:
    message = ClientMessage(mid or _mid(), time.time(), f"conn-{user}", msgpack.packb(payload))
    await _say(platform, f"{user} sends {payload}", lot, message)
    await asyncio.sleep(0.02)  # let entity-to-entity messages settle so the output reads in order


async def _say(platform: Platform, what: str, to: EntityRef, message: Any) -> None:
    print(f"\n{what}")
    reply = await platform.transport.ask(to, message)
    if reply.ok:
        print(f"  <- ok: {_short(reply.payload)}")
    else:
        print(f"  <- {reply.code}: {reply.reason}")


def _mid() -> str:
    return uuid.uuid4().hex


if __name__ == "__main__":
    sys.exit(main())
