// X Platform browser client — an ES module, no build step, no dependencies but ./msgpack.js.
//
// Speaks the client protocol `xplatform.v1` (edge/PROTOCOL.md): one msgpack array per binary
// websocket frame; the token travels as a `bearer.<JWT>` subprotocol value.
//
//   import { connect } from '/static/xplatform.js';
//   const conn = connect({
//     url: 'ws://127.0.0.1:8080',            // optional: defaults to this page's origin
//     category: 'Lot', entityId: 'demo',
//     getToken: async () => (await (await fetch('/dev/token?sub=ann&role=bidder')).json()).token,
//   });
//   conn.onWelcome((state) => ...);           // the entity accepted (each (re)connect)
//   conn.onPush((payload) => ...);            // state updates and notifications
//   conn.onState((state, detail) => ...);     // 'connecting' | 'open' | 'reconnecting' | 'closed'
//   const reply = await conn.request({ type: 'bid', amount: 110 });   // rejects with XPlatformError
//   conn.latency                              // last heartbeat round trip in ms (or null)
//   conn.position                             // position token of the entity's latest reply (or null)
//   conn.close();                             // BYE: leave for good
//
//   // read models (the edge's query API): read your own writes with the reply's position token
//   const { payload, position } = await conn.request({ type: 'bid', amount: 120 }, { withPosition: true });
//   const lot = await read({ projection: 'auction_board', key: 'demo', token, after: position });
//   const { documents, more } = await read({ projection: 'auction_board', filters: { status: 'open' }, token });
//
// Connection lifecycle
//   connecting ──WELCOME──▶ open ──socket lost──▶ reconnecting ──WELCOME──▶ open ...
//        └──────────────────┴──── TERMINATE(reconnect=false), 4403, 1003/1008/1009, close() ──▶ closed
//
// - The connection ID (`cid`, a UUID) is made once and reused on every reconnect, so the
//   entity resumes the connection within its grace period. Every attempt asks getToken()
//   for a token (so an expired one is replaced; close 4401 reconnects at once).
// - Reconnects back off exponentially with full jitter (base 250 ms, cap 10 s by default);
//   1001 (edge going away) and 4401 (token expired) retry at once, the first time.
// - Requests made while not open wait for the next WELCOME. A request sent but not answered
//   when the socket drops is sent again after the reconnect with the SAME message ID: the
//   entity applies a message ID once, so a retry never doubles a bid.
// - A request refused with a retryable error (`overloaded`: its entity is behind; `retry`: its
//   shard is moving or its node failing over; `unavailable`; nothing was applied) is sent again
//   with the same message ID after a full-jitter exponential backoff (base 50 ms, cap 2 s), at
//   most `retries` (5) times and within its timeout; then it rejects with that refusal.
// - Heartbeat: PING every `pingIntervalMs` (first one right after WELCOME); each PONG gives a
//   round trip (`latency`), which is reported to the edge in a LATENCY frame. A socket that
//   answers nothing to a PING for `deadAfterMs` is considered dead and replaced.

import { decode, encode } from './msgpack.js';

export const SUBPROTOCOL = 'xplatform.v1';
export const BEARER_PREFIX = 'bearer.';

export const Kind = Object.freeze({
  MSG: 1, PING: 2, LATENCY: 3, BYE: 4,
  WELCOME: 10, REPLY: 11, PUSH: 12, PONG: 13, TERMINATE: 14, ERROR: 15,
});

export const Close = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, ABNORMAL: 1006, UNSUPPORTED_DATA: 1003, POLICY: 1008, TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013, TOKEN_EXPIRED: 4401, REFUSED: 4403,
});

// A close with one of these codes means retrying the same thing cannot help.
const FATAL_CLOSES = new Set([Close.UNSUPPORTED_DATA, Close.POLICY, Close.TOO_BIG, Close.REFUSED]);
// Our own close code for a socket we drop because the heartbeat went unanswered.
const DEAD_SOCKET = 4000;

