"""Load generator of the state proxy benchmark: one process, real sockets.

    python -m loadtests.proxy_load --url http://127.0.0.1:PORT --primary http://127.0.0.1:PORT/stock
                                   [--proxies 20] [--others 20] [--read-rate 400] [--other-rate 200]
                                   [--pull-every 0.5] [--slow-delay 2] [--warmup 3] [--window 10]

Started by ``loadtests.bench_proxy`` against a server it started as a user would (``python
-m ops.cli run``) serving ``StockLevel`` proxies (their primary: the sample warehouse,
``ops/warehouse.py``, in its own process at ``--primary``) and plain ``Tally``
entities; prints ONE JSON line. One token (sub ``bench``) for every connection: the server
runs with the per-user limits raised. Each connection talks to its own entity. Phases, each
a fixed warm-up then a fixed window, latencies from sending a MSG until its REPLY:

1. **cached vs entity**: open loop at ``--read-rate`` messages/s, alternately a ``read`` of
   a proxy's last known state and a ``read`` of a Tally (a plain entity answering from
   memory), round robin over their connections: ``cached_read_p99_ms``,
   ``entity_read_p99_ms``.
2. **force pulls**: every proxy connection pulls, waits for the ``proxy_result`` and pulls
   again (closed loop; the warehouse answers at once): ``force_pulls_per_s`` (results with
   ``ok`` in the window; the warehouse's own count of GETs beside it).
3. **others, fast primary**: Tallies get ``add`` (one durable event each) open loop at
   ``--other-rate``/s while every proxy is asked to pull every ``--pull-every`` s (open
   loop, not waiting): ``baseline_other_p99_ms``.
4. **others, slow primary**: the same, with the warehouse taking ``--slow-delay`` s per
   call (its delay knob; the warm-up is at least that long plus a second, so calls are in
   flight all window and pulls asked meanwhile join them): ``slow_primary_other_p99_ms``.
   The delay is set back to 0 afterwards and the pulls still in flight are awaited;
   ``slow_primary_gets``: the calls the warehouse got in this phase (fewer than the pulls
   asked: a pull asked while one is in flight joins it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgpack

from edge import protocol
from edge.sockets import raise_open_file_limit
from loadtests.common import LoopLag, percentile
from loadtests.wsload import Stats, WsClient, get_token, open_clients

PROXY = "StockLevel"
OTHER = "Tally"


class ProxyClient(WsClient):
    """A connection to a proxy that also takes its ``proxy_result`` pushes, by ``op``."""

    def __init__(self, stats: Stats, mode: str, request: bytes) -> None:
        super().__init__(stats, mode, request)
        self.results: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def _binary(self, data: bytes, now: float) -> None:
        frame = msgpack.unpackb(data, raw=False)
        payload = frame[1] if frame[0] == protocol.PUSH else None
        if isinstance(payload, dict) and payload.get("type") == "proxy_result":
            waiter = self._result(str(payload.get("op")))
            if not waiter.done():
                waiter.set_result(payload)
            return
        super()._binary(data, now)

    def _result(self, op: str) -> asyncio.Future[dict[str, Any]]:
        if op not in self.results:
            self.results[op] = asyncio.get_running_loop().create_future()
        return self.results[op]

    async def pull(self, timeout: float = 30.0) -> tuple[bool, str]:
        """Force a pull and wait for its result: (ok, error code or "")."""
        frame = await self.request({"type": "pull"}, timeout)
        if not frame[2]:
            return False, str(frame[3].get("code"))
        op = str(frame[3]["op"])
        try:
            result = await asyncio.wait_for(self._result(op), timeout)
        finally:
            self.results.pop(op, None)
        return bool(result["ok"]), "" if result["ok"] else str((result.get("error") or {}).get("code"))


class Phase:
    """What one phase records: latencies by kind (s) and outcomes by name."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies: dict[str, list[float]] = {}
        self.outcomes: Counter[str] = Counter()

    async def timed(self, kind: str, client: WsClient, payload: dict[str, Any]) -> None:
        record, started = self.recording, time.perf_counter()  # counted when sent in the window
        try:
            frame = await client.request(payload, 30.0)
        except TimeoutError:
            self.outcomes[f"{kind}_timeout"] += record
            return
        if record and frame[2]:
            self.latencies.setdefault(kind, []).append(time.perf_counter() - started)
        elif record:
            self.outcomes[f"{kind}_refused_{frame[3].get('code')}"] += 1

    async def pulled(self, client: ProxyClient) -> None:
        record = self.recording
        try:
            ok, code = await client.pull()
        except TimeoutError:
            ok, code = False, "timeout"
        self.outcomes["pull_ok" if ok else f"pull_{code}"] += record

    def p(self, kind: str, q: float) -> float:
        return round(percentile(self.latencies.get(kind, []), q) * 1000, 3)

    def samples(self, kind: str) -> int:
        return len(self.latencies.get(kind, []))


