"""``xplatform run --workers N``: the one-machine production mode. One state node process
(the entities, the store, group commit) and N edge worker processes beside it, on one port.

Why: one Python process runs on one core. A hot entity's edge work (reading frames, writing
replies, the 20 Hz fan-out to every viewer) and its node work (handlers, events, the store)
then share that core, while the machine's other cores idle. Split in two, each gets a core:
measured on a 2-core machine, a hot lot with 1,000 viewers accepts about twice the bids
(``loadtests/bench_hot_entity.py --workers 1``; README "Performance").

How it is wired - the cluster's own parts, without ZooKeeper (one node owns every shard):

- the run process builds the platform as ``xplatform run`` does (SQLite or the configured
  store), and a transport server (:class:`~infrastructure.transport.server.NodeServer`) on a
  loopback port, whose only members are this run's workers;
- it binds the public port itself and hands the listening socket to every worker (inherited
  file descriptor; the kernel spreads connections over the workers that accept on it);
- each worker is a cluster edge (:class:`~infrastructure.transport.client.ClusterClient`)
  whose shard map is "the run process owns everything";
- links are authenticated as in a cluster (``infrastructure/transport/auth.py``), with a state
  and an edge secret made at start and written to a private directory (mode 0700, files 0600)
  that is removed at exit: another local user cannot speak to the state node as an edge;
- with dev tokens on, the workers share one signing key (passed the same way), so a token
  fetched from one worker is accepted by the others;
- a worker watches its stdin: when the run process dies, the pipe closes and the worker
  exits (no orphans holding the port); a worker that dies is started again.

Stop (Ctrl-C / SIGTERM): the workers close their sockets with GOING_AWAY first, then the node
drains (pending appends settle) and the store closes.

Read models: the run process starts them as ``xplatform run`` does (ops/wiring/readmodels.py:
the embedded database and the projectors, on the node's journal) and hands their database's
URI to the workers, each of which serves the query API over it
(:class:`~ops.wiring.readmodels.EdgeReads`).

Metrics: the node's registry (and the read models') on the run process's internal listener, each worker's edge
registry on its own (``XPLATFORM_METRICS_HOST``; the URLs are printed at start), never on the
public port: a scrape of a shared port would reach a different worker each time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.config import EdgeConfig
from edge.errors import AddressInUse
from infrastructure import event_loop
from infrastructure.errors import ConfigurationError
from infrastructure.logformat import configure_logging
from infrastructure.metrics import ClusterMetrics
from infrastructure.runtime import StateNode
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport
from infrastructure.transport.auth import link_auth_from
from infrastructure.transport.server import NodeServer
from ops.wiring.metrics import MetricsListener, add_metrics
from ops.wiring.node import build_node, start_node, stop_node
from ops.wiring.proxies import build_remote_calls

log = logging.getLogger(__name__)

READY = "edge worker ready"
"""What a worker prints on stdout once it accepts connections (the run process waits for it)."""

RESTART_DELAY_S = 1.0
"""Pause before a worker that died is started again (a worker that fails at once must not spin)."""

STOP_TIMEOUT_S = 15.0
"""How long the run process waits for a worker to close its sockets before killing it."""


def _write_secret(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The public listening socket, inherited by every worker."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse.at(host, port) from None
        raise
    sock.set_inheritable(True)
    return sock


class EdgeWorkers:
    """The run process's side: start, watch and stop the edge workers. See the module docstring."""

    def __init__(self, count: int, env: dict[str, str], args: list[str], sock: socket.socket, node_id: str) -> None:
        self.env, self.args, self.sock = env, args, sock
        self.ids = [f"{node_id}-edge-{i + 1}" for i in range(count)]
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.metrics_urls: dict[str, str] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self, timeout_s: float) -> None:
        await asyncio.wait_for(asyncio.gather(*(self._spawn(worker) for worker in self.ids)), timeout_s)
        self._watchers = [asyncio.create_task(self._watch(worker)) for worker in self.ids]

    async def _spawn(self, worker: str) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.wiring.workers", "--worker-id", worker, "--fd", str(self.sock.fileno()),
            *self.args, env={**self.env, "XPLATFORM_NODE_ID": worker}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, pass_fds=(self.sock.fileno(),))
        self.processes[worker] = process
        assert process.stdout is not None
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise ConfigurationError(f"edge worker {worker} exited before it was ready "
                                         f"(exit code {await process.wait()}; its error is above)")
            if line.startswith(READY):
                self.metrics_urls[worker] = line.rsplit(" ", 1)[1].strip()
                return

    async def _watch(self, worker: str) -> None:
        """Forward what the worker prints; start it again if it dies while we serve."""
        while not self._stopping:
            process = self.processes[worker]
            assert process.stdout is not None
            async for line in process.stdout:
                sys.stdout.write(line.decode())
            code = await process.wait()
            if self._stopping:
                return
            log.error("edge worker %s exited with %s; starting it again in %.0f s", worker, code, RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)
            try:
                await self._spawn(worker)
            except (ConfigurationError, OSError):
                log.exception("edge worker %s did not start again", worker)

    async def stop(self) -> None:
        """SIGTERM to every worker (each closes its sockets with GOING_AWAY); kill what is left."""
        self._stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in self._watchers:
            task.cancel()


