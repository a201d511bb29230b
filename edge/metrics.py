"""Prometheus metrics of an edge (``xplatform_edge_*``).

Each edge gets its own ``CollectorRegistry`` (several edges can live in one test process).
Labels are bounded: auth failure reasons (:data:`edge.errors.AUTH_REASONS`), frame kinds,
close reasons from a fixed list. Latency is measured on three levels, as the seed asks:
the heartbeat RTT the edge measures with websocket pings, the RTT clients measure and
report in LATENCY frames, and the in-system round trip from the moment a MSG arrives at
the edge to the moment its (durable) reply is back at the edge - and that round trip hop
by hop (``xplatform_edge_hop_seconds{hop}``, :data:`EDGE_HOPS`, see :mod:`edge.hops`).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from infrastructure.metrics import HOP_BUCKETS, NODE_HOPS, LoopCounter, LoopHistogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EDGE_HOPS = ("transport", *NODE_HOPS, "client_write")
"""Hops of a client message's round trip, in order (see :mod:`edge.hops`); a fixed list."""
SERIAL_ERRORS = ("too_big", "malformed", "bad_checksum", "unknown_type", "bad_address", "unknown_category",
                 "bad_message_id", "bad_payload", "bad_cursor", "refused", "unavailable", "overloaded", "other")
"""Error frame codes of serial lines (edge/serial_line.py) as a label; any other code counts as ``other``."""
FRAMES_IN = ("msg", "ping", "latency", "bye", "bad")
FRAMES_OUT = ("welcome", "reply", "push", "pong", "terminate", "error")
READ_OUTCOMES = ("ok", "bad_request", "unauthorized", "forbidden", "not_found", "unknown_projection",
                 "consistency_timeout", "busy", "read_models_unavailable", "read_failed")
CLOSE_REASONS = ("client", "bye", "going_away", "protocol", "too_big", "text", "flood", "slow_consumer",
                 "token_expired", "refused", "terminated", "heartbeat_timeout", "superseded", "unavailable")


