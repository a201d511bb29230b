"""The pieces of per-hop latency and structured logs, each on its own: the loop histogram's
exposition (the same as prometheus_client's Histogram), the REPLY envelope's optional hop
durations (old and newer peers), the slow-message sampler, and the JSON log formatter."""

from __future__ import annotations

import json
import logging
import math
import sys

import msgpack
import pytest
from prometheus_client import CollectorRegistry, Histogram

from domain.effects import Reply
from edge.hops import HopRecorder
from edge.metrics import EdgeMetrics
from infrastructure.errors import ConfigurationError
from infrastructure.logformat import JsonFormatter
from infrastructure.metrics import HOP_BUCKETS, LoopHistogram
from infrastructure.settings import Settings
from infrastructure.transport.envelopes import EnvelopeError, ReplyEnvelope, frame, parse
from infrastructure.transport.port import NodeHops

VALUES = (0.0, 0.0001, 0.00011, 0.001, 0.0049, 0.25, 2.5, 5.0, 7.5, 120.0)
"""Zero, exact bucket bounds (``le`` includes them), values between, over the largest bound."""


def test_loop_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("x_hop_seconds", "doc", "hop", ("a", "b"), HOP_BUCKETS, registry=ours)
    reference = Histogram("x_hop_seconds", "doc", ["hop"], buckets=HOP_BUCKETS, registry=theirs)
    for value in VALUES:
        loop.observe_each((value, value / 2))
        reference.labels("a").observe(value)
        reference.labels("b").observe(value / 2)
    loop.children["a"].observe(0.003, 4)  # a write batch: one value, counted per reply
    for _ in range(4):
        reference.labels("a").observe(0.003)
    for hop in ("a", "b"):
        for bound in (*HOP_BUCKETS, math.inf):
            le = "+Inf" if bound == math.inf else str(bound)
            labels = {"hop": hop, "le": le}
            assert ours.get_sample_value("x_hop_seconds_bucket", labels) == theirs.get_sample_value(
                "x_hop_seconds_bucket", labels), labels
        for suffix in ("_count", "_sum"):
            assert ours.get_sample_value(f"x_hop_seconds{suffix}", {"hop": hop}) == pytest.approx(
                theirs.get_sample_value(f"x_hop_seconds{suffix}", {"hop": hop}))
    assert ours.get_sample_value("x_hop_seconds_count", {"hop": "a"}) == len(VALUES) + 4


def _reply(hops: tuple[float, float, float] | None) -> ReplyEnvelope:
    return ReplyEnvelope(7, 3, Reply("", True, {"total": 1}, "", "", False), hops)


def test_reply_envelope_carries_the_node_durations_as_an_optional_trailing_field() -> None:
    with_hops = _reply((0.001, 0.0025, 0.004))
    assert parse(frame(with_hops)[4:]) == with_hops
    without = _reply(None)
    body = frame(without)[4:]
    assert len(msgpack.unpackb(body)) == 8  # as before: an envelope without durations is the old one
    assert parse(body) == without
    newer = msgpack.packb([3, 7, 3, True, {"total": 1}, "", "", False, [0.001, 0.0025, 0.004], 0, "a later field"])
    assert parse(newer) == with_hops  # fields after the last one known (hops, version) are ignored


@pytest.mark.parametrize("hops", [[0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [-0.001, 0.0, 0.0], [float("nan"), 0, 0],
                                  [float("inf"), 0, 0], [True, 0, 0], ["1", 0, 0], 0.5, [1e9, 0, 0]])
def test_reply_envelope_with_malformed_durations_is_refused(hops: object) -> None:
    body = msgpack.packb([3, 7, 3, True, None, "", "", False, hops])
    with pytest.raises(EnvelopeError):
        parse(body)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _hops(handler: float) -> NodeHops:
    hops = NodeHops()
    hops.fill("node-a", (0.001, handler, 0.002))
    return hops


def test_slow_messages_are_counted_each_and_logged_at_most_once_per_interval() -> None:
    metrics, clock = EdgeMetrics(), Clock()
    recorder = HopRecorder(metrics, slow_message_ms=10.0, slow_log_interval_s=1.0, clock=clock)
    assert recorder.replied("fast", 0.005, _hops(0.001), 0.0) is None  # under the threshold: not slow
    first = recorder.replied("m1", 0.05, _hops(0.04), 0.0)
    assert first is not None and first.message_id == "m1" and first.skipped == 0
    clock.now += 0.5
    assert [recorder.replied(f"m{i}", 0.05, _hops(0.04), 0.0) for i in range(2, 5)] == [None] * 3
    clock.now += 0.5
    second = recorder.replied("m5", 0.05, _hops(0.04), 0.0)
    assert second is not None and second.skipped == 3  # the line says how many went unlogged
    assert metrics.registry.get_sample_value("xplatform_edge_slow_messages_total") == 5
    transport = metrics.registry.get_sample_value("xplatform_edge_hop_seconds_sum", {"hop": "transport"})
    assert transport == pytest.approx(0.005 - 0.004 + 4 * (0.05 - 0.043) + (0.05 - 0.043))
    off = HopRecorder(EdgeMetrics(), slow_message_ms=0.0, slow_log_interval_s=0.0, clock=clock)
    assert off.replied("m", 60.0, _hops(59.0), 0.0) is None  # 0: never slow


def test_json_log_lines_parse_with_the_ids_as_fields() -> None:
    formatter = JsonFormatter("node-7")
    logger = logging.getLogger("tests.json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logger.makeRecord("tests.json", logging.ERROR, __file__, 1, "handler of %s failed on message %s",
                                   ("Lot/vase", "m-1"), sys.exc_info(),
                                   extra={"entity": "Lot/vase", "message_id": "m-1", "hops_ms": {"queue": 0.5},
                                          "odd": object()})
    line = json.loads(formatter.format(record))
    assert line["node"] == "node-7" and line["level"] == "ERROR" and line["logger"] == "tests.json"
    assert line["msg"] == "handler of Lot/vase failed on message m-1"
    assert line["entity"] == "Lot/vase" and line["message_id"] == "m-1" and line["hops_ms"] == {"queue": 0.5}
    assert line["odd"].startswith("<object") and "RuntimeError: boom" in line["exc"]
    assert line["ts"].endswith("+00:00") and "T" in line["ts"]
    assert "\n" not in formatter.format(record)  # one line per record, traceback included


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({"XPLATFORM_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigurationError, match="XPLATFORM_LOG_FORMAT"):
        Settings.from_env({"XPLATFORM_LOG_FORMAT": "xml"})