async def serve_with_workers(settings: Settings, config: EdgeConfig, workers: int) -> None:
    """``xplatform run --workers N``: serve until SIGINT/SIGTERM. See the module docstring."""
    if workers < 1:
        raise ConfigurationError(f"--workers must be at least 1 (got {workers}); without it `run` is one process")
    if (config.internal_networks and config.internal_port >= 0) or config.serial_ports:
        raise ConfigurationError("XPLATFORM_EDGE_INTERNAL_PORT (a listener of its own) and XPLATFORM_EDGE_SERIAL_PORTS "
                                 "are served by one process, not by each worker: use `xplatform run` without "
                                 "--workers or `xplatform edge` (or XPLATFORM_EDGE_INTERNAL_PORT=-1: devices on "
                                 "the shared public port)")
    run_dir = Path(tempfile.mkdtemp(prefix="xplatform-run-"))  # mode 0700: ours alone
    sock: socket.socket | None = None
    try:
        settings = settings.with_(
            cluster_secret_file=_write_secret(run_dir / "state.secret", secrets.token_bytes(48)),
            cluster_edge_secret_file=_write_secret(run_dir / "edge.secret", secrets.token_bytes(48)),
            cluster_insecure=0)
        worker_args: list[str] = []
        if config.dev_tokens:
            from edge.auth import DevTokenIssuer

            issuer = DevTokenIssuer(config.token_issuer, config.token_audience)
            worker_args += ["--dev-key", _write_secret(run_dir / "dev-token-key.pem", issuer.key_pem()),
                            "--dev-kid", issuer.kid]
        node = build_node(settings)
        read_models = None
        if settings.run_read_models:  # projected here, on the node's journal; read by every worker
            from ops.wiring.readmodels import DevReadModels

            read_models = DevReadModels(settings, node.journal)
            read_models.start()
            if read_models.uri:
                worker_args += ["--reads-uri", read_models.uri]
        sock = _listening_socket(config.host, config.port, backlog=1024)
        port = sock.getsockname()[1]
        members: set[str] = set()
        server = NodeServer(node, settings.node_id, is_member=members.__contains__,
                            auth=link_auth_from(settings, "state"),
                            may_speak_for=lambda _ref, node: node == settings.node_id,  # no state peers here
                            host="127.0.0.1", port=0, metrics=ClusterMetrics(),
                            handshake_timeout_s=settings.transport_handshake_timeout_s)
        # entity-to-entity messages stay in this process (it owns every shard); client-bound
        # effects go to the workers that announced interest
        node.connect(router=LocalTransport(node, settings.ask_timeout_s), outbound=server,
                     remote=build_remote_calls(settings, node.metrics.registry))
        env = {**os.environ, "XPLATFORM_CLUSTER_SECRET_FILE": "",
               "XPLATFORM_CLUSTER_EDGE_SECRET_FILE": settings.cluster_edge_secret_file,
               "XPLATFORM_CLUSTER_INSECURE": "0", "XPLATFORM_EDGE_HOST": config.host,
               "XPLATFORM_EDGE_PORT": str(port), "XPLATFORM_EDGE_DEV_TOKENS": "1" if config.dev_tokens else "0",
               "XPLATFORM_EDGE_DEV_TOKENS_ON_NETWORK": "1" if config.dev_tokens_on_network else "0"}
        await start_node(node)
        try:
            await server.start()
            edges = EdgeWorkers(workers, env, [*worker_args, "--state-id", settings.node_id, "--state", server.address],
                                sock, settings.node_id)
            members.update(edges.ids)
            metrics = MetricsListener(lambda: _node_metrics(node, server) + (
                read_models.exposition() if read_models is not None else b""), settings.metrics_host,
                settings.metrics_port)
            node_metrics_url = await metrics.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await edges.start(timeout_s=60.0)
                print(f"X Platform serving on http://{config.host}:{port}/  (demo page; websocket at "
                      f"/ws/<category>/<id>; {workers} edge worker(s); node metrics at {node_metrics_url}, edge "
                      f"metrics at {', '.join(edges.metrics_urls.values())}"
                      f"{'; dev tokens at /dev/token' if config.dev_tokens else ''}) - Ctrl-C stops", flush=True)
                await stop.wait()
            finally:
                await edges.stop()
                await metrics.stop()
                await server.stop()
        finally:
            if read_models is not None:
                await asyncio.to_thread(read_models.stop)
            await stop_node(node)
    finally:
        if sock is not None:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _node_metrics(node: StateNode, server: NodeServer) -> bytes:
    from prometheus_client import generate_latest

    server.metrics.record_lanes("server", server.queued_by_lane())
    return node.metrics.exposition() + generate_latest(server.metrics.registry)


