// The demo page of the sample auction domain (domain/auction/lot.py), on the browser client.
// Everything shown is what the Lot entity pushes; the page keeps no state of its own beyond
// the latest `state` it received. Below it, the lot's item's warehouse stock through a state
// proxy (stock.js), and the board read from read models (board.js).

import { $, formatMs, log, notice, request } from './page.js';
import { watchReadModels } from './board.js';
import { watchStock } from './stock.js';
import { connect, uuid4 } from './xplatform.js';

const STATE_LABELS = { connecting: 'connecting…', open: 'live', reconnecting: 'reconnecting…', closed: 'closed' };

let conn = null;
let me = null;         // {name, role, lot}
let lot = null;        // latest Lot view
let offs = [];
let token = null;      // {value, until} of the current user, for reads

// ------------------------------------------------------------------ setup
function lotFromHash() {
  const id = decodeURIComponent(location.hash.replace(/^#/, '')).trim();
  return /^[A-Za-z0-9_.-]{1,64}$/.test(id) ? id : 'demo';
}

function init() {
  $('name').value = sessionStorage.getItem('xplatform.name') || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  $('role').value = sessionStorage.getItem('xplatform.role') || 'bidder';
  $('lot').value = lotFromHash();
  $('join-form').addEventListener('submit', (e) => { e.preventDefault(); join(); });
  $('leave').addEventListener('click', leave);
  $('open-form').addEventListener('submit', (e) => { e.preventDefault(); openLot(); });
  $('close-btn').addEventListener('click', closeLot);
  $('bid-next').addEventListener('click', () => bid(nextAmount()));
  $('bid-form').addEventListener('submit', (e) => { e.preventDefault(); bid(Number($('bid-amount').value)); });
  window.addEventListener('hashchange', () => {
    $('lot').value = lotFromHash();
    if (me && me.lot !== $('lot').value) { leave(); join(); }
  });
  window.addEventListener('pagehide', () => conn?.close());
  render();
}

// ------------------------------------------------------------------ joining and leaving
async function fetchToken(name, role) {
  const response = await fetch(`/dev/token?sub=${encodeURIComponent(name)}&role=${encodeURIComponent(role)}`,
    { cache: 'no-store' });
  if (!response.ok) {
    let reason = `HTTP ${response.status}`;
    try { reason = (await response.json()).reason || reason; } catch { /* not JSON */ }
    throw new Error(`no token: ${reason}`);
  }
  const body = await response.json();
  token = { value: body.token, until: Date.now() + (body.expires_in - 60) * 1000 };
  return body.token;
}

async function readToken(name, role) {
  return token && Date.now() < token.until ? token.value : fetchToken(name, role);
}

function connectionId(lotId, name) {
  // One connection ID per tab, lot and user: a reload resumes the same connection.
  const key = `xplatform.cid.${lotId}.${name}`;
  let cid = sessionStorage.getItem(key);
  if (!cid) {
    cid = uuid4();
    sessionStorage.setItem(key, cid);
  }
  return cid;
}

function join() {
  if (!$('join-form').reportValidity()) return;
  leave();
  me = { name: $('name').value.trim(), role: $('role').value, lot: $('lot').value.trim() };
  sessionStorage.setItem('xplatform.name', me.name);
  sessionStorage.setItem('xplatform.role', me.role);
  if (location.hash.replace(/^#/, '') !== me.lot) history.replaceState(null, '', `#${me.lot}`);
  lot = null;
  const { name, role } = me;
  conn = connect({
    category: 'Lot',
    entityId: me.lot,
    cid: connectionId(me.lot, name),
    getToken: () => fetchToken(name, role),
  });
  window.xplatformDemo = { conn };
  offs = [
    conn.onState(onConnectionState),
    conn.onWelcome((state) => { log(`joined lot ${me.lot} as ${name} (${role})`, 'good'); applyState(state); }),
    conn.onPush(onPush),
    conn.onLatency((ms) => { $('latency').textContent = `${formatMs(ms)}`; }),
    conn.onError((err) => log(`edge: ${err.message}`, 'error')),
    watchReadModels({ me, getToken: () => readToken(name, role), getPosition: () => conn?.position ?? null }),
    watchStock({ sku: me.lot, cid: connectionId(`stock.${me.lot}`, name), getToken: () => readToken(name, role) }),
  ];
  render();
}

function leave() {
  if (!conn) return;
  for (const off of offs) off();
  offs = [];
  token = null;
  conn.close();
  conn = null;
  me = null;
  lot = null;
  $('conn-state').textContent = 'not joined';
  $('conn-state').dataset.state = 'idle';
  $('latency').textContent = '–';
  $('freshness').textContent = '–';
  log('left the lot');
  render();
}

function onConnectionState(state, detail) {
  const el = $('conn-state');
  el.dataset.state = state;
  el.textContent = STATE_LABELS[state] || state;
  if (state === 'reconnecting') {
    el.textContent += detail.attempt > 1 ? ` (try ${detail.attempt})` : '';
    if (detail.attempt === 1) log(`connection lost${detail.reason ? `: ${detail.reason}` : ''}; reconnecting`, 'error');
  } else if (state === 'closed') {
    if (detail.reason && detail.reason !== 'client_left') {
      log(`connection closed: ${detail.reason}`, 'error');
      notice(`Disconnected: ${detail.reason}`, 'error');
    }
  }
  render();
}

// ------------------------------------------------------------------ what the lot pushes
function onPush(payload) {
  if (!payload || typeof payload !== 'object') return;
  switch (payload.type) {
    case 'state': applyState(payload); break;
    case 'bid_rejected':
      log(`your bid was rejected: ${payload.reason}`, 'error');
      notice(`Bid rejected: ${payload.reason}`, 'error');
      break;
    case 'left': log(`${payload.user} left`); break;
    case 'registered': log(`your credit line on this lot: ${payload.limit}`); break;
    case 'register_rejected': notice(`Credit line refused: ${payload.reason}`, 'error'); break;
    default: log(`${payload.type ?? 'message'}: ${JSON.stringify(payload)}`);
  }
}

function applyState(state) {
  if (!state || typeof state !== 'object') return;
  const before = lot;
  lot = state;
  if (before && before.status !== state.status) log(`lot is now ${state.status}${state.title ? `: ${state.title}` : ''}`, 'good');
  if (before && state.bid_count > before.bid_count) {
    log(`new high bid ${state.high_amount} by ${state.high_bidder}`, 'good');
    $('high-amount').classList.remove('flash');
    void $('high-amount').offsetWidth; // restart the animation
    $('high-amount').classList.add('flash');
    if (state.sent_at > 0) $('freshness').textContent = formatMs(Math.max(0, Date.now() - state.sent_at * 1000));
    if (me && state.high_bidder === me.name) notice(`Your bid of ${state.high_amount} leads.`, 'info');
    else if (me && before.high_bidder === me.name) notice(`You were outbid: ${state.high_amount} by ${state.high_bidder}.`, 'error');
  }
  if (before && me && before.status !== 'closed' && state.status === 'closed') {
    notice(state.winner ? `Sold to ${state.winner} for ${state.high_amount}.` : 'Closed without bids.', 'info');
  }
  if (before && state.present !== before.present) log(`${state.present} ${state.present === 1 ? 'person' : 'people'} here`);
  render();
}

// ------------------------------------------------------------------ actions
async function send(payload, what) {
  return conn ? request(conn, payload, what) : null;
}

async function openLot() {
  const title = $('open-title').value.trim();
  const increment = Number($('open-increment').value);
  if (await send({ type: 'open', title, increment }, 'Open')) notice(`You opened "${title}".`, 'info');
}

async function closeLot() {
  await send({ type: 'close' }, 'Close'); // the closed state (and its notice) arrives as a push
}

function nextAmount() {
  if (!lot) return 1;
  return lot.high_bidder ? lot.high_amount + lot.increment : Math.max(lot.increment, 1);
}

async function bid(amount) {
  if (!Number.isSafeInteger(amount) || amount < 1) { notice('Enter a whole amount.', 'error'); return; }
  const reply = await send({ type: 'bid', amount, sent_at: Date.now() / 1000 }, `Bid ${amount}`);
  if (!reply) return;
  // Within your credit line the lot accepts at once; the first bid (or one above the line)
  // waits for your account to raise the line, and the outcome arrives as a push.
  const settled = reply.status === 'accepted' || (lot && lot.high_bidder === me?.name && lot.high_amount >= amount);
  notice(settled ? `Bid ${amount} accepted.` : `Bid ${amount} sent; your account is asked for credit.`, 'info');
}

// ------------------------------------------------------------------ drawing
function render() {
  const joined = Boolean(conn);
  const live = joined && conn.state === 'open';
  $('join').textContent = joined ? 'Rejoin' : 'Join';
  $('leave').hidden = !joined;
  $('lot-card').hidden = !joined;
  if (!joined) return;
  $('me').textContent = me.name;
  $('my-role').textContent = me.role;
  $('lot-id').textContent = me.lot;
  const s = lot || {};
  $('title').textContent = s.title || 'untitled lot';
  $('status').textContent = s.status || '…';
  $('status').dataset.status = s.status || '';
  $('high-amount').textContent = s.high_bidder ? String(s.high_amount) : '–';
  $('high-bidder').textContent = s.high_bidder || '–';
  $('bid-count').textContent = String(s.bid_count ?? 0);
  $('increment').textContent = s.status && s.status !== 'new' ? String(s.increment) : '–';
  $('present').textContent = String(s.present ?? 0);
  $('winner').textContent = s.winner || '–';

  $('auctioneer-panel').hidden = me.role !== 'auctioneer';
  $('bidder-panel').hidden = me.role !== 'bidder';
  $('viewer-panel').hidden = me.role !== 'viewer';
  $('open-form').hidden = s.status && s.status !== 'new';
  $('open-btn').disabled = !live || s.status !== 'new';
  $('close-btn').hidden = s.status !== 'open';
  $('close-btn').disabled = !live;
  const canBid = live && s.status === 'open';
  $('bid-next').disabled = !canBid;
  $('bid-btn').disabled = !canBid;
  $('bid-next').textContent = { open: `Bid ${nextAmount()}`, closed: 'Lot closed' }[s.status] || 'Not open yet';
  // No `min` from the lot: the entity decides, and its rejection is what the page shows.
  $('bid-amount').placeholder = s.status === 'open' ? `${nextAmount()} or more` : '';
}

init();
