"""LoopCounter (the hot path's lock-free counter) is exposed exactly like a Prometheus Counter."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from infrastructure.metrics import LoopCounter


def _samples(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line]


def test_loop_counter_exposes_the_same_samples_as_a_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopCounter("xplatform_test_frames", "Frames.", ["kind"], registry=ours)
    slow = Counter("xplatform_test_frames", "Frames.", ["kind"], registry=theirs)
    for kind, n in (("msg", 3), ("ping", 1), ("msg", 2)):
        fast.labels(kind).inc(n)
        slow.labels(kind).inc(n)
    fast.labels("bye")
    slow.labels("bye")
    assert _samples(ours) == _samples(theirs)
    assert ours.get_sample_value("xplatform_test_frames_total", {"kind": "msg"}) == 5.0
    plain = LoopCounter("xplatform_test_dropped", "Dropped.", registry=ours)
    plain.inc()
    plain.inc(2)
    assert ours.get_sample_value("xplatform_test_dropped_total") == 3.0


def test_loop_counter_refuses_wrong_labels_like_a_counter() -> None:
    counter = LoopCounter("xplatform_test_x", "X.", ["a", "b"])
    try:
        counter.labels("only-one")
    except ValueError:
        return
    raise AssertionError("labels() with the wrong number of values was accepted")
