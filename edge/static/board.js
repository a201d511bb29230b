// The demo page's read-model view: the auction house board (projection `auction_board`: every
// lot with its high bid and bid count) and the joined bidder's summary across lots
// (`bidder_summary`: downstream aggregation over Lot and Bidder events), both read through the
// edge's query API (edge/PROTOCOL.md "Reading read models") and polled about once a second.
// Each poll presents the position token of the newest reply this tab got (read-your-writes):
// after your own bid, the board shows it as soon as the read model has applied it.

import { $ } from './page.js';
import { read } from './xplatform.js';

const EVERY_MS = 1000;
const WAIT_MS = 2000;       // how long the edge may wait for our own writes to be applied
const OFF_EVERY_MS = 2000;  // read models off or starting: ask again less often

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function drawBoard(documents, currentLot) {
  const rows = documents.map((lot) => {
    const tr = document.createElement('tr');
    tr.dataset.lot = lot.lot ?? lot._id;
    if (tr.dataset.lot === currentLot) tr.className = 'current';
    tr.append(cell(tr.dataset.lot), cell(lot.title ?? ''), cell(lot.status ?? ''),
      cell(lot.high_bidder ? String(lot.high_amount) : '–'), cell(lot.high_bidder ?? '–'), cell(String(lot.bid_count ?? 0)));
    return tr;
  });
  $('board-rows').replaceChildren(...rows);
  $('board-empty').hidden = rows.length > 0;
}

function drawSummary(summary) {
  const s = summary || {};
  $('sum-bids').textContent = String(s.bids ?? 0);
  $('sum-best').textContent = s.best_bid ? String(s.best_bid) : '–';
  $('sum-lots').textContent = String(Object.keys(s.lots ?? {}).length);
  $('sum-won').textContent = String(s.lots_won ?? 0);
  $('sum-credit').textContent = s.credit === undefined ? '–' : String(s.credit);
  $('sum-held').textContent = String(Object.values(s.held ?? {}).reduce((a, b) => a + b, 0));
}

/**
 * Poll the read models for `me` ({name, lot}) until the returned stop() is called.
 * @param {{me: {name: string, lot: string}, getToken: () => Promise<string>, getPosition: () => (string|null)}} options
 */
export function watchReadModels({ me, getToken, getPosition }) {
  let stopped = false;
  let timer = null;
  $('board-card').hidden = false;
  $('sum-who').textContent = me.name;

  async function poll() {
    let next = EVERY_MS;
    try {
      const token = await getToken();
      const after = getPosition() ?? undefined;
      const board = await read({ projection: 'auction_board', limit: 200, after, waitMs: WAIT_MS, token });
      if (stopped) return;
      drawBoard(board.documents, me.lot);
      $('board-status').textContent = `${board.documents.length}${board.more ? '+' : ''} lots · read ${new Date().toLocaleTimeString([], { hour12: false })}`
        + (after ? ` · after ${after}` : '');
      $('board-status').dataset.state = 'on';
      try {
        drawSummary(await read({ projection: 'bidder_summary', key: me.name, after, waitMs: WAIT_MS, token }));
      } catch (err) {
        if (err.code !== 'not_found') throw err;
        drawSummary(null); // no bids and no account yet
      }
    } catch (err) {
      if (stopped) return;
      $('board-status').textContent = err.code === 'read_models_unavailable' ? err.reason : `read failed: ${err.message}`;
      $('board-status').dataset.state = 'off';
      next = OFF_EVERY_MS;
    }
    if (!stopped) timer = setTimeout(poll, next);
  }

  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    $('board-card').hidden = true;
  };
}
