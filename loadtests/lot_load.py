"""Steady chat load on lots, in a process of its own, recording what each client sees.

    python -m loadtests.lot_load --edges ws://127.0.0.1:8001,ws://127.0.0.1:8002 --lots 12 [--pace 0.025]

The failover and drain benchmarks start this as a subprocess, so the load and its clock are
not the benchmark's event loop: a benchmark that blocks or stalls (starting a node, asking
ZooKeeper) can no longer show up as unavailability, and the clients keep sending while the
benchmark kills and restarts nodes. One chat client per lot (alternating edges) posts
messages back to back, each resent with the same ID until answered (``ok``), pausing
``--pace`` between messages (under the edge's per-connection limit).

Protocol on stdout: ``ready`` once every client has had an answer; then, when stdin closes
(or on SIGTERM), one JSON line: per lot the ``time.monotonic()`` of every acknowledgement
(CLOCK_MONOTONIC is system-wide on Linux: comparable with the benchmark's own clock) and
the acknowledged message IDs, the errors clients saw (error replies and failed requests,
by reason), and this process's event-loop lag (a late client loop would look like a slow
cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from edge.client import connect
from infrastructure.persistence import RecorderJournal
from loadtests.common import LoopLag
from ops.local.cluster import Cluster, cluster_token

PACE_S = 0.025
"""Pause between a client's messages: with a cluster round trip of a few ms this keeps each
client under the edge's default per-connection limit (50 msg/s, burst 100). Faster, the
edge rightly closes it 1008 for flooding (seen once the round trip got faster)."""

SHARDS = 8
"""Shards per category of the benchmarks' clusters (ops/local/cluster.py's default)."""
WARM_UP_S = 2.0
"""Load before the first kill or drain: every lot active, its entity resident on its owner."""
SETTLE_S = 1.5
"""Load after a node is back before the next kill or drain: its shards have moved back."""
RETRY_PAUSE_S = 0.02
"""Pause before resending after a retryable refusal or a failed request; it also yields, so
a client whose requests fail at once cannot spin the loop (seen: a hung smoke run)."""


def token(sub: str) -> str:
    # An auctioneer: its connect creates the lot it chats on (a viewer's may not create one).
    return cluster_token(sub, "auctioneer", ttl_s=3600)


@dataclass
class LotRecord:
    """What one lot's client saw."""

    answered_at: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)


@dataclass
class LoadReport:
    lots: dict[str, LotRecord]
    errors: Counter[str]
    loop_lag: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {"lots": {lot: {"answered_at": r.answered_at, "acked": r.acked} for lot, r in self.lots.items()},
                "errors": dict(self.errors), "loop_lag": self.loop_lag}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LoadReport:
        lots = {lot: LotRecord(list(r["answered_at"]), list(r["acked"]))  # type: ignore[index]
                for lot, r in dict(data["lots"]).items()}  # type: ignore[call-overload]
        return cls(lots, Counter(data["errors"]), dict(data["loop_lag"]))  # type: ignore[arg-type]


def gap_across(answered_at: list[float], moment: float) -> float | None:
    """The gap this lot's client lived through ``moment`` (a kill, say): from its last answer
    before it to its first answer after it. None: no answer after it (never served again)."""
    before = [at for at in answered_at if at <= moment]
    after = [at for at in answered_at if at > moment]
    if not after:
        return None
    return after[0] - (before[-1] if before else moment)


def longest_gap(answered_at: list[float], start: float, end: float) -> float:
    """The longest time without an answer, as this lot's client lived it, over the part of
    [start, end] it covers: gaps between consecutive answers that overlap the window, and
    from the last answer to ``end`` if none came after it."""
    longest = 0.0
    previous: float | None = None
    for at in answered_at:
        if previous is not None and at >= start and previous <= end:
            longest = max(longest, at - previous)
        previous = at
        if at > end:
            return longest
    if previous is not None and previous <= end:
        longest = max(longest, end - max(previous, start))
    return longest


