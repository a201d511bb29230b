"""Every setting of the platform, declared in one place with the reason for its default.

Settings come from environment variables ``XPLATFORM_<NAME>`` (upper case) or from
keyword arguments; a malformed or contradictory value fails at start with a
:class:`~infrastructure.errors.ConfigurationError` naming the variable, never later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from infrastructure.errors import ConfigurationError

STORES = ("sqlite", "postgres", "memory")


def _setting(default: Any, why: str) -> Any:
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class Settings:
    """Platform settings. Each field's ``why`` metadata is the reason for its default."""

    store: str = _setting("sqlite", "Embedded default: one file, no server to run. 'postgres' for "
                          "a shared server; 'memory' for tests and the sandbox.")
    data_dir: str = _setting(".xplatform-data", "Where the SQLite file lives; relative to the working "
                             "directory so a checkout's demo data stays with it.")
    postgres_host: str = _setting("127.0.0.1", "Local server by default; set for a remote one.")
    postgres_port: int = _setting(5432, "PostgreSQL's standard port.")
    postgres_user: str = _setting("xplatform", "A dedicated role, not the superuser.")
    postgres_password: str = _setting("", "Empty: rely on the server's local trust/peer auth unless set.")
    postgres_dbname: str = _setting("xplatform", "One database per platform installation.")
    shards_per_category: int = _setting(64, "Fixed per category for the life of the data (the shard "
                                        "function must never move an entity); 64 spreads over up to "
                                        "~16 nodes with room to rebalance.")
    snapshot_every: int = _setting(100, "Activation reads at most ~100 events after a snapshot: ~3 ms "
                                   "at the measured 30k events/s replay, inside the 5 ms activation budget.")
    passivate_after_s: float = _setting(120.0, "Idle entities leave memory after two minutes: long "
                                        "enough that an active session's entities stay warm, short "
                                        "enough that 1M+ users do not all stay resident.")
    passivate_sweep_s: float = _setting(5.0, "How often idle entities are looked for; the sweep "
                                        "stops at the first recently used entity, so it is cheap.")
    max_batch_events: int = _setting(5000, "Upper bound of one group commit: keeps one transaction "
                                     "(and the latency of the messages in it) bounded under overload.")
    ask_timeout_s: float = _setting(5.0, "How long a caller of the in-process transport waits for a "
                                    "reply before giving up (the message may still be applied).")
    gc_gen0_threshold: int = _setting(2_000, "Python's default (700) runs a young collection every few "
                                      "messages: half the CPU at 20k events/s (measured 11k vs 22k events/s). "
                                      "Much higher thresholds make each pause long (50k: 60-90 ms pauses, p99 "
                                      "155 ms); 2,000 measured p99 2.3 ms at 2k msg/s. 0 keeps Python's default.")
    node_id: str = _setting("node-1", "Name of this state node in metrics and logs.")
    log_level: str = _setting("INFO", "Operators see starts, stops and errors, not every message.")

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise ConfigurationError(f"XPLATFORM_STORE must be one of {', '.join(STORES)}, not {self.store!r}")
        if self.gc_gen0_threshold < 0:
            raise ConfigurationError("XPLATFORM_GC_GEN0_THRESHOLD must be 0 (keep default) or positive")
        for name in ("shards_per_category", "snapshot_every", "max_batch_events", "postgres_port"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"XPLATFORM_{name.upper()} must be a positive integer")
        for name in ("passivate_after_s", "passivate_sweep_s", "ask_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"XPLATFORM_{name.upper()} must be a positive number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``XPLATFORM_*`` variables (``environ`` defaults to ``os.environ``)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"XPLATFORM_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default) if f.default is not MISSING else str
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ConfigurationError(f"XPLATFORM_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.data_dir) / "events.sqlite3"

    def journal_env(self) -> dict[str, str]:
        """Environment for the eventsourcing infrastructure factory of ``store``."""
        common = {"ORIGINATOR_ID_TYPE": "text", "CREATE_TABLE": "true"}
        if self.store == "sqlite":
            Path(self.data_dir).mkdir(parents=True, exist_ok=True)
            return {**common, "PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(self.sqlite_path),
                    "SQLITE_LOCK_TIMEOUT": "10"}
        if self.store == "postgres":
            return {**common, "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_HOST": self.postgres_host,
                    "POSTGRES_PORT": str(self.postgres_port), "POSTGRES_USER": self.postgres_user,
                    "POSTGRES_PASSWORD": self.postgres_password, "POSTGRES_DBNAME": self.postgres_dbname,
                    "POSTGRES_CONNECT_TIMEOUT": "5"}
        return {**common, "PERSISTENCE_MODULE": "eventsourcing.popo"}

    def describe(self) -> list[tuple[str, Any, str]]:
        """(name, value, why) for every setting, for ``xplatform settings``."""
        return [(f.name, getattr(self, f.name), f.metadata.get("why", "")) for f in fields(self)]
