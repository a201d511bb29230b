"""Secret files: the one way every process reads a shared secret (cluster link secrets, the
ZooKeeper password, the device secret of internal edges).

Secrets come from files (mounted secrets in production), never from environment values:
those leak into process listings, crash reports and child processes. A secret shorter than
``MIN_SECRET_BYTES`` is refused rather than used: a guessable key makes the HMACs keyed by
it worthless.
"""

from __future__ import annotations

from pathlib import Path

from infrastructure.errors import ConfigurationError

MIN_SECRET_BYTES = 32
"""Shortest secret accepted: 256 bits, the HMAC-SHA256 key size."""


def read_secret(path: str, variable: str, hint: str = "") -> bytes:
    """The secret in the file ``path`` (trailing newline stripped). ConfigurationError naming
    ``variable`` (never the secret) when it is unset, unreadable or too short; ``hint`` says
    what to do when it is unset."""
    if not path:
        raise ConfigurationError(f"{variable} is not set{': ' + hint if hint else ''}")
    try:
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigurationError(f"{variable}={path!r} cannot be read: {exc.strerror}") from None
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"{variable}={path!r} holds {len(data)} bytes; at least {MIN_SECRET_BYTES} "
                                 "bytes are needed, random ones (e.g. `head -c 48 /dev/urandom | base64 > FILE`)")
    return data
