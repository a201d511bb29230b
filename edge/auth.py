"""JWT verification for the edges, and the dev-mode token issuer.

Why so explicit: the classic JWT failures are the verifier trusting the token's header —
``alg: none``, or an HS256 token "signed" with the RSA public key as the HMAC secret (key
confusion). Here the algorithm allow-list is ours, the key is chosen by ``kid`` from our
key set and must belong to the header's algorithm family, and HS256 is only allowed when a
shared secret is configured (then only with that secret).

Keys come from a JWKS file or URL (:class:`KeySet`): cached, refreshed after ``max_age_s``,
and refetched when a token names an unknown ``kid`` (key rotation) at most once per
``refetch_interval_s``, so a flood of made-up kids cannot hammer the key server.

Tokens are never logged: errors carry a reason code and a short detail only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.errors import AuthError, EdgeConfigurationError, KeySourceError

ASYMMETRIC = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "ES256": "EC", "ES384": "EC", "PS256": "RSA"}
SYMMETRIC = {"HS256"}
REQUIRED_CLAIMS = ("exp", "sub")
TIME_CLAIMS = ("exp", "nbf", "iat")
DEVICE_SUB_PREFIX = "device:"
"""Subjects of devices on the internal edge (``device:<class>:<id>``): a token may not claim one."""

log = logging.getLogger(__name__)


@dataclass
class KeySet:
    """Verification keys by ``kid``, from static JWKS dicts, a JWKS file and/or a JWKS URL."""

    file: str = ""
    url: str = ""
    max_age_s: float = 300.0
    refetch_interval_s: float = 30.0
    static: list[Mapping[str, Any]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str | None, jwt.PyJWK] = field(default_factory=dict, init=False)
    _fetched_at: float = field(default=float("-inf"), init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    fetches: int = field(default=0, init=False)

    def add_jwks(self, jwks: Mapping[str, Any]) -> None:
        """Trust the keys of a JWKS dict for good (e.g. the dev issuer's public key)."""
        self.static.append(jwks)
        self._merge(jwks)

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid``: from the cache, or after a (rate-limited) refetch. When the
        source fails, the keys already known stay in use (an outage must not lock everyone out)."""
        now = self.clock()
        fresh = now - self._fetched_at < self.max_age_s
        key = self._keys.get(kid)
        has_source = bool(self.file or self.url)
        if key is not None and (fresh or not has_source):
            return key
        if has_source and (not fresh or now - self._fetched_at >= self.refetch_interval_s):
            if self._lock is None:
                self._lock = asyncio.Lock()
            seen = self._fetched_at
            async with self._lock:
                if self._fetched_at == seen:
                    try:
                        await self.refresh()
                    except KeySourceError as exc:
                        log.warning("%s; keeping %d known keys", exc, len(self._keys))
            key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return key

    async def refresh(self) -> None:
        """Reload the file / URL now. Keeps the previous keys if the source fails."""
        self._fetched_at = self.clock()
        self.fetches += 1
        try:
            documents: list[Mapping[str, Any]] = []
            if self.file:
                documents.append(json.loads(await asyncio.to_thread(Path(self.file).read_text)))
            if self.url:
                timeout = aiohttp.ClientTimeout(total=5)
                async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as resp:
                    resp.raise_for_status()
                    documents.append(await resp.json(content_type=None))
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as exc:
            raise KeySourceError(f"cannot read JWKS: {type(exc).__name__}: {exc}") from None
        keys: dict[str | None, jwt.PyJWK] = {}
        for document in [*self.static, *documents]:
            keys.update(_parse(document))
        self._keys = keys

    def _merge(self, jwks: Mapping[str, Any]) -> None:
        self._keys.update(_parse(jwks))


def _parse(jwks: Mapping[str, Any]) -> dict[str | None, jwt.PyJWK]:
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in jwks.get("keys", []):
        try:
            key = jwt.PyJWK(dict(entry))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue  # an unusable key (unsupported type) is skipped, not fatal
        keys[entry.get("kid")] = key
    return keys


@dataclass
class Verifier:
    """Verifies a bearer token and returns its claims, or raises :class:`AuthError`."""

    keys: KeySet
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    hs256_secret: str = ""
    issuer: str = ""
    audience: str = ""
    leeway_s: float = 5.0

    def __post_init__(self) -> None:
        unknown = [a for a in self.algorithms if a not in ASYMMETRIC and a not in SYMMETRIC]
        if unknown:
            raise EdgeConfigurationError(f"JWT algorithms not supported: {', '.join(unknown)}")
        if "HS256" in self.algorithms and not self.hs256_secret:
            raise EdgeConfigurationError("HS256 is allowed only with a configured secret (XPLATFORM_JWT_HS256_SECRET)")
        if self.hs256_secret and "HS256" not in self.algorithms:
            self.algorithms = (*self.algorithms, "HS256")

    async def verify(self, token: str | None) -> dict[str, Any]:
        if not token:
            raise AuthError("missing", "no bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, TypeError, ValueError):  # e.g. a kid that is a number or an object
            raise AuthError("malformed", "not a JWT with a valid header") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("alg_not_allowed", f"algorithm {str(alg)[:16]!r} is not allowed")
        if alg in SYMMETRIC:
            key: Any = self.hs256_secret
        else:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise AuthError("malformed", "kid is not a string")
            try:
                jwk = await self.keys.get(kid)
            except Exception:
                jwk = None
            if jwk is None:
                raise AuthError("unknown_kid", "no key for the token's kid")
            if ASYMMETRIC[alg] != jwk.key_type:
                raise AuthError("alg_not_allowed", f"key {kid!r} is not a {ASYMMETRIC[alg]} key")
            key = jwk.key
        try:
            claims = jwt.decode(token, key, algorithms=[alg], issuer=self.issuer or None,
                                audience=self.audience or None, leeway=self.leeway_s,
                                options={"require": list(REQUIRED_CLAIMS), "verify_aud": bool(self.audience)})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "token not valid yet (nbf/iat)") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong_audience", "audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong_issuer", "issuer not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("alg_not_allowed", "algorithm not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("malformed", f"missing claim {exc.claim}") from None
        except (jwt.PyJWTError, TypeError, ValueError, OverflowError):
            raise AuthError("malformed", "token cannot be verified") from None
        return check_claims(claims)


def check_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """Refuse claims the signature does not make sane. PyJWT accepts ``exp: "9999999999"``
    (it calls ``int()`` on it) while the edge only schedules the expiry of a number: such a
    connection would never expire. So every time claim present must be a finite JSON number,
    and ``sub`` a non-empty string outside the devices' ``device:`` namespace (a token must
    not speak as a device of the internal edge)."""
    for name in TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))
                               or not math.isfinite(value)):
            raise AuthError("malformed", f"{name} must be a number (seconds since the epoch)")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("malformed", "sub must be a non-empty string")
    if sub.startswith(DEVICE_SUB_PREFIX):
        raise AuthError("malformed", f"sub may not start with {DEVICE_SUB_PREFIX!r} (reserved for devices)")
    return claims


class DevTokenIssuer:
    """Dev mode only: an ES256 key pair made at start, and tokens for any ``sub``/``role``.

    Why it exists: the demo page and local tools need tokens without an identity provider.
    It is enabled only by ``XPLATFORM_EDGE_DEV_TOKENS=1`` (``xplatform run`` sets it);
    the private key lives in memory only, so tokens die with the process.
    """

    def __init__(self, issuer: str = "", audience: str = "", ttl_s: int = 3600, *,
                 private_pem: bytes | None = None, kid: str | None = None) -> None:
        """``private_pem``/``kid``: the key of another issuer (:meth:`key_pem`), so that the
        edge workers of one ``xplatform run`` trust each other's tokens; default: a new key."""
        if private_pem is None:
            self._private = ec.generate_private_key(ec.SECP256R1())
        else:
            key = serialization.load_pem_private_key(private_pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise EdgeConfigurationError("the dev token key must be an EC (P-256) private key")
            self._private = key
        self.kid = kid or f"dev-{secrets.token_hex(6)}"
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    def key_pem(self) -> bytes:
        """The private key, PEM (PKCS#8, unencrypted): only for handing it to this run's own
        edge workers through a file only this user can read."""
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def jwks(self) -> dict[str, Any]:
        """Public half as a JWKS document (what the verifier trusts)."""
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._private.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def issue(self, sub: str, role: str = "", ttl_s: int | None = None, **extra: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + (ttl_s or self.ttl_s), **extra}
        if role:
            claims["role"] = role
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, self._private, algorithm="ES256", headers={"kid": self.kid})
