"""Every setting of the platform, declared in one place with the reason for its default.

Settings come from environment variables ``XPLATFORM_<NAME>`` (upper case) or from
keyword arguments; a malformed or contradictory value fails at start with a
:class:`~infrastructure.errors.ConfigurationError` naming the variable, never later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from infrastructure.errors import ConfigurationError

STORES = ("sqlite", "postgres", "memory", "eventstoredb")
LOG_FORMATS = ("text", "json")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
SAMPLE_ENTITIES = "domain.auction:ENTITIES,domain.presence:ENTITIES,domain.stock:ENTITIES"
SAMPLE_PROJECTIONS = "projections.auction:PROJECTIONS"
"""The auction's sample read models (a board of every lot, a per-bidder summary): the default
of ``projections``, what ``xplatform projector`` runs unless told otherwise."""
LOCAL_MONGO_URI = "mongodb://127.0.0.1:27017/"
"""MongoDB's standard local port: what the projector uses when no XPLATFORM_MONGO_URI is set."""
"""The three sample domains' topics (the auction: one hot Lot, many Bidders; presence: 1M+ small
UserStates and their Rooms; stock: the StockLevel state proxy and Orders using it): the default
of ``entities``, so ``xplatform run`` serves both demo pages (the auction page shows a lot's
stock through the proxy), and what ``xplatform demo`` serves (it drives the auction)."""