async def open_loop(rate: float, seconds: float, fire: Callable[[int], Awaitable[None]],
                    tasks: set[asyncio.Task[None]]) -> None:
    """Start ``fire(i)`` at ``rate`` per second for ``seconds`` (open loop: never waits for one)."""
    started = time.perf_counter()
    total, sent = int(rate * seconds), 0
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            task = asyncio.get_running_loop().create_task(fire(sent))  # type: ignore[arg-type]
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.001)


async def measured(phase: Phase, warmup: float, window: float, run: Callable[[float], Awaitable[None]]) -> None:
    """Run ``run(seconds)`` for the warm-up unrecorded, then for the window recorded."""
    await run(warmup)
    phase.recording = True
    await run(window)


async def settle(tasks: set[asyncio.Task[None]], phase: Phase, timeout: float = 40.0) -> None:
    """Stop recording and wait for what is still in flight (what was sent in the window counts)."""
    phase.recording = False
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout)


async def knob(session: aiohttp.ClientSession, primary: str, **knobs: Any) -> dict[str, Any]:
    """Turn the warehouse's knobs (ops/warehouse.py); its answer has its call counts."""
    async with session.post(f"{primary.removesuffix('/stock')}/admin", params={k: str(v) for k, v in knobs.items()}) as resp:
        resp.raise_for_status()
        answer: dict[str, Any] = await resp.json()
        return answer


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_open_file_limit()
    lag = LoopLag().start()
    base_url = args.url.rstrip("/")
    parts = urlsplit(base_url)
    base = (parts.hostname or "127.0.0.1", parts.port or 80)
    stats = Stats()
    run_id = uuid.uuid4().hex[:6]
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:
        token = await get_token(session, base_url, "bench", "bench")
        proxies: list[ProxyClient] = await open_clients(
            base, lambda i: f"/ws/{PROXY}/bench-{run_id}-{i}?cid={uuid.uuid4()}", lambda i: token, args.proxies,
            "proxy", stats, client_class=ProxyClient)
        others: list[WsClient] = await open_clients(
            base, lambda i: f"/ws/{OTHER}/bench-{run_id}-{i}?cid={uuid.uuid4()}", lambda i: token, args.others,
            "other", stats)
        first = await asyncio.gather(*(p.pull() for p in proxies))  # every proxy holds a state from here on
        if not all(ok for ok, _ in first):
            raise RuntimeError(f"a first pull failed: {Counter(code for ok, code in first if not ok)}")

        # 1. cached read on a proxy vs a plain entity's read from memory, interleaved
        reads = Phase()

        async def read(i: int) -> None:
            if i % 2 == 0:
                await reads.timed("cached", proxies[i // 2 % len(proxies)], {"type": "read"})
            else:
                await reads.timed("entity", others[i // 2 % len(others)], {"type": "read"})

        await measured(reads, args.warmup, args.window, lambda s: open_loop(args.read_rate, s, read, tasks))
        await settle(tasks, reads)

        # 2. force pulls, closed loop per proxy, fast primary
        pulls = Phase()
        stop = asyncio.Event()

        async def puller(client: ProxyClient) -> None:  # a result counts when it arrives in the window
            while not stop.is_set():
                ok, code = await client.pull()
                pulls.outcomes["pull_ok" if ok else f"pull_{code}"] += pulls.recording

        pullers = [asyncio.create_task(puller(p)) for p in proxies]
        await asyncio.sleep(args.warmup)
        gets_before = (await knob(session, args.primary))["calls"]["GET"]
        pulls.recording = True
        started = time.perf_counter()
        await asyncio.sleep(args.window)
        pulls.recording = False
        pull_window = time.perf_counter() - started
        gets_in_window = (await knob(session, args.primary))["calls"]["GET"] - gets_before
        stop.set()
        await asyncio.gather(*pullers)

        # 3 and 4. other entities' replies while the proxies keep pulling: fast, then slow primary
        def others_with_pulls(phase: Phase) -> Callable[[float], Awaitable[None]]:
            async def add(i: int) -> None:
                await phase.timed("other", others[i % len(others)], {"type": "add", "n": 1})

            async def pull(i: int) -> None:
                await phase.pulled(proxies[i % len(proxies)])

            async def run(seconds: float) -> None:
                await asyncio.gather(open_loop(args.other_rate, seconds, add, tasks),
                                     open_loop(len(proxies) / args.pull_every, seconds, pull, tasks))
            return run

        baseline = Phase()
        await measured(baseline, args.warmup, args.window, others_with_pulls(baseline))
        await settle(tasks, baseline)

        slow = Phase()
        slow_gets = (await knob(session, args.primary, delay=args.slow_delay))["calls"]["GET"]
        await measured(slow, max(args.warmup, args.slow_delay + 1.0), args.window, others_with_pulls(slow))
        await knob(session, args.primary, delay=0)
        await settle(tasks, slow)
        slow_gets = (await knob(session, args.primary))["calls"]["GET"] - slow_gets

        closed = stats.closed  # before our own aborts below
        for client in (*proxies, *others):
            client.abort()

    cached, entity = reads.p("cached", 99), reads.p("entity", 99)
    base_p99, slow_p99 = baseline.p("other", 99), slow.p("other", 99)
    return {
        "cached_read_p99_ms": cached, "cached_read_p50_ms": reads.p("cached", 50), "cached_reads": reads.samples("cached"),
        "entity_read_p99_ms": entity, "entity_read_p50_ms": reads.p("entity", 50), "entity_reads": reads.samples("entity"),
        "cached_vs_entity_ratio": round(cached / entity, 3) if entity else None,
        "force_pulls_per_s": round(pulls.outcomes["pull_ok"] / pull_window, 1),
        "force_pulls_ok": pulls.outcomes["pull_ok"], "primary_gets_in_window": gets_in_window,
        "baseline_other_p99_ms": base_p99, "baseline_other_p50_ms": baseline.p("other", 50),
        "baseline_others": baseline.samples("other"),
        "slow_primary_other_p99_ms": slow_p99, "slow_primary_other_p50_ms": slow.p("other", 50),
        "slow_primary_others": slow.samples("other"),
        "slow_vs_baseline_other_ratio": round(slow_p99 / base_p99, 3) if base_p99 else None,
        "slow_primary_gets": slow_gets,
        "outcomes": {"reads": dict(reads.outcomes), "force_pulls": dict(pulls.outcomes),
                     "baseline": dict(baseline.outcomes), "slow_primary": dict(slow.outcomes)},
        "client_errors": dict(stats.errors), "client_closed": closed, "client_loop_lag": lag.stop(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--primary", required=True, help="the warehouse's stock URL (its /admin knobs beside it)")
    parser.add_argument("--proxies", type=int, default=20)
    parser.add_argument("--others", type=int, default=20)
    parser.add_argument("--read-rate", type=float, default=400.0)
    parser.add_argument("--other-rate", type=float, default=200.0)
    parser.add_argument("--pull-every", type=float, default=0.5)
    parser.add_argument("--slow-delay", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args)), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
