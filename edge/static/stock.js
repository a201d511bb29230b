// The demo page's state proxy card: the warehouse stock of the joined lot's item, held by a
// `StockLevel` proxy (domain/stock/stock_level.py on domain/proxy.py). The proxy answers with
// its LAST KNOWN state at once ("read last known", with `age`: seconds since it was received or
// confirmed); Refresh forces a pull from the warehouse (the primary), whose outcome arrives as a
// `proxy_result` push: the pulled level, or a typed error (warehouse down, too slow, ...) that
// still carries the last known level and its age, which the card keeps showing, marked stale.
// The age ticks here: the age the proxy sent plus the time since this tab got it.

import { $, log } from './page.js';
import { connect } from './xplatform.js';

const FRESH_S = 30;   // on joining, an older (or no) level is pulled: `read` with `max_age`
const ERRORS = {
  primary_unavailable: 'the warehouse is unreachable',
  primary_timeout: 'the warehouse did not answer in time',
  circuit_open: 'the warehouse is unreachable (circuit open: not asked for a while)',
  primary_refused: 'the warehouse refused the request',
  no_connector: 'no warehouse is configured for this proxy',
  outcome_unknown: 'the outcome is unknown',
};

export function formatAge(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

/**
 * Show `sku`'s stock in #stock-card until the returned stop() is called.
 * @param {{sku: string, cid: string, getToken: () => Promise<string>}} options
 */
export function watchStock({ sku, cid, getToken }) {
  let known = null;     // the proxy's last_known, with `seenAt` (Date.now() when this tab got it)
  let error = null;     // {code, reason} of the latest failed pull, until one succeeds
  let pulling = false;
  const answered = new Set();  // ops whose proxy_result arrived (before their reply, in a race)
  const conn = connect({ category: 'StockLevel', entityId: sku, cid, getToken });

  function take(lastKnown) {
    if (!lastKnown || typeof lastKnown !== 'object') return;
    known = { ...lastKnown, seenAt: Date.now() };
  }

  function ageNow() {
    return known && typeof known.age === 'number' ? known.age + (Date.now() - known.seenAt) / 1000 : null;
  }

  function draw() {
    const state = known && known.state && typeof known.state === 'object' ? known.state : null;
    const num = (v) => (typeof v === 'number' ? String(v) : '–');
    $('stock-available').textContent = state ? num((state.on_hand ?? 0) - (state.reserved ?? 0)) : '–';
    $('stock-on-hand').textContent = state ? num(state.on_hand) : '–';
    $('stock-reserved').textContent = state ? num(state.reserved) : '–';
    const age = ageNow();
    const el = $('stock-age');
    el.textContent = age === null ? 'not known yet' : `updated ${formatAge(age)}`;
    el.dataset.state = error ? 'stale' : (age === null ? 'none' : 'fresh');
    const err = $('stock-error');
    err.hidden = !error;
    if (error) {
      const what = ERRORS[error.code] || error.code;
      err.textContent = `${what} (${error.code}): `
        + (age === null ? 'no level known yet.' : `showing the last known level, from ${formatAge(age)}.`);
      err.dataset.code = error.code;
    }
    $('stock-refresh').disabled = pulling || conn.state !== 'open';
    $('stock-refresh').textContent = pulling ? 'Pulling…' : 'Refresh from the warehouse';
  }

  async function ask(payload) {
    try {
      const reply = await conn.request(payload);
      take(reply.last_known);
      pulling = reply.status === 'pending' && !answered.has(reply.op);   // the outcome comes as a proxy_result push
    } catch (err) {
      error = { code: err.code || 'error', reason: err.reason || err.message };
      pulling = false;
    }
    draw();
  }

  function refresh() {
    pulling = true;
    draw();
    ask({ type: 'pull' });
  }

  const offs = [
    conn.onWelcome((state) => {
      take(state);
      draw();
      if (ageNow() === null || ageNow() > FRESH_S) { pulling = true; ask({ type: 'read', max_age: FRESH_S }); }
    }),
    conn.onPush((payload) => {
      if (!payload || typeof payload !== 'object') return;
      if (payload.type === 'proxy_state') take(payload);
      if (payload.type === 'proxy_result') {
        take(payload.last_known);
        answered.add(payload.op);
        pulling = false;
        error = payload.ok ? null : (payload.error || { code: 'error' });
        log(payload.ok ? `stock of ${sku} pulled from the warehouse`
          : `stock pull failed: ${error.code}${error.reason ? ` (${error.reason})` : ''}`, payload.ok ? 'good' : 'error');
      }
      draw();
    }),
    conn.onState(() => draw()),
  ];
  const ticker = setInterval(draw, 1000);
  $('stock-sku').textContent = sku;
  $('stock-refresh').onclick = refresh;
  $('stock-card').hidden = false;
  window.xplatformStock = { conn };
  draw();

  return () => {
    clearInterval(ticker);
    for (const off of offs) off();
    conn.close();
    $('stock-refresh').onclick = null;
    $('stock-card').hidden = true;
  };
}
