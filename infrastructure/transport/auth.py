"""Mutual authentication of transport links: HMAC-SHA256 challenge-response at link start.

Why this design (and not TLS): every member already shares configuration (ZooKeeper hosts,
cluster name), so shared secrets cost operators one more mounted file and no PKI; the
handshake runs once per persistent link, so messages cost nothing extra (TLS would also
encrypt every frame). What it gives: a peer that does not hold the secret of the role it
claims never gets a usable link. What it does not give: confidentiality or integrity of
frames after the handshake against someone who can sit *on* the path (read or rewrite
packets); deploy the transport on a private network, or tunnel it (WireGuard, a service
mesh's mTLS), where that matters.

Per-role secrets, so that a compromised edge cannot act as a state node:

- the **edge secret** is known to edges and state nodes: links opened by an edge
  (client traffic: Connect, client messages, Terminated, interest);
- the **state secret** is known to state nodes only: links opened by a state node
  (entity-to-entity messages).

The key of a link is the secret of the role the *connecting* side claims; both sides prove
they hold it. Handshake (``infrastructure/transport/handshake.py``)::

    client → server  HELLO [node_id, role, lanes, nonce_c]
    server → client  HELLO [node_id, "state", [], nonce_s, proof_s]
    client → server  AUTH  [proof_c]

``proof_x = HMAC-SHA256(key, label_x ‖ client id ‖ client role ‖ server id ‖ nonce_c ‖ nonce_s)``
with distinct labels for the two directions (a proof cannot be reflected back), each field
length-prefixed (no two field lists encode alike), nonces of 32 random bytes from each side
(a recorded proof never matches a new handshake), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from infrastructure.errors import ConfigurationError, TransportError
from infrastructure.secrets import read_secret as read_secret_file

if TYPE_CHECKING:
    from infrastructure.settings import Settings

log = logging.getLogger(__name__)

NONCE_BYTES = 32
ROLES = ("edge", "state")
_CLIENT, _SERVER = b"xplatform-transport-v2 client", b"xplatform-transport-v2 server"

AUTH_FAILURE_REASONS = ("protocol", "unknown_role", "not_member", "bad_proof", "wrong_peer", "timeout", "tls",
                        "handshakes_full")
"""Bounded label values of ``xplatform_transport_auth_failures_total``:
protocol (no, malformed or oversized handshake frame), handshakes_full (closed at once: the
server already had its ``transport_max_handshakes`` handshakes in progress), unknown_role (a role we hold no secret for), not_member
(node id not registered in ZooKeeper), bad_proof (wrong secret), wrong_peer (the server is
not the node we dialled), timeout (handshake not finished in time), tls (the node's certificate
did not verify: client side only, see tls.py)."""


class TransportAuthError(TransportError):
    """Raised when a transport link's handshake fails; ``reason`` is one of
    :data:`AUTH_FAILURE_REASONS` (the metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"transport authentication failed ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


@dataclass(frozen=True)
class LinkAuth:
    """The secrets this process holds, by role of the connecting side. Empty in insecure
    mode (``cluster_insecure=1``): proofs are empty and not checked. ``repr`` hides secrets."""

    keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    insecure: bool = False

    def proof(self, server_side: bool, client_id: str, client_role: str, server_id: str,
              nonce_c: bytes, nonce_s: bytes) -> bytes:
        """This side's proof; raises TransportAuthError(unknown_role) without the role's secret."""
        if self.insecure:
            return b""
        key = self.keys.get(client_role)
        if key is None:
            raise TransportAuthError("unknown_role", f"no secret for links opened by role {client_role!r}")
        label = _SERVER if server_side else _CLIENT
        return hmac.digest(key, _fields(label, client_id.encode(), client_role.encode(), server_id.encode(),
                                        nonce_c, nonce_s), hashlib.sha256)

    def check(self, proof: bytes, server_side: bool, client_id: str, client_role: str, server_id: str,
              nonce_c: bytes, nonce_s: bytes) -> None:
        """Raise TransportAuthError(bad_proof) unless ``proof`` is the other side's proof
        (``server_side``: whose proof it is)."""
        if self.insecure:
            return
        expected = self.proof(server_side, client_id, client_role, server_id, nonce_c, nonce_s)
        if not hmac.compare_digest(expected, proof):
            side = f"server {server_id!r}" if server_side else f"client {client_id!r}"
            raise TransportAuthError("bad_proof", f"{side} does not hold the secret of {client_role} links")


def _fields(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def link_auth_from(settings: Settings, role: str) -> LinkAuth:
    """The secrets a process of ``role`` ("state" or "edge") must hold, from settings files:
    a state node both (it accepts edges' and peers' links, and opens links to peers), an
    edge the edge secret only. Fails at start (ConfigurationError) without them, unless
    ``cluster_insecure`` - then it says so loudly."""
    if settings.cluster_insecure:
        log.warning("INSECURE: XPLATFORM_CLUSTER_INSECURE=1 - transport links are NOT authenticated and "
                    "ZooKeeper znodes are open to anyone who can reach ZooKeeper; any local process can act as "
                    "an edge or a state node. For local experiments only.")
        return LinkAuth(insecure=True)
    keys = {"edge": read_secret(settings.cluster_edge_secret_file, "XPLATFORM_CLUSTER_EDGE_SECRET_FILE")}
    if role == "state":
        keys["state"] = read_secret(settings.cluster_secret_file, "XPLATFORM_CLUSTER_SECRET_FILE")
        if keys["state"] == keys["edge"]:
            raise ConfigurationError("XPLATFORM_CLUSTER_SECRET_FILE and XPLATFORM_CLUSTER_EDGE_SECRET_FILE hold the "
                                     "same secret: an edge could then act as a state node; use two secrets")
    return LinkAuth(keys)


CLUSTER_SECRET_HINT = ("a clustered process needs its secret files (see README 'Security'), or "
                       "XPLATFORM_CLUSTER_INSECURE=1 for a local experiment")


def read_secret(path: str, variable: str) -> bytes:
    """A cluster secret (see :func:`infrastructure.secrets.read_secret`)."""
    return read_secret_file(path, variable, CLUSTER_SECRET_HINT)


class FailureLog:
    """One log line per (reason, peer) at most every ``every_s`` seconds: a peer retrying a bad
    secret in a loop must not flood the log, an operator must still see each kind of failure."""

    def __init__(self, every_s: float = 10.0, kept: int = 1024) -> None:
        self.every_s, self.kept = every_s, kept
        self._last: dict[tuple[str, str], float] = {}

    def should_log(self, reason: str, peer: str) -> bool:
        now = time.monotonic()
        key = (reason, peer[:80])
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if len(self._last) >= self.kept:
            self._last.clear()  # bounded memory under many made-up peer names
        self._last[key] = now
        return True
