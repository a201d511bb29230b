"""Bad input at the upgrade: every refusal is an HTTP status + JSON body, never a 101, and no
entity hears of it (not activated, nothing stored). The edge keeps serving afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from edge.config import DEV_AUDIENCE, DEV_ISSUER
from tests.edge.harness import (
    AUDIENCE,
    ISSUER,
    KID,
    ROOM,
    Edge,
    assert_untouched,
    forge,
    good_claims,
    new_cid,
    public_pem,
    run_edge,
    still_serving,
    token,
)

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PATH = f"/ws/{ROOM.category}/{ROOM.entity_id}"


TOKENS: dict[str, Any] = {
    "missing": lambda: None,
    "expired": lambda: token(ttl=-60),  # beyond the 5 s leeway
    "not_yet_valid": lambda: token(nbf=int(time.time()) + 60),
    "alg_none": lambda: forge({"alg": "none", "typ": "JWT", "kid": KID}, good_claims(), None),
    "hs_rs_key_confusion": lambda: forge({"alg": "HS256", "typ": "JWT", "kid": KID}, good_claims(), public_pem()),
    "wrong_audience": lambda: token(aud="someone-else"),
    "wrong_issuer": lambda: token(iss="https://evil.test"),
    "unknown_kid": lambda: token(key=OTHER_KEY, kid="rotated-away"),
    "bad_signature": lambda: token(key=OTHER_KEY, kid=KID),
    "malformed": lambda: "not-a-jwt",
}
EXPECTED_REASON = {"missing": "missing", "expired": "expired", "not_yet_valid": "not_yet_valid",
                   "alg_none": "alg_not_allowed", "hs_rs_key_confusion": "alg_not_allowed",
                   "wrong_audience": "wrong_audience", "wrong_issuer": "wrong_issuer", "unknown_kid": "unknown_kid",
                   "bad_signature": "bad_signature", "malformed": "malformed"}


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_bad_token_gets_401_before_any_upgrade_and_changes_nothing(tmp_path: Path, case: str) -> None:
    async def scenario(edge: Edge) -> None:
        bad = TOKENS[case]()
        headers = {} if bad is None else {"Authorization": f"Bearer {bad}"}
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", headers)
        assert status == 401 and body["error"] == EXPECTED_REASON[case]
        assert bad is None or bad not in str(body)  # the token is never echoed
        assert edge.metric("xplatform_edge_auth_failures_total", {"reason": EXPECTED_REASON[case]}) == 1
        assert_untouched(edge)
        await still_serving(edge)

    run_edge(tmp_path, scenario)


def test_bad_token_in_the_subprotocol_is_refused_too(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", protocols=f"xplatform.v1, bearer.{token(ttl=-60)}")
        assert status == 401 and body["error"] == "expired"
        assert_untouched(edge)

    run_edge(tmp_path, scenario)


def test_hs256_with_a_configured_secret_works_but_the_public_key_as_secret_still_fails(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        good = jwt.encode(good_claims("hana"), "a-long-shared-secret-of-32-bytes!", algorithm="HS256")
        client = await edge.client(token=good)
        await client.close()
        confused = forge({"alg": "HS256", "typ": "JWT", "kid": KID}, good_claims(), public_pem())
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {confused}"})
        assert status == 401 and body["error"] == "bad_signature"

    run_edge(tmp_path, scenario, jwt_hs256_secret="a-long-shared-secret-of-32-bytes!")


@pytest.mark.parametrize("origin, allowed", [("https://evil.test", False), ("https://app.test", True)])
def test_origin_allow_list(tmp_path: Path, origin: str, allowed: bool) -> None:
    async def scenario(edge: Edge) -> None:
        if allowed:
            client = await edge.client(origin=origin)
            await client.close()
            return
        status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {token()}",
                                                                     "Origin": origin})
        assert status == 403 and body["error"] == "origin_not_allowed"
        assert_untouched(edge)
        await still_serving(edge)

    run_edge(tmp_path, scenario, allowed_origins=("https://app.test",))


def test_same_origin_is_allowed_by_default_and_others_are_not(tmp_path: Path) -> None:
    async def scenario(edge: Edge) -> None:
        client = await edge.client(origin=edge.base_url)
        await client.close()
        status, _ = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {token()}",
                                                                  "Origin": "http://localhost:1"})
        assert status == 403

    run_edge(tmp_path, scenario)


@pytest.mark.parametrize("path, protocols, status, error", [
    (f"{PATH}?cid=not-a-uuid", "xplatform.v1", 400, "bad_connection_id"),
    (f"{PATH}", "xplatform.v1", 400, "bad_connection_id"),
    (f"/ws/Nope/x?cid={new_cid()}", "xplatform.v1", 404, "unknown_category"),
    (f"/ws/9bad/x?cid={new_cid()}", "xplatform.v1", 400, "bad_address"),
    (f"{PATH}?cid={new_cid()}", "chat.v2", 426, "subprotocol_required"),
    (f"{PATH}?cid={new_cid()}", None, 426, "subprotocol_required"),
])
def test_bad_address_connection_id_or_subprotocol(tmp_path: Path, path: str, protocols: str | None, status: int,
                                                  error: str) -> None:
    async def scenario(edge: Edge) -> None:
        got, body = await edge.upgrade(path, {"Authorization": f"Bearer {token()}"}, protocols=protocols)
        assert (got, body["error"]) == (status, error)
        assert_untouched(edge)

    run_edge(tmp_path, scenario)


def test_a_token_minted_for_another_application_is_refused_even_in_dev_mode(tmp_path: Path) -> None:
    """Without configured iss/aud an edge with dev tokens checks the dev issuer's own
    ('xplatform-dev'); tokens the identity provider minted for other applications fail."""
    async def scenario(edge: Edge) -> None:
        for tok, error in ((token(aud="another-app", iss=DEV_ISSUER), "wrong_audience"),
                           (token(aud=DEV_AUDIENCE, iss="https://idp.test"), "wrong_issuer")):
            status, body = await edge.upgrade(f"{PATH}?cid={new_cid()}", {"Authorization": f"Bearer {tok}"})
            assert (status, body["error"]) == (401, error)
        assert_untouched(edge)
        client = await edge.client(token=token(aud=DEV_AUDIENCE, iss=DEV_ISSUER))
        await client.close()

    run_edge(tmp_path, scenario, jwt_issuer="", jwt_audience="", dev_tokens=True)


def test_issuer_and_audience_constants_are_what_the_harness_signs() -> None:
    claims = jwt.decode(token(), options={"verify_signature": False})
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