/** Raised (as a rejected request promise) when the entity or the edge answers with an error. */
export class XPlatformError extends Error {
  constructor(code, reason, retryable = false) {
    super(reason ? `${code}: ${reason}` : code);
    this.name = 'XPlatformError';
    this.code = code;
    this.reason = reason;
    this.retryable = retryable;
  }
}

/**
 * Read a read model through the edge's query API (edge/PROTOCOL.md "Reading read models").
 * Resolves with the document (`key` given) or `{documents, more}`; rejects with an
 * XPlatformError whose `code` is the edge's error (e.g. 'consistency_timeout', 'forbidden')
 * and `status` the HTTP status.
 * @param {object} options
 * @param {string} options.projection the read model, e.g. 'auction_board'
 * @param {string} [options.key] one document's key; without it, a list
 * @param {Object<string, string|number>} [options.filters] field equalities of a list
 * @param {number} [options.limit] most documents of a list
 * @param {string|string[]} [options.after] position tokens to wait for (read-your-writes)
 * @param {number} [options.maxLagMs] bounded staleness
 * @param {number} [options.waitMs] how long the edge may wait for either
 * @param {string} [options.token] the bearer token
 * @param {string} [options.url] base URL of the edge (default: this page's origin)
 * @param {typeof fetch} [options.fetch] a fetch implementation (tests, node)
 */
export async function read({
  projection, key, filters = {}, limit, after, maxLagMs, waitMs, token, url, fetch: doFetch = globalThis.fetch,
}) {
  const base = (url ?? globalThis.location?.origin ?? '').replace(/^ws/, 'http').replace(/\/+$/, '');
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) params.append(name, String(value));
  for (const token_ of (Array.isArray(after) ? after : [after]).filter(Boolean)) params.append('after', token_);
  if (limit !== undefined) params.append('limit', String(limit));
  if (maxLagMs !== undefined) params.append('max_lag_ms', String(maxLagMs));
  if (waitMs !== undefined) params.append('wait_ms', String(waitMs));
  const path = `/read/${encodeURIComponent(projection)}${key === undefined ? '' : `/${encodeURIComponent(key)}`}`;
  const query = params.toString();
  const response = await doFetch(`${base}${path}${query ? `?${query}` : ''}`,
    { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    const err = new XPlatformError(body?.error ?? `http_${response.status}`, body?.reason ?? '', Boolean(body?.retryable));
    err.status = response.status;
    throw err;
  }
  return key === undefined ? body : body.document;
}

/** The version of a position token `<stream>@<version>` (0 when it is none). */
export function positionVersion(token) {
  const at = typeof token === 'string' ? token.lastIndexOf('@') : -1;
  return at < 0 ? 0 : Number(token.slice(at + 1)) || 0;
}

