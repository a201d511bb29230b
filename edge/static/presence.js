// The presence demo page (domain/presence: UserState per user, Room per room) on the browser
// client. You go online by connecting to your own UserState (each tab is a device), change
// your status there, join a room (your UserState tells the Room) and watch its roster by
// connecting to the Room; watching someone else is a connection to their UserState.

import { $, formatMs, log, notice, request } from './page.js';
import { connect, uuid4 } from './xplatform.js';

const STATE_LABELS = { connecting: 'connecting…', open: 'online', reconnecting: 'reconnecting…', closed: 'offline' };

let me = null;        // {name, conn, offs}
let room = null;      // {id, conn, members}
const watched = new Map();  // name -> {conn, presence}

async function fetchToken(name) {
  const response = await fetch(`/dev/token?sub=${encodeURIComponent(name)}`, { cache: 'no-store' });
  if (!response.ok) throw new Error(`no token: HTTP ${response.status}`);
  return (await response.json()).token;
}

function open(category, entityId, name, onEvent) {
  // One connection ID per tab and entity: a reload resumes it.
  const key = `xplatform.presence.cid.${category}.${entityId}.${name}`;
  const cid = sessionStorage.getItem(key) || uuid4();
  sessionStorage.setItem(key, cid);
  const conn = connect({ category, entityId, cid, getToken: () => fetchToken(name) });
  conn.onWelcome(onEvent);
  conn.onPush(onEvent);
  conn.onError((err) => log(`${category} ${entityId}: ${err.message}`, 'error'));
  conn.onState((state, detail) => {
    if (state === 'closed' && detail.reason && detail.reason !== 'client_left') {
      log(`${category} ${entityId} closed: ${detail.reason}`, 'error');
    }
  });
  return conn;
}

// ------------------------------------------------------------------ you
function goOnline() {
  if (!$('online-form').reportValidity()) return;
  goOffline();
  const name = $('name').value.trim();
  sessionStorage.setItem('xplatform.presence.name', name);
  const conn = open('UserState', name, name, onMine);
  me = { name, conn, offs: [
    conn.onState((state) => { $('conn-state').dataset.state = state; $('conn-state').textContent = STATE_LABELS[state] || state; render(); }),
    conn.onLatency((ms) => { $('latency').textContent = formatMs(ms); }),
  ], presence: null };
  window.xplatformPresence = { conn };
  render();
}

function goOffline() {
  if (!me) return;
  for (const off of me.offs) off();
  me.conn.close();
  log(`${me.name} went offline`);
  me = null;
  $('conn-state').textContent = 'offline';
  $('conn-state').dataset.state = 'idle';
  render();
}

function onMine(payload) {
  if (!payload || typeof payload !== 'object') return;
  if (payload.type === 'presence') {
    me.presence = { ...(me.presence || {}), ...payload };
    log(`you are ${payload.status}${payload.text ? `: ${payload.text}` : ''}`, 'good');
  } else if (payload.type === 'room_full') {
    notice(`Room ${payload.room} is full.`, 'error');
  }
  render();
}

async function setStatus() {
  if (!me) return;
  const reply = await request(me.conn, { type: 'set_status', status: $('status').value, text: $('status-text').value },
    'Status');
  if (reply) { me.presence = reply; render(); }
}

// ------------------------------------------------------------------ a room
async function joinRoom() {
  if (!me || !$('room-form').reportValidity()) return;
  const id = $('room').value.trim();
  if (!(await request(me.conn, { type: 'join_room', room: id }, `Joining ${id}`))) return;
  if (room?.id === id) return;
  room?.conn.close();
  room = { id, members: {}, conn: null };
  room.conn = open('Room', id, me.name, (payload) => onRoom(id, payload));
  log(`joined room ${id}`, 'good');
  render();
}

function onRoom(id, payload) {
  if (!room || room.id !== id || !payload || typeof payload !== 'object') return;
  if (payload.type === 'roster') room.members = { ...payload.members };
  else if (payload.type === 'member') room.members[payload.user] = payload;
  else if (payload.type === 'member_left') delete room.members[payload.user];
  render();
}

// ------------------------------------------------------------------ watching someone
function watch() {
  if (!$('watch-form').reportValidity()) return;
  const name = $('watch-name').value.trim();
  if (watched.has(name)) return;
  const viewer = me?.name || `watcher-${Math.floor(1000 + Math.random() * 9000)}`;
  const entry = { conn: null, presence: null };
  watched.set(name, entry);
  entry.conn = open('UserState', name, viewer, (payload) => {
    if (payload?.type === 'presence') { entry.presence = payload; render(); }
  });
  entry.conn.onState((state, detail) => {
    if (state === 'closed') { watched.delete(name); if (detail.reason) notice(`${name}: ${detail.reason}`, 'error'); render(); }
  });
  render();
}

// ------------------------------------------------------------------ drawing
function person(user, p) {
  const li = document.createElement('li');
  li.dataset.user = user;
  const dot = document.createElement('span');
  dot.className = 'dot';
  dot.dataset.status = p?.status || 'offline';
  const text = document.createElement('span');
  text.className = 'line';
  text.textContent = `${user} — ${p?.status || '…'}${p?.text ? `: ${p.text}` : ''}`;
  li.append(dot, text);
  return li;
}

function render() {
  const online = Boolean(me);
  $('go-online').textContent = online ? 'Switch' : 'Go online';
  $('go-offline').hidden = !online;
  $('me-panel').hidden = !online;
  if (online) {
    const p = me.presence || {};
    $('me').textContent = me.name;
    $('my-status').textContent = p.status || '…';
    $('my-dot').dataset.status = p.status || '';
    $('my-text').textContent = p.text ? `(${p.text})` : '';
    $('my-devices').textContent = String(p.devices ?? 0);
    const live = me.conn.state === 'open';
    $('set-status').disabled = !live;
    $('join-room').disabled = !live;
  }
  $('room-card').hidden = !room;
  if (room) {
    $('room-id').textContent = room.id;
    $('roster').replaceChildren(...Object.keys(room.members).sort().map((u) => person(u, room.members[u])));
  }
  $('watched').replaceChildren(...[...watched].map(([u, e]) => person(u, e.presence)));
}

$('name').value = sessionStorage.getItem('xplatform.presence.name') || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
$('online-form').addEventListener('submit', (e) => { e.preventDefault(); goOnline(); });
$('go-offline').addEventListener('click', goOffline);
$('status-form').addEventListener('submit', (e) => { e.preventDefault(); setStatus(); });
$('room-form').addEventListener('submit', (e) => { e.preventDefault(); joinRoom(); });
$('watch-form').addEventListener('submit', (e) => { e.preventDefault(); watch(); });
window.addEventListener('pagehide', () => { me?.conn.close(); room?.conn.close(); for (const e of watched.values()) e.conn.close(); });
render();
