"""Property-based fuzzing of the transport envelope parser (infrastructure/transport/envelopes.py).

Anything a peer can put on the wire - arbitrary bytes, or well-formed msgpack of the right
shape with wrong values - must either parse into an envelope or raise the documented
:class:`EnvelopeError`; nothing else may escape (a stray exception would kill a link's reader
with a traceback, or worse, the handshake). Whatever parses must encode again and parse to the
same envelope (no value the parser lets through that the encoder cannot carry). Bounded
examples, so CI time stays predictable.
"""

from __future__ import annotations

import struct

import msgpack
from hypothesis import HealthCheck, example, given, settings, strategies as st

from infrastructure.transport.envelopes import EnvelopeError, frame, header_length, parse

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
           | st.text(max_size=12) | st.binary(max_size=40))
keys = st.text(max_size=6) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)
kinds = st.integers(min_value=0, max_value=7)
names = st.sampled_from(["Lot", "Bidder", "x", "", "Lot/1", "9a"]) | st.text(max_size=8)

# Envelopes of the right outline: the kind's arity and plausible field types, with wrong values mixed in.
messages = st.one_of(
    st.tuples(st.sampled_from([1, 2, 3, 4]), values, values, values, values).map(list),
    st.tuples(st.just(4), st.text(max_size=8), st.floats(), names, names, st.text(max_size=8), values).map(list),
    st.tuples(st.just(3), st.text(max_size=8), st.floats(), st.text(max_size=8), st.binary(max_size=8)).map(list),
    st.tuples(st.just(1), st.text(max_size=8), st.floats(), st.text(max_size=8), values).map(list),
    st.tuples(st.just(2), st.text(max_size=8), st.floats(), values, values, values).map(list),
)
effects = st.one_of(
    st.tuples(st.just(1), st.one_of(st.tuples(st.sampled_from([1, 2, 3]), values).map(list), values), values, values).map(list),
    st.tuples(st.just(2), values, values, values).map(list),
    values,
)
outlines = st.one_of(
    st.tuples(st.just(1), values, values, values, values, values).map(list),  # HELLO
    st.tuples(st.just(1), st.text(max_size=8), st.text(max_size=8), st.lists(values, max_size=3),
              st.binary(max_size=80), st.binary(max_size=80)).map(list),
    st.tuples(st.just(2), values, names, names, messages | values, values).map(list),  # DELIVER
    st.tuples(st.just(3), values, values, values, values, values, values, values).map(list),  # REPLY
    st.tuples(st.just(3), values, values, values, values, values, values, values,  # REPLY with hop durations
              st.lists(st.floats() | st.integers(min_value=0, max_value=2**64 - 1) | values, max_size=4)
              | values).map(list),
    st.tuples(st.just(3), values, values, values, values, values, values, values,  # REPLY with hops and a version
              st.none() | st.lists(st.floats(), max_size=4) | values, values).map(list),
    st.tuples(st.just(4), names, names, effects).map(list),  # OUTBOUND
    st.tuples(st.just(5), st.lists(st.lists(names, max_size=3) | values, max_size=3),
              st.lists(st.lists(names, max_size=3) | values, max_size=3)).map(list),  # INTEREST
    st.tuples(st.just(6), values).map(list),  # AUTH
    st.lists(values, max_size=8).flatmap(lambda rest: kinds.map(lambda k: [k, *rest])),
    values,
)


def check(body: bytes) -> None:
    try:
        envelope = parse(body)
    except EnvelopeError:
        return
    again = frame(envelope)  # whatever parses can be sent on
    assert parse(again[4:]) == envelope


@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xc1")  # a byte msgpack never uses
@example(b"\x91" * 2000 + b"\x90")  # deeply nested arrays
def test_arbitrary_bytes_parse_or_raise_envelope_error(body: bytes) -> None:
    check(body)


@FUZZ
@given(outlines)
@example([3, False, 1.8446744073709552e19, None, None, None, None, None])  # an epoch msgpack cannot carry
@example([3, 1, 2, True, None, "", "", False, [0.001, 2, 0.5], "a later field"])  # hops, then a field of a later version
def test_well_formed_msgpack_with_wrong_values_parses_or_raises_envelope_error(outline: object) -> None:
    check(msgpack.packb(outline, use_bin_type=True))


@FUZZ
@given(st.binary(min_size=4, max_size=4))
def test_any_header_is_a_length_or_an_envelope_error(header: bytes) -> None:
    try:
        length = header_length(header)
    except EnvelopeError:
        assert struct.unpack(">I", header)[0] > 4 * 1024 * 1024
    else:
        assert 0 <= length <= 4 * 1024 * 1024
