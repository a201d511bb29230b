"""EventStoreDB settings: chosen by config, checked at start, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrastructure.errors import ConfigurationError
from infrastructure.persistence import open_subscriptions
from infrastructure.settings import Settings

LOCAL = "kurrentdb://127.0.0.1:2113?tls=false"


def esdb(**overrides: object) -> Settings:
    return Settings(store="eventstoredb", **overrides)  # type: ignore[arg-type]


def test_uri_from_our_variable_or_the_eventsourcing_one() -> None:
    assert Settings.from_env({"XPLATFORM_STORE": "eventstoredb", "EVENTSTOREDB_URI": LOCAL}).eventstoredb_uri == LOCAL
    ours = "kurrentdb://other:2113?tls=false"
    both = {"XPLATFORM_STORE": "eventstoredb", "EVENTSTOREDB_URI": LOCAL, "XPLATFORM_EVENTSTOREDB_URI": ours}
    assert Settings.from_env(both).eventstoredb_uri == ours
    env = Settings.from_env({"XPLATFORM_STORE": "eventstoredb", "EVENTSTOREDB_URI": LOCAL}).journal_env()
    assert env == {"PERSISTENCE_MODULE": "eventsourcing_eventstoredb", "EVENTSTOREDB_URI": LOCAL}


@pytest.mark.parametrize("overrides,message", [
    ({}, "needs XPLATFORM_EVENTSTOREDB_URI"),
    ({"eventstoredb_uri": "http://127.0.0.1:2113"}, "Invalid URI scheme"),
    ({"eventstoredb_uri": "kurrentdb://127.0.0.1:2113"}, "TLS (the default) needs a user and password"),
    ({"eventstoredb_uri": "kurrentdb://127.0.0.1:2113?tls=maybe"}, "not one of"),
    ({"eventstoredb_uri": LOCAL, "eventstoredb_username": "admin", "eventstoredb_password": "x"}, "never be sent"),
    ({"eventstoredb_uri": "kurrentdb://admin:x@127.0.0.1:2113?tls=false"}, "never be sent"),
    ({"eventstoredb_uri": LOCAL, "eventstoredb_tls_ca_file": __file__}, "tls=false"),
    ({"eventstoredb_uri": "kurrentdb://h:2113", "eventstoredb_username": "admin", "eventstoredb_password": "x",
      "eventstoredb_tls_ca_file": "/nonexistent/ca.pem"}, "not a readable file"),
    ({"eventstoredb_uri": "kurrentdb://h:2113", "eventstoredb_username": "admin"}, "set together"),
    ({"eventstoredb_uri": "kurrentdb://h:2113", "eventstoredb_username": "admin", "eventstoredb_password": "a@b"},
     "cannot contain"),
    ({"eventstoredb_uri": LOCAL, "eventstoredb_deadline_s": 0}, "positive"),
    ({"eventstoredb_uri": LOCAL, "eventstoredb_retries": -1}, "RETRIES"),
])
def test_bad_settings_fail_at_start_with_the_variable_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        esdb(**overrides)


def test_credentials_and_ca_go_where_the_client_reads_them(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n...\n")
    settings = esdb(eventstoredb_uri="kurrentdb://old:pw@n1:2113,n2:2113,n3:2113", eventstoredb_username="xplatform",
                    eventstoredb_password="s3cret!", eventstoredb_tls_ca_file=str(ca))
    env = settings.journal_env()
    assert env["EVENTSTOREDB_URI"] == "kurrentdb://xplatform:s3cret!@n1:2113,n2:2113,n3:2113"
    assert env["EVENTSTOREDB_ROOT_CERTIFICATES"] == ca.read_text()


def test_settings_listing_hides_secrets() -> None:
    settings = esdb(eventstoredb_uri="kurrentdb://admin:changeit@h:2113", eventstoredb_username="admin",
                    eventstoredb_password="topsecret", postgres_password="pg-secret")
    shown = {name: value for name, value, _ in settings.describe()}
    assert shown["eventstoredb_password"] == "***" and shown["postgres_password"] == "***"
    assert shown["eventstoredb_uri"] == "kurrentdb://admin:***@h:2113"
    assert "topsecret" not in repr(shown) and "changeit" not in repr(shown)
    assert all(why for _, _, why in settings.describe())  # every setting says why


def test_subscriptions_need_the_eventstoredb_store() -> None:
    with pytest.raises(ConfigurationError, match="eventstoredb"):
        open_subscriptions(Settings(store="memory"))
