"""Memory per idle websocket connection on one edge process.

    python -m loadtests.bench_connections [--connections 10000]

The edge (with its one-process platform on SQLite) runs in this process; the clients run
in a separate process (raw aiohttp websockets, opened in batches, then idle). Each client
connects to one of 100 ``Tally`` entities, so the figure includes the edge's share
(socket, aiohttp request/response objects, reader/writer tasks, registry entry) and the
entity's record of the connection (claims). RSS of the edge process is measured after a
warm-up batch (so one-off allocations are not counted) and after all are connected.

Last stdout line: JSON with ``bytes_per_connection``, ``connections``, ``rss_mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import tempfile
import uuid
from typing import Any

import aiohttp
import msgpack
import psutil
from aiohttp import web

from edge import protocol
from edge.config import EdgeConfig
from edge.sockets import raise_open_file_limit
from infrastructure.settings import Settings
from loadtests.common import emit
from loadtests.entities import Tally
from ops.wiring.dev import build_platform, dev_app

WARMUP = 500  # connections opened before the baseline RSS (at most a fifth of the total)


async def _clients(base_url: str, count: int, commands: Any, answers: Any) -> None:
    """Client process: open ``count`` connections when told, report, hold them until told."""
    raise_open_file_limit()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.get(f"{base_url}/dev/token", params={"sub": "idle", "role": "viewer"}) as resp:
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        sockets: list[aiohttp.ClientWebSocketResponse] = []

        async def open_one(i: int) -> None:
            ws = await session.ws_connect(f"{base_url.replace('http', 'ws', 1)}/ws/Tally/idle-{i % 100}?cid={uuid.uuid4()}",
                                          protocols=(protocol.SUBPROTOCOL,), headers=headers, autoping=True)
            frame = msgpack.unpackb((await ws.receive()).data)
            assert frame[0] == protocol.WELCOME, frame
            sockets.append(ws)

        while True:
            target = await asyncio.to_thread(commands.get)
            if target is None:
                break
            while len(sockets) < target:
                start = len(sockets)
                await asyncio.gather(*(open_one(i) for i in range(start, min(target, start + 200))))
            answers.put(len(sockets))
        for ws in sockets:
            ws._response.close()


def _client_process(base_url: str, count: int, commands: Any, answers: Any) -> None:
    asyncio.run(_clients(base_url, count, commands, answers))


async def bench(connections: int) -> dict[str, Any]:
    raise_open_file_limit()
    process = psutil.Process()
    warmup = min(WARMUP, connections // 5)
    with tempfile.TemporaryDirectory() as data_dir:
        platform = build_platform(Settings(store="sqlite", data_dir=data_dir), entities=[Tally])
        config = EdgeConfig(port=0, dev_tokens=True, heartbeat_s=60, max_connections_per_user=0,
                            user_rate_per_s=0)  # every idle connection has the same sub
        app = dev_app(platform, config, static_dir=None)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ctx = multiprocessing.get_context("spawn")
        commands, answers = ctx.Queue(), ctx.Queue()
        proc = ctx.Process(target=_client_process, args=(f"http://127.0.0.1:{port}", connections, commands, answers))
        proc.start()
        try:
            commands.put(warmup)
            await asyncio.to_thread(answers.get, True, 120)
            await asyncio.sleep(0.5)
            gc.collect()
            before = process.memory_info().rss
            commands.put(connections)
            opened = await asyncio.to_thread(answers.get, True, 600)
            await asyncio.sleep(1.0)
            gc.collect()
            after = process.memory_info().rss
            live = len(_edge(app).registry)
        finally:
            commands.put(None)
            await asyncio.to_thread(proc.join, 60)
            await runner.cleanup()
    return {"bytes_per_connection": (after - before) / max(1, opened - warmup), "connections": opened,
            "registered": live, "rss_mb": after / 2**20}


def _edge(app: web.Application) -> Any:
    from edge.public import EDGE_KEY

    return app[EDGE_KEY]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.connections))
    print(f"{result['connections']} idle connections: {result['bytes_per_connection']:.0f} bytes each "
          f"(edge RSS {result['rss_mb']:.0f} MB)")
    emit({**result, "clients": "separate process", "store": "sqlite"})


if __name__ == "__main__":
    main()
