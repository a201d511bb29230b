"""JWT verification without a server: key rotation from a JWKS file or URL, the refetch
rate limit, leeway, algorithm allow-list, and the dev issuer."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edge.auth import ASYMMETRIC, SYMMETRIC, DevTokenIssuer, KeySet, Verifier
from edge.errors import AuthError, EdgeConfigurationError
from tests.edge.harness import KID, RSA_KEY, jwks_of, token

NEW_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _reason(verifier: Verifier, tok: str | None) -> str:
    try:
        asyncio.run(verifier.verify(tok))
    except AuthError as exc:
        return exc.reason
    return "ok"


def test_rotation_in_a_jwks_file_is_picked_up_on_an_unknown_kid(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(RSA_KEY, KID)))
    clock = [0.0]
    keys = KeySet(file=str(path), refetch_interval_s=30, clock=lambda: clock[0])
    verifier = Verifier(keys, issuer="https://idp.test", audience="xplatform")

    async def main() -> None:
        assert (await verifier.verify(token("ann")))["sub"] == "ann"
        path.write_text(json.dumps(jwks_of(NEW_KEY, "rsa-2")))  # the provider rotated its key
        rotated = token("bob", key=NEW_KEY, kid="rsa-2")
        clock[0] = 1.0
        with pytest.raises(AuthError) as refused:  # within the refetch interval: no refetch yet
            await verifier.verify(rotated)
        assert refused.value.reason == "unknown_kid" and keys.fetches == 1
        for _ in range(50):  # made-up kids cannot hammer the source
            with pytest.raises(AuthError):
                await verifier.verify(token("x", key=NEW_KEY, kid=f"made-up-{_}"))
        assert keys.fetches == 1
        clock[0] = 31.0
        assert (await verifier.verify(rotated))["sub"] == "bob" and keys.fetches == 2

    asyncio.run(main())


def test_jwks_from_a_url_is_cached_and_a_failing_source_keeps_known_keys() -> None:
    async def main() -> None:
        served = {"jwks": jwks_of(RSA_KEY, KID), "hits": 0, "fail": False}

        async def handler(request: web.Request) -> web.Response:
            served["hits"] += 1
            if served["fail"]:
                return web.Response(status=500)
            return web.json_response(served["jwks"])

        app = web.Application()
        app.router.add_get("/jwks", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        clock = [0.0]
        keys = KeySet(url=f"http://127.0.0.1:{port}/jwks", max_age_s=60, refetch_interval_s=5, clock=lambda: clock[0])
        verifier = Verifier(keys)
        try:
            for _ in range(5):
                await verifier.verify(token("ann"))
            assert served["hits"] == 1  # cached
            served["fail"] = True
            clock[0] = 61.0  # stale: refetch fails, the known key stays in use
            assert (await verifier.verify(token("ann")))["sub"] == "ann" and served["hits"] == 2
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_leeway_and_required_claims(tmp_path: Path) -> None:
    keys = KeySet()
    keys.add_jwks(jwks_of(RSA_KEY, KID))
    verifier = Verifier(keys, leeway_s=5)
    assert _reason(verifier, token(ttl=-2, aud="x", iss="y")) == "ok"          # within leeway
    assert _reason(verifier, token(ttl=-10)) == "expired"
    assert _reason(verifier, token(nbf=int(time.time()) + 2)) == "ok"
    assert _reason(verifier, token(nbf=int(time.time()) + 30)) == "not_yet_valid"
    no_exp = jwt.encode({"sub": "ann"}, RSA_KEY, algorithm="RS256", headers={"kid": KID})
    assert _reason(verifier, no_exp) == "malformed"                             # a token that never expires
    no_sub = jwt.encode({"exp": time.time() + 60}, RSA_KEY, algorithm="RS256", headers={"kid": KID})
    assert _reason(verifier, no_sub) == "malformed"
    assert _reason(verifier, None) == "missing" and _reason(verifier, "") == "missing"


def test_algorithm_allow_list_and_key_family() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = KeySet()
    keys.add_jwks(jwks_of(RSA_KEY, KID))
    only_es = Verifier(keys, algorithms=("ES256",))
    assert _reason(only_es, token()) == "alg_not_allowed"
    both = Verifier(keys)
    # an ES256 token naming the RSA key's kid: the key is not of the header's family
    assert _reason(both, jwt.encode({"sub": "a", "exp": time.time() + 60}, ec_key, algorithm="ES256",
                                    headers={"kid": KID})) == "alg_not_allowed"
    with pytest.raises(EdgeConfigurationError):
        Verifier(keys, algorithms=("HS256",))  # HS256 without a secret
    with pytest.raises(EdgeConfigurationError):
        Verifier(keys, algorithms=("none",))


def test_dev_issuer_tokens_verify_with_its_published_key() -> None:
    issuer = DevTokenIssuer(issuer="dev", audience="xplatform", ttl_s=60)
    keys = KeySet()
    keys.add_jwks(issuer.jwks())
    claims = asyncio.run(Verifier(keys, issuer="dev", audience="xplatform").verify(issuer.issue("ann", "bidder")))
    assert claims["sub"] == "ann" and claims["role"] == "bidder" and claims["exp"] - claims["iat"] == 60
    assert "d" not in issuer.jwks()["keys"][0]  # the private part is never published


# Every algorithm edge/auth.py can allow, with a key of its family: a signature that does not
# verify is refused for each, whether the token was tampered with or signed by another key.
def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING = {
    "RS256": _rsa, "RS384": _rsa, "RS512": _rsa, "PS256": _rsa,
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "HS256": lambda: "a-shared-secret-of-at-least-32-bytes!",
}
HS256_SECRET = SIGNING["HS256"]()


def test_every_allowed_algorithm_has_a_signature_case() -> None:
    assert set(SIGNING) == set(ASYMMETRIC) | SYMMETRIC


def _verifier_for(alg: str, key: object) -> Verifier:
    keys = KeySet()
    if alg in SYMMETRIC:
        return Verifier(keys, algorithms=(alg,), hs256_secret=str(key))
    public = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(key.public_key()))  # type: ignore[attr-defined]
    keys.add_jwks({"keys": [{**public, "kid": "k1", "alg": alg, "use": "sig"}]})
    return Verifier(keys, algorithms=(alg,))


def _signed(alg: str, key: object, sub: str = "ann") -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + 60}, key, algorithm=alg, headers={"kid": "k1"})  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", sorted(SIGNING))
def test_forged_signature_is_refused(alg: str) -> None:
    key = HS256_SECRET if alg in SYMMETRIC else SIGNING[alg]()
    verifier = _verifier_for(alg, key)
    genuine = _signed(alg, key)
    assert _reason(verifier, genuine) == "ok"
    header, _payload, signature = genuine.split(".")
    tampered_payload = _signed(alg, key, sub="mallory").split(".")[1]
    assert _reason(verifier, f"{header}.{tampered_payload}.{signature}") == "bad_signature"  # claims swapped
    flipped = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    assert _reason(verifier, f"{header}.{_payload}.{flipped}") in ("bad_signature", "malformed")
    assert _reason(verifier, f"{header}.{_payload}.") in ("bad_signature", "malformed")  # signature stripped


@pytest.mark.parametrize("alg", sorted(SIGNING))
def test_token_signed_with_another_key_is_refused(alg: str) -> None:
    trusted = HS256_SECRET if alg in SYMMETRIC else SIGNING[alg]()
    attacker = "another-shared-secret-32-bytes-long!!" if alg in SYMMETRIC else SIGNING[alg]()
    verifier = _verifier_for(alg, trusted)
    assert _reason(verifier, _signed(alg, attacker)) == "bad_signature"  # the trusted key's kid, not its key
