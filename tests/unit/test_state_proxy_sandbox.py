"""State proxies (domain/proxy.py) and the sample stock domain, in the sandbox: the test plays
the primary (``kit.answer``), so every rule of the SDK is checked without a server."""

from __future__ import annotations

import pytest

from domain import EntityRef, ProxyAnswer, ToConnection
from domain.errors import PrimaryUnavailable, ProxyError
from domain.proxy import idempotency_key
from domain.stock import Order, StockLevel
from infrastructure.testkit import Result, Sandbox

SKU = EntityRef("StockLevel", "sku-1")
GATEWAY = {"sub": "device:warehouse:gw1", "role": "warehouse", "device_class": "warehouse", "auth": "network"}
CLERK = {"sub": "carl", "role": "clerk"}
VIEWER = {"sub": "vic", "role": "viewer"}


class Unkeyed(StockLevel):
    """A stock level whose primary does not honour idempotency keys."""

    CATEGORY = "Unkeyed"
    PRIMARY_HONOURS_KEYS = False


def results_for(result: Result, connection_id: str) -> list[dict[str, object]]:
    """The ``proxy_result`` answers ``result`` (and what it caused) pushed to ``connection_id``."""
    return [p for r in result.everything() for s in r.sends if isinstance(s.target, ToConnection)
            and s.target.connection_id == connection_id for p in [s.payload] if p.get("type") == "proxy_result"]


@pytest.fixture
def kit() -> Sandbox:
    kit = Sandbox(StockLevel, Order)
    assert kit.connect(SKU, "c-gw", GATEWAY).ok
    assert kit.connect(SKU, "c-carl", CLERK).ok
    assert kit.connect(SKU, "c-vic", VIEWER).ok
    return kit


def push(kit: Sandbox, version: int, on_hand: int, **extra: object) -> dict[str, object]:
    result = kit.client(SKU, "c-gw", {"type": "push", "state": {"on_hand": on_hand, "reserved": 0}, "version": version,
                                      **extra})
    assert result.ok, result.reply
    return result.reply.payload  # type: ignore[no-any-return]


def test_push_applies_only_newer_states_out_of_order_and_duplicates_change_nothing(kit: Sandbox) -> None:
    assert push(kit, 2, 20)["applied"] is True
    events = len(kit.events(SKU))
    assert push(kit, 2, 20)["applied"] is False          # duplicate
    assert push(kit, 1, 10)["applied"] is False          # out of order: older
    assert len(kit.events(SKU)) == events                 # nothing stored
    assert kit.state(SKU).remote_state == {"on_hand": 20, "reserved": 0} and kit.state(SKU).remote_version == 2
    assert push(kit, 3, 30)["applied"] is True
    assert kit.state(SKU).remote_version == 3


def test_push_without_version_or_time_is_refused_and_only_the_primarys_devices_push(kit: Sandbox) -> None:
    refused = kit.client(SKU, "c-gw", {"type": "push", "state": {"on_hand": 1}})
    assert refused.reply.code == "bad_payload"
    by_user = kit.client(SKU, "c-carl", {"type": "push", "state": {"on_hand": 1}, "version": 9})
    assert by_user.reply.code == "not_authorised"
    forged = {"sub": "mallory", "role": "warehouse", "device_class": "warehouse", "auth": "network"}
    kit.connect(SKU, "c-mal", forged)  # a user token claiming a device class is still not a device
    assert kit.client(SKU, "c-mal", {"type": "push", "state": {}, "version": 9}).reply.code == "not_authorised"
    assert kit.state(SKU).remote_state is None


