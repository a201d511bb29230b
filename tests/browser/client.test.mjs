// node --test: the browser client (edge/static/xplatform.js) against a scripted fake
// WebSocket: frames, requests, heartbeat, reconnects with the same cid, TERMINATE and
// close codes as edge/PROTOCOL.md says. The real edge is exercised by test_demo_page.py.
import { webcrypto } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, encode } from './msgpack.js';
import { connect, Kind, positionVersion, read, uuid4, XPlatformError } from './xplatform.js';

globalThis.crypto ??= webcrypto; // node 18 (Debian's nodejs) has no global crypto; browsers and node 20 do

class FakeWebSocket {
  static instances = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }
  send(data) {
    const frame = decode(data);
    this.sent.push(frame);
    if (this.autoPong && frame[0] === Kind.PING) queueMicrotask(() => this.deliver([Kind.PONG, frame[1], Date.now()]));
  }
  close(code) { this.closedWith = code ?? 1005; this.readyState = 3; }
  // the "server" side
  accept(state = { type: 'state' }) { this.readyState = 1; this.onopen?.({}); this.deliver([Kind.WELCOME, 'cid', state]); }
  deliver(frame) { const b = encode(frame); this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.length) }); }
  drop(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
  frames(kind) { return this.sent.filter((f) => f[0] === kind); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what = 'condition', ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

function setup(extra = {}) {
  FakeWebSocket.instances = [];
  let tokens = 0;
  const states = [];
  const conn = connect({
    url: 'http://edge.test:8080/', category: 'Lot', entityId: 'lot 1', WebSocket: FakeWebSocket,
    getToken: async () => `T${++tokens}`, backoffBaseMs: 5, backoffMaxMs: 20, pingIntervalMs: 10_000, ...extra,
  });
  conn.onState((s, d) => states.push([s, d]));
  const socket = (n) => FakeWebSocket.instances[n];
  return { conn, states, socket, tokenCount: () => tokens };
}

test('connects to the entity URL with the subprotocol, the token and a UUID cid', async () => {
  const { conn, socket, states } = setup();
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  assert.match(ws.url, /^ws:\/\/edge\.test:8080\/ws\/Lot\/lot%201\?cid=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(ws.protocols, ['xplatform.v1', 'bearer.T1']);
  assert.equal(conn.state, 'connecting');
  let welcomed = null;
  conn.onWelcome((s) => { welcomed = s; });
  ws.accept({ type: 'state', status: 'new' });
  assert.deepEqual(welcomed, { type: 'state', status: 'new' });
  assert.equal(conn.state, 'open');
  assert.deepEqual(states.map((s) => s[0]), ['connecting', 'open']);
  conn.close();
});

test('requests wait for WELCOME, travel as MSG with a bin payload, settle on REPLY', async () => {
  const { conn, socket } = setup();
  const early = conn.request({ type: 'open', title: 'Vase', increment: 10 });
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  assert.equal(ws.frames(Kind.MSG).length, 0);
  ws.accept();
  const [msg] = ws.frames(Kind.MSG);
  assert.equal(msg.length, 3);
  assert.equal(typeof msg[1], 'string');
  assert.ok(msg[2] instanceof Uint8Array, 'payload is msgpack bin');
  assert.deepEqual(decode(msg[2]), { type: 'open', title: 'Vase', increment: 10 });
  ws.deliver([Kind.REPLY, msg[1], true, { status: 'open' }]);
  assert.deepEqual(await early, { status: 'open' });

  const refused = conn.request({ type: 'bid', amount: 1 }, { messageId: 'm-2' });
  ws.deliver([Kind.REPLY, 'm-2', false, { code: 'rejected', reason: 'bid must be at least 10', retryable: false }]);
  await assert.rejects(refused, (err) => err instanceof XPlatformError && err.code === 'rejected'
    && err.reason === 'bid must be at least 10' && err.retryable === false);

  const slow = conn.request({ type: 'bid' }, { timeoutMs: 20 });
  await assert.rejects(slow, (err) => err.code === 'timeout' && err.retryable === true);
  conn.close();
});

/** An open connection whose request 'b-5' got ``refusal`` on each of its first three attempts. */
async function refusedThrice(options, refusal) {
  const { conn, socket } = setup(options);
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  ws.accept();
  const bid = conn.request({ type: 'bid', amount: 5 }, { messageId: 'b-5' });
  for (let n = 1; n <= 3; n++) {
    await until(() => ws.frames(Kind.MSG).length === n, `attempt ${n}`);
    ws.deliver([Kind.REPLY, 'b-5', false, refusal]);
  }
  return { conn, ws, bid };
}

for (const refusal of [
  { code: 'overloaded', reason: 'the entity is overloaded; retry shortly', retryable: true },
  { code: 'retry', reason: 'shard of Lot/vase is not on this node', retryable: true }, // a failover
]) {
  test(`a request refused '${refusal.code}' is resent with the same message ID after a backoff, then settles`, async () => {
    const { conn, ws, bid } = await refusedThrice({ retryBackoffBaseMs: 2, retryBackoffMaxMs: 10 }, refusal);
    await until(() => ws.frames(Kind.MSG).length === 4, 'attempt 4');
    assert.deepEqual(ws.frames(Kind.MSG).map((f) => f[1]), ['b-5', 'b-5', 'b-5', 'b-5'], 'same message ID: applied once');
    ws.deliver([Kind.REPLY, 'b-5', true, { status: 'accepted' }]);
    assert.deepEqual(await bid, { status: 'accepted' });
    conn.close();
  });

  test(`'${refusal.code}' retries are bounded: after the last one the request rejects with it`, async () => {
    const { conn, ws, bid } = await refusedThrice({ retries: 2, retryBackoffBaseMs: 1, retryBackoffMaxMs: 4 }, refusal);
    await assert.rejects(bid, (err) => err instanceof XPlatformError && err.code === refusal.code && err.retryable);
    await sleep(20);
    assert.equal(ws.frames(Kind.MSG).length, 3, 'the first try and 2 retries, no more');
    conn.close();
  });
}

test('a refusal that is not retryable is the answer at once, never resent', async () => {
  const { conn, socket } = setup({ retryBackoffBaseMs: 1, retryBackoffMaxMs: 2 });
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  ws.accept();
  const bid = conn.request({ type: 'bid', amount: 5 }, { messageId: 'b-5' });
  await until(() => ws.frames(Kind.MSG).length === 1, 'attempt 1');
  ws.deliver([Kind.REPLY, 'b-5', false, { code: 'rejected', reason: 'bid too low', retryable: false }]);
  await assert.rejects(bid, (err) => err instanceof XPlatformError && err.code === 'rejected' && !err.retryable);
  await sleep(20);
  assert.equal(ws.frames(Kind.MSG).length, 1);
  conn.close();
});

test('a dropped socket reconnects with the same cid, a fresh token, and resends unanswered requests with their IDs', async () => {
  const { conn, socket, states, tokenCount } = setup();
  await until(() => socket(0), 'socket');
  socket(0).accept();
  const pending = conn.request({ type: 'bid', amount: 110 });
  const [sent] = socket(0).frames(Kind.MSG);
  socket(0).drop(1006);
  assert.equal(conn.state, 'reconnecting');
  await until(() => socket(1), 'second socket');
  assert.equal(socket(1).url, socket(0).url, 'same cid');
  assert.deepEqual(socket(1).protocols, ['xplatform.v1', 'bearer.T2']);
  assert.equal(tokenCount(), 2);
  socket(1).accept();
  const [resent] = socket(1).frames(Kind.MSG);
  assert.equal(resent[1], sent[1], 'same message ID: the entity applies it once');
  socket(1).deliver([Kind.REPLY, resent[1], true, { status: 'pending' }]);
  assert.deepEqual(await pending, { status: 'pending' });
  assert.deepEqual(states.map((s) => s[0]), ['connecting', 'open', 'reconnecting', 'open']);
  conn.close();
});

test('the backoff grows, jittered, up to its cap', async () => {
  const { conn, socket, states } = setup({ backoffBaseMs: 4, backoffMaxMs: 30 });
  for (let i = 0; i < 6; i++) {
    await until(() => socket(i), `socket ${i}`);
    socket(i).drop(1006);
  }
  const delays = states.filter((s) => s[0] === 'reconnecting').map((s) => s[1]);
  delays.forEach((d, i) => {
    assert.equal(d.attempt, i + 1);
    assert.ok(d.delayMs >= 0 && d.delayMs <= Math.min(30, 4 * 2 ** i) + 1, JSON.stringify(d));
  });
  conn.close();
});

test('TERMINATE with reconnect false ends the connection for good', async () => {
  const { conn, socket, states } = setup();
  await until(() => socket(0), 'socket');
  socket(0).accept();
  const pending = conn.request({ type: 'bid' });
  socket(0).deliver([Kind.TERMINATE, 'banned', false]);
  socket(0).drop(1000);
  assert.equal(conn.state, 'closed');
  assert.equal(states.at(-1)[1].reason, 'banned');
  await assert.rejects(pending, (err) => err.code === 'closed');
  await sleep(40);
  assert.equal(FakeWebSocket.instances.length, 1, 'no reconnect');
  await assert.rejects(conn.request({ type: 'bid' }), (err) => err.code === 'closed');
});

test('TERMINATE with reconnect true, 1001, 1013 and 4401 reconnect; 4403, 1003, 1008, 1009 do not', async () => {
  for (const [frames, code, again] of [
    [[[Kind.TERMINATE, 'moving', true]], 1000, true], [[], 1001, true], [[], 1013, true], [[], 4401, true],
    [[], 1000, true], [[[Kind.TERMINATE, 'role must be one of ...', false]], 4403, false], [[], 4403, false],
    [[], 1003, false], [[[Kind.ERROR, 'rate_limited', 'too many frames']], 1008, false], [[], 1009, false],
  ]) {
    const { conn, socket } = setup();
    await until(() => socket(0), 'socket');
    socket(0).accept();
    for (const f of frames) socket(0).deliver(f);
    socket(0).drop(code);
    if (again) {
      await until(() => socket(1), `reconnect after ${code}`);
      assert.equal(conn.state, 'reconnecting');
    } else {
      await sleep(30);
      assert.equal(FakeWebSocket.instances.length, 1, `no reconnect after ${code}`);
      assert.equal(conn.state, 'closed');
    }
    conn.close();
  }
});

test('uuid4 makes v4 UUIDs, also where randomUUID is missing (pages on plain http)', () => {
  const form = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(uuid4(), form);
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  Object.defineProperty(globalThis, 'crypto', { value: { getRandomValues: (a) => webcrypto.getRandomValues(a) },
    configurable: true });
  try {
    const ids = new Set(Array.from({ length: 100 }, () => uuid4()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, form);
  } finally {
    Object.defineProperty(globalThis, 'crypto', saved);
  }
});

test('heartbeat: PING after WELCOME, PONG gives the round trip, reported as LATENCY', async () => {
  const { conn, socket } = setup();
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  ws.accept();
  const [ping] = ws.frames(Kind.PING);
  assert.equal(typeof ping[1], 'number');
  let measured = null;
  conn.onLatency((ms) => { measured = ms; });
  await sleep(15);
  ws.deliver([Kind.PONG, ping[1], Date.now()]);
  assert.ok(conn.latency >= 10 && conn.latency < 1000, String(conn.latency));
  assert.equal(measured, conn.latency);
  assert.deepEqual(ws.frames(Kind.LATENCY), [[Kind.LATENCY, conn.latency]]);
  ws.deliver([Kind.PONG, 12345, Date.now()]); // not ours: ignored
  assert.equal(ws.frames(Kind.LATENCY).length, 1);
  conn.close();
});

test('a socket that answers nothing is replaced', async () => {
  const { conn, socket } = setup({ pingIntervalMs: 10, deadAfterMs: 25 });
  await until(() => socket(0), 'socket');
  socket(0).accept();
  await until(() => socket(1), 'replacement socket', 1000);
  assert.equal(socket(0).closedWith, 4000);
  conn.close();
});

test('a socket that answers its PINGs is kept, however late the timer ticks', async () => {
  const { conn, socket } = setup({ pingIntervalMs: 10, deadAfterMs: 25 });
  await until(() => socket(0), 'socket');
  socket(0).autoPong = true;
  socket(0).accept();
  await sleep(0); // the first PONG arrives
  const block = Date.now() + 60; // a throttled tab: no timer (so no PING) for longer than deadAfterMs
  while (Date.now() < block) { /* busy */ }
  await sleep(80);
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.ok(socket(0).frames(Kind.LATENCY).length >= 3);
  assert.equal(conn.state, 'open');
  conn.close();
});

test('pushes reach onPush; close() says BYE and closes 1000', async () => {
  const { conn, socket, states } = setup();
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  ws.accept();
  const pushes = [];
  const off = conn.onPush((p) => pushes.push(p));
  ws.deliver([Kind.PUSH, { type: 'state', high_amount: 110 }]);
  ws.deliver([Kind.PUSH, { type: 'left', user: 'bob' }]);
  off();
  ws.deliver([Kind.PUSH, { type: 'state', high_amount: 120 }]);
  assert.deepEqual(pushes, [{ type: 'state', high_amount: 110 }, { type: 'left', user: 'bob' }]);
  conn.close();
  assert.deepEqual(ws.sent.at(-1), [Kind.BYE]);
  assert.equal(ws.closedWith, 1000);
  assert.equal(conn.state, 'closed');
  assert.equal(states.at(-1)[1].reason, 'client_left');
  await sleep(30);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("a REPLY's position token (5th element) is exposed; older 4-element REPLYs still settle", async () => {
  const { conn, socket } = setup();
  await until(() => socket(0), 'socket');
  const ws = socket(0);
  ws.accept();
  assert.equal(conn.position, null);
  const plain = conn.request({ type: 'chat', text: 'hi' }, { messageId: 'p-1' });
  ws.deliver([Kind.REPLY, 'p-1', true, { posted: 'p-1' }]); // an edge without tokens
  assert.deepEqual(await plain, { posted: 'p-1' });
  assert.equal(conn.position, null);
  const bid = conn.request({ type: 'bid', amount: 10 }, { messageId: 'p-2', withPosition: true });
  ws.deliver([Kind.REPLY, 'p-2', true, { status: 'accepted' }, 'Lot-lot 1@7']);
  assert.deepEqual(await bid, { payload: { status: 'accepted' }, position: 'Lot-lot 1@7' });
  assert.equal(conn.position, 'Lot-lot 1@7');
  const refused = conn.request({ type: 'bid', amount: 1 }, { messageId: 'p-3' });
  ws.deliver([Kind.REPLY, 'p-3', false, { code: 'rejected', reason: 'too low' }, 'Lot-lot 1@7']);
  await assert.rejects(refused, (err) => err.code === 'rejected' && err.position === 'Lot-lot 1@7');
  ws.deliver([Kind.REPLY, 'late', true, null, 'Lot-lot 1@5']); // an older position never replaces a newer one
  assert.equal(conn.position, 'Lot-lot 1@7');
  assert.equal(positionVersion('Lot-a@b@12'), 12);
  assert.equal(positionVersion(null), 0);
  conn.close();
});

test('read() asks the query API with the token, filters and consistency, and maps refusals', async () => {
  const calls = [];
  const answers = [
    { status: 200, body: { document: { _id: 'vase', high_amount: 10 } } },
    { status: 200, body: { documents: [], more: false } },
    { status: 504, body: { error: 'consistency_timeout', reason: 'behind', retryable: true } },
  ];
  const fakeFetch = async (url, init) => {
    calls.push([url, init]);
    const { status, body } = answers.shift();
    return { ok: status === 200, status, json: async () => body };
  };
  const doc = await read({ url: 'http://edge.test:8080/', projection: 'auction_board', key: 'a vase', token: 'T',
    after: 'Lot-a vase@3', waitMs: 100, fetch: fakeFetch });
  assert.deepEqual(doc, { _id: 'vase', high_amount: 10 });
  assert.equal(calls[0][0], 'http://edge.test:8080/read/auction_board/a%20vase?after=Lot-a+vase%403&wait_ms=100');
  assert.deepEqual(calls[0][1].headers, { Authorization: 'Bearer T' });
  const list = await read({ url: 'ws://edge.test:8080', projection: 'auction_board', filters: { status: 'open' },
    limit: 5, maxLagMs: 0, token: 'T', fetch: fakeFetch });
  assert.deepEqual(list, { documents: [], more: false });
  assert.equal(calls[1][0], 'http://edge.test:8080/read/auction_board?status=open&limit=5&max_lag_ms=0');
  await assert.rejects(read({ url: 'http://edge.test:8080', projection: 'auction_board', key: 'x', token: 'T', fetch: fakeFetch }),
    (err) => err instanceof XPlatformError && err.code === 'consistency_timeout' && err.status === 504 && err.retryable);
});
