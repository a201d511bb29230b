"""The edge's settings, in the shape the edge uses them (parsed once from
:class:`infrastructure.settings.Settings`, where each default's reason is written down).

Why a separate dataclass: tests build edges with tiny timeouts and limits without going
through environment variables, and malformed values (a bad CIDR) fail at start.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from edge.errors import EdgeConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEV_ISSUER = "xplatform-dev"
DEV_AUDIENCE = "xplatform-dev"
"""``iss``/``aud`` of dev tokens when none are configured: even in dev mode the checks run."""


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the public and internal edges need to know. See ``infrastructure/settings.py``."""

    host: str = "127.0.0.1"
    port: int = 8080
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: int = 65536
    rate_per_s: float = 50.0
    rate_burst: float = 100.0
    send_queue_bytes: int = 1 << 20
    slow_consumer_s: float = 5.0
    max_connections_per_user: int = 32
    max_connections_per_ip: int = 0
    user_rate_per_s: float = 100.0
    user_rate_burst: float = 200.0
    ip_rate_per_s: float = 0.0
    ip_rate_burst: float = 0.0
    max_sockets: int = 0
    handshake_timeout_s: float = 10.0
    max_in_flight: int = 256
    max_in_flight_bytes: int = 1_048_576
    shed_after_ms: float = 250.0
    coalesce_hz: float = 20.0
    slow_message_ms: float = 100.0
    slow_log_interval_s: float = 1.0
    heartbeat_s: float = 20.0
    close_timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_jwks_file: str = ""
    jwt_jwks_url: str = ""
    jwt_hs256_secret: str = field(default="", repr=False)
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_s: float = 5.0
    jwks_max_age_s: float = 300.0
    jwks_refetch_s: float = 30.0
    dev_tokens: bool = False
    dev_tokens_on_network: bool = False
    device_secret_file: str = ""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    internal_networks: tuple[tuple[Network, str], ...] = ()
    internal_port: int = -1
    internal_host: str = "127.0.0.1"
    serial_ports: tuple[SerialPort, ...] = ()
    serial_baud: int = 115_200
    internal_idle_s: float = 60.0
    internal_buffer: int = 1000
    internal_max_wait_s: float = 25.0
    read_wait_ms: float = 5000.0
    read_max_limit: int = 200
    read_max_waiting: int = 1000

    @property
    def coalesce_tick_s(self) -> float:
        """The coalescing tick; 0.0 when ``coalesce_hz`` is 0 (coalescing off: every update a frame)."""
        return 1.0 / self.coalesce_hz if self.coalesce_hz else 0.0

    @property
    def socket_cap(self) -> int:
        """``max_sockets``, or when 0 the default: 80% of the open-file limit (the rest keeps
        descriptors for refusals in progress, the store, cluster links and logs)."""
        if self.max_sockets:
            return self.max_sockets
        nofile = open_file_limit()
        return max(16, int(nofile * 0.8)) if nofile is not None else 50_000

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> EdgeConfig:
        """Parse the ``edge_*``/``jwt_*`` fields of platform settings."""
        s = settings
        values: dict[str, Any] = dict(
            host=s.edge_host, port=s.edge_port, allowed_origins=_split(s.edge_allowed_origins),
            max_frame_bytes=s.edge_max_frame_bytes, rate_per_s=s.edge_rate_per_s, rate_burst=s.edge_rate_burst,
            send_queue_bytes=s.edge_send_queue_bytes, slow_consumer_s=s.edge_slow_consumer_s,
            max_connections_per_user=s.edge_max_connections_per_user,
            max_connections_per_ip=s.edge_max_connections_per_ip, user_rate_per_s=s.edge_user_rate_per_s,
            user_rate_burst=s.edge_user_rate_burst, ip_rate_per_s=s.edge_ip_rate_per_s,
            ip_rate_burst=s.edge_ip_rate_burst, max_sockets=s.edge_max_sockets,
            handshake_timeout_s=s.edge_handshake_timeout_s, max_in_flight=s.edge_max_in_flight,
            max_in_flight_bytes=s.edge_max_in_flight_bytes,
            shed_after_ms=s.edge_shed_after_ms,
            coalesce_hz=s.edge_coalesce_hz, slow_message_ms=s.edge_slow_message_ms,
            slow_log_interval_s=s.edge_slow_log_interval_s,
            heartbeat_s=s.edge_heartbeat_s, close_timeout_s=s.edge_close_timeout_s,
            connect_timeout_s=s.ask_timeout_s, jwt_algorithms=_split(s.jwt_algorithms),
            jwt_jwks_file=s.jwt_jwks_file, jwt_jwks_url=s.jwt_jwks_url, jwt_hs256_secret=s.jwt_hs256_secret,
            jwt_issuer=s.jwt_issuer, jwt_audience=s.jwt_audience, jwt_leeway_s=s.jwt_leeway_s,
            jwks_max_age_s=s.jwt_jwks_max_age_s, jwks_refetch_s=s.jwt_jwks_refetch_s,
            dev_tokens=bool(s.edge_dev_tokens), dev_tokens_on_network=bool(s.edge_dev_tokens_on_network),
            device_secret_file=s.edge_device_secret_file, metrics_host=s.metrics_host, metrics_port=s.metrics_port,
            internal_networks=parse_networks(s.edge_internal_networks),
            internal_port=s.edge_internal_port, internal_host=s.edge_internal_host,
            serial_ports=parse_serial_ports(s.edge_serial_ports), serial_baud=s.edge_serial_baud,
            internal_idle_s=s.edge_internal_idle_s, internal_buffer=s.edge_internal_buffer,
            internal_max_wait_s=s.edge_internal_max_wait_s, read_wait_ms=s.edge_read_wait_ms,
            read_max_limit=s.edge_read_max_limit, read_max_waiting=s.edge_read_max_waiting,
        )
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "send_queue_bytes", "internal_buffer", "max_in_flight", "max_in_flight_bytes",
                     "read_max_limit", "read_max_waiting"):
            if getattr(self, name) < 1:
                raise EdgeConfigurationError(f"{name} must be positive")
        for name in ("rate_per_s", "rate_burst", "heartbeat_s", "close_timeout_s", "connect_timeout_s",
                     "slow_consumer_s", "handshake_timeout_s"):
            if getattr(self, name) <= 0:
                raise EdgeConfigurationError(f"{name} must be positive")
        for name in ("max_connections_per_user", "max_connections_per_ip", "user_rate_per_s", "user_rate_burst",
                     "ip_rate_per_s", "ip_rate_burst", "max_sockets"):
            if getattr(self, name) < 0:
                raise EdgeConfigurationError(f"{name} must be positive, or 0 to turn the limit off")
        for scope in ("user", "ip"):
            if getattr(self, f"{scope}_rate_per_s") > 0 and getattr(self, f"{scope}_rate_burst") < 1:
                raise EdgeConfigurationError(f"{scope}_rate_burst must be at least 1 when {scope}_rate_per_s is set")
        nofile = open_file_limit()
        if nofile is not None and self.max_sockets >= nofile:
            raise EdgeConfigurationError(f"max_sockets {self.max_sockets} must be below the open-file limit "
                                         f"(nofile {nofile}): raise `ulimit -n` (see ops/RUNBOOK.md)")
        if self.read_wait_ms < 0:
            raise EdgeConfigurationError("read_wait_ms must be 0 (reads never wait) or positive")
        if self.shed_after_ms < 0:
            raise EdgeConfigurationError("shed_after_ms must be positive, or 0 to never shed load")
        if self.coalesce_hz < 0:
            raise EdgeConfigurationError("coalesce_hz must be positive, or 0 to turn coalescing off")
        for _network, device_class in self.internal_networks:
            if not DEVICE_CLASS.match(device_class):
                raise EdgeConfigurationError(
                    f"XPLATFORM_EDGE_INTERNAL_NETWORKS: device class {device_class[:80]!r} must be 1-64 of A-Z a-z 0-9 "
                    "_ . - (a ':' would let one device's subject device:<class>:<id> be read as another's)")
        if self.serial_baud < 1:
            raise EdgeConfigurationError("XPLATFORM_EDGE_SERIAL_BAUD must be positive (bits per second)")
        if len({port.path for port in self.serial_ports}) < len(self.serial_ports):
            raise EdgeConfigurationError("XPLATFORM_EDGE_SERIAL_PORTS names a port twice (one device per line)")
        if not -1 <= self.internal_port <= 65535:
            raise EdgeConfigurationError("XPLATFORM_EDGE_INTERNAL_PORT must be -1 (on the public port), 0 (a free "
                                         "port) or a port number")
        if self.slow_message_ms < 0 or self.slow_log_interval_s < 0:
            raise EdgeConfigurationError("slow_message_ms and slow_log_interval_s must be positive, or 0 "
                                         "(never log / log every slow message)")
        self._check_trust()

    def _check_trust(self) -> None:
        """Refuse settings under which the edge would trust more than its operator meant."""
        if not self.dev_tokens:
            missing = [name for name, value in (("XPLATFORM_JWT_ISSUER", self.jwt_issuer),
                                                ("XPLATFORM_JWT_AUDIENCE", self.jwt_audience)) if not value]
            if missing:
                raise EdgeConfigurationError(
                    f"{' and '.join(missing)} must be set: without them a token your identity provider minted "
                    "for any other application would be accepted here")
            if (self.internal_networks or self.serial_ports) and not self.device_secret_file:
                raise EdgeConfigurationError("XPLATFORM_EDGE_DEVICE_SECRET_FILE must name a file with the secret "
                                             "device connection IDs are derived from (the same on every edge)")
        elif not is_loopback(self.host) and not self.dev_tokens_on_network:
            raise EdgeConfigurationError(
                f"dev tokens (XPLATFORM_EDGE_DEV_TOKENS, on in `xplatform run`) hand out any identity to whoever "
                f"asks; refusing to serve them on the non-loopback address {self.host!r}. Listen on 127.0.0.1, set "
                "XPLATFORM_EDGE_DEV_TOKENS=0, or accept the risk with --dev-tokens-on-network "
                "(XPLATFORM_EDGE_DEV_TOKENS_ON_NETWORK=1)")

    @property
    def token_issuer(self) -> str:
        """The ``iss`` every token must carry: the configured one, or the dev issuer's own in dev mode."""
        return self.jwt_issuer or (DEV_ISSUER if self.dev_tokens else "")

    @property
    def token_audience(self) -> str:
        """The ``aud`` every token must carry: the configured one, or the dev issuer's own in dev mode."""
        return self.jwt_audience or (DEV_AUDIENCE if self.dev_tokens else "")