class EdgeMetrics:
    """Metrics of one edge. Labelled children are created once (``.labels()`` is slow)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("xplatform_edge_connections", "Open client connections (websocket and device).",
                                 ["kind"], registry=r)
        self.ws_connections = self.connections.labels("websocket")
        self.device_connections = self.connections.labels("device")
        auth = Counter("xplatform_edge_auth_failures", "Upgrades refused for the token, by reason.", ["reason"], registry=r)
        from edge.errors import AUTH_REASONS

        self.auth_failures = {reason: auth.labels(reason) for reason in AUTH_REASONS}
        refused = Counter("xplatform_edge_upgrades_refused", "Upgrades refused before any 101, by HTTP status.",
                          ["status"], registry=r)
        self.refused = {s: refused.labels(str(s)) for s in (400, 401, 403, 404, 409, 426, 429, 503)}
        limit_refusals = Counter("xplatform_edge_limit_refusals", "Upgrades refused for a connection cap: "
                                 "sockets (503), user or ip (429).", ["limit"], registry=r)
        self.limit_refusals = {k: limit_refusals.labels(k) for k in ("sockets", "user", "ip")}
        rate_limited = Counter("xplatform_edge_rate_limited", "Connections closed 1008 for sending frames over a "
                               "rate limit, by the limit's scope.", ["scope"], registry=r)
        self.rate_limited = {k: rate_limited.labels(k) for k in ("connection", "user", "ip")}
        self.pushes_dropped = Counter("xplatform_edge_pushes_dropped", "Broadcast pushes not sent to a client "
                                      "whose send queue was over its bound (it reads slower than it is sent to).",
                                      registry=r)
        self.send_queue_bytes = Gauge("xplatform_edge_send_queue_bytes", "Bytes the edge holds for its clients "
                                      "beyond their sockets' buffers (all connections).", registry=r)
        self.sockets = Gauge("xplatform_edge_sockets", "Open sockets of the public listener (any state).", registry=r)
        self.handshake_timeouts = Counter("xplatform_edge_handshake_timeouts", "Sockets closed because their "
                                          "request was not answered within the handshake deadline.", registry=r)
        self.accept_errors = Counter("xplatform_edge_accept_errors", "accept() calls that failed (out of file "
                                     "descriptors or memory).", registry=r)
        # counted per message on the hot path: LoopCounter (no lock; loop thread only)
        frames_in = LoopCounter("xplatform_edge_frames_in", "Frames received from clients, by kind.", ["kind"],
                                registry=r)
        self.frames_in = {k: frames_in.labels(k) for k in FRAMES_IN}
        frames_out = LoopCounter("xplatform_edge_frames_out", "Frames sent to clients, by kind.", ["kind"], registry=r)
        self.frames_out = {k: frames_out.labels(k) for k in FRAMES_OUT}
        closes = Counter("xplatform_edge_closes", "Connections closed, by reason.", ["reason"], registry=r)
        self.closes = {k: closes.labels(k) for k in CLOSE_REASONS}
        self.coalesced = LoopCounter("xplatform_edge_coalesced_dropped",
                                     "Coalesced updates replaced by a newer one before they were sent.", registry=r)
        self.heartbeat_rtt = Histogram("xplatform_edge_heartbeat_rtt_seconds",
                                       "Round trip of the edge's websocket ping to the client's pong.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.client_latency = Histogram("xplatform_edge_client_latency_seconds",
                                        "Round trips reported by clients (LATENCY frames).",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.shed = Counter("xplatform_edge_shed_messages", "Client messages refused with 'overloaded' while "
                            "their entity was behind (load shedding; the entity never saw them).", registry=r)
        self.oldest_in_flight = Gauge("xplatform_edge_oldest_in_flight_seconds", "Age of the oldest client message "
                                      "this edge awaits a reply for (load shedding starts, for its entity, over "
                                      "the configured bound).", registry=r)
        self.round_trip = Histogram("xplatform_edge_round_trip_seconds",
                                    "From a MSG's arrival at the edge to its durable reply back at the edge.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.hops = LoopHistogram("xplatform_edge_hop_seconds", "A client MSG's round trip hop by hop, each hop on "
                                  "one process's clock: transport (edge -> node and back: the round trip minus "
                                  "the node's time), queue, handler, append (measured by the node), client_write "
                                  "(reply at the edge -> its frame handed to the socket). edge/hops.py.", "hop",
                                  EDGE_HOPS, HOP_BUCKETS, registry=r)
        self.slow_messages = LoopCounter("xplatform_edge_slow_messages", "Client messages whose in-system round trip "
                                         "exceeded the slow-message threshold (every one counted; their log lines "
                                         "are sampled).", registry=r).labels()  # exposed at 0 from the start
        reads = Counter("xplatform_edge_reads", "Queries of the read API (GET /read/...), by outcome.", ["outcome"],
                        registry=r)
        self.reads = {k: reads.labels(k) for k in READ_OUTCOMES}
        self.read_duration = Histogram("xplatform_edge_read_duration_seconds", "From a read's arrival to its "
                                       "answer, waits for consistency included.", buckets=LATENCY_BUCKETS, registry=r)
        self.reads_waiting = Gauge("xplatform_edge_reads_waiting", "Reads waiting for their consistency "
                                   "(a position token or max_lag_ms) now.", registry=r)
        self.serial_lines = Gauge("xplatform_edge_serial_lines", "Serial lines open now (a configured line that "
                                  "is not: its adapter is gone; edge/serial_line.py reopens it).", registry=r)
        serial_errors = Counter("xplatform_edge_serial_errors", "Serial frames answered with an error frame "
                                "(nothing delivered), by code.", ["code"], registry=r)
        self.serial_errors = {k: serial_errors.labels(k) for k in SERIAL_ERRORS}

    def exposition(self) -> bytes:
        """Text exposition format for ``/metrics``."""
        return generate_latest(self.registry)