/** A UUID (v4): crypto.randomUUID where the page is a secure context, else getRandomValues. */
export function uuid4() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function defaultBaseUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('connect: give `url` (no page location to derive it from)');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}`;
}

/**
 * Open a connection to one entity; it (re)connects by itself until close().
 * @param {object} options
 * @param {string} [options.url] base URL of the edge: ws(s):// or http(s):// (default: the page's origin)
 * @param {string} options.category entity category, e.g. 'Lot'
 * @param {string} options.entityId
 * @param {() => (string|null|Promise<string|null>)} [options.getToken] a token for each attempt
 * @param {string} [options.cid] connection ID to use (default: a new UUID)
 * @param {number} [options.pingIntervalMs=5000]
 * @param {number} [options.deadAfterMs] no frame for this long: the socket is replaced (default 3 pings)
 * @param {number} [options.requestTimeoutMs=15000]
 * @param {number} [options.backoffBaseMs=250]
 * @param {number} [options.backoffMaxMs=10000]
 * @param {number} [options.retries=5] resends of a request refused with a retryable error (0: none)
 * @param {number} [options.retryBackoffBaseMs=50]
 * @param {number} [options.retryBackoffMaxMs=2000]
 * @param {typeof WebSocket} [options.WebSocket] a WebSocket implementation (tests, node)
 */
export function connect(options) {
  return new Connection(options);
}

export class Connection {
  constructor({
    url, category, entityId, getToken = () => null, cid,
    pingIntervalMs = 5000, deadAfterMs, requestTimeoutMs = 15000,
    backoffBaseMs = 250, backoffMaxMs = 10000, WebSocket: WS = globalThis.WebSocket,
    retries = 5, retryBackoffBaseMs = 50, retryBackoffMaxMs = 2000,
  }) {
    if (!category || !entityId) throw new Error('connect: category and entityId are required');
    const base = (url ?? defaultBaseUrl()).replace(/^http/, 'ws').replace(/\/+$/, '');
    this.cid = cid ?? uuid4();
    this.url = `${base}/ws/${encodeURIComponent(category)}/${encodeURIComponent(entityId)}`
      + `?cid=${encodeURIComponent(this.cid)}`;
    this.category = category;
    this.entityId = entityId;
    this.state = 'connecting';
    this.latency = null;           // last heartbeat round trip, ms
    this.welcome = null;           // initial state from the latest WELCOME
    this.lastClose = null;         // {code, reason} of the latest socket close
    this.terminated = null;        // {reason, reconnect} of the latest TERMINATE
    this.position = null;          // position token of the entity's newest reply ('<stream>@<version>')
    this._getToken = getToken;
    this._WS = WS;
    this._pingIntervalMs = pingIntervalMs;
    this._deadAfterMs = deadAfterMs ?? pingIntervalMs * 3;
    this._requestTimeoutMs = requestTimeoutMs;
    this._backoffBaseMs = backoffBaseMs;
    this._backoffMaxMs = backoffMaxMs;
    this._retries = retries;
    this._retryBackoffBaseMs = retryBackoffBaseMs;
    this._retryBackoffMaxMs = retryBackoffMaxMs;
    this._listeners = { push: new Set(), state: new Set(), welcome: new Set(), latency: new Set(), error: new Set() };
    this._pending = new Map();     // message_id -> {frame, resolve, reject, timer, sent}
    this._pings = new Map();       // client_time_ms sent -> performance.now() at sending
    this._ws = null;
    this._attempt = 0;             // consecutive attempts without a WELCOME
    this._retryTimer = null;
    this._pingTimer = null;
    this._lastHeard = 0;
    this._closedForGood = false;
    this._open();
  }

  // ---------------------------------------------------------------- subscriptions
  /** Every PUSH payload (state updates, notifications). Returns an unsubscribe function. */
  onPush(cb) { return this._on('push', cb); }
  /** Connection state changes: (state, detail). Called at once with the current state. */
  onState(cb) { const off = this._on('state', cb); cb(this.state, {}); return off; }
  /** The initial state from each WELCOME (first connect and every reconnect). */
  onWelcome(cb) { return this._on('welcome', cb); }
  /** Each measured heartbeat round trip in ms. */
  onLatency(cb) { return this._on('latency', cb); }
  /** ERROR frames from the edge and other problems that do not end the connection: (XPlatformError). */
  onError(cb) { return this._on('error', cb); }

  _on(kind, cb) {
    this._listeners[kind].add(cb);
    return () => this._listeners[kind].delete(cb);
  }

  _emit(kind, ...args) {
    for (const cb of [...this._listeners[kind]]) {
      try { cb(...args); } catch (err) { console.error(`xplatform ${kind} listener failed`, err); }
    }
  }

  _setState(state, detail = {}) {
    if (this.state === state && state !== 'reconnecting') return;
    this.state = state;
    this._emit('state', state, detail);
  }

  // ---------------------------------------------------------------- requests
  /**
   * Send a message to the entity; resolves with the entity's reply payload once its events
   * are durable, rejects with XPlatformError (code, reason, retryable) if the entity or the
   * edge refuses it, or with code 'timeout' / 'closed'. With `withPosition` it resolves with
   * `{payload, position}`: the reply's position token (null if none), for `read({after})`.
   * An XPlatformError from the entity carries the `position` too.
   * @param {*} payload encoded as msgpack and sent as the MSG's bin payload
   * @param {{messageId?: string, timeoutMs?: number, withPosition?: boolean}} [opts]
   */
  request(payload, { messageId = uuid4(), timeoutMs = this._requestTimeoutMs, withPosition = false } = {}) {
    if (this._closedForGood) return Promise.reject(new XPlatformError('closed', 'the connection is closed'));
    return new Promise((resolve, reject) => {
      const entry = { frame: encode([Kind.MSG, messageId, encode(payload)]), resolve, reject, sent: false,
        retries: 0, retryTimer: null, withPosition };
      entry.timer = setTimeout(() => {
        clearTimeout(entry.retryTimer);
        this._pending.delete(messageId);
        reject(new XPlatformError('timeout', `no reply within ${timeoutMs} ms`, true));
      }, timeoutMs);
      this._pending.set(messageId, entry);
      if (this.state === 'open') this._sendPending(entry);
    });
  }

  _sendPending(entry) {
    clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
    entry.sent = this._send(entry.frame);
  }

  _settle(messageId, ok, payload, position) {
    position = typeof position === 'string' ? position : null;
    if (position && positionVersion(position) > positionVersion(this.position)) this.position = position;
    const entry = this._pending.get(messageId);
    if (!entry) return;
    if (!ok && payload?.retryable === true && entry.retries < this._retries) {
      // nothing was applied (entity behind, shard moving): same message ID again after a jittered backoff
      const capMs = Math.min(this._retryBackoffMaxMs, this._retryBackoffBaseMs * 2 ** entry.retries);
      entry.retries += 1;
      entry.sent = false;
      entry.retryTimer = setTimeout(() => { if (this.state === 'open') this._sendPending(entry); },
        Math.random() * capMs);
      return;
    }
    this._pending.delete(messageId);
    clearTimeout(entry.timer);
    if (ok) entry.resolve(entry.withPosition ? { payload, position } : payload);
    else {
      const e = payload && typeof payload === 'object' ? payload : { code: 'error', reason: String(payload) };
      const err = new XPlatformError(e.code ?? 'error', e.reason ?? '', Boolean(e.retryable));
      err.position = position;
      entry.reject(err);
    }
  }

  // ---------------------------------------------------------------- leaving
  /** Leave for good: BYE, close 1000, reject whatever is still pending. */
  close() {
    if (this._closedForGood) return;
    this._send(encode([Kind.BYE]));
    this._finish('closed', { code: Close.NORMAL, reason: 'client_left' });
  }

  _finish(state, detail) {
    this._closedForGood = true;
    clearTimeout(this._retryTimer);
    this._stopHeartbeat();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(Close.NORMAL); } catch { /* already closing */ }
    }
    for (const [id, entry] of this._pending) {
      clearTimeout(entry.timer);
      clearTimeout(entry.retryTimer);
      entry.reject(new XPlatformError('closed', detail.reason || 'the connection is closed'));
      this._pending.delete(id);
    }
    this._setState(state, detail);
  }

  // ---------------------------------------------------------------- the socket
  async _open() {
    if (this._closedForGood) return;
    let token;
    try {
      token = await this._getToken();
    } catch (err) {
      this._emit('error', new XPlatformError('token', `getToken failed: ${err?.message ?? err}`, true));
      this._scheduleReconnect({ code: null, reason: 'no token' });
      return;
    }
    if (this._closedForGood) return;
    const protocols = token ? [SUBPROTOCOL, BEARER_PREFIX + token] : [SUBPROTOCOL];
    let ws;
    try {
      ws = new this._WS(this.url, protocols);
    } catch (err) {
      this._finish('closed', { code: null, reason: `cannot open websocket: ${err?.message ?? err}` });
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._welcomed = false;
    ws.onopen = () => { this._lastHeard = Date.now(); };
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => { /* onclose follows with the code */ };
  }

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(frame);
    return true;
  }

  _onFrame(data) {
    this._lastHeard = Date.now();
    if (typeof data === 'string') {
      this._emit('error', new XPlatformError('protocol', 'text frame from the edge'));
      return;
    }
    let frame;
    try {
      frame = decode(data);
    } catch (err) {
      this._emit('error', new XPlatformError('protocol', `undecodable frame: ${err.message}`));
      return;
    }
    if (!Array.isArray(frame) || frame.length === 0) {
      this._emit('error', new XPlatformError('protocol', 'frame is not an array'));
      return;
    }
    switch (frame[0]) {
      case Kind.WELCOME: this._onWelcome(frame[2]); break;
      case Kind.REPLY: this._settle(frame[1], frame[2] === true, frame[3], frame[4]); break;
      case Kind.PUSH: this._emit('push', frame[1]); break;
      case Kind.PONG: this._onPong(frame[1]); break;
      case Kind.TERMINATE: this.terminated = { reason: frame[1], reconnect: frame[2] === true }; break;
      case Kind.ERROR: this._emit('error', new XPlatformError(String(frame[1]), String(frame[2] ?? ''))); break;
      default: break; // newer edges may add kinds an old client can ignore
    }
  }

  _onWelcome(initialState) {
    this._welcomed = true;
    this._attempt = 0;
    this.welcome = initialState;
    this.terminated = null;
    this._setState('open', { cid: this.cid });
    this._emit('welcome', initialState);
    for (const entry of this._pending.values()) this._sendPending(entry); // same message IDs: idempotent
    this._startHeartbeat();
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._stopHeartbeat();
    for (const entry of this._pending.values()) entry.sent = false;
    this.lastClose = { code, reason };
    const term = this.terminated;
    const detail = { code, reason: term?.reason ?? reason ?? '' };
    if (this._closedForGood) return;
    if (term && !term.reconnect) { this._finish('closed', { ...detail, terminated: true }); return; }
    if (!term && FATAL_CLOSES.has(code)) { this._finish('closed', detail); return; }
    this._scheduleReconnect(detail, term !== null);
  }

  _scheduleReconnect(detail, terminated = false) {
    if (this._closedForGood) return;
    const attempt = this._attempt++;
    let delay;
    if (attempt === 0 && (detail.code === Close.GOING_AWAY || detail.code === Close.TOKEN_EXPIRED)) {
      delay = Math.random() * 100; // the edge asked us to go elsewhere / renew: at once (spread a little)
    } else {
      // Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): uniform in [0, cap].
      const cap = Math.min(this._backoffMaxMs, this._backoffBaseMs * 2 ** Math.min(attempt, 20));
      delay = Math.max(terminated ? 500 : 0, Math.random() * cap);
    }
    this._setState('reconnecting', { ...detail, attempt: attempt + 1, delayMs: Math.round(delay) });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  // ---------------------------------------------------------------- heartbeat
  _startHeartbeat() {
    this._stopHeartbeat();
    this._lastHeard = Date.now();
    this._ping();
    this._pingTimer = setInterval(() => this._ping(), this._pingIntervalMs);
  }

  _stopHeartbeat() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    this._pings.clear();
  }

  _ping() {
    // Dead when the oldest unanswered PING is older than deadAfterMs and nothing at all came
    // since it was sent. (Not simply "nothing heard lately": a background tab's timers are
    // throttled, and a late tick must not condemn a healthy socket.)
    const oldest = this._pings.keys().next().value;
    if (oldest !== undefined && this._lastHeard <= oldest && Date.now() - oldest > this._deadAfterMs) {
      const ws = this._ws;
      this._onClose(ws, DEAD_SOCKET, 'heartbeat timeout');
      if (ws) { ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null; try { ws.close(DEAD_SOCKET); } catch { /* closing */ } }
      return;
    }
    const sentAt = Date.now();
    this._pings.set(sentAt, performance.now());
    if (this._pings.size > 8) this._pings.delete(this._pings.keys().next().value);
    this._send(encode([Kind.PING, sentAt]));
  }

  _onPong(clientTimeMs) {
    const started = this._pings.get(clientTimeMs);
    if (started === undefined) return;
    this._pings.delete(clientTimeMs);
    const rtt = Math.round((performance.now() - started) * 1000) / 1000;
    this.latency = rtt;
    this._send(encode([Kind.LATENCY, rtt]));
    this._emit('latency', rtt);
  }
}
