"""The read side of ``xplatform run``: read models with no set-up.

- MongoDB: ``XPLATFORM_MONGO_URI`` when set; else an embedded **secantusdb** (a
  MongoDB-wire server, pip extra ``readmodels``) started as a child process of the run on a
  free loopback port, its data in a throwaway directory (the read models are rebuilt from
  the event store at every start, so they can never disagree with it). secantusdb is
  GPL-2.0: it is only ever started as a separate process, never imported (ARCHITECTURE §2).
- The projections of the ``projections`` setting (the auction samples by default), each
  caught up and followed by a :class:`~projections.catchup.CatchUpProjector` on a thread of
  this process, reading the run's own journal.
- Their metrics (``xplatform_projection_*``: events by outcome, batch duration, position,
  and the lag gauges sampled every ``projector_lag_interval_s`` on a thread, as a projector
  process samples them) in :attr:`DevReadModels.metrics`, served at the run's ``/metrics``
  beside the edge's and the node's: the projection-lag alert and dashboard row work on a
  one-process platform too.
- The query API's port (:class:`DeferredReads`): the edge gets it at once; until the
  database is up it answers 503 ``read_models_unavailable`` with the reason (starting, or
  off and why), so ``run`` starts as fast as without read models and keeps serving when
  secantusdb cannot start (one line says read models are off).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infrastructure.errors import ReadModelUnavailable
from infrastructure.persistence import EventJournal, open_event_stream
from infrastructure.read_port import EVENTUAL, Consistency, Document, ReadPort
from infrastructure.settings import Settings
from ops.children import DIE_WITH_PARENT, stop_child
from projections.loading import load_projections
from projections.metrics import ProjectionMetrics

if TYPE_CHECKING:  # imported on the starting thread (pymongo alone takes ~150 ms): run serves before
    from projections.catchup import CatchUpProjector
    from projections.query import MongoQueries

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
"""How long secantusdb may take to listen (it opens its WiredTiger store first)."""

# The child ends when the run process dies (ops/children.py), then becomes secantusdb: a killed
# `xplatform run` leaves no database server behind.
_LAUNCH = DIE_WITH_PARENT + ("import os, sys\n"
                             "os.execv(sys.executable, [sys.executable, '-m', 'secantus', *sys.argv[1:]])\n")


def secantus_command(port: int, storage: Path, *, host: str = "127.0.0.1", log_level: str = "WARNING") -> list[str]:
    """The command line that serves secantusdb on ``host:port`` with its data in ``storage``."""
    return [sys.executable, "-m", "secantus", "--host", host, "--port", str(port), "--storage-path", str(storage),
            "--log-level", log_level]


class EmbeddedMongo:
    """secantusdb as a child of this process (see the module docstring)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="xplatform-readmodels-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        command = secantus_command(self.port, self.root / "data")
        self._log = open(self.root / "server.log", "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen([sys.executable, "-c", _LAUNCH, *command[3:]], stdin=subprocess.DEVNULL,  # noqa: S603
                                        stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S, stopped: threading.Event | None = None) -> None:
        """Return once it accepts connections; ReadModelUnavailable (with its log's end) if
        it exits or stays silent, or at once when ``stopped`` is set."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (stopped is not None and stopped.is_set()):
            if self.process.poll() is not None:
                raise ReadModelUnavailable(f"secantusdb exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ReadModelUnavailable(f"secantusdb did not listen within {timeout_s:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = (self.root / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1][-300:] if lines else "(no output)"

    def stop(self) -> None:
        stop_child(self.process)
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def secantus_installed() -> bool:
    """Whether secantusdb can be started (its module is findable; nothing of it is loaded here)."""
    return importlib.util.find_spec("secantus") is not None


class DeferredReads:
    """A read port that answers 503 ``read_models_unavailable`` (with :attr:`reason`) until
    :meth:`ready` hands it the real one. The names are known from the start, so an unknown
    projection is 404 even while starting."""

    def __init__(self, names: Collection[str], reason: str) -> None:
        self.names = tuple(names)
        self.reason = reason
        self.target: ReadPort | None = None

    def ready(self, target: ReadPort) -> None:
        self.target = target

    def off(self, reason: str) -> None:
        self.target = None
        self.reason = reason

    def projections(self) -> Collection[str]:
        return self.names

    def _port(self) -> ReadPort:
        if self.target is None:
            raise ReadModelUnavailable(self.reason)
        return self.target

    async def get(self, projection: str, key: str, claims: Mapping[str, Any],
                  consistency: Consistency = EVENTUAL) -> Document:
        return await self._port().get(projection, key, claims, consistency)

    async def find(self, projection: str, filters: Mapping[str, tuple[Any, ...]], limit: int,
                   claims: Mapping[str, Any], consistency: Consistency = EVENTUAL) -> tuple[list[Document], bool]:
        return await self._port().find(projection, filters, limit, claims, consistency)


def _close(*resources: Any) -> None:
    """Close what a read side opened (the query port's pool, the database client, the event
    stream), skipping what it never got to open."""
    for resource in resources:
        if resource is not None:
            resource.close()


class EdgeReads:
    """The query API of a process that serves reads but runs no projector: a clustered
    ``xplatform edge`` (``XPLATFORM_MONGO_URI``: the database ``xplatform projector``
    processes write) and each edge worker of ``xplatform run --workers`` (the run's own
    database). Its :attr:`port` answers 503 ``read_models_unavailable`` until the database
    answers (tried on a thread every :data:`RETRY_S`, so an edge starts and serves
    websockets whatever MongoDB is doing); bounded-staleness reads need the event store,
    opened here when it can be (else those reads answer 503 with the reason)."""

    RETRY_S = 2.0

    def __init__(self, settings: Settings, uri: str, journal: EventJournal | None = None) -> None:
        self.settings = settings
        self.uri = uri
        self.journal = journal
        self.projections = load_projections(settings.projections)
        self.port = DeferredReads([p.NAME for p in self.projections], "read models are starting; retry shortly")
        self.queries: MongoQueries | None = None
        self._client: Any = None
        self._stream: Any = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._connect, name="xplatform-edge-reads", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        from projections.mongo import connect
        from projections.query import MongoQueries

        said = False
        while not self._stopped.is_set():
            try:
                self._client = connect(self.uri, timeout_ms=int(self.RETRY_S * 1000))
                database = self._client[self.settings.mongo_database]
                self._client.admin.command("ping")
                try:
                    self._stream = open_event_stream(self.settings, self.journal)
                except Exception as exc:  # noqa: BLE001 - reads still work; bounded staleness says why it cannot
                    log.warning("query API: the event store cannot be read here (%s): max_lag_ms reads answer 503", exc)
                self.queries = MongoQueries(self.projections, database, self._stream)
                self.port.ready(self.queries)
                log.info("query API on: %s at /read/<projection>", ", ".join(p.NAME for p in self.projections))
                return
            except Exception as exc:  # noqa: BLE001 - not reachable yet: say so once, keep trying
                self.port.off(f"the read models' database is not reachable: {type(exc).__name__}"[:200])
                if self._client is not None:
                    self._client.close()
                    self._client = None
                if not said:
                    log.warning("query API: the read models' database is not reachable yet (%s); retrying every "
                                "%.0f s", " ".join(str(exc).split())[:300], self.RETRY_S)
                    said = True
                self._stopped.wait(self.RETRY_S)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=self.RETRY_S * 3)
        _close(self.queries, self._client, self._stream)


class DevReadModels:
    """The read side of one ``xplatform run`` (module docstring). :meth:`start` returns at
    once (the database comes up on a thread); :meth:`stop` ends the projectors and the
    embedded server."""

    def __init__(self, settings: Settings, journal: EventJournal) -> None:
        self.settings = settings
        self.journal = journal
        self.projections = load_projections(settings.projections)
        self.port = DeferredReads([p.NAME for p in self.projections], "read models are starting; retry shortly")
        self.server: EmbeddedMongo | None = None
        self.queries: MongoQueries | None = None
        self.projectors: list[tuple[CatchUpProjector, threading.Thread]] = []
        self.metrics = ProjectionMetrics()
        self._sampler: threading.Thread | None = None
        self._client: Any = None
        self._stream: Any = None
        self._stopped = threading.Event()
        self._starter: threading.Thread | None = None

    def start(self) -> None:
        """Start the database (a child process, from this thread: see EmbeddedMongo) and
        bring the rest up on a thread; prints one line when read models are on, or off."""
        if not self.settings.mongo_uri:
            if not secantus_installed():
                self._off("secantusdb is not installed (bash ops/dev.sh run installs it; or pip install --pre "
                          "-e '.[readmodels]'), and XPLATFORM_MONGO_URI is not set")
                return
            self.server = EmbeddedMongo()
        self._starter = threading.Thread(target=self._bring_up, name="xplatform-readmodels", daemon=True)
        self._starter.start()

    @property
    def uri(self) -> str | None:
        """The read models' database (after :meth:`start`; None when they are off)."""
        if self.server is not None:
            return self.server.uri
        return self.settings.mongo_uri or None

    def _bring_up(self) -> None:
        try:
            from projections.catchup import CatchUpProjector
            from projections.mongo import MongoReadModel, connect
            from projections.query import MongoQueries

            if self.server is not None:
                self.server.wait_listening(stopped=self._stopped)
            uri = self.server.uri if self.server is not None else self.settings.mongo_uri
            # one server of our own (embedded): w=1 is all it has; a configured one: majority (projections/mongo.py)
            self._client = connect(uri, write_concern=1 if self.server is not None else "majority")
            database = self._client[self.settings.mongo_database]
            self._client.admin.command("ping")
            self._stream = open_event_stream(self.settings, self.journal)
            for projection in self.projections:
                projector = CatchUpProjector(projection, self._stream, MongoReadModel(projection, database, self.metrics),
                                             cache_documents=self.settings.projector_cache_documents)
                thread = threading.Thread(target=self._follow, args=(projector,), name=f"projector-{projection.NAME}",
                                          daemon=True)
                self.projectors.append((projector, thread))
            if self._stopped.is_set():
                return
            for _, thread in self.projectors:
                thread.start()
            models = [MongoReadModel(projection, database) for projection in self.projections]
            self._sampler = threading.Thread(target=self._sample_lag, args=(models,), name="projection-lag",
                                             daemon=True)
            self._sampler.start()
            self.queries = MongoQueries(self.projections, database, self._stream)
            self.port.ready(self.queries)
            where = "embedded secantusdb" if self.server is not None else "XPLATFORM_MONGO_URI"
            print(f"read models on ({where}): {', '.join(p.NAME for p in self.projections)} at /read/<projection>",
                  flush=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: serve without read models, say why once
            self._off(f"{type(exc).__name__}: {exc}"[:400])

    def _sample_lag(self, models: list[Any]) -> None:
        """The lag gauges of :attr:`metrics`, on its own stream (projections.lag.sample)."""
        from projections.lag import sample

        stream = open_event_stream(self.settings, self.journal)
        try:
            sample(models, stream, self.metrics, self.settings.projector_lag_interval_s, self._stopped)
        finally:
            stream.close()

    def exposition(self) -> bytes:
        """The ``xplatform_projection_*`` metrics in the text format (for the run's /metrics)."""
        from prometheus_client import generate_latest

        return generate_latest(self.metrics.registry)

    def _follow(self, projector: CatchUpProjector) -> None:
        try:
            projector.run()
        except Exception as exc:  # noqa: BLE001 - typed (ProjectionError) or a database error: stop, say so
            log.error("projector %s stopped: %s: %s", projector.projection.NAME, type(exc).__name__, exc)
            self.port.off(f"the projector of {projector.projection.NAME} stopped: {exc}"[:400])

    def _off(self, reason: str) -> None:
        reason = " ".join(reason.split())  # one line, whatever the driver's message looked like
        self.port.off(f"read models are off: {reason}")
        if not self._stopped.is_set():
            print(f"read models off: {reason}", flush=True)

    def stop(self) -> None:
        self._stopped.set()
        if self._starter is not None:
            self._starter.join(timeout=START_TIMEOUT_S)
        for projector, _ in self.projectors:
            projector.stop()
        for _, thread in self.projectors:
            if thread.is_alive():
                thread.join(timeout=5)
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        _close(self.queries, self._client, self._stream)
        if self.server is not None:
            self.server.stop()


__all__ = ["DeferredReads", "DevReadModels", "EdgeReads", "EmbeddedMongo", "secantus_command", "secantus_installed"]