def test_read_is_immediate_with_age_and_max_age_turns_it_into_a_pull(kit: Sandbox) -> None:
    push(kit, 1, 10)
    kit.advance(30)
    read = kit.client(SKU, "c-vic", {"type": "read"})
    known = read.reply.payload["last_known"]
    assert read.reply.payload["status"] == "ok" and known["state"]["on_hand"] == 10 and known["age"] == 30
    assert not read.calls
    fresh_enough = kit.client(SKU, "c-vic", {"type": "read", "max_age": 60})
    assert fresh_enough.reply.payload["status"] == "ok" and not fresh_enough.calls
    stale = kit.client(SKU, "c-vic", {"type": "read", "max_age": 10})
    assert stale.reply.payload["status"] == "pending" and [c.kind for c in stale.calls] == ["pull"]
    answered = kit.answer(SKU, stale.calls[0], {"on_hand": 9, "reserved": 0}, version=2)
    [result] = results_for(answered, "c-vic")
    assert result["ok"] and result["last_known"]["state"]["on_hand"] == 9 and result["last_known"]["age"] == 0
    assert kit.client(SKU, "c-vic", {"type": "read", "max_age": -1}).reply.code == "bad_payload"


def test_failed_pull_answers_a_typed_error_with_the_last_known_state_and_its_age(kit: Sandbox) -> None:
    push(kit, 1, 10)
    kit.advance(5)
    pull = kit.client(SKU, "c-vic", {"type": "pull"})
    failed = kit.answer(SKU, pull.calls[0], error="primary_unavailable", reason="connection refused")
    [result] = results_for(failed, "c-vic")
    assert not result["ok"] and result["error"]["code"] == "primary_unavailable"
    assert result["last_known"]["state"]["on_hand"] == 10 and result["last_known"]["age"] == 5
    with pytest.raises(PrimaryUnavailable) as raised:
        ProxyAnswer.of(result).raise_for_error()
    assert raised.value.age == 5 and raised.value.last_known["state"] == {"on_hand": 10, "reserved": 0}
    assert kit.state(SKU).calls == {}


def test_pulls_join_the_call_in_flight_and_a_command_is_refused_while_one_is(kit: Sandbox) -> None:
    first = kit.client(SKU, "c-vic", {"type": "pull"})
    second = kit.client(SKU, "c-carl", {"type": "pull"})
    assert not second.calls and second.reply.payload["op"] == first.reply.payload["op"]
    busy = kit.client(SKU, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 1}})
    assert busy.reply.code == "proxy_busy" and busy.reply.retryable and not busy.calls
    answered = kit.answer(SKU, first.calls[0], {"on_hand": 5, "reserved": 0}, version=1)
    assert len(results_for(answered, "c-vic")) == 1 and len(results_for(answered, "c-carl")) == 1


def test_command_and_pull_is_one_call_with_a_key_derived_from_the_message(kit: Sandbox) -> None:
    cmd = {"type": "command", "command": {"op": "reserve", "qty": 2}}
    sent = kit.client(SKU, "c-carl", cmd, message_id="m-1")
    [call] = sent.calls
    assert call.kind == "command" and call.command == {"op": "reserve", "qty": 2}
    assert call.key == idempotency_key(SKU.stream_id, "c4:carl", "m-1")
    pull = kit.client(SKU, "c-vic", {"type": "pull"})  # joins: it gets the state pulled after the command
    assert not pull.calls
    again = kit.client(SKU, "c-carl", cmd, message_id="m-1")  # a retry of the same message
    assert again.duplicate and not again.calls
    done = kit.answer(SKU, call, {"on_hand": 10, "reserved": 2}, version=7)
    assert results_for(done, "c-carl")[0]["last_known"]["state"]["reserved"] == 2
    assert results_for(done, "c-vic")[0]["last_known"]["version"] == 7
    assert kit.client(SKU, "c-vic", {"type": "command", "command": {"op": "reserve", "qty": 1}}).reply.code == \
        "not_authorised"
    assert kit.client(SKU, "c-carl", {"type": "command", "command": {"op": "steal"}}).reply.code == "bad_payload"


def test_a_pulled_state_older_than_a_push_meanwhile_is_not_applied(kit: Sandbox) -> None:
    pull = kit.client(SKU, "c-vic", {"type": "pull"})
    push(kit, 5, 50)
    answered = kit.answer(SKU, pull.calls[0], {"on_hand": 40, "reserved": 0}, version=4)
    assert kit.state(SKU).remote_version == 5
    assert results_for(answered, "c-vic")[0]["last_known"]["version"] == 5


