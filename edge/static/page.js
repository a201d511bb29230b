// What the demo pages share (demo.html: the auction, presence.html: presence): the activity
// log, the notice line, a request whose refusal is shown, and how a round trip is shown. Both pages have #log and #notice.

export const $ = (id) => document.getElementById(id);

/** Show one line in the page's #notice (kind: 'info' or 'error'). */
export function notice(text, kind) {
  const el = $('notice');
  el.textContent = text;
  el.className = `notice ${kind}`;
  el.hidden = false;
}

/** Add a timestamped line at the top of the page's #log, keeping the last 100. */
export function log(text, kind = '') {
  const item = document.createElement('li');
  if (kind) item.className = kind;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const span = document.createElement('span');
  span.textContent = text;
  item.append(time, span);
  const list = $('log');
  list.prepend(item);
  while (list.children.length > 100) list.lastChild.remove();
}

export function formatMs(ms) {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** ``conn.request(payload)``; a refusal is logged and noticed as "<what> refused: <reason>" and gives null. */
export async function request(conn, payload, what) {
  try {
    return await conn.request(payload);
  } catch (err) {
    const reason = err.reason || err.message;
    log(`${what} refused: ${reason}`, 'error');
    notice(`${what} refused: ${reason}`, 'error');
    return null;
  }
}
