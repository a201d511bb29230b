"""The msgpack transcoder round-trips the types events use; bad settings fail at start."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum
from uuid import uuid4

import pytest

from infrastructure.errors import CodecError, ConfigurationError
from infrastructure.persistence import MsgpackTranscoder
from infrastructure.settings import Settings


def test_round_trip_keeps_python_types() -> None:
    t = MsgpackTranscoder()
    value = {"when": datetime.now(UTC), "naive": datetime(2026, 1, 1), "id": uuid4(),
             "price": Decimal("10.50"), "pair": (1, (2, "x")), "tags": {"a", "b"}, "frozen": frozenset({1}),
             "raw": b"\x00\x01", "flag": True, "nothing": None, "nested": [{"k": 1.5}], "big": 2**62}
    back = t.decode(t.encode(value))
    assert back == value
    assert type(back["pair"]) is tuple and type(back["tags"]) is set and type(back["flag"]) is bool


def test_unknown_types_are_refused_not_silently_changed() -> None:
    class Colour(IntEnum):
        RED = 1

    with pytest.raises(CodecError):
        MsgpackTranscoder().encode({"c": Colour.RED})
    with pytest.raises(CodecError):
        MsgpackTranscoder().decode(b"\xc1")


def test_registered_transcoding_is_used() -> None:
    from eventsourcing.persistence import Transcoding

    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Money) and other.cents == self.cents

    class MoneyAsInt(Transcoding):
        type = Money
        name = "money"

        def encode(self, obj: Money) -> int:
            return obj.cents

        def decode(self, data: int) -> Money:
            return Money(data)

    t = MsgpackTranscoder()
    t.register(MoneyAsInt())
    assert t.decode(t.encode({"m": Money(5)})) == {"m": Money(5)}


@pytest.mark.parametrize(("env", "message"), [
    ({"XPLATFORM_STORE": "oracle"}, "XPLATFORM_STORE must be one of"),
    ({"XPLATFORM_SNAPSHOT_EVERY": "often"}, "XPLATFORM_SNAPSHOT_EVERY='often' is not a valid int"),
    ({"XPLATFORM_SNAPSHOT_EVERY": "0"}, "must be a positive integer"),
    ({"XPLATFORM_PASSIVATE_AFTER_S": "-1"}, "must be a positive number"),
    ({"XPLATFORM_TRANSPORT_ADVERTISE": "10.0.0.5"}, "XPLATFORM_TRANSPORT_ADVERTISE='10.0.0.5' must be host:port"),
    ({"XPLATFORM_TRANSPORT_ADVERTISE": "node-1:0"}, "must be host:port with a port of 1-65535"),
    ({"XPLATFORM_TRANSPORT_ADVERTISE": ":7000"}, "must be host:port"),
    ({"XPLATFORM_TRANSPORT_ADVERTISE": "node-1:http"}, "must be host:port"),
])
def test_bad_settings_fail_at_start_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_settings_from_env_and_every_setting_has_a_reason() -> None:
    s = Settings.from_env({"XPLATFORM_STORE": "memory", "XPLATFORM_SNAPSHOT_EVERY": "7"})
    assert (s.store, s.snapshot_every) == ("memory", 7)
    assert all(why for _name, _value, why in s.describe())


def test_advertised_transport_address_accepts_host_port() -> None:
    for address in ("state-node-1.xplatform.svc:7000", "127.0.0.1:65535"):
        assert Settings(transport_advertise=address).transport_advertise == address
