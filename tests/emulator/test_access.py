"""The emulator's optional access rules: TLS, users, follower mode (see ``access.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import NodeIsNotLeaderError, UnauthenticatedError

from ops.local.emulator import EmulatorProcess, launch_emulator, launch_secure_emulator
from tests.support.tls import CertificateFiles, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return make_certificates(tmp_path_factory.mktemp("emulator-tls"))


@pytest.fixture(scope="module")
def secure(certificates: CertificateFiles) -> Iterator[EmulatorProcess]:
    running = launch_secure_emulator(certificates.cert_file, certificates.key_file)
    yield running
    running.stop()


def test_tls_with_basic_auth(secure: EmulatorProcess, certificates: CertificateFiles, stream_name: str) -> None:
    """EventStoreDB docs, Security / Authentication ("Basic authentication") and Clients /
    Connecting ("tls"): credentials travel over TLS; wrong ones are refused as
    unauthenticated before the call runs."""
    ca = Path(certificates.ca_file).read_text()
    with KurrentDBClient(f"kurrentdb://admin:changeit@127.0.0.1:{secure.port}", root_certificates=ca) as good:
        good.append_to_stream(stream_name, current_version=StreamState.NO_STREAM, events=[NewEvent(type="A", data=b"")])
        assert good.get_current_version(stream_name) == 0
    with KurrentDBClient(f"kurrentdb://admin:nope@127.0.0.1:{secure.port}", root_certificates=ca) as bad, \
            pytest.raises(UnauthenticatedError):
        bad.get_current_version(stream_name)


def test_follower_redirects_leader_only_calls_and_gossips_the_leader(stream_name: str) -> None:
    """EventStoreDB docs, Clients / Connecting ("nodePreference"): a follower answers a
    call that requires the leader with the leader's address; gossip lists the members
    with their roles."""
    leader = launch_emulator()
    follower = launch_emulator("--follower-of", f"127.0.0.1:{leader.port}")
    try:
        with KurrentDBClient(follower.uri) as client:
            with pytest.raises(NodeIsNotLeaderError) as refused:
                client.append_to_stream(stream_name, current_version=StreamState.NO_STREAM,
                                        events=[NewEvent(type="A", data=b"")])
            assert (refused.value.host, refused.value.port) == ("127.0.0.1", leader.port)
            roles = {(m.address, m.port): m.state for m in client.read_gossip()}
            assert roles == {("127.0.0.1", follower.port): "NODE_STATE_FOLLOWER", ("127.0.0.1", leader.port): "NODE_STATE_LEADER"}
        with KurrentDBClient(f"kurrentdb+discover://127.0.0.1:{follower.port}?tls=false") as discovering:
            discovering.append_to_stream(stream_name, current_version=StreamState.NO_STREAM,
                                         events=[NewEvent(type="A", data=b"")])
        with KurrentDBClient(leader.uri) as on_leader:
            assert on_leader.get_current_version(stream_name) == 0
    finally:
        follower.stop()
        leader.stop()