# ------------------------------------------------------------------------------ the worker
async def _serve_worker(args: argparse.Namespace) -> None:
    from edge.app import build_edge_app, serve_app
    from edge.auth import DevTokenIssuer
    from edge.metrics import EdgeMetrics
    from edge.public import EDGE_KEY
    from edge.sockets import raise_open_file_limit
    from infrastructure.gc_tuning import GcTuning
    from infrastructure.runtime.entity_modules import entity_types_from
    from infrastructure.transport.client import ClusterClient

    settings = Settings.from_env()
    GcTuning.acquire(settings.gc_gen0_threshold, settings.gc_reclaim_every_s, settings.gc_reclaim_growth)
    raise_open_file_limit()
    config = EdgeConfig.from_settings(settings)
    issuer = None
    if args.dev_key:
        issuer = DevTokenIssuer(config.token_issuer, config.token_audience,
                                private_pem=Path(args.dev_key).read_bytes(), kid=args.dev_kid)
    owner = (args.state_id, 0)  # the run process owns every shard, for good (epoch 0: AllShards)
    client = ClusterClient(args.worker_id, "edge", route=lambda _ref: owner,
                           address_of=lambda node: args.state if node == args.state_id else None,
                           auth=link_auth_from(settings, "edge"), ask_timeout_s=settings.ask_timeout_s,
                           handshake_timeout_s=settings.transport_handshake_timeout_s)
    metrics = EdgeMetrics()
    reads = None
    if args.reads_uri:  # the run's read models (it runs the projectors): the query API on every worker
        from ops.wiring.readmodels import EdgeReads

        reads = EdgeReads(settings, args.reads_uri)
        reads.start()
    app = build_edge_app(client, entity_types_from(settings).categories, config, metrics=metrics, dev_issuer=issuer,
                         reads=reads.port if reads is not None else None)
    app[EDGE_KEY].registry.watch(client.hold, client.release)
    # never on the shared public port: a scrape would reach a different worker each time
    listener = add_metrics(app, metrics.exposition, settings.metrics_host, settings.metrics_port)
    assert listener is not None

    async def close_client(_app: Any) -> None:
        if reads is not None:
            await asyncio.to_thread(reads.stop)
        await client.close()

    app.on_cleanup.append(close_client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)

    def announce(_port: int) -> None:
        print(f"{READY}: {args.worker_id} metrics at {listener.url}", flush=True)

    await serve_app(app, config, announce, sock=socket.socket(fileno=args.fd), stop=stop)


def main(argv: list[str] | None = None) -> int:
    """An edge worker of ``xplatform run --workers N`` (started by the run process only)."""
    parser = argparse.ArgumentParser(prog="python -m ops.wiring.workers", description=main.__doc__)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("--state", required=True, help="host:port of the run process's transport server")
    parser.add_argument("--state-id", required=True)
    parser.add_argument("--dev-key", default="", help="file with the run's dev token signing key (PEM)")
    parser.add_argument("--dev-kid", default="")
    parser.add_argument("--reads-uri", default="", help="the run's read models' database (the query API)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings, node=args.worker_id,
                      text_format=f"%(asctime)s %(levelname)s {args.worker_id} %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(_serve_worker(args), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
