"""Trust defaults of the edges (issue 9, item 5): settings that would accept more than the
operator meant fail at start with a ConfigurationError naming them, ``xplatform run``
keeps dev tokens on loopback unless told otherwise, /metrics leaves the public port, and
the access log never shows a token sent in a query string."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from edge.config import DEV_AUDIENCE, DEV_ISSUER, EdgeConfig, is_loopback, parse_networks
from edge.errors import EdgeConfigurationError
from infrastructure.errors import ConfigurationError
from ops.local.xplatform_run import XplatformRun

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- EdgeConfig
def test_an_edge_without_issuer_and_audience_does_not_start() -> None:
    with pytest.raises(ConfigurationError) as both:
        EdgeConfig()
    assert "XPLATFORM_JWT_ISSUER and XPLATFORM_JWT_AUDIENCE must be set" in str(both.value)
    assert isinstance(both.value, EdgeConfigurationError)
    with pytest.raises(ConfigurationError, match="^XPLATFORM_JWT_AUDIENCE must be set"):
        EdgeConfig(jwt_issuer="https://idp.example")
    configured = EdgeConfig(jwt_issuer="https://idp.example", jwt_audience="app")
    assert (configured.token_issuer, configured.token_audience) == ("https://idp.example", "app")
    dev = EdgeConfig(dev_tokens=True)  # dev mode: the dev issuer's own iss/aud are checked
    assert (dev.token_issuer, dev.token_audience) == (DEV_ISSUER, DEV_AUDIENCE)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", "localhost.evil.test", ""])
def test_dev_tokens_on_a_non_loopback_host_need_an_explicit_yes(host: str) -> None:
    with pytest.raises(ConfigurationError, match="--dev-tokens-on-network"):
        EdgeConfig(dev_tokens=True, host=host)
    assert EdgeConfig(dev_tokens=True, host=host, dev_tokens_on_network=True).dev_tokens


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST."])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert EdgeConfig(dev_tokens=True, host=host).dev_tokens


def test_device_networks_need_a_device_secret_file_outside_dev_mode(tmp_path: Path) -> None:
    from edge.internal import device_secret

    trusted = dict(jwt_issuer="https://idp.example", jwt_audience="app",
                   internal_networks=parse_networks("10.0.0.0/8=sensor"))
    with pytest.raises(ConfigurationError, match="XPLATFORM_EDGE_DEVICE_SECRET_FILE"):
        EdgeConfig(**trusted)
    short = tmp_path / "short.secret"
    short.write_text("too-short\n")
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        device_secret(EdgeConfig(**trusted, device_secret_file=str(short)))
    with pytest.raises(ConfigurationError, match="cannot be read"):
        device_secret(EdgeConfig(**trusted, device_secret_file=str(tmp_path / "missing")))
    good = tmp_path / "device.secret"
    good.write_text("x" * 40 + "\n")
    assert device_secret(EdgeConfig(**trusted, device_secret_file=str(good))) == b"x" * 40
    assert len(device_secret(EdgeConfig(dev_tokens=True, internal_networks=trusted["internal_networks"]))) == 32


# ---------------------------------------------------------------------------- the commands
def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPLATFORM_")}
    return {**env, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), **extra}


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_run_refuses_dev_tokens_on_a_non_loopback_host(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ops.cli", "run", "--host", "0.0.0.0", "--port", "0"],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "EdgeConfigurationError" in done.stderr and "XPLATFORM_EDGE_DEV_TOKENS" in done.stderr
    assert "--dev-tokens-on-network" in done.stderr and "serving on" not in done.stdout


def test_edge_refuses_to_start_without_issuer_and_audience(tmp_path: Path) -> None:
    """``xplatform edge`` (a production edge) fails before it connects anywhere."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    done = subprocess.run([sys.executable, "-m", "ops.cli", "edge", "--port", "0"], cwd=tmp_path,
                          env=_env(tmp_path, XPLATFORM_ZOOKEEPER_HOSTS="127.0.0.1:9", XPLATFORM_JWT_JWKS_FILE=str(jwks),
                                   XPLATFORM_EDGE_DEV_TOKENS="1"),  # not honoured by a clustered edge
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "XPLATFORM_JWT_ISSUER and XPLATFORM_JWT_AUDIENCE must be set" in done.stderr, done.stderr


def test_run_on_the_network_when_asked_warns_and_serves_metrics_on_the_internal_listener(tmp_path: Path) -> None:
    server = XplatformRun.start(("--host", "0.0.0.0", "--port", "0", "--dev-tokens-on-network"), cwd=tmp_path,
                                env=_env(tmp_path))
    try:
        metrics_url = server.wait_for(r"metrics at (http://127\.0\.0\.1:\d+/metrics)").group(1)
        port = server.wait_for(r"serving on http://0\.0\.0\.0:(\d+)/").group(1)
        public = f"http://127.0.0.1:{port}"
        assert _status(f"{public}/metrics") == 404  # not on the public port
        assert _status(metrics_url) == 200
        assert _status(f"{public}/dev/token?sub=ann") == 200
        assert _status(f"{public}/dev/token?sub=ann", {"Host": f"rebound.evil.test:{port}"}) == 403
    finally:
        server.stop(signal.SIGINT)
        log = server.log()
        server.close()
    assert "DEV TOKENS ARE SERVED ON THE NETWORK" in log, log


def test_the_access_log_never_shows_a_token_sent_in_the_query_string(tmp_path: Path) -> None:
    server = XplatformRun.start(("--port", "0"), cwd=tmp_path, env=_env(tmp_path))
    secret = f"eyJhbGciOiJFUzI1NiJ9.{uuid.uuid4().hex}.sig"
    cid = str(uuid.uuid4())
    try:
        url = server.url.rstrip("/")
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "xplatform.v1",
                   "Referer": f"{url}/?access_token={secret}"}
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", f"/ws/Lot/l1?cid={cid}&access_token={secret}", headers=upgrade)
        assert conn.getresponse().status == 401  # refused (tokens go in a header or the subprotocol)...
        conn.close()
        assert _status(f"{url}/dev/token?sub=ann&token={secret}") == 200
    finally:
        server.stop(signal.SIGINT)
        log = server.log()
        server.close()
    assert f"/ws/Lot/l1?cid={cid}&access_token=*** HTTP/1.1\" 401" in log, log  # ...and logged without it
    assert "/dev/token?sub=ann&token=***" in log
    assert secret not in log and secret.split(".")[1] not in log
