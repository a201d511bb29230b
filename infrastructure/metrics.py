"""Prometheus metrics of a state node (``xplatform_node_*``).

Each node gets its own ``CollectorRegistry`` (no module-level singletons: several nodes can
live in one test process). Labels are bounded: category (registered classes) and outcome
(ok, duplicate, or an error code from :mod:`domain.errors`). Labelled children are cached,
because ``.labels()`` costs more than the increment on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from infrastructure.gc_pauses import GcPauses

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
HANDOFF_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HOP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Per-hop latencies: from 100 µs (a handler, an in-process hop) to the 5 s ask timeout."""
NODE_HOPS = ("queue", "handler", "append")
"""Hops a state node measures of each message it processes, on its own clock: ``queue`` -
node receive until the entity's handler starts (waiting for an activation, or behind the
entity's earlier messages); ``handler`` - the handler itself; ``append`` - handler end
until its events (or, without events, the entity's earlier ones) are durable: waiting for
the group commit in flight, then its own. The REPLY envelope carries them to the edge."""


class LoopCount:
    """One child of :class:`LoopCounter`: a plain number (see there)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopCounter(Collector):
    """A Prometheus counter for the hot path, counted by one thread (the event loop): its
    children are plain numbers read at scrape time, where ``Counter.inc`` takes a lock and
    checks its argument (measured at 10k bids/s: ~5% of the loop thread, several counts per
    message). Same exposition as a Counter (``<name>_total``, labels); loop thread only."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], LoopCount] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> LoopCount:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = LoopCount()
        return child

    def inc(self, amount: float = 1.0) -> None:
        """An unlabelled counter's increment."""
        self.labels().inc(amount)

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class LoopHistogramChild:
    """One child of :class:`LoopHistogram`: plain per-bucket counts (see there)."""

    __slots__ = ("bounds", "counts", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: over the largest bound (+Inf only)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` (seconds) ``times`` times (a write batch's replies: once per reply)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.count += times
        self.sum += value * times


class LoopHistogram(Collector):
    """A Prometheus histogram for the hot path, observed by one thread (the event loop):
    plain lists and a C bisect where ``Histogram.observe`` takes a lock and walks its
    buckets in Python (several hops per message would cost more than the message's own
    bookkeeping). Same exposition as a Histogram (``_bucket``/``_count``/``_sum``); children
    are created up front for label values from a fixed list (a series exists from the first
    scrape), loop thread only."""

    def __init__(self, name: str, documentation: str, labelname: str, values: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelname = labelname
        self.buckets = tuple(float(b) for b in buckets)
        self.children = {value: LoopHistogramChild(self.buckets) for value in values}
        self._ordered = tuple(self.children.values())
        if registry is not None:
            registry.register(self)

    def observe_each(self, values: Sequence[float]) -> None:
        """One value per label value, in the order of ``values`` given at construction: a
        message's hops in one call."""
        for child, value in zip(self._ordered, values, strict=False):
            child.counts[bisect_left(child.bounds, value)] += 1
            child.count += 1
            child.sum += value

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=[self.labelname])

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.labelname])
        for value, child in self.children.items():
            cumulative, running = [], 0
            for bound, count in zip(self.buckets, child.counts, strict=False):
                running += count
                cumulative.append((str(bound), float(running)))
            cumulative.append(("+Inf", float(child.count)))
            family.add_metric([value], cumulative, child.sum)
        yield family


class NodeMetrics:
    """Metrics of one state node. See the module docstring."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = LoopCounter("xplatform_node_messages", "Messages processed by entities, by outcome.",
                                    ["category", "outcome"], registry=r)
        self.append_batch_events = Histogram("xplatform_node_append_batch_events",
                                             "Events per group-commit append.", buckets=BATCH_BUCKETS, registry=r)
        self.append_duration = Histogram("xplatform_node_append_duration_seconds",
                                         "Duration of one group-commit append (durable).",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.append_conflicts = Counter("xplatform_node_append_conflicts",
                                        "Stream writes refused for an unexpected stream version.", registry=r)
        self.entities_active = Gauge("xplatform_node_entities_active", "Entities resident in memory.", registry=r)
        self.passivations = Counter("xplatform_node_entities_passivated", "Idle entities removed from memory.",
                                    registry=r)
        self.activation_duration = Histogram("xplatform_node_activation_duration_seconds",
                                             "Time to load an entity (snapshot + tail).",
                                             buckets=LATENCY_BUCKETS, registry=r)
        self.snapshots = Counter("xplatform_node_snapshots", "Snapshots written.", registry=r)
        self.released = Counter("xplatform_node_entities_released",
                                "Resident entities dropped without writing because their shard left this node "
                                "(shard_moved) or came back at a newer epoch (stale_epoch: reloaded behind a new "
                                "takeover marker).", ["reason"], registry=r)
        self.takeovers = Counter("xplatform_node_takeovers", "Entities this node took over from another owner (its "
                                 "takeover marker durable; a refused marker is not counted), by where their state "
                                 "came from: warm (a hot mirror, then the store's tail after it) or cold (the store: "
                                 "snapshot and events).",
                                 ["kind"], registry=r)
        hops = LoopHistogram("xplatform_node_hop_seconds", "Time a message spent in each hop inside this node, "
                             "on the node's clock: queue (node receive -> handler start), handler, append "
                             "(handler end -> durable). infrastructure/metrics.py NODE_HOPS.", "hop", NODE_HOPS,
                             HOP_BUCKETS, registry=r)
        self.hops = hops
        self._message_children: dict[tuple[str, str], LoopCount] = {}
        GcPauses.install().register(r)  # collector pauses are every latency's tail: shown beside them

    def message(self, category: str, outcome: str) -> None:
        key = (category, outcome)
        child = self._message_children.get(key)
        if child is None:
            child = self._message_children[key] = self.messages.labels(category, outcome)
        child.inc()

    def exposition(self) -> bytes:
        """Text exposition format, for a /metrics endpoint or ``xplatform status``."""
        return generate_latest(self.registry)


class ProxyMetrics:
    """Metrics of state proxies' calls to their primaries (``xplatform_proxy_*``), on the
    registry of the node that runs them. Bounded labels: category (registered classes),
    kind (pull, command), outcome (ok or a connector error code)."""

    CIRCUIT = {"closed": 0, "open": 1, "half_open": 2}

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter("xplatform_proxy_calls", "Calls of state proxies to their primaries, by outcome "
                             "(ok, primary_timeout, primary_unavailable, primary_refused, circuit_open, no_connector).",
                             ["category", "kind", "outcome"], registry=r)
        self.call_duration = Histogram("xplatform_proxy_call_duration_seconds", "Duration of a proxy's call "
                                       "(a pull, or a command and its pull), retries included.", ["kind"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("xplatform_proxy_calls_in_flight", "Calls to primaries running now.", registry=r)
        self.circuit_state = Gauge("xplatform_proxy_circuit_state", "Circuit breaker of each category's primary: "
                                   "0 closed, 1 open (calls refused), 2 half-open (one trial call).", ["category"],
                                   registry=r)
        self.circuit_opened = Counter("xplatform_proxy_circuit_opened", "Times a primary's circuit breaker opened.",
                                      ["category"], registry=r)

    def circuit(self, category: str, state: str) -> None:
        self.circuit_state.labels(category).set(self.CIRCUIT[state])
        if state == "open":
            self.circuit_opened.labels(category).inc()


class MirrorMetrics:
    """Metrics of a hot mirror (``xplatform_mirror_*``, see infrastructure/runtime/mirrors.py). Set from the
    mirror's feed thread (prometheus_client's metrics are thread-safe); no labels: one mirror per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.entities = Gauge("xplatform_mirror_entities", "Entities held in the mirror now.", registry=r)
        self.bytes = Gauge("xplatform_mirror_bytes", "Estimated memory of the mirrored entities: the size of their "
                           "encoded state (msgpack), re-estimated as they change; Python objects take a few times "
                           "more.", registry=r)
        self.lag = Gauge("xplatform_mirror_lag_events", "Events of the mirrored categories stored after the "
                         "mirror's position, counted up to a cap (mirrors.LAG_CAP): how far the feed is behind.",
                         registry=r)
        self.applied = Counter("xplatform_mirror_events_applied", "Events applied to mirrored entities.", registry=r)
        self.loaded = Counter("xplatform_mirror_entities_loaded", "Entities read from the store into the mirror "
                              "(first seen, or back within the budget after an eviction).", registry=r)
        self.evicted = Counter("xplatform_mirror_entities_evicted", "Entities the mirror let go: budget (least "
                               "recently updated first), dropped (their shard is no longer stood by).",
                               ["reason"], registry=r)
        self.promoted = Counter("xplatform_mirror_promotions", "Entities handed from the mirror to this node's "
                                "runtime on activation: warm (the store's tail applied after the mirror's version) "
                                "or discarded (the mirror was ahead of the store, or its last event differs from "
                                "the stored one: impossible unless something is wrong; logged as an error and "
                                "loaded cold).", ["outcome"], registry=r)


class ClusterMetrics:
    """Cluster metrics of a node or edge (``xplatform_cluster_*``): shards owned and in the map, handoffs,
    ZooKeeper/ownership state, routing misses, handoff durations, transport lane buffers
    (bytes) and queues (envelopes); transport authentication failures and refused messages
    (``xplatform_transport_*``). Bounded labels: category, ownership state, direction
    (gained/lost), lane (configured), side (client/server), reason (fixed lists)."""

    STATES = ("connecting", "serving", "fenced", "lost", "draining")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.shards_owned = Gauge("xplatform_cluster_shards_owned", "Shards this node owns now.", ["category"], registry=r)
        self.shards_standby = Gauge("xplatform_cluster_shards_standby", "Shards this node stands by for now (keeps "
                                    "their entities mirrored for a warm takeover).", ["category"], registry=r)
        self.shards = Gauge("xplatform_cluster_shards", "Shards of each category in the shard map this process "
                            "holds (every node and edge reports the same count): the serving nodes' "
                            "xplatform_cluster_shards_owned sum to it when every shard is served.", ["category"],
                            registry=r)
        self.handoffs = Counter("xplatform_cluster_handoffs", "Shards gained or lost by this node in map changes.",
                                ["direction"], registry=r)
        self.map_version = Gauge("xplatform_cluster_map_version", "Version (epoch) of the shard map in use.", registry=r)
        self.state = Gauge("xplatform_cluster_ownership_state", "1 for the current ownership state (ZooKeeper "
                           "session: serving, fenced while suspended, lost, draining).", ["state"], registry=r)
        self.routing_misses = Counter("xplatform_cluster_routing_misses", "Messages that reached a node not owning "
                                      "their shard, or found no owner (answered retry).", registry=r)
        self.handoff_duration = Histogram(
            "xplatform_cluster_handoff_duration_seconds",
            "Per shard handed off. lost: from the map change (or drain start) reaching this node until "
            "it stopped serving the shard with its pending writes durable. gained: from the map change "
            "reaching this node until it accepts the shard's messages (entities then activate on demand: "
            "xplatform_node_activation_duration_seconds).", ["direction"], buckets=HANDOFF_BUCKETS, registry=r)
        self.lane_buffer = Gauge("xplatform_cluster_lane_buffer_bytes", "Bytes waiting in transport link buffers.",
                                 ["lane"], registry=r)
        self.lane_queue = Gauge("xplatform_cluster_lane_queue_messages",
                                "Envelopes written to transport links but not yet sent, per lane. side=client: "
                                "links this process opened (deliveries to owners); side=server: links it accepted "
                                "(replies and outbound effects to edges and peers).", ["lane", "side"], registry=r)
        self.auth_failures = Counter("xplatform_transport_auth_failures", "Transport links refused at the handshake. "
                                     "side=server: a peer that connected to us did not prove itself; side=client: "
                                     "a node we dialled did not. reason: infrastructure/transport/auth.py "
                                     "AUTH_FAILURE_REASONS.", ["side", "reason"], registry=r)
        self.refused_messages = Counter("xplatform_transport_refused_messages", "Deliveries an authenticated peer "
                                        "may not make, refused without delivery. reason: infrastructure/transport/"
                                        "server.py REFUSAL_REASONS.", ["reason"], registry=r)
        self._lanes_seen: set[tuple[str, str]] = set()

    def record_lanes(self, side: str, queued: dict[str, int]) -> None:
        """Set the queue depth of every lane of ``side``; lanes seen before and now idle go to 0."""
        for key in self._lanes_seen - {(lane, side) for lane in queued}:
            if key[1] == side:
                self.lane_queue.labels(*key).set(0)
        for lane, depth in queued.items():
            self._lanes_seen.add((lane, side))
            self.lane_queue.labels(lane, side).set(depth)