async def run(edges: list[str], lots: list[str], pace_s: float, stop: asyncio.Event,
              categories: dict[str, str] | None = None) -> LoadReport:
    """``categories``: entity ID -> category for IDs that are not a ``Lot`` (e.g. the heavy
    lots of ``bench_failover --heavy``; a subclass of Lot, same messages)."""
    categories = categories or {}
    records = {lot: LotRecord() for lot in lots}
    errors: Counter[str] = Counter()
    first = asyncio.Event()
    pending_first = set(lots)
    lag = LoopLag().start()

    async def chatter(i: int, lot: str) -> None:
        # retries=0: this loop resends every refusal itself (after RETRY_PAUSE_S) and counts it
        client = None
        while client is None:  # connect again until welcomed, as a user's client does (a cold load of
            try:               # a large entity, or a node busy with many of them, can outlast one try)
                client = await connect(edges[i % len(edges)], categories.get(lot, "Lot"), lot, token(f"u{i}"),
                                       request_timeout_s=10, retries=0)
            except Exception as exc:
                errors[f"connect: {type(exc).__name__}: {exc}"[:80]] += 1
                if stop.is_set():
                    return
                await asyncio.sleep(RETRY_PAUSE_S)
        record = records[lot]
        n = 0
        try:
            while not stop.is_set():
                n += 1
                mid = f"{lot}-m{n}"
                while not stop.is_set():  # resend with the same ID until answered
                    try:
                        reply = await client.request({"type": "chat", "text": f"hello {n}"}, message_id=mid, timeout=10)
                    except Exception as exc:
                        errors[f"{type(exc).__name__}: {exc}"[:80]] += 1
                        await asyncio.sleep(RETRY_PAUSE_S)
                        continue
                    if reply.ok:
                        record.answered_at.append(time.monotonic())
                        record.acked.append(mid)
                        if lot in pending_first:
                            pending_first.discard(lot)
                            if not pending_first:
                                first.set()
                        break
                    errors[f"{reply.code}: {reply.reason}"[:80]] += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
                await asyncio.sleep(pace_s)
        finally:
            await client.close()

    tasks = [asyncio.create_task(chatter(i, lot)) for i, lot in enumerate(lots)]
    await asyncio.wait([asyncio.create_task(first.wait()), asyncio.create_task(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    print("ready", flush=True)
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    return LoadReport(records, errors, lag.stop())


def lost_acks(journal: RecorderJournal, stream_id: str, acked: list[str], after_version: int = 0) -> int:
    """How many acknowledged chat messages of a lot are not stored exactly once in its stream
    (read after ``after_version``: a set-up written before the load need not be read)."""
    stored = [msgpack.unpackb(e.state)["message_id"] for e in journal.read(stream_id, after_version=after_version)
              if e.topic.endswith("Chatted")]
    return sum(1 for mid in acked if stored.count(mid) != 1)


def lot_owners(cluster: Cluster, lots: list[str]) -> dict[str, str]:
    """The state node serving each lot now, from the cluster's shard map."""
    return cluster.owners("Lot", lots, SHARDS)


def zookeeper_settings(session_timeout_s: float, supervised: bool) -> dict[str, object]:
    """What the measured gaps depend on, reported next to them."""
    return {"session_timeout_s": session_timeout_s, "supervised": supervised}


class LoadProcess:
    """A benchmark's handle on this module running as a subprocess (see the module docstring)."""

    def __init__(self, edges: list[str], lots: list[str], pace_s: float = PACE_S,
                 targets: list[tuple[str, str]] | None = None) -> None:
        """``lots``: lot-0 .. lot-<n-1>; or ``targets``: (category, entity ID) pairs of Lot
        classes, IDs distinct (then ``lots`` must be empty)."""
        if lots != [f"lot-{i}" for i in range(len(lots))]:
            raise ValueError("lots must be lot-0 .. lot-<n-1>")
        if targets and (lots or len({i for _, i in targets}) != len(targets)):
            raise ValueError("targets: distinct entity IDs, and no lots besides")
        chosen = ["--targets", ",".join(f"{c}/{i}" for c, i in targets)] if targets else ["--lots", str(len(lots))]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtests.lot_load", "--edges", ",".join(edges), *chosen, "--pace", str(pace_s)],
            cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True)

    def wait_ready(self) -> None:
        """Block until every client has had an answer (or the process died: raises)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"load generator failed before ready: {line!r}\n{self._errors()}")

    def finish(self, timeout: float = 120.0) -> LoadReport:
        """Stop the clients and collect what they saw."""
        try:
            out, _ = self.process.communicate(timeout=timeout)  # closes stdin: the clients stop
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise RuntimeError(f"load generator did not stop:\n{self._errors()}") from None
        lines = out.strip().splitlines()
        if self.process.returncode != 0 or not lines:
            raise RuntimeError(f"load generator exited {self.process.returncode}:\n{self._errors()}")
        self._stderr.close()
        return LoadReport.from_json(json.loads(lines[-1]))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _errors(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not sys.stdin.readline():  # closed: the benchmark is done
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    if args.targets:
        pairs = [target.split("/", 1) for target in args.targets.split(",")]
        report = await run(args.edges.split(","), [i for _, i in pairs], args.pace, stop, {i: c for c, i in pairs})
    else:
        report = await run(args.edges.split(","), [f"lot-{i}" for i in range(args.lots)], args.pace, stop)
    print(json.dumps(report.to_json()), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", required=True, help="comma-separated edge base URLs")
    parser.add_argument("--lots", type=int, default=12)
    parser.add_argument("--targets", default="", help="instead of --lots: comma-separated CATEGORY/ID of Lot classes")
    parser.add_argument("--pace", type=float, default=PACE_S)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
