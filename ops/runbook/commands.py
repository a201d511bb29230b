"""The runbook's subcommands of ``xplatform`` (their arguments, and output as text or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from infrastructure.settings import Settings
from ops.runbook.drain import DRAIN_TIMEOUT_S
from ops.runbook.view import StatusLine

COMMANDS = ("drain", "doctor", "rebalance", "rolling-restart", "drill")


def add_commands(sub: Any) -> None:
    """Add the runbook's subparsers to ``xplatform``'s."""
    drain = sub.add_parser("drain", help="drain a state node or an edge through ZooKeeper and wait until it left")
    drain.add_argument("node", help="the member's node ID (`xplatform status` lists them)")
    drain.add_argument("--force", action="store_true",
                       help="drain even if a category is left without any node the layout allows")
    drain.add_argument("--timeout", type=_positive, default=None, help="seconds to wait for it to answer and leave (default 60)")
    _common(drain, changes=True)
    doctor = sub.add_parser("doctor", help="check ZooKeeper, the store, the layout, edges and clocks; print the fixes")
    _common(doctor, changes=False)
    rebalance = sub.add_parser("rebalance", help="show (--dry-run) or apply the moves the allocator would make now")
    _common(rebalance, changes=True)
    rolling = sub.add_parser("rolling-restart", help="drain every member in turn; its process manager restarts it; "
                             "wait for the replacement and a healthy cluster before the next")
    rolling.add_argument("--nodes", default="", help="comma-separated node IDs, in order (default: every state node, "
                         "then every edge)")
    rolling.add_argument("--timeout", type=_positive, default=None,
                         help="seconds each wait of a step may take (default 60): answer, leave, replacement, health")
    _common(rolling, changes=True)
    drill = sub.add_parser("drill", help="recovery drills for test and staging clusters")
    drills = drill.add_subparsers(dest="drill", required=True)
    failover = drills.add_parser("failover", help="kill (or drain) a state node under synthetic load; report the time "
                                 "to serve again and lost acknowledgements")
    failover.add_argument("--edge", action="append", default=[], required=True,
                          help="base URL of an edge the clients connect to (repeat for several)")
    failover.add_argument("--category", required=True, help="entity category to load (e.g. Lot)")
    failover.add_argument("--message", required=True, type=json.loads,
                          help='client message (JSON) each client sends, one that changes state: \'{"type": "chat", "text": "drill"}\'')
    failover.add_argument("--role", default="", help="the role claim of the clients' tokens (e.g. auctioneer)")
    failover.add_argument("--entities", type=_count, default=4, help="entities under load, one client each (default 4)")
    failover.add_argument("--node", default=None, help="the state node to fail (default: the first entity's owner)")
    failover.add_argument("--mode", choices=("kill", "drain"), default="kill",
                          help="kill: like kill -9 (the node needs XPLATFORM_DRILLS_ENABLED=1); drain: graceful")
    failover.add_argument("--timeout", type=_positive, default=None, help="seconds each wait may take (default 60)")
    _common(failover, changes=True)


def _positive(text: str) -> float:
    """A number of seconds above 0 (argparse refuses anything else with this message)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return int(text)


def _common(parser: argparse.ArgumentParser, changes: bool) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts); no status line")
    if changes:
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the runbook subcommand ``args.command``; its exit code."""
    line = StatusLine(enabled=not args.json)
    if args.command == "drain":
        from ops.runbook.drain import drain, print_drain

        report = drain(settings, args.node, dry_run=args.dry_run, force=args.force,
                       timeout_s=args.timeout or DRAIN_TIMEOUT_S, line=line)
        return _emit(args, report, print_drain)
    if args.command == "doctor":
        from ops.runbook.doctor import doctor, print_doctor

        report = doctor(settings)
        return _emit(args, report, print_doctor, 0 if report["ok"] else 1)
    if args.command == "rebalance":
        from ops.runbook.rebalance import print_rebalance, rebalance

        return _emit(args, rebalance(settings, dry_run=args.dry_run), print_rebalance)
    if args.command == "rolling-restart":
        from ops.runbook.rolling import RollingRestartStopped, print_rolling, rolling_restart

        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] or None
        try:
            report = rolling_restart(settings, nodes=nodes, dry_run=args.dry_run,
                                     timeout_s=args.timeout or DRAIN_TIMEOUT_S, line=line)
        except RollingRestartStopped as stopped:
            _emit(args, stopped.report, print_rolling)  # the steps done, then the one-line reason (exit 2)
            raise
        return _emit(args, report, print_rolling)
    if args.command == "drill":
        from ops.runbook.drill import drill_failover, print_drill

        report = drill_failover(settings, edges=args.edge, category=args.category, message=args.message, role=args.role,
                                entities=args.entities, node=args.node, mode=args.mode, dry_run=args.dry_run,
                                timeout_s=args.timeout or DRAIN_TIMEOUT_S, line=line)
        code = _emit(args, report, print_drill, 0 if report.get("ok", True) else 1)
        if code:
            print(f"xplatform: drill failed: {report['lost_acks']} acknowledged messages lost, "
                  f"{sum(t is None for t in report['served_again_s'].values())} entities not served again",
                  file=sys.stderr)
        return code
    raise AssertionError(args.command)


def _emit(args: argparse.Namespace, report: dict[str, Any], show: Callable[[dict[str, Any]], None], code: int = 0) -> int:
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        show(report)
    return code