def open_file_limit() -> int | None:
    """The process's soft ``RLIMIT_NOFILE`` (None where unknown or unlimited)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


DEVICE_CLASS = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""A device class: no ``:`` (it ends the class in a device's subject ``device:<class>:<id>``,
so every subject names one class and one ID) and no ``/`` (it separates class and ID in
what the device's connection ID is derived from); see edge/internal.py."""


DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""A device ID (``:`` allowed, e.g. a MAC address: the class, which holds none, ends first)."""


@dataclass(frozen=True)
class SerialPort:
    """A serial line the edge serves: the port's path, and the one device on it (edge/serial_line.py)."""

    path: str
    device_class: str
    device: str


def parse_serial_ports(value: str) -> tuple[SerialPort, ...]:
    """``"/dev/ttyUSB0=sensor:boiler-1,..."`` → SerialPort per item; EdgeConfigurationError
    naming XPLATFORM_EDGE_SERIAL_PORTS for an item that is not ``PATH=CLASS:DEVICE_ID``."""
    parsed: list[SerialPort] = []
    for item in _split(value):
        path, _, identity = item.partition("=")
        device_class, _, device = identity.strip().partition(":")
        if not path.strip() or not DEVICE_CLASS.fullmatch(device_class) or not DEVICE_ID.match(device):
            raise EdgeConfigurationError(
                f"XPLATFORM_EDGE_SERIAL_PORTS: {item[:120]!r} must be PATH=CLASS:DEVICE_ID (class 1-64 of "
                "A-Z a-z 0-9 _ . -, ID 1-64 of those and ':')")
        parsed.append(SerialPort(path.strip(), device_class, device))
    return tuple(parsed)


def parse_networks(value: str) -> tuple[tuple[Network, str], ...]:
    """``"10.0.0.0/8=sensor,127.0.0.1/32=bidder"`` → ((network, device class), ...)."""
    parsed: list[tuple[Network, str]] = []
    for item in _split(value):
        cidr, sep, device_class = item.partition("=")
        if not sep or not device_class.strip():
            raise EdgeConfigurationError(f"internal network {item!r} must be written CIDR=device_class")
        try:
            parsed.append((ipaddress.ip_network(cidr.strip(), strict=False), device_class.strip()))
        except ValueError:
            raise EdgeConfigurationError(f"internal network {cidr!r} is not a CIDR") from None
    return tuple(parsed)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``, bracketed or not).
    Other names are not resolved: a name is only as loopback as the resolver says today."""
    address = _ip_literal(host)
    return address.is_loopback if address is not None else host.strip().lower().rstrip(".") == "localhost"


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IP address (bracketed IPv6 too), not a name."""
    return _ip_literal(host) is not None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