def _setting(default: Any, why: str) -> Any:
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class Settings:
    """Platform settings. Each field's ``why`` metadata is the reason for its default."""

    entities: str = _setting(SAMPLE_ENTITIES, "Comma-separated module:ATTRIBUTE topics of the entity classes "
                             "this platform serves (an attribute: an Entity subclass or a list/tuple of them), "
                             "read by every process (state nodes serve them, edges learn their categories). "
                             "The three samples (auction, presence, stock) by default, so the README's commands and both "
                             "demo pages run as written; "
                             "a wrong topic stops the process at start.")
    store: str = _setting("sqlite", "Embedded default: one file, no server to run. 'postgres' for "
                          "a shared server; 'memory' for tests and the sandbox; 'eventstoredb' for "
                          "production (EventStoreDB/KurrentDB cluster, see eventstoredb_uri).")
    data_dir: str = _setting(".xplatform-data", "Where the SQLite file lives; relative to the working "
                             "directory so a checkout's demo data stays with it.")
    postgres_host: str = _setting("127.0.0.1", "Local server by default; set for a remote one.")
    postgres_port: int = _setting(5432, "PostgreSQL's standard port.")
    postgres_user: str = _setting("xplatform", "A dedicated role, not the superuser.")
    postgres_password: str = _setting("", "Empty: rely on the server's local trust/peer auth unless set.")
    postgres_dbname: str = _setting("xplatform", "One database per platform installation.")
    eventstoredb_uri: str = _setting("", "No default on purpose: a production store must be named "
                                     "(kurrentdb://node1:2113,node2:2113,node3:2113 or kurrentdb+discover://<dns name>:2113 "
                                     "for a cluster; "
                                     "kurrentdb://127.0.0.1:2113?tls=false for a local node or the emulator). "
                                     "Also read from EVENTSTOREDB_URI, the variable the eventsourcing "
                                     "adapter and our tests use. TLS is on unless the URI says tls=false.")
    eventstoredb_tls_ca_file: str = _setting("", "Self-hosted clusters use a private CA the system trust "
                                             "store does not know; name its PEM file here (mounted from a "
                                             "secret). Empty: the system roots verify the server.")
    eventstoredb_username: str = _setting("", "Credentials kept out of the URI so they can come from a "
                                          "secret; empty uses the URI's user:password@ part, if any. "
                                          "Refused with tls=false: the client only sends them over TLS.")
    eventstoredb_password: str = _setting("", "See eventstoredb_username.")
    eventstoredb_deadline_s: float = _setting(5.0, "Per call. An append of a full group commit takes well "
                                              "under a second on a healthy cluster; 5 s rides out a short "
                                              "stall, and after it the batch fails (its messages get a "
                                              "retryable error) instead of holding the node.")
    eventstoredb_retries: int = _setting(2, "Extra attempts for reads, and for appends whose outcome is "
                                         "unknown (deadline, dropped connection) - safe because each event's "
                                         "ID is derived from its content, so the server treats a re-sent "
                                         "append as a duplicate. Two keep the worst case near the 5 s ask "
                                         "timeout's order of magnitude instead of far beyond it.")
    eventstoredb_stream_prefix: str = _setting("", "Prepended to every stream name, so several installations "
                                               "(staging, test runs) can share one cluster without seeing "
                                               "each other's streams. Empty in production.")
    # ---- projections (`xplatform projector`, `xplatform projection ...`; the read models: see mongo_uri)
    projector_batch_size: int = _setting(500, "Events per MongoDB write round trip at most: 500 small updates "
                                         "are one ~100 KB bulk write, far under MongoDB's limits, and a live "
                                         "projector rarely has more waiting (projections/catchup.py).")
    projector_max_in_flight: int = _setting(2000, "Events read (or delivered by a persistent subscription) and "
                                            "not yet applied, per projection: bounds memory while MongoDB is "
                                            "slower than the store (four batches of read-ahead).")
    projector_cache_documents: int = _setting(10_000, "Documents (and stream versions) a catch-up projector "
                                              "(or a persistent-subscription consumer while it is its group's "
                                              "only one: projections/persistent.py) remembers between batches so "
                                              "a batch reads only what it has not seen (two read round trips "
                                              "saved per batch; projections/model_cache.py): 10k small documents "
                                              "are a few MB. 0 turns it off.")
    projector_message_timeout_s: float = _setting(30.0, "Persistent subscriptions: an event not acked in this "
                                                  "time is delivered again (the server's default): long enough "
                                                  "for a slow MongoDB write, short enough that a hung "
                                                  "projector's events move on.")
    projector_max_retry_count: int = _setting(10, "Persistent subscriptions: deliveries of an event (nacked or "
                                              "timed out) before the server parks it, so one poison event cannot "
                                              "stall its group (the server's default).")
    projector_lag_interval_s: float = _setting(5.0, "How often a projector (and xplatform run) samples each read model's lag for "
                                               "its gauges: one read of the pending events (up to 10k) per "
                                               "projection per interval, cheap, and finer than a 15 s scrape.")
    shards_per_category: int = _setting(64, "Fixed per category for the life of the data (the shard "
                                        "function must never move an entity); 64 spreads over up to "
                                        "~16 nodes with room to rebalance.")
    snapshot_every: int = _setting(100, "Activation reads at most ~100 events after a snapshot: ~3 ms "
                                   "at the measured 30k events/s replay, inside the 5 ms activation budget.")
    passivate_after_s: float = _setting(120.0, "Idle entities leave memory after two minutes: long "
                                        "enough that an active session's entities stay warm, short "
                                        "enough that 1M+ users do not all stay resident.")
    passivate_sweep_s: float = _setting(5.0, "How often idle entities are looked for; the sweep "
                                        "stops at the first recently used entity, so it is cheap.")
    event_loop: str = _setting("auto", "The event loop of every serving process (run and its edge workers, "
                               "state-node, edge, projector). 'auto': uvloop when installed (a dependency on "
                               "Linux), else asyncio's own. uvloop's socket writes and loop iterations are C: "
                               "measured on the hot lot (1,000 viewers at 20 Hz, run --workers 1, alternated with "
                               "asyncio on a quiet machine), ~3 % less server CPU at 10,000 bids/s and ~2-4 % more "
                               "bids/s at the limit; the handlers' Python dominates either way. 'asyncio' to rule "
                               "it out when chasing a loop-level bug; "
                               "'uvloop' to fail at start if it is missing.")
    gil_switch_interval_ms: float = _setting(1.0, "Interpreter switch interval of a process hosting a state "
                                             "node (sys.setswitchinterval). The group-commit writer thread "
                                             "releases the GIL around each SQLite/PostgreSQL call and must win it "
                                             "back from the busy event loop, which keeps it up to this long: at "
                                             "Python's 5 ms default, appends of a hot node took 25 ms on average "
                                             "(up to 250 ms) and every reply waited on them; at 1 ms, p99 20 ms "
                                             "(measured on a 10k bids/s hot lot). Lower costs more switching.")
    max_batch_events: int = _setting(5000, "Upper bound of one group commit: keeps one transaction "
                                     "(and the latency of the messages in it) bounded under overload.")
    ask_timeout_s: float = _setting(5.0, "How long a caller of the in-process transport waits for a "
                                    "reply before giving up (the message may still be applied).")
    gc_gen0_threshold: int = _setting(2_000, "Python's default (700) runs a young collection every few "
                                      "messages (measured 11k events/s with it vs 13-14k). Much higher "
                                      "thresholds make each pause long (50k: 60-90 ms pauses); 2,000 with the "
                                      "older generations at Python's ratios measured in-process reply p99 "
                                      "1.7-2.0 ms at 2k msg/s. 0 keeps Python's default.")
    gc_reclaim_every_s: float = _setting(600.0, "Survivors of older-generation collections are frozen (never scanned "
                                         "again): with 1,100 websockets on a hot lot, full collections took up "
                                         "to 230 ms about once a second, every reply waiting. Cycles among frozen "
                                         "objects are reclaimed by one deliberate full collection this often. "
                                         "0 = no freezing (Python's own collector). See infrastructure/gc_tuning.py.")
    gc_reclaim_growth: float = _setting(0.5, "Also reclaim when the frozen objects grew by this share since "
                                        "the last reclaim: connections that close after being frozen leave cycles "
                                        "(~30k objects per 1,000 websockets opened and closed), and under churn ten "
                                        "minutes of them is hundreds of MB. Each reclaim is one full collection "
                                        "(~100-200 ms with 500k objects): a larger share means fewer pauses, more "
                                        "memory. 0 = time only.")
    node_id: str = _setting("node-1", "Name of this state node in metrics and logs.")
    log_level: str = _setting("INFO", "Operators see starts, stops and errors, not every message.")
    log_format: str = _setting("text", "'text': one readable line per record, for a terminal. 'json': one JSON "
                               "object per line with the node, entity and message IDs as fields, for a log "
                               "pipeline (Loki, Elasticsearch, CloudWatch) to index without parsing prose. "
                               "Every process reads it; see infrastructure/logformat.py.")
    # ---- edges (public websocket edge, internal device edge, JWT); parsed by edge/config.py
    edge_host: str = _setting("127.0.0.1", "Dev mode listens on loopback only; set 0.0.0.0 behind a proxy "
                              "or load balancer in production.")
    edge_port: int = _setting(8080, "A common unprivileged HTTP port; 0 picks a free one (tests).")
    edge_allowed_origins: str = _setting("", "Comma-separated public browser Origins allowed to open websockets "
                                         "(https://app.example.com), '*' any. Empty allows only loopback origins "
                                         "on the edge's own port (the dev server's demo page): the Host header is "
                                         "never trusted for this, since a DNS-rebinding page names itself there. "
                                         "Requests without Origin (non-browsers) rely on the token alone.")
    edge_max_frame_bytes: int = _setting(65_536, "64 KiB covers any sane client message (the sample's are "
                                         "<100 B) while one frame cannot make the edge buffer megabytes "
                                         "(over it: close 1009; also the internal edge's body limit).")
    edge_rate_per_s: float = _setting(50.0, "Per connection: a person produces a few messages per second; "
                                      "50/s sustained is far above that and far below a flood (close 1008).")
    edge_rate_burst: float = _setting(100.0, "Frames a connection may send at once (page load, reconnect "
                                      "resend) before the sustained rate applies.")
    edge_send_queue_bytes: int = _setting(1 << 20, "Bytes the edge holds for one client beyond its socket buffers "
                                          "(1 MiB, Centrifugo's default). Over it, broadcast pushes to that client "
                                          "are dropped (counted; coalesced state still arrives, newest wins), its "
                                          "replies still queue, and the edge stops reading its frames until it "
                                          "drains. A reading client never gets there; memory per client stays "
                                          "about twice this at most.")
    edge_slow_consumer_s: float = _setting(5.0, "A client whose socket is full (the kernel takes no more) and "
                                           "takes nothing at all for this long is closed 1013: mobile handovers "
                                           "stall 1-3 s; a client reading anything at all is never closed.")
    edge_max_connections_per_user: int = _setting(32, "Connections one user (token sub) may hold on one edge: a "
                                                  "person's tabs and devices are a handful; more is a script "
                                                  "(HTTP 429 before the upgrade). 0 = no cap (benchmarks).")
    edge_max_connections_per_ip: int = _setting(0, "Connections from one client address: off by default because "
                                                "behind a load balancer, NAT or carrier-grade NAT thousands of "
                                                "users share an address. Set it (e.g. 256) when the edge sees "
                                                "client addresses directly (HTTP 429).")
    edge_user_rate_per_s: float = _setting(100.0, "Frames per second one user may send over all its connections: "
                                           "twice the per-connection rate, so a second tab works and eight "
                                           "connections do not multiply a flood by eight (close 1008). 0 = off.")
    edge_user_rate_burst: float = _setting(200.0, "Frames one user may send at once over all its connections "
                                           "(two tabs loading).")
    edge_ip_rate_per_s: float = _setting(0.0, "Frames per second from one client address over all its "
                                         "connections; off by default for the same reason as "
                                         "edge_max_connections_per_ip (close 1008).")
    edge_ip_rate_burst: float = _setting(0.0, "Frames one address may send at once; at least 1 when "
                                         "edge_ip_rate_per_s is set.")
    edge_max_sockets: int = _setting(0, "Open sockets of the public listener (websockets, HTTP, not yet "
                                     "upgraded) over which upgrades are refused with HTTP 503. 0 = 80% of the "
                                     "open-file limit (nofile), so accept() never fails for lack of descriptors "
                                     "while the store, cluster links and refusals still get theirs; a value at "
                                     "or over nofile fails at start.")
    edge_handshake_timeout_s: float = _setting(10.0, "A socket that has not sent its complete HTTP request (the "
                                               "upgrade) within 10 s of connecting, or its next one within 10 s of "
                                               "an answer, is closed: a real client sends it at once; half-open "
                                               "sockets would otherwise hold descriptors forever.")
    edge_max_in_flight: int = _setting(256, "Messages of one connection awaiting their replies before the edge "
                                       "stops reading that socket: a client that far ahead of its entity is "
                                       "held back by TCP instead of filling the server's memory (backpressure). "
                                       "Why 256: a durable reply takes one to two group commits (an fsync each, "
                                       "2-10 ms here), and a client streaming 10k messages/s (the hot-lot "
                                       "benchmark's bidders) has ~100 unanswered; at 64 the edge paused it mid-"
                                       "stream and other clients' later messages overtook its tail (35% of a hot "
                                       "lot's bids refused as outbid). Memory stays bounded by "
                                       "edge_max_in_flight_bytes.")
    edge_max_in_flight_bytes: int = _setting(1_048_576, "Payload bytes of one connection awaiting replies before "
                                             "the edge stops reading it (with edge_max_in_flight, whichever "
                                             "comes first): 1 MiB per connection at most, however large its "
                                             "frames (256 frames of 64 KiB would be 16 MiB).")
    edge_shed_after_ms: float = _setting(250.0, "A client message is refused with a retryable 'overloaded' reply "
                                         "while the oldest message this edge sent to the same entity has waited "
                                         "longer than this for its reply: the platform is behind for that entity "
                                         "(its queue, its durable writes, its node). A healthy hot lot answers in "
                                         "a few ms and a long 20 Hz fan-out tick delays replies by tens of ms, so "
                                         "250 ms is only reached when really behind, and still under a person's "
                                         "patience (the client retries with backoff). 0 = never shed. See "
                                         "edge/overload.py.")
    edge_coalesce_hz: float = _setting(20.0, "Coalesced state updates leave at most 20 times a second per key "
                                       "(Colyseus patches at 20 Hz): 1,000 updates/s x 1,000 viewers become "
                                       "20k frames/s, within one core's ~115k frames/s. 0 turns coalescing "
                                       "off (every update a frame: benchmarks).")
    edge_slow_message_ms: float = _setting(100.0, "A client message whose in-system round trip (its arrival at "
                                           "the edge until its durable reply is back there) takes longer is "
                                           "counted and logged with its per-hop breakdown and IDs (edge/hops.py): "
                                           "100 ms is the seed's reply budget and the p99 alert's line, so every "
                                           "line is a message that broke it. 0 = never.")
    edge_slow_log_interval_s: float = _setting(1.0, "At most one slow-message line per this many seconds per edge "
                                               "process, each saying how many went unlogged since the previous one "
                                               "(every one is counted in xplatform_edge_slow_messages_total): when "
                                               "the platform is behind every message is slow, and a line each would "
                                               "flood the logs and slow the edge further; one a second is still a "
                                               "steady sample to read. 0 = a line for every slow message.")
    edge_workers: int = _setting(0, "Edge worker processes `xplatform run` starts beside its state node "
                                 "(ops/wiring/workers.py). 0: one process - the fewest moving parts, and "
                                 "the lowest round trip (no hop between edge and node). On a machine with "
                                 "several cores a hot entity's fan-out and its handlers compete for one "
                                 "core in one process; 1 worker per spare core gives each its own (about "
                                 "twice the bids/s of a hot lot on 2 cores, README 'Performance').")
    edge_read_wait_ms: float = _setting(5000.0, "The longest a read of the query API (GET /read/...) waits for the "
                                        "consistency it asked for (a position token, max_lag_ms) before 504 "
                                        "consistency_timeout; a request may ask for less (wait_ms). A live projector "
                                        "is tens of ms behind; one seconds behind is catching up or stopped, and a "
                                        "person waits about this long before giving up anyway.")
    edge_read_max_limit: int = _setting(200, "Most documents one list read returns (limit=N; more: 400). Bounds "
                                        "the edge's memory and the database's work per request; page by filters.")
    edge_read_max_waiting: int = _setting(1000, "Reads waiting for their consistency at once, per edge; over it a "
                                          "read that must wait gets 503 busy (retryable). Each waiter polls the "
                                          "database every few ms, so this bounds that load while a projector is "
                                          "stopped.")
    mongo_uri: str = _setting("", "MongoDB of the read models (a replica set URI in production: write concern "
                              "majority, see projections/mongo.py). Also read from MONGO_URI. Empty: `xplatform run` "
                              "starts an embedded secantusdb server (a separate process; pip extra 'readmodels'), "
                              "and `xplatform projector`/`projection` use MongoDB's local default port "
                              "(LOCAL_MONGO_URI: development).")
    mongo_database: str = _setting("xplatform", "One database per platform installation; each projection's "
                                   "collections are named after it inside.")
    projections: str = _setting(SAMPLE_PROJECTIONS, "Comma-separated module:ATTRIBUTE topics of the projection "
                                "classes (a Projection subclass or a list/tuple of them) that `xplatform run` and "
                                "`xplatform projector` run, like entities: the auction samples by default, so the "
                                "README's commands show their board; a wrong topic stops the process at start.")
    run_read_models: int = _setting(1, "1: `xplatform run` runs the read models too (MongoDB or an embedded "
                                    "secantusdb, the projections caught up in-process, the query API on its edge), "
                                    "so the demo shows them with no set-up. 0: off (benchmarks of the write path, "
                                    "where projecting every event would share the CPU).")
    run_sample_warehouse: int = _setting(1, "1: `xplatform run` starts the sample warehouse (ops/warehouse.py, a "
                                         "child process on a free loopback port) as StockLevel's primary when it "
                                         "serves StockLevel and XPLATFORM_PROXY_PRIMARIES names none for it, so the "
                                         "demo page's stock card pulls a value with no set-up. 0: never (a pull then "
                                         "ends no_connector). Only `run`: a cluster's primaries are always named.")
    edge_heartbeat_s: float = _setting(20.0, "Websocket ping every 20 s (under common 30-60 s proxy idle "
                                       "timeouts); no frame for 2.5 intervals closes a dead peer.")
    edge_close_timeout_s: float = _setting(2.0, "How long a close waits for the client's close frame (and a "
                                           "slow consumer's buffers) before the socket is aborted.")
    edge_dev_tokens: int = _setting(0, "1 serves GET /dev/token (ES256 key pair made at start; tokens for "
                                    "any sub/role). Off by default: it hands out identities; `xplatform run` "
                                    "(dev mode) turns it on.")
    edge_dev_tokens_on_network: int = _setting(0, "Dev tokens are refused at start on a non-loopback edge_host: "
                                               "anyone who reaches the port could be anyone. 1 (or `xplatform run "
                                               "--dev-tokens-on-network`) allows it, with a warning, for a trusted "
                                               "lab network; /dev/token then also answers Host headers that are IP "
                                               "literals (never other names: DNS rebinding).")
    edge_device_secret_file: str = _setting("", "File holding the secret (>= 32 bytes) device connection IDs on "
                                            "the internal edge are an HMAC of, so nobody can compute another "
                                            "device's ID; the same file on every edge (IDs stay stable across "
                                            "edges). Required with edge_internal_networks unless dev tokens are "
                                            "on (dev mode makes one per process).")
    edge_internal_networks: str = _setting("", "Device networks of the internal edge, 'CIDR=device_class,...'. "
                                           "Empty disables it: behind a reverse proxy every client looks like "
                                           "loopback, so no network is trusted until named.")
    edge_internal_port: int = _setting(-1, "Where the internal device edge listens. -1: on the public edge's port "
                                       "(/internal/... beside /ws/...), as before this setting existed, so existing "
                                       "deployments and `xplatform run` keep working. 0 (a free port) or N: on a "
                                       "listener of its own at edge_internal_host, and the public port serves no "
                                       "device routes (404): device networks need not reach the public port nor "
                                       "the public the device port. Only with edge_internal_networks.")
    edge_internal_host: str = _setting("127.0.0.1", "Address of the internal edge's own listener (edge_internal_port "
                                       ">= 0). Loopback, like edge_host and metrics_host: nothing is opened to a "
                                       "network until an operator names the interface the devices reach (e.g. the "
                                       "plant network's address, or 0.0.0.0 with a firewall).")
    edge_serial_ports: str = _setting("", "Serial lines (UART) the edge serves devices on, 'PATH=CLASS:DEVICE_ID,...' "
                                      "(/dev/ttyUSB0=sensor:boiler-1): each port is one device of that class and ID, "
                                      "configured here because nothing a line sends is trusted for identity "
                                      "(edge/serial_line.py; framing in edge/PROTOCOL.md). Empty: none.")
    edge_serial_baud: int = _setting(115_200, "Bits per second of every serial line: the fastest rate every common "
                                     "USB-serial adapter and microcontroller UART runs reliably (8N1).")
    edge_internal_idle_s: float = _setting(60.0, "A device that neither pushes nor pulls for a minute is "
                                           "disconnected (the entity starts its grace period).")
    edge_internal_buffer: int = _setting(1000, "Outbound messages kept per device for pulls; older ones are "
                                         "counted as missed (bounded memory per device).")
    edge_internal_max_wait_s: float = _setting(25.0, "Longest long-poll: under the common 30 s proxy timeout.")
    proxy_primaries: str = _setting("", "Where each state proxy category's primary is, 'Category=http://host:port/"
                                    "path,...': the HTTP connector calls GET <url>/<entity id> and POST <url>/<entity "
                                    "id>/commands (infrastructure/proxies/http.py). Empty: no proxies (their calls "
                                    "end with no_connector).")
    proxy_request_timeout_s: float = _setting(2.0, "One HTTP request to a primary; the proxy's own timeout bounds "
                                              "the whole call (retries included). 2 s: a healthy primary answers in "
                                              "milliseconds, and a stuck one must leave room for a retry.")
    proxy_retries: int = _setting(2, "Retries of an idempotent call (a pull) after a network or 5xx failure; "
                                  "commands are never retried by the connector (the proxy re-sends them, same "
                                  "key, only to primaries that honour idempotency keys).")
    proxy_retry_backoff_s: float = _setting(0.1, "First retry after 0.1 s, doubling: a restarting primary gets "
                                            "room, a caller does not wait long.")
    proxy_breaker_failures: int = _setting(5, "Consecutive failed calls that open a primary's circuit breaker: "
                                           "enough to ignore a blip, few enough to stop hammering a dead primary.")
    proxy_breaker_open_s: float = _setting(10.0, "How long an open breaker refuses calls (circuit_open) before "
                                           "one trial call may close it again.")
    jwt_algorithms: str = _setting("RS256,ES256", "Explicit allow-list (never the token's own choice): "
                                   "asymmetric only; HS256 is added only when a secret is set.")
    jwt_jwks_file: str = _setting("", "JWKS file with the identity provider's public keys (re-read on "
                                  "unknown kid and after jwt_jwks_max_age_s).")
    jwt_jwks_url: str = _setting("", "JWKS URL of the identity provider (cached; refetched on key rotation).")
    jwt_hs256_secret: str = _setting("", "Shared HMAC secret; empty keeps HS256 disabled (key-confusion proof).")
    jwt_issuer: str = _setting("", "The iss every token must carry. No default: it names your identity "
                               "provider, and an edge without it would accept tokens that provider minted for any "
                               "other application; an edge refuses to start without it unless dev tokens are on "
                               "(then tokens must carry the dev issuer's 'xplatform-dev').")
    jwt_audience: str = _setting("", "The aud every token must carry (this application's ID at the identity "
                                 "provider); required like jwt_issuer, 'xplatform-dev' with dev tokens.")
    jwt_leeway_s: float = _setting(5.0, "Clock skew tolerated on exp/nbf: NTP-synced hosts drift well "
                                   "under a second; 5 s is small enough not to extend sessions.")
    jwt_jwks_max_age_s: float = _setting(300.0, "Keys are re-read every 5 minutes so revoked keys leave soon.")
    jwt_jwks_refetch_s: float = _setting(30.0, "At most one refetch per 30 s for unknown kids, so made-up "
                                         "kids cannot hammer the key server.")
    # ---- cluster (ZooKeeper shard ownership, network transport); see infrastructure/cluster/
    zookeeper_hosts: str = _setting("", "Empty: dev mode, one node owns every shard, no ZooKeeper. Set "
                                    "(host:port,host:port,...) to run state nodes and edges as a cluster.")
    cluster_name: str = _setting("xplatform", "Root of this cluster's znodes (/xplatform/<name>): several "
                                 "clusters (or test runs) can share one ensemble.")
    zk_session_timeout_s: float = _setting(2.0, "Detection floor of a crashed node (~timeout + one tick). "
                                           "2 s is safe against GC pauses and network blips. Sub-second "
                                           "failover after a crash: run nodes supervised (state-node "
                                           "--supervised ends a dead child's session at once), or 0.4-0.6 s "
                                           "sessions (which expire on pauses that long).")
    node_group: str = _setting("default", "Which layout rule this node falls under (cluster_layout).")
    cluster_layout: str = _setting("", "JSON rules of which node groups host which categories, with weights "
                                   "and hot standbys (\"mirrors\": 1: each shard also gets a standby node that "
                                   "mirrors its entities, for warm takeover); empty: every node hosts every "
                                   "category equally, no standbys (mirrors cost memory). See cluster/layout.py.")
    mirror_budget_bytes: int = _setting(256 * 1024 * 1024, "Memory a state node may spend on hot mirrors of the "
                                        "shards it stands by for (estimated from the entities' encoded state, see "
                                        "infrastructure/runtime/mirrors.py); past it the least recently updated "
                                        "mirrored entities leave and are loaded cold on takeover. 256 MiB: a "
                                        "quarter of a small node's memory buys warm takeover of ~500k small "
                                        "entities or a few dozen heavy ones; 0: no limit.")
    transport_host: str = _setting("127.0.0.1", "Where a state node listens for edges and peers; loopback "
                                   "until the deployment names its network.")
    transport_port: int = _setting(0, "0 picks a free port; the address is published in ZooKeeper, so "
                                   "nothing needs to know it in advance.")
    transport_advertise: str = _setting("", "host:port other members connect to, published in ZooKeeper "
                                        "instead of the listening address: behind NAT, a Kubernetes "
                                        "Service or a TCP proxy the address a node binds is not the one "
                                        "peers can reach. Empty publishes transport_host:<bound port>.")
    metrics_host: str = _setting("127.0.0.1", "Address of the internal /metrics listener of state nodes and "
                                 "edges - never the public port: metrics show traffic, users and capacity. "
                                 "Loopback until the deployment names a network its Prometheus reaches "
                                 "(0.0.0.0 in a pod whose port is not in a public Service).")
    metrics_port: int = _setting(0, "Port of the internal /metrics listener (state nodes and edges); 0 picks a "
                                 "free port (printed at start and scrapeable through service discovery).")
    transport_lanes: str = _setting("", "category=lane pairs (comma-separated) giving categories their own "
                                    "connections, so a flood in one cannot delay another; others use 'default'.")
    cluster_secret_file: str = _setting("", "File holding the state secret (>= 32 bytes), known to state "
                                        "nodes only: a link opened by a state node (entity messages) proves "
                                        "it, so an edge cannot act as a state node. No default: a clustered "
                                        "state node refuses to start without it (a mounted secret; never in "
                                        "the environment, where child processes and crash dumps see it).")
    cluster_edge_secret_file: str = _setting("", "File holding the edge secret (>= 32 bytes, different from "
                                             "the state secret), known to edges and state nodes: a link opened "
                                             "by an edge (client traffic) proves it. Required for `xplatform "
                                             "edge` and `state-node`. See infrastructure/transport/auth.py.")
    cluster_insecure: int = _setting(0, "1 runs clustered processes without transport authentication and "
                                     "without ZooKeeper credentials or ACLs (warned at start): for local "
                                     "experiments only - any process that can reach a node can then act as "
                                     "an edge or a state node. Off, so forgetting the secrets fails at start.")
    transport_handshake_timeout_s: float = _setting(5.0, "A peer must finish the link handshake (one round "
                                                    "trip, two HMACs) within this, else it is closed: bounded "
                                                    "half-open sockets, generous for a loaded peer.")
    transport_max_handshakes: int = _setting(256, "Link handshakes a state node runs at once; a socket over it is "
                                             "closed at once (auth failure reason handshakes_full). Links are few "
                                             "and persistent (one per peer process and lane), so even a whole "
                                             "cluster reconnecting after a restart stays well below 256; an "
                                             "unauthenticated peer opening sockets cannot hold more than 256 x "
                                             "4 KiB (the largest handshake frame) for the handshake timeout.")
    transport_previous_owner_window_s: float = _setting(5.0, "After a shard moves, a state node still accepts "
                                                        "entity messages from the shard's previous owner for this long: "
                                                        "what its last writes as owner release (appends in flight when the "
                                                        "map moved finish within the store's latency, at worst the 5 s ask "
                                                        "timeout; the sender resends for 0.5 s more). Short, so a node that "
                                                        "lost a shard cannot speak for its entities for long. See "
                                                        "infrastructure/cluster/ownership.py (may_speak_for).")
    transport_tls_ca_file: str = _setting("", "PEM of the CA that signed the state nodes' transport certificates; "
                                          "set (on every member) to run links over TLS, verifying the node's "
                                          "certificate and host name. Empty: plain TCP - the HMAC handshake "
                                          "authenticates peers but frames are readable on the path (private "
                                          "networks only). See infrastructure/transport/tls.py.")
    transport_tls_cert_file: str = _setting("", "State nodes with transport TLS: their certificate (PEM, chain), "
                                            "naming the host they publish (transport_advertise or transport_host).")
    transport_tls_key_file: str = _setting("", "State nodes with transport TLS: the certificate's private key (PEM).")
    zookeeper_user: str = _setting("xplatform", "User of ZooKeeper digest authentication: every znode the "
                                   "cluster creates is readable and writable by this user only (digest ACL).")
    zookeeper_password_file: str = _setting("", "File holding the ZooKeeper digest password of zookeeper_user. "
                                            "Required for clustered processes (and `xplatform status`) unless "
                                            "cluster_insecure: without it anyone reaching ZooKeeper could read "
                                            "the member list and rewrite the shard map.")
    supervisor_restart_max_s: float = _setting(10.0, "`xplatform state-node --supervised` restarts a crashed "
                                               "node after 0.2 s, doubling per crash up to this: a node that "
                                               "crashes at start (bad config, store down) retries every 10 s "
                                               "instead of spinning, and is back within 10 s once it can run.")
    supervisor_session_file: str = _setting("", "Set by the supervisor for its child, not by operators: where "
                                            "the child writes its ZooKeeper session (id, password; mode 0600) so "
                                            "the supervisor can end that session the moment the child dies, "
                                            "instead of everyone waiting out zk_session_timeout_s. Empty: not supervised.")

    drills_enabled: int = _setting(0, "1 lets `xplatform drill failover --kill` end this process like kill -9 "
                                   "through a ZooKeeper request (infrastructure/cluster/requests.py): a recovery "
                                   "drill for test and staging clusters. Off, so a production member can only be "
                                   "drained by operators, never killed from afar.")
    doctor_max_clock_skew_s: float = _setting(0.5, "`xplatform doctor` reports members whose clocks differ by "
                                              "more than this: edges check token exp/nbf with jwt_leeway_s (5 s) "
                                              "and stored events carry their node's time, so NTP-synced hosts "
                                              "(well under 0.1 s apart) pass and a host without NTP is named early.")
    doctor_store_slow_ms: float = _setting(50.0, "`xplatform doctor` warns when a store read takes longer than "
                                           "this (median of a few): a local or same-zone store answers in a few "
                                           "ms; every durable reply waits on the store.")

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise ConfigurationError(f"XPLATFORM_STORE must be one of {', '.join(STORES)}, not {self.store!r}")
        if self.gc_reclaim_growth < 0:
            raise ConfigurationError("XPLATFORM_GC_RECLAIM_GROWTH must be 0 (time only) or a positive share")
        if self.gc_reclaim_every_s < 0:
            raise ConfigurationError("XPLATFORM_GC_RECLAIM_EVERY_S must be 0 (no freezing) or a positive number of seconds")
        if self.projector_cache_documents < 0:
            raise ConfigurationError("XPLATFORM_PROJECTOR_CACHE_DOCUMENTS must be 0 (off) or a positive integer")
        if self.gc_gen0_threshold < 0:
            raise ConfigurationError("XPLATFORM_GC_GEN0_THRESHOLD must be 0 (keep default) or positive")
        for name in ("shards_per_category", "snapshot_every", "max_batch_events", "postgres_port",
                     "transport_max_handshakes", "projector_batch_size", "projector_max_retry_count"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"XPLATFORM_{name.upper()} must be a positive integer")
        for name in ("passivate_after_s", "passivate_sweep_s", "ask_timeout_s", "eventstoredb_deadline_s",
                     "zk_session_timeout_s", "supervisor_restart_max_s", "transport_handshake_timeout_s",
                     "transport_previous_owner_window_s", "projector_message_timeout_s", "projector_lag_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"XPLATFORM_{name.upper()} must be a positive number")
        if self.transport_advertise:
            self._check_advertise()
        if bool(self.transport_tls_cert_file) != bool(self.transport_tls_key_file):
            raise ConfigurationError("XPLATFORM_TRANSPORT_TLS_CERT_FILE and _KEY_FILE must be set together")
        if self.transport_tls_cert_file and not self.transport_tls_ca_file:
            raise ConfigurationError("XPLATFORM_TRANSPORT_TLS_CERT_FILE needs XPLATFORM_TRANSPORT_TLS_CA_FILE too: "
                                     "state nodes also dial each other and verify the peer's certificate")
        if not 0.05 <= self.gil_switch_interval_ms <= 100:
            raise ConfigurationError("XPLATFORM_GIL_SWITCH_INTERVAL_MS must be between 0.05 and 100 ms")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigurationError(f"XPLATFORM_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, "
                                     f"not {self.event_loop!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigurationError(f"XPLATFORM_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                                     f"not {self.log_format!r}")
        if self.projector_max_in_flight < self.projector_batch_size:
            raise ConfigurationError("XPLATFORM_PROJECTOR_MAX_IN_FLIGHT must be at least XPLATFORM_PROJECTOR_BATCH_SIZE")
        if not self.mongo_database or set(self.mongo_database) & set('/\\. "$'):
            raise ConfigurationError(f"XPLATFORM_MONGO_DATABASE={self.mongo_database!r} must be a MongoDB database "
                                     "name (non-empty, none of / \\ . space \" $)")
        if self.edge_workers < 0:
            raise ConfigurationError(f"XPLATFORM_EDGE_WORKERS must be 0 or more (got {self.edge_workers})")
        if self.drills_enabled not in (0, 1):
            raise ConfigurationError("XPLATFORM_DRILLS_ENABLED must be 0 or 1")
        if self.run_read_models not in (0, 1):
            raise ConfigurationError("XPLATFORM_RUN_READ_MODELS must be 0 or 1")
        if self.run_sample_warehouse not in (0, 1):
            raise ConfigurationError("XPLATFORM_RUN_SAMPLE_WAREHOUSE must be 0 or 1")
        if self.cluster_insecure not in (0, 1):
            raise ConfigurationError("XPLATFORM_CLUSTER_INSECURE must be 0 or 1")
        if not self.zookeeper_user or ":" in self.zookeeper_user:
            raise ConfigurationError("XPLATFORM_ZOOKEEPER_USER must be a non-empty name without ':'")
        if self.proxy_retries < 0 or self.proxy_breaker_failures < 1:
            raise ConfigurationError("XPLATFORM_PROXY_RETRIES must be 0 or more, XPLATFORM_PROXY_BREAKER_FAILURES 1 or more")
        for name in ("proxy_request_timeout_s", "proxy_breaker_open_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"XPLATFORM_{name.upper()} must be a positive number")
        if self.proxy_retry_backoff_s < 0:
            raise ConfigurationError("XPLATFORM_PROXY_RETRY_BACKOFF_S must be 0 or positive")
        if self.mirror_budget_bytes < 0:
            raise ConfigurationError("XPLATFORM_MIRROR_BUDGET_BYTES must be 0 (no limit) or a positive number of bytes")
        if self.eventstoredb_retries < 0:
            raise ConfigurationError("XPLATFORM_EVENTSTOREDB_RETRIES must be 0 or positive")
        if self.store == "eventstoredb":
            self._check_eventstoredb()

    def _check_advertise(self) -> None:
        host, _, port = self.transport_advertise.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or any(c.isspace() for c in host):
            raise ConfigurationError(f"XPLATFORM_TRANSPORT_ADVERTISE={self.transport_advertise!r} must be host:port "
                                     "with a port of 1-65535 (or empty: publish the listening address)")

    def _check_eventstoredb(self) -> None:
        from kurrentdbclient.connection_spec import ConnectionSpec  # only when this store is chosen

        if not self.eventstoredb_uri:
            raise ConfigurationError("XPLATFORM_STORE=eventstoredb needs XPLATFORM_EVENTSTOREDB_URI "
                                     "(or EVENTSTOREDB_URI), e.g. kurrentdb://127.0.0.1:2113?tls=false")
        if bool(self.eventstoredb_username) != bool(self.eventstoredb_password):
            raise ConfigurationError("XPLATFORM_EVENTSTOREDB_USERNAME and _PASSWORD must be set together")
        if set(self.eventstoredb_username) & set(":@/?#") or set(self.eventstoredb_password) & set("@/?#"):
            raise ConfigurationError("XPLATFORM_EVENTSTOREDB_USERNAME/_PASSWORD cannot contain @ / ? # "
                                     "(nor : in the user name): the client takes them from the URI unescaped")
        try:
            spec = ConnectionSpec(self.eventstoredb_client_uri())
        except ValueError as exc:
            raise ConfigurationError(f"XPLATFORM_EVENTSTOREDB_URI is not a usable KurrentDB connection string "
                                     f"({_redact(str(exc))}); TLS (the default) needs a user and password") from None
        has_credentials = bool(self.eventstoredb_username or spec.username)
        if has_credentials and not spec.options.tls:
            raise ConfigurationError("EventStoreDB credentials with tls=false would never be sent (the client "
                                     "only sends them over TLS): enable TLS or drop the credentials")
        if self.eventstoredb_tls_ca_file:
            if not spec.options.tls:
                raise ConfigurationError("XPLATFORM_EVENTSTOREDB_TLS_CA_FILE is set but the URI says tls=false")
            if not Path(self.eventstoredb_tls_ca_file).is_file():
                raise ConfigurationError(f"XPLATFORM_EVENTSTOREDB_TLS_CA_FILE={self.eventstoredb_tls_ca_file!r} "
                                         "is not a readable file")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``XPLATFORM_*`` variables (``environ`` defaults to ``os.environ``)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"XPLATFORM_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default) if f.default is not MISSING else str
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ConfigurationError(f"XPLATFORM_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        if "mongo_uri" not in values and environ.get("MONGO_URI"):
            values["mongo_uri"] = environ["MONGO_URI"]
        if "eventstoredb_uri" not in values and environ.get("EVENTSTOREDB_URI"):
            values["eventstoredb_uri"] = environ["EVENTSTOREDB_URI"]
        if "mongo_uri" not in values and environ.get("MONGO_URI"):
            values["mongo_uri"] = environ["MONGO_URI"]
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.data_dir) / "events.sqlite3"

    def read_model_uri(self) -> str:
        """The MongoDB the projector and the projection commands use (``mongo_uri``, else the local default)."""
        return self.mongo_uri or LOCAL_MONGO_URI

    def journal_env(self) -> dict[str, str]:
        """Environment for the eventsourcing infrastructure factory of ``store``."""
        common = {"ORIGINATOR_ID_TYPE": "text", "CREATE_TABLE": "true"}
        if self.store == "sqlite":
            Path(self.data_dir).mkdir(parents=True, exist_ok=True)
            return {**common, "PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(self.sqlite_path),
                    "SQLITE_LOCK_TIMEOUT": "10",  # one INSERT per batch of rows: infrastructure/persistence/sqlite_recorder.py
                    "APPLICATION_RECORDER_TOPIC": "infrastructure.persistence.sqlite_recorder:BatchedSQLiteApplicationRecorder"}
        if self.store == "postgres":
            return {**common, "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_HOST": self.postgres_host,
                    "POSTGRES_PORT": str(self.postgres_port), "POSTGRES_USER": self.postgres_user,
                    "POSTGRES_PASSWORD": self.postgres_password, "POSTGRES_DBNAME": self.postgres_dbname,
                    "POSTGRES_CONNECT_TIMEOUT": "5"}
        if self.store == "eventstoredb":
            env = {"PERSISTENCE_MODULE": "eventsourcing_eventstoredb", "EVENTSTOREDB_URI": self.eventstoredb_client_uri()}
            if self.eventstoredb_tls_ca_file:
                env["EVENTSTOREDB_ROOT_CERTIFICATES"] = Path(self.eventstoredb_tls_ca_file).read_text()
            return env
        return {**common, "PERSISTENCE_MODULE": "eventsourcing.popo"}

    def eventstoredb_client_uri(self) -> str:
        """``eventstoredb_uri`` with ``eventstoredb_username``/``_password`` put in its user part."""
        if not self.eventstoredb_username:
            return self.eventstoredb_uri
        # kurrentdbclient reads the user part raw (no percent-decoding), so it goes in as is;
        # _check_eventstoredb refuses the characters that would break the URI.
        scheme, _, rest = self.eventstoredb_uri.partition("://")
        hosts = rest.rpartition("@")[2]
        return f"{scheme}://{self.eventstoredb_username}:{self.eventstoredb_password}@{hosts}"

    def describe(self) -> list[tuple[str, Any, str]]:
        """(name, value, why) for every setting, for ``xplatform settings``."""
        return [(f.name, _shown(f.name, getattr(self, f.name)), f.metadata.get("why", "")) for f in fields(self)]


def _shown(name: str, value: Any) -> Any:
    """A setting's value fit for printing: secrets hidden."""
    if name.endswith(("password", "secret")) and value:
        return "***"
    return _redact(value) if name.endswith("uri") else value


def _redact(value: Any) -> Any:
    """Hide the password in a URI's ``user:password@`` part."""
    if not isinstance(value, str) or "@" not in value:
        return value
    import re

    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)