def test_lost_result_re_issues_the_same_call_after_a_restart_then_gives_up(kit: Sandbox) -> None:
    sent = kit.client(SKU, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 1}})
    [call] = sent.calls
    kit.restart()  # the node died mid-call: its result never comes; the state and timer survive
    assert kit.state(SKU).in_flight("command") == call.op
    [fired] = kit.advance(StockLevel.COMMAND_TIMEOUT_S + StockLevel.RESULT_GRACE_S)
    [again] = fired.calls
    assert (again.op, again.key, again.attempt) == (call.op, call.key, 2)  # same key: a keyed primary applies once
    late = kit.answer(SKU, call, {"on_hand": 1}, version=1)  # attempt 1's result, late after all: taken
    assert results_for(late, "c-carl")[0]["ok"]
    assert kit.answer(SKU, again, {"on_hand": 0}, version=2).events == []  # the call is over: changes nothing


def test_lost_command_without_keyed_primary_ends_with_outcome_unknown() -> None:
    box = Sandbox(Unkeyed)
    ref = EntityRef("Unkeyed", "x")
    box.connect(ref, "c-carl", CLERK)
    box.client(ref, "c-carl", {"type": "command", "command": {"op": "reserve", "qty": 1}})
    [fired] = box.advance(Unkeyed.COMMAND_TIMEOUT_S + Unkeyed.RESULT_GRACE_S)
    assert not fired.calls and results_for(fired, "c-carl")[0]["error"] == {
        "code": "outcome_unknown", "reason": "the command's result was lost; it may have been applied"}
    assert box.state(ref).calls == {}


def test_pull_gives_up_after_max_attempts_with_primary_timeout(kit: Sandbox) -> None:
    kit.client(SKU, "c-vic", {"type": "pull"})
    wait = StockLevel.PULL_TIMEOUT_S + StockLevel.RESULT_GRACE_S
    attempts = [len(fired.calls) for _ in range(StockLevel.MAX_ATTEMPTS) for fired in kit.advance(wait)]
    assert attempts == [1] * (StockLevel.MAX_ATTEMPTS - 1) + [0]
    assert kit.state(SKU).calls == {}


def test_last_known_state_survives_a_restart(kit: Sandbox) -> None:
    push(kit, 3, 33)
    kit.restart()
    assert kit.state(SKU).remote_state == {"on_hand": 33, "reserved": 0} and kit.state(SKU).remote_version == 3


def test_an_order_reserves_through_the_proxy_and_sees_the_answer_as_a_message(kit: Sandbox) -> None:
    order = EntityRef("Order", "o-1")
    kit.connect(order, "c-cus", {"sub": "cus", "role": "customer"})
    placed = kit.client(order, "c-cus", {"type": "place", "sku": "sku-1", "qty": 3})
    assert placed.reply.payload == {"status": "pending"}
    [call] = [c for r in placed.everything() for c in r.calls]
    assert call.kind == "command" and call.command == {"op": "reserve", "qty": 3}
    done = kit.answer(SKU, call, {"on_hand": 10, "reserved": 3}, version=2)
    assert kit.state(order).status == "confirmed" and kit.state(order).detail["level"]["reserved"] == 3
    assert done.payloads_for("c-cus", kit.state(order))[-1]["status"] == "confirmed"


def test_an_order_fails_with_the_typed_error_code_and_the_last_known_level(kit: Sandbox) -> None:
    push(kit, 1, 4)
    order = EntityRef("Order", "o-2")
    kit.connect(order, "c-cus", {"sub": "cus", "role": "customer"})
    placed = kit.client(order, "c-cus", {"type": "place", "sku": "sku-1", "qty": 1})
    [call] = [c for r in placed.everything() for c in r.calls]
    kit.answer(SKU, call, error="circuit_open", reason="primary keeps failing")
    state = kit.state(order)
    assert state.status == "failed" and state.detail["error"] == "circuit_open"
    assert state.detail["last_known"]["state"]["on_hand"] == 4
    assert issubclass(PrimaryUnavailable, ProxyError)
