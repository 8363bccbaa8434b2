// The review console of `kubectl aexec ui`: the session list (live, from the server's event
// stream), one session's page (approve/deny, verification, the recording in asciinema's player)
// and the recording search. Served by the plugin on 127.0.0.1 under a strict CSP: no inline
// code, and every piece of server-provided text reaches the page through textContent (h()).
'use strict';

// ---------------------------------------------------------------------------------------------
// Constants and shared state

const TOKEN_MESSAGE =
  'This console needs the URL that `kubectl aexec ui` printed (it carries a token).';

const TERMINAL_PHASES = new Set(['Denied', 'Expired', 'Withdrawn', 'Succeeded', 'Failed', 'Terminated']);

/** The phase tabs of the list, and which phases each shows. */
const PHASE_GROUPS = {
  Pending: (p) => p === 'Pending',
  Active: (p) => p === 'Approved' || p === 'Active',
  Finished: (p) => TERMINAL_PHASES.has(p),
  All: () => true,
};

const SINCE = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, all: Infinity };
const SINCE_LABELS = { '1h': 'last hour', '24h': 'last 24 hours', '7d': 'last 7 days', all: 'any time' };

const state = {
  whoami: null,
  /** ExecSessions of the connected namespace, by "namespace/name". */
  sessions: new Map(),
  /** The list and event stream: `ns` is the namespace they cover ('' = all, null = none yet). */
  stream: { ns: null, es: null, listPromise: null, resync: false, retry: null, loading: false, error: null },
  /** The current page: its route, an AbortSignal for its fetches, hooks and cleanups. */
  page: null,
  /** The list's last hash, so a session page can link back to the same filters. */
  listHash: '#/',
};

// ---------------------------------------------------------------------------------------------
// Small DOM and formatting helpers

const $ = (sel, root = document) => root.querySelector(sel);

/**
 * Builds an element. `attrs`: `class`, `dataset`, `on<event>` handlers, boolean attributes as
 * true/false, anything else as an attribute; null/undefined/false are skipped. Children: nodes,
 * strings (as text, never parsed as HTML), arrays, and null/false (skipped).
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  appendChildren(el, children);
  return el;
}

/** Replaces an element's children (nulls and falses skipped, as in h()). */
function fill(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
}

function appendChildren(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const enc = encodeURIComponent;
const keyOf = (o) => `${o.metadata.namespace}/${o.metadata.name}`;
const phaseOf = (o) => (o.status && o.status.phase) || 'Pending';
const sessionHash = (ns, name, at) =>
  `#/sessions/${enc(ns)}/${enc(name)}` + (at !== undefined ? `?t=${enc(at)}` : '');
/**
 * The namespace a page starts on: the console's (`kubectl aexec ui -n NS`, else the kubeconfig
 * context's; '' with -A). In URLs, '*' stands for all namespaces and no `ns` for this default.
 */
const defaultNs = () => (state.whoami && typeof state.whoami.defaultNamespace === 'string' ? state.whoami.defaultNamespace : '');
const nsFromUrl = (raw) => (raw === null ? defaultNs() : raw.trim() === '*' ? '' : raw.trim());
const nsToUrl = (ns) => (ns === defaultNs() ? '' : ns === '' ? '*' : ns);

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
};

/** A <time> in local time, with the ISO timestamp on hover. */
function timeEl(iso, { withAge = false } = {}) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const local = d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  return h('time', { datetime: iso, title: iso }, local,
    withAge ? h('span', { class: 'age' }, ` (${formatDuration(Date.now() - d.getTime())} ago)`) : null);
}

/** "1h2m", "3m4s", "12s" from milliseconds. */
function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d${hr}h`;
  if (hr) return `${hr}h${m}m`;
  if (m) return `${m}m${s}s`;
  return `${s}s`;
}

/** Seconds into a recording as m:ss (minutes unbounded: 75:03). */
function formatOffset(sec) {
  const t = Math.max(0, Math.floor(Number(sec) || 0));
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
}

function formatBytes(n) {
  if (n === undefined || n === null) return '—';
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const exact = `${Number(n).toLocaleString()} bytes`;
  return i === 0 ? exact : `${v.toFixed(1)} ${units[i]} (${exact})`;
}

/** The command as a POSIX shell would need it typed: arguments single-quoted when needed. */
function shellQuote(argv) {
  return (argv || []).map((a) => {
    const s = String(a);
    if (s !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
    return `'${s.replace(/'/g, `'\\''`)}'`;
  }).join(' ');
}

function sessionDuration(o) {
  const st = o.status || {};
  if (!st.startTime) return null;
  const end = st.endTime ? Date.parse(st.endTime) : (phaseOf(o) === 'Active' ? Date.now() : NaN);
  return end - Date.parse(st.startTime);
}

function phaseBadge(phase, attrs = {}) {
  return h('span', { class: `badge phase-${phase.toLowerCase()}`, ...attrs }, phase);
}

const yesNo = (b) => (b ? 'yes' : 'no');
const userName = (u) => (u && u.username) || 'unknown';

/** A copy-to-clipboard button for a command line; says "Copied" in a live region. */
function copyButton(text, label) {
  const status = h('span', { class: 'copy-status', role: 'status' });
  const button = h('button', {
    type: 'button', class: 'small', 'aria-label': label,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = 'Copied';
      } catch {
        status.textContent = 'Copy failed: select the text instead';
      }
      setTimeout(() => { status.textContent = ''; }, 2500);
    },
  }, 'Copy');
  return h('span', { class: 'copy' }, button, status);
}

// ---------------------------------------------------------------------------------------------
// Banner (errors) and API access

function showError(message) {
  $('#banner-text').textContent = message;
  $('#banner').hidden = false;
}

function hideBanner() {
  $('#banner').hidden = true;
  $('#banner-text').textContent = '';
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const isAbort = (e) => e && e.name === 'AbortError';

/** The user-facing sentence for a failed response: the server's `{message}`, else the status. */
async function errorMessage(res) {
  if (res.status === 401) return TOKEN_MESSAGE;
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === 'string' && body.message) return body.message;
  } catch { /* not JSON: fall through */ }
  return `${res.status} ${res.statusText || 'error'}${text ? `: ${text.slice(0, 300)}` : ''}`;
}

async function request(path, { method = 'GET', body, signal, accept = 'application/json' } = {}) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: accept }, signal };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError(0, 'The console server cannot be reached: is `kubectl aexec ui` still running?');
  }
  if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
  return res;
}

/** JSON API call; throws ApiError with the message to show. */
const api = async (path, opts) => (await request(path, opts)).json();

// ---------------------------------------------------------------------------------------------
// Session list and live event stream (shared by the pages)

/** Whether `incoming` is older than `existing`. Kubernetes resourceVersions are opaque, but
 *  etcd's are increasing integers; when both parse, this keeps a late list response from
 *  overwriting a newer event. */
function isStale(incoming, existing) {
  const a = Number(incoming && incoming.metadata && incoming.metadata.resourceVersion);
  const b = Number(existing && existing.metadata && existing.metadata.resourceVersion);
  return Number.isSafeInteger(a) && Number.isSafeInteger(b) && a < b;
}

/** Points the list and the event stream at `ns` ('' = all namespaces); resolves when listed. */
function connect(ns) {
  const s = state.stream;
  if (s.ns === ns && s.listPromise) return s.listPromise;
  closeStream();
  s.ns = ns;
  s.resync = false;
  s.error = null;
  state.sessions = new Map();
  openEvents(ns);
  s.listPromise = loadList(ns);
  return s.listPromise;
}

function closeStream() {
  const s = state.stream;
  if (s.es) s.es.close();
  clearTimeout(s.retry);
  s.es = null;
  s.listPromise = null;
}

/** Lists the sessions of `ns`; a failure is kept in `stream.error` for the list page to show
 *  (a session page only uses the list for live updates, and says nothing). */
async function loadList(ns) {
  const s = state.stream;
  s.loading = true;
  try {
    const data = await api(`/api/sessions${query({ namespace: ns })}`);
    if (s.ns !== ns) return;
    s.error = null;
    const next = new Map();
    for (const o of data.items || []) {
      const old = state.sessions.get(keyOf(o));
      next.set(keyOf(o), old && isStale(o, old) ? old : o);
    }
    state.sessions = next;
  } catch (e) {
    if (s.ns !== ns) return;
    s.error = e.message;
  } finally {
    if (s.ns === ns) s.loading = false;
  }
  notify(null, null);
}

function openEvents(ns) {
  const s = state.stream;
  const es = new EventSource(`/api/events${query({ namespace: ns })}`);
  s.es = es;
  setLive(s.resync ? 'down' : 'connecting');
  es.addEventListener('open', () => {
    setLive('open');
    // Events missed while disconnected (deletions above all) come back with a fresh list.
    if (s.resync) { s.resync = false; loadList(ns); }
  });
  es.addEventListener('error', () => {
    if (s.es !== es) return;
    s.resync = true;
    setLive('down');
    // EventSource retries network errors itself, but gives up on an HTTP error (401, 500):
    // then retry by hand, slowly.
    if (es.readyState === EventSource.CLOSED) {
      clearTimeout(s.retry);
      s.retry = setTimeout(() => { if (s.es === es) openEvents(ns); }, 10000);
    }
  });
  es.addEventListener('session', (ev) => {
    const msg = parseJson(ev.data);
    if (msg && msg.object && msg.object.metadata) applyEvent(msg.type, msg.object);
  });
  es.addEventListener('problem', (ev) => {
    const msg = parseJson(ev.data);
    showError((msg && msg.message) || 'The event stream reported a problem.');
  });
}

function parseJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

function applyEvent(type, obj) {
  const ns = state.stream.ns;
  if (ns && obj.metadata.namespace !== ns) return;
  const key = keyOf(obj);
  if (type === 'DELETED') {
    state.sessions.delete(key);
    notify(key, null);
  } else {
    if (isStale(obj, state.sessions.get(key))) return;
    state.sessions.set(key, obj);
    notify(key, obj);
  }
}

/** A session changed (or the whole list, key null): update the header and the current page. */
function notify(key, obj) {
  updatePendingCount();
  const page = state.page;
  if (page && page.onSession) page.onSession(key, obj);
}

function setLive(st) {
  const el = $('#live-indicator');
  el.dataset.state = st;
  const text = { open: 'live', connecting: 'connecting…', down: 'disconnected, reconnecting…' }[st];
  $('.live-text', el).textContent = text;
  el.title = st === 'open'
    ? 'The session list updates live'
    : 'The live stream of session changes is disconnected; the list may be out of date';
}

function updatePendingCount() {
  let n = 0;
  for (const o of state.sessions.values()) if (phaseOf(o) === 'Pending') n++;
  const el = $('#pending-count');
  el.hidden = n === 0;
  el.textContent = n ? `${n} pending` : '';
  document.title = `aexec review${n ? ` (${n} pending)` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Router

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const qi = raw.indexOf('?');
  const path = qi < 0 ? raw : raw.slice(0, qi);
  const params = new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1));
  let parts;
  try { parts = path.split('/').filter(Boolean).map(decodeURIComponent); } catch { parts = ['?']; }
  if (parts.length === 0) return { name: 'sessions', params };
  if (parts[0] === 'sessions' && parts.length === 3) return { name: 'session', ns: parts[1], session: parts[2], params };
  if (parts[0] === 'search' && parts.length === 1) return { name: 'search', params };
  return { name: 'notfound', params };
}

/** Goes to `hash`, re-rendering even when it is the current one (a repeated search). */
function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

const PAGES = { sessions: renderSessionsPage, session: renderSessionPage, search: renderSearchPage, notfound: renderNotFound };
let firstRoute = true;

async function route() {
  if (state.page) state.page.dispose();
  const r = parseHash();
  const controller = new AbortController();
  const page = {
    route: r, signal: controller.signal, onSession: null, cleanups: [],
    dispose() { controller.abort(); this.cleanups.forEach((f) => f()); },
  };
  state.page = page;
  const initial = firstRoute;
  firstRoute = false;
  document.body.dataset.ready = '0';
  document.body.dataset.route = r.name;
  for (const [id, name] of [['nav-sessions', 'sessions'], ['nav-search', 'search']]) {
    const link = document.getElementById(id);
    if (r.name === name) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  const main = $('#main');
  main.replaceChildren();
  // Move focus to the new page's heading, as a page load would (not on the first load, and
  // not away from something the user has reached in the page meanwhile).
  const focusHeading = () => {
    const h1 = $('h1', main);
    if (initial || !h1 || main.contains(document.activeElement)) return;
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
  };
  const rendered = PAGES[r.name](main, r, page);
  focusHeading(); // the synchronous part of a page has run: its heading may be there already
  try {
    await rendered;
  } catch (e) {
    if (!isAbort(e)) showError(e.message);
  }
  if (state.page !== page) return;
  focusHeading();
  document.body.dataset.ready = '1';
}

function renderNotFound(main) {
  main.append(h('h1', {}, 'No such page'), h('p', {}, h('a', { href: '#/' }, 'Back to the sessions')));
}

// ---------------------------------------------------------------------------------------------
// Page: sessions

function readFilters(params) {
  const phase = params.get('phase');
  const since = params.get('since');
  return {
    phase: Object.hasOwn(PHASE_GROUPS, phase) ? phase : 'All',
    ns: nsFromUrl(params.get('ns')),
    requester: params.get('requester') || '',
    pod: params.get('pod') || '',
    since: Object.hasOwn(SINCE, since) ? since : 'all',
  };
}

function filtersHash(f) {
  return `#/${query({
    phase: f.phase === 'All' ? '' : f.phase, ns: nsToUrl(f.ns), requester: f.requester, pod: f.pod,
    since: f.since === 'all' ? '' : f.since,
  })}`;
}

async function renderSessionsPage(main, r, page) {
  const f = readFilters(r.params);
  state.listHash = filtersHash(f);

  // Filters change the view in place (and the URL, without a hashchange): re-rendering the
  // page would lose the focus of the field being typed in.
  const apply = () => {
    state.listHash = filtersHash(f);
    history.replaceState(null, '', state.listHash);
    renderList();
  };
  const field = (id, label, input) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
  const nsInput = h('input', { id: 'filter-ns', type: 'search', value: f.ns, placeholder: 'all namespaces', autocomplete: 'off', spellcheck: 'false' });
  // The namespace is the server's filter: a new one lists and streams again.
  const applyNs = async () => {
    const ns = nsInput.value.trim();
    if (ns === f.ns) return;
    f.ns = ns;
    const loaded = connect(ns);
    apply();
    await loaded;
    if (state.page === page && state.stream.error) showError(state.stream.error);
  };
  nsInput.addEventListener('change', applyNs);
  nsInput.addEventListener('search', applyNs); // the clear button of a search field
  const textFilter = (id, key) => h('input', {
    id, type: 'search', value: f[key], placeholder: 'any', autocomplete: 'off', spellcheck: 'false',
    oninput: (e) => { f[key] = e.target.value; apply(); },
  });
  const sinceSelect = h('select', { id: 'filter-since', onchange: (e) => { f.since = e.target.value; apply(); } },
    Object.keys(SINCE).map((k) => h('option', { value: k, selected: k === f.since }, SINCE_LABELS[k])));
  const form = h('form', {
    id: 'filters', class: 'filters', role: 'search', 'aria-label': 'Filter sessions',
    onsubmit: (e) => { e.preventDefault(); applyNs(); },
  },
  field('filter-ns', 'Namespace', nsInput),
  field('filter-requester', 'Requester', textFilter('filter-requester', 'requester')),
  field('filter-pod', 'Pod', textFilter('filter-pod', 'pod')),
  field('filter-since', 'Created', sinceSelect));

  // The phase tabs are built once (so they keep the focus) and updated in place.
  const tabs = h('div', { id: 'phase-tabs', class: 'tabs', role: 'group', 'aria-label': 'Phase' });
  const tabCounts = {};
  for (const g of Object.keys(PHASE_GROUPS)) {
    tabCounts[g] = h('span', { class: 'count' }, '0');
    tabs.append(h('button', {
      type: 'button', class: 'tab', dataset: { phase: g },
      title: g === 'Active' ? 'Approved, or attached and running' : null,
      onclick: () => { f.phase = g; apply(); },
    }, g, ' ', tabCounts[g]));
  }
  const summary = h('p', { id: 'list-summary', class: 'muted', 'aria-live': 'polite' });
  const wrap = h('div', { class: 'table-wrap' });
  main.append(h('h1', {}, 'Sessions'), form, tabs, summary, wrap);

  function renderList() {
    // Sessions passing every filter but the phase: the tab counts are counted over these.
    const cutoff = Date.now() - SINCE[f.since];
    const req = f.requester.trim().toLowerCase();
    const pod = f.pod.trim().toLowerCase();
    const base = [...state.sessions.values()].filter((o) => {
      const spec = o.spec || {};
      return (!req || userName(spec.requester).toLowerCase().includes(req)) &&
        (!pod || String(spec.pod || '').toLowerCase().includes(pod)) &&
        (f.since === 'all' || Date.parse(o.metadata.creationTimestamp) >= cutoff);
    });
    for (const g of Object.keys(PHASE_GROUPS)) {
      const n = base.filter((o) => PHASE_GROUPS[g](phaseOf(o))).length;
      const tab = tabCounts[g].parentElement;
      tab.setAttribute('aria-pressed', String(g === f.phase));
      tab.classList.toggle('attention', g === 'Pending' && n > 0);
      if (tabCounts[g].textContent !== String(n)) tabCounts[g].textContent = String(n);
    }
    const rows = base.filter((o) => PHASE_GROUPS[f.phase](phaseOf(o)))
      .sort((a, b) => Date.parse(b.metadata.creationTimestamp) - Date.parse(a.metadata.creationTimestamp));
    const pending = base.filter((o) => phaseOf(o) === 'Pending').length;
    const s = state.stream;
    const text = s.error ? `The sessions could not be listed: ${s.error}`
      : s.loading && !state.sessions.size ? 'Loading sessions…'
        : `${rows.length} session${rows.length === 1 ? '' : 's'} shown` +
          `${pending ? `, ${pending} awaiting approval` : ''} · ${f.ns ? `namespace ${f.ns}` : 'all namespaces'}`;
    // Only a changed text, so screen readers are not told the same thing at every event.
    if (summary.textContent !== text) summary.textContent = text;

    // Rebuilding the table would drop the focus of a row's link: put it back.
    const active = document.activeElement;
    const focused = active && active.closest && active.closest('#sessions-table tr[data-session]');
    fill(wrap, sessionsTable(rows, s.loading ? 'Loading sessions…' : 'No sessions match these filters.'));
    if (focused) {
      const again = wrap.querySelector(`tr[data-session="${CSS.escape(focused.dataset.session)}"] a`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  let scheduled = false;
  page.onSession = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; if (state.page === page) renderList(); });
  };
  const ticker = setInterval(page.onSession, 30000); // ages and running durations
  page.cleanups.push(() => clearInterval(ticker));

  const loaded = connect(f.ns);
  renderList();
  await loaded;
  if (state.page !== page) return;
  if (state.stream.error) showError(state.stream.error);
  renderList();
}

function sessionsTable(rows, emptyText) {
  const cols = ['Name', 'Namespace', 'Requester', 'Pod / container', 'Command', 'Phase', 'Created', 'Duration', 'Exit'];
  const td = (label, ...c) => h('td', { dataset: { label } }, ...c);
  const body = h('tbody', {
    // The whole row opens the session; the name link is what the keyboard reaches.
    onclick: (e) => {
      if (e.target.closest('a, button') || String(window.getSelection())) return;
      const tr = e.target.closest('tr[data-session]');
      if (tr) location.hash = $('a', tr).getAttribute('href');
    },
  });
  for (const o of rows) {
    const spec = o.spec || {};
    const st = o.status || {};
    const phase = phaseOf(o);
    const container = spec.container || st.container;
    const cmd = shellQuote(spec.command);
    const kind = spec.copy ? 'copy' : spec.debug ? 'debug' : null;
    body.append(h('tr', { class: phase === 'Pending' ? 'awaiting' : null, dataset: { session: keyOf(o), phase } },
      td('Name', h('a', { href: sessionHash(o.metadata.namespace, o.metadata.name) }, o.metadata.name),
        kind ? h('span', { class: 'tag' }, kind) : null),
      td('Namespace', o.metadata.namespace),
      td('Requester', userName(spec.requester)),
      td('Pod / container', h('span', { class: 'mono' }, spec.pod || '—'), container ? h('span', { class: 'muted' }, ` / ${container}`) : null),
      td('Command', h('code', { class: 'cmd', title: cmd }, cmd)),
      td('Phase', phaseBadge(phase), phase === 'Pending' && st.approvalSummary
        ? h('span', { class: 'muted small', title: 'approvals given / required' }, ` ${st.approvalSummary}`) : null),
      td('Created', timeEl(o.metadata.creationTimestamp, { withAge: true })),
      td('Duration', st.startTime ? formatDuration(sessionDuration(o)) : '—'),
      td('Exit', st.exitCode ?? '—')));
  }
  if (!rows.length) {
    body.append(h('tr', { class: 'empty' }, h('td', { colspan: cols.length }, emptyText)));
  }
  return h('table', { id: 'sessions-table', class: 'data stack' },
    h('caption', { class: 'visually-hidden' }, 'Exec sessions, newest first'),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
    body);
}

// ---------------------------------------------------------------------------------------------
// Page: one session

async function renderSessionPage(main, r, page) {
  const { ns, session: name } = r;
  const key = `${ns}/${name}`;
  const startAt = r.params.has('t') ? Number(r.params.get('t')) : undefined;
  main.append(h('p', { class: 'crumbs' }, h('a', { href: state.listHash }, '← Sessions')));
  const loading = h('p', { class: 'muted' }, 'Loading…');
  main.append(loading);

  // Live updates of this session come from the shared stream; point it here if it covers
  // another namespace.
  const s = state.stream;
  if (s.ns === null || (s.ns !== '' && s.ns !== ns)) connect(ns);

  const base = `/api/sessions/${enc(ns)}/${enc(name)}`;
  let data;
  try {
    data = await api(base, { signal: page.signal });
  } catch (e) {
    if (isAbort(e)) throw e;
    loading.remove();
    main.append(h('h1', {}, name), h('p', { class: 'muted' }, `This session could not be loaded: ${e.message}`));
    throw e;
  }
  loading.remove();

  const view = {
    ns, name, base, page, startAt,
    session: data.session, policy: data.policy || null,
    canApprove: !!data.canApprove, canDeny: !!data.canDeny, canReadRecording: !!data.canReadRecording,
    canWatch: !!data.canWatch,
    els: {}, recordingStarted: false, deleted: false, live: null,
  };
  const els = view.els;
  els.badge = h('span', { id: 'phase-badge' });
  els.message = h('p', { class: 'status-message' });
  els.note = h('div', { class: 'note-slot' });
  els.details = h('div', { class: 'details' });
  els.decision = h('section', { id: 'decision', 'aria-labelledby': 'decision-h', hidden: true },
    h('h2', { id: 'decision-h' }, 'Decision'));
  els.decisionStatus = h('p', { id: 'decision-status', role: 'status' });
  els.decision.append(els.decisionStatus);
  els.recording = h('section', { id: 'recording', 'aria-labelledby': 'recording-h' }, h('h2', { id: 'recording-h' }, 'Recording'));
  els.recordingBody = h('div');
  els.recording.append(els.recordingBody);
  els.live = h('section', { id: 'live', 'aria-labelledby': 'live-h', hidden: true }, h('h2', { id: 'live-h' }, 'Live'));

  main.append(
    h('header', { class: 'session-head' },
      h('h1', {}, name), els.badge,
      h('span', { class: 'muted' }, 'namespace ', h('strong', {}, ns))),
    els.message, els.note, els.decision, els.live, els.details, els.recording);

  page.onSession = (k, obj) => {
    if (k !== key) return;
    if (obj === null) { view.deleted = true; updateSessionView(view); return; }
    if (isStale(obj, view.session)) return;
    view.deleted = false;
    view.session = obj;
    updateSessionView(view);
  };
  updateSessionView(view);
}

/** (Re)renders what the session object drives; keeps the comment being typed, the verification
 *  result and the player across updates. */
function updateSessionView(view) {
  const o = view.session;
  const st = o.status || {};
  const phase = phaseOf(o);
  const { els } = view;
  els.badge.className = `badge phase-${phase.toLowerCase()}`;
  els.badge.textContent = phase;
  els.badge.dataset.phase = phase;
  els.message.textContent = st.message || '';
  els.message.hidden = !st.message;

  els.note.replaceChildren();
  if (view.deleted) {
    els.note.append(h('p', { class: 'note' }, 'This ExecSession was deleted. Its signed record stays in the store: ',
      h('code', {}, `kubectl aexec describe ${view.name} -n ${view.ns}`)));
  } else if (phase === 'Active') {
    const cmd = `kubectl aexec watch ${view.name} -n ${view.ns}`;
    els.note.append(h('p', { class: 'note active-note' }, 'Active — follow it live with ', h('code', {}, cmd), ' ',
      copyButton(cmd, 'Copy the watch command')));
  }

  updateDecision(view, phase);
  fill(els.details, ...sessionDetails(view));
  updateLive(view, phase);
  updateRecording(view, phase);
}

/** An Active session, live and read-only: the player plays the operator's observe stream
 *  (what `kubectl aexec watch` shows: the last 256 KiB first, then as it happens), relayed by
 *  the console as server-sent events. When the session ends, the stream ends and the
 *  recording below takes over. */
function updateLive(view, phase) {
  const { els } = view;
  if (phase === 'Active' && view.canWatch && !view.live && window.AsciinemaPlayer) {
    const status = h('p', { id: 'live-status', class: 'muted small', 'aria-live': 'polite' },
      'What the session shows, as it happens (read-only: nothing typed here reaches it).');
    const el = h('div', { id: 'live-player', class: 'player' });
    els.live.append(status, el);
    els.live.hidden = false;
    const player = window.AsciinemaPlayer.create({ driver: 'eventsource', url: `${view.base}/live` }, el,
      { fit: 'width', terminalFontSize: '15px', autoPlay: true });
    view.live = { player, status };
    view.page.cleanups.push(() => player.dispose());
  } else if (phase === 'Active' && !view.canWatch && !view.live) {
    els.live.hidden = false;
    fill(els.live, h('h2', { id: 'live-h' }, 'Live'),
      h('p', { class: 'muted' }, 'Watching a session live takes the aexec-approver or aexec-auditor role.'));
    view.live = { player: null, status: null };
  } else if (phase !== 'Active' && view.live && view.live.status) {
    view.live.status.textContent = `The session ended (${phase}); its recording is below once it is sealed.`;
  }
}

function dl(rows) {
  const list = h('dl', { class: 'props' });
  for (const [label, value] of rows) {
    if (value === undefined || value === null || value === '') continue;
    list.append(h('dt', {}, label), h('dd', {}, value));
  }
  return list;
}

function section(id, title, ...content) {
  return h('section', { id, 'aria-labelledby': `${id}-h` }, h('h2', { id: `${id}-h` }, title), ...content);
}

function decisionNode(d) {
  if (!d) return null;
  return h('span', {}, h('strong', {}, userName(d.user)), ', ', timeEl(d.time),
    d.comment ? h('q', { class: 'comment' }, d.comment) : null);
}

/** Who an approval or moderation rule names: "group sre, bob". */
const approvers = (rule) =>
  [...(rule.groups || []).map((g) => `group ${g}`), ...(rule.users || [])].join(', ') || 'nobody';

/** The policy object, in one or two lines. */
function policySummary(p) {
  const spec = (p && p.spec) || {};
  const parts = [];
  if (spec.decision) parts.push(`decision ${spec.decision}`);
  const a = spec.approval;
  if (a) {
    const n = a.required ?? 1;
    parts.push(`${n} approval${n === 1 ? '' : 's'} from ${approvers(a)}`);
  }
  const l = spec.limits || {};
  if (l.maxDuration) parts.push(`max duration ${l.maxDuration}`);
  if (l.idleTimeout) parts.push(`idle timeout ${l.idleTimeout}`);
  if (l.approvalValidFor) parts.push(`approval valid for ${l.approvalValidFor}`);
  if (l.recordingRequired) parts.push('recording required');
  if (spec.moderation) parts.push(`${spec.moderation.required ?? 1} moderator(s) required`);
  return parts.join(' · ');
}

function sessionDetails(view) {
  const o = view.session;
  const spec = o.spec || {};
  const st = o.status || {};
  const req = spec.requester || {};
  const out = [];

  out.push(section('request', 'Request', dl([
    ['Pod', h('span', { class: 'mono' }, spec.pod)],
    [spec.debug ? 'Target container' : 'Container', spec.container
      ? h('span', { class: 'mono' }, spec.container)
      : st.container ? h('span', {}, h('span', { class: 'mono' }, st.container), h('span', { class: 'muted' }, ' (default container)')) : null],
    ['Command', h('code', { class: 'cmd-block' }, shellQuote(spec.command))],
    ['Requester', h('span', {}, h('strong', {}, userName(req)),
      req.groups && req.groups.length ? h('span', { class: 'muted' }, ` (groups: ${req.groups.join(', ')})`) : null)],
    ['Reason', spec.reason || h('span', { class: 'muted' }, 'none given')],
    ['Terminal', `tty ${yesNo(spec.tty)}, stdin ${yesNo(spec.stdin)}`],
    ['Copy', spec.copy ? `${spec.copy.direction} ${spec.copy.path}${spec.copy.local ? ` (local: ${spec.copy.local})` : ''}` : null],
    ['Debug image', spec.debug ? h('span', { class: 'mono' }, spec.debug.image) : null],
    ['Created', timeEl(o.metadata.creationTimestamp, { withAge: true })],
  ])));

  const approvals = st.approvals || [];
  out.push(section('approval', 'Policy and approvals', dl([
    ['Policy', h('span', {}, st.policy ? h('strong', {}, st.policy) : st.phase ? "the operator's default" : 'not evaluated yet',
      view.policy ? h('span', { class: 'muted block' }, policySummary(view.policy)) : null)],
    ['Required approvals', st.requiredApprovals ?? null],
    ['Approvals', approvals.length || st.approvalSummary
      ? h('div', {}, st.approvalSummary ? h('span', {}, st.approvalSummary) : null,
        approvals.length ? h('ol', { class: 'decisions' }, approvals.map((d) => h('li', {}, decisionNode(d)))) : null)
      : null],
    ['Denied by', decisionNode(st.denial)],
    ['Withdrawn by', decisionNode(st.withdrawal)],
    ['Deadline', ['Pending', 'Approved'].includes(phaseOf(o)) && st.deadline ? timeEl(st.deadline) : null],
  ])));

  const l = st.limits;
  if (l) {
    const m = l.moderation;
    out.push(section('limits', 'Limits', dl([
      ['Max duration', l.maxDuration || 'none'],
      ['Idle timeout', l.idleTimeout || 'none'],
      ['Recording required', yesNo(l.recordingRequired)],
      ['Moderation', m ? `${m.required ?? 1} moderator(s) from ${approvers(m)}` : null],
    ])));
  }

  const outcome = dl([
    ['Started', st.startTime ? timeEl(st.startTime) : null],
    ['Ended', st.endTime ? timeEl(st.endTime) : null],
    ['Duration', st.startTime ? formatDuration(sessionDuration(o)) : null],
    ['Exit code', st.exitCode ?? null],
    ['Moderation', st.moderation ? `${st.moderation.state}: ${st.moderation.moderators}/${st.moderation.required} moderators` : null],
    ['Watchers', (st.watchers || []).length ? h('ul', { class: 'plain' }, st.watchers.map((w) =>
      h('li', {}, h('strong', {}, userName(w.user)), ` (${w.mode}) from `, timeEl(w.joined), w.left ? [' to ', timeEl(w.left)] : ' (watching)'))) : null],
  ]);
  if (outcome.children.length) out.push(section('outcome', 'Outcome', outcome)); // nothing before it starts

  out.push(section('timeline', 'Timeline', timeline(o)));

  const conds = st.conditions || [];
  if (conds.length) {
    out.push(section('conditions', 'Conditions', h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('thead', {}, h('tr', {}, ['Type', 'Status', 'Reason', 'Message', 'Since'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, conds.map((c) => h('tr', {},
        h('td', {}, c.type), h('td', {}, c.status), h('td', {}, c.reason || ''), h('td', {}, c.message || ''),
        h('td', {}, timeEl(c.lastTransitionTime)))))))));
  }
  return out;
}

/** Everything that happened, in order, from the timestamps the object carries. */
function timeline(o) {
  const st = o.status || {};
  const ev = [[o.metadata.creationTimestamp, `Requested by ${userName(o.spec.requester)}`]];
  for (const a of st.approvals || []) ev.push([a.time, `Approved by ${userName(a.user)}${a.comment ? `: ${a.comment}` : ''}`]);
  if (st.denial) ev.push([st.denial.time, `Denied by ${userName(st.denial.user)}${st.denial.comment ? `: ${st.denial.comment}` : ''}`]);
  if (st.withdrawal) ev.push([st.withdrawal.time, `Withdrawn by ${userName(st.withdrawal.user)}`]);
  if (st.startTime) ev.push([st.startTime, 'Attached: the command started']);
  for (const w of st.watchers || []) {
    ev.push([w.joined, `${userName(w.user)} started watching (${w.mode})`]);
    if (w.left) ev.push([w.left, `${userName(w.user)} stopped watching`]);
  }
  if (st.endTime) ev.push([st.endTime, `Ended: ${phaseOf(o)}${st.exitCode !== undefined && st.exitCode !== null ? `, exit code ${st.exitCode}` : ''}`]);
  const items = ev.filter(([t]) => t).sort((a, b) => Date.parse(a[0]) - Date.parse(b[0]));
  return h('ol', { class: 'timeline' }, items.map(([t, text]) => h('li', {}, timeEl(t), h('span', {}, text))));
}

/** The approve/deny form: shown while Pending to someone who may decide, built once (so a
 *  comment being typed survives live updates) and removed when the session moves on. */
function updateDecision(view, phase) {
  const { els } = view;
  const pending = phase === 'Pending' && !view.deleted;
  const mayDecide = pending && (view.canApprove || view.canDeny);
  els.decision.hidden = !pending && !els.decisionStatus.textContent;

  if (pending && !mayDecide && !els.decisionNote) {
    els.decisionNote = h('p', { class: 'muted' },
      'You cannot approve or deny this session: it takes the aexec-approver role, and a policy that names you.');
    els.decision.insertBefore(els.decisionNote, els.decisionStatus);
  } else if (!(pending && !mayDecide) && els.decisionNote) {
    els.decisionNote.remove();
    els.decisionNote = null;
  }

  if (!mayDecide) {
    if (els.decisionForm) { els.decisionForm.remove(); els.decisionForm = null; }
    return;
  }
  if (els.decisionForm) return;

  const comment = h('textarea', { id: 'decision-comment', name: 'comment', rows: 3, maxlength: 1024, 'aria-describedby': 'decision-hint decision-error' });
  const error = h('p', { id: 'decision-error', class: 'field-error', hidden: true });
  const buttons = [];
  const decide = async (verb) => {
    const text = comment.value.trim();
    if (verb === 'deny' && !text) {
      error.textContent = 'Say why you deny the session: a comment is required to deny.';
      error.hidden = false;
      comment.setAttribute('aria-invalid', 'true');
      comment.focus();
      return;
    }
    error.hidden = true;
    error.textContent = '';
    comment.removeAttribute('aria-invalid');
    buttons.forEach((b) => { b.disabled = true; });
    els.decisionStatus.textContent = verb === 'approve' ? 'Approving…' : 'Denying…';
    try {
      const res = await api(`${view.base}/${verb}`, { method: 'POST', body: { comment: text }, signal: view.page.signal });
      els.decisionStatus.textContent = verb === 'approve' ? 'You approved this session.' : 'You denied this session.';
      comment.value = '';
      if (res && res.session && !isStale(res.session, view.session)) {
        view.session = res.session;
        // Keep the shared list in step too (the event stream will say the same shortly).
        if (state.sessions.has(keyOf(res.session))) applyEvent('MODIFIED', res.session);
        updateSessionView(view);
      }
    } catch (e) {
      if (isAbort(e)) return;
      els.decisionStatus.textContent = '';
      showError(e.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  if (view.canApprove) buttons.push(h('button', { type: 'button', id: 'approve-button', class: 'primary', onclick: () => decide('approve') }, 'Approve'));
  if (view.canDeny) buttons.push(h('button', { type: 'button', id: 'deny-button', class: 'danger', onclick: () => decide('deny') }, 'Deny'));
  els.decisionForm = h('form', { id: 'decision-form', onsubmit: (e) => e.preventDefault() },
    h('label', { for: 'decision-comment' }, 'Comment'),
    h('p', { id: 'decision-hint', class: 'muted small' },
      view.canDeny ? 'Optional to approve; required to deny (it is the reason the requester sees).' : 'Optional.'),
    comment, error, h('div', { class: 'actions' }, buttons));
  els.decision.insertBefore(els.decisionForm, els.decisionStatus);
}

/** Recording facts, then (once the session has ended) verification and the player. */
function updateRecording(view, phase) {
  const st = view.session.status || {};
  const rec = st.recording;
  const { els } = view;
  els.recording.hidden = !rec;
  if (!rec) return;
  if (!els.recordingFacts) {
    els.recordingFacts = h('div');
    els.recordingBody.before(els.recordingFacts);
  }
  const record = st.record;
  fill(els.recordingFacts, dl([
    ['Size', formatBytes(rec.bytes)],
    ['Stored', rec.storedBytes !== undefined ? `${formatBytes(rec.storedBytes)}, compressed` : null],
    ['Segments', rec.segments ?? null],
    ['Format', rec.format || null],
    ['Interrupted', rec.interrupted ? h('span', { class: 'warn' }, 'yes: sealed after an interruption, not at the end of the session') : 'no'],
    ['Location', rec.uri ? h('span', { class: 'mono break' }, rec.uri) : null],
    ['Chain head', rec.sha256 ? h('span', { class: 'mono break' }, rec.sha256) : null],
    ['Signed record', record && record.uri ? h('span', {}, h('span', { class: 'mono break' }, record.uri),
      record.keyId ? h('span', { class: 'muted' }, ` (key ${record.keyId})`) : null) : null],
  ]));

  if (view.recordingStarted) return;
  if (!TERMINAL_PHASES.has(phase)) {
    fill(els.recordingBody, h('p', { class: 'muted' }, 'Verification and playback are available once the session has ended.'));
    return;
  }
  if (!view.canReadRecording) {
    fill(els.recordingBody, h('p', { class: 'muted' }, 'Reading recordings takes the aexec-auditor role.'));
    return;
  }
  view.recordingStarted = true;
  const verify = h('div', { id: 'verify-result', class: 'verify', 'aria-live': 'polite' });
  const player = h('div', { id: 'player', class: 'player' });
  fill(els.recordingBody, h('h3', {}, 'Verification'), verify, h('h3', {}, 'Playback'), player);
  runVerify(view, verify);
  loadPlayer(view, player);
}

async function runVerify(view, el) {
  el.dataset.state = 'running';
  fill(el, h('p', { class: 'verifying' }, 'verifying…'));
  let result;
  try {
    result = await api(`${view.base}/verify`, { signal: view.page.signal });
  } catch (e) {
    if (isAbort(e)) return;
    el.dataset.state = 'error';
    fill(el, h('p', { class: 'verify-headline error' }, `Could not verify the recording: ${e.message}`));
    result = null;
  }
  if (result) {
    el.dataset.state = result.ok ? 'ok' : 'failed';
    fill(el,
      h('p', { class: `verify-headline ${result.ok ? 'ok' : 'failed'}` },
        result.ok ? '✓ Recording verified' : '✗ Verification FAILED'),
      result.report ? h('pre', { class: 'report' }, result.report) : null);
  }
  el.append(h('button', { type: 'button', class: 'small', onclick: () => runVerify(view, el) }, 'Verify again'));
}

/**
 * A session without a terminal wrote to a pipe: its lines end in LF alone, which the
 * requester's terminal showed as new lines (its line discipline adds the carriage return). The
 * player is a terminal without one: add the CR to the output events, as `onlcr` would (the
 * console's live view does the same, in plugin/src/ui/live.rs).
 */
function withCarriageReturns(cast) {
  let afterCr = false;
  return cast.split('\n').map((line, i) => {
    if (i === 0 || !line.startsWith('[')) return line;
    let ev;
    try { ev = JSON.parse(line); } catch { return line; }
    if (!Array.isArray(ev) || ev[1] !== 'o' || typeof ev[2] !== 'string') return line;
    let out = '';
    for (const c of ev[2]) {
      if (c === '\n' && !afterCr) out += '\r';
      out += c;
      afterCr = c === '\r';
    }
    ev[2] = out;
    return JSON.stringify(ev);
  }).join('\n');
}

/** The time of an asciicast v2 recording's last event (its lines are `[time, code, data]`). */
function lastEventTime(cast) {
  const lines = cast.trimEnd().split('\n');
  for (let i = lines.length - 1; i > 0; i--) {
    const m = /^\[\s*([0-9.]+)\s*,/.exec(lines[i]);
    if (m) return Number(m[1]);
  }
  return 0;
}

/** Fetches the recording ourselves, so a refusal shows the server's message rather than a
 *  player that cannot load; then hands the text to the player. */
async function loadPlayer(view, el) {
  fill(el, h('p', { class: 'muted' }, 'Loading the recording…'));
  try {
    const raw = await (await request(`${view.base}/recording`, { signal: view.page.signal, accept: 'application/x-asciicast, */*' })).text();
    if (!window.AsciinemaPlayer) throw new Error('the player script (/assets/asciinema-player.min.js) did not load');
    const text = view.session.spec && view.session.spec.tty ? raw : withCarriageReturns(raw);
    el.replaceChildren();
    const opts = { fit: 'width', terminalFontSize: '15px', idleTimeLimit: 2, preload: true };
    const at = view.startAt;
    if (Number.isFinite(at) && at >= 0) {
      opts.startAt = at;
      el.before(h('p', { class: 'muted small', id: 'player-start' }, `Starting at ${formatOffset(at)} (the search match).`));
    }
    // Before it plays, the player shows the frame at the match, else the last frame: what the
    // session ended on, rather than an empty terminal.
    // (A second past the last event: the frame at a time holds only the events before it.)
    const shown = (Number.isFinite(opts.startAt) ? opts.startAt : lastEventTime(text)) + 1;
    opts.poster = `npt:${shown.toFixed(3)}`;
    const player = window.AsciinemaPlayer.create({ data: text }, el, opts);
    view.page.cleanups.push(() => player.dispose());
  } catch (e) {
    if (isAbort(e)) return;
    fill(el, h('p', { class: 'player-error' }, `The recording cannot be shown: ${e.message}`));
  }
}

// ---------------------------------------------------------------------------------------------
// Page: search

/** The search pattern (Rust regex syntax) as a JS RegExp for highlighting, or null. A leading
 *  `(?i)`-style flag group becomes JS flags; anything JS cannot compile gets no highlight. */
function highlighter(pattern) {
  let p = pattern;
  const flags = new Set(['g']);
  const m = /^\(\?([imsUxR]+)\)/.exec(p);
  if (m) {
    if (/[UxR]/.test(m[1])) return null; // no JS equivalent
    for (const c of m[1]) flags.add(c);
    p = p.slice(m[0].length);
  }
  for (const extra of ['u', '']) {
    try { return new RegExp(p, [...flags].join('') + extra); } catch { /* try without u */ }
  }
  return null;
}

function highlight(line, re) {
  if (!re) return [line];
  const out = [];
  let last = 0, m, guard = 0;
  re.lastIndex = 0;
  while ((m = re.exec(line)) !== null && guard++ < 1000) {
    if (m[0] === '') { re.lastIndex++; continue; }
    out.push(line.slice(last, m.index), h('mark', {}, m[0]));
    last = m.index + m[0].length;
  }
  out.push(line.slice(last));
  return out;
}

async function renderSearchPage(main, r, page) {
  const p = r.params;
  const v = {
    pattern: p.get('pattern') || '', ns: nsFromUrl(p.get('ns')), since: p.has('since') ? p.get('since') : '24h',
    requester: p.get('requester') || '', stream: ['input', 'output'].includes(p.get('stream')) ? p.get('stream') : 'both',
    archived: p.get('archived') === '1',
  };
  const input = (id, name, value, extra = {}) => h('input', { id, name, value, autocomplete: 'off', spellcheck: 'false', ...extra });
  const field = (id, label, el, hint) => h('div', { class: 'field' }, h('label', { for: id }, label), el,
    hint ? h('span', { class: 'muted small', id: `${id}-hint` }, hint) : null);
  const streams = h('fieldset', { class: 'field radios' }, h('legend', {}, 'Stream'),
    ['both', 'input', 'output'].map((s) => h('label', {},
      h('input', { type: 'radio', name: 'stream', value: s, checked: v.stream === s }), ` ${s}`)));
  const form = h('form', { id: 'search-form', class: 'search-form', role: 'search',
    onsubmit: (e) => {
      e.preventDefault();
      const d = new FormData(form);
      navigate(`#/search${query({
        pattern: d.get('pattern'), ns: nsToUrl(String(d.get('ns')).trim()), since: String(d.get('since')).trim() || 'all',
        requester: String(d.get('requester')).trim(), stream: d.get('stream') === 'both' ? '' : d.get('stream'),
        archived: d.get('archived') ? '1' : '',
      })}`);
    } },
  field('search-pattern', 'Pattern', input('search-pattern', 'pattern', v.pattern, { required: true, class: 'mono', placeholder: 'DROP TABLE', 'aria-describedby': 'search-pattern-hint' }),
    'A regular expression (Rust syntax); (?i) ignores case.'),
  field('search-ns', 'Namespace', input('search-ns', 'ns', v.ns, { placeholder: 'all namespaces' })),
  field('search-since', 'Since', input('search-since', 'since', v.since === 'all' ? '' : v.since, { placeholder: 'all', 'aria-describedby': 'search-since-hint' }),
    'A duration such as 1h, 24h or 7d.'),
  field('search-requester', 'Requester', input('search-requester', 'requester', v.requester, { placeholder: 'anyone' })),
  streams,
  h('div', { class: 'field checkbox' }, h('label', {},
    h('input', { type: 'checkbox', id: 'search-archived', name: 'archived', value: '1', checked: v.archived }),
    ' also deleted sessions (their signed records in the store)')),
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'search-button' }, 'Search')));

  // The status line is the live region; the results table is not read out whole.
  const status = h('p', { id: 'search-status', role: 'status' });
  const results = h('div', { id: 'search-output' });
  main.append(h('h1', {}, 'Search recordings'),
    h('p', { class: 'muted' }, 'Finds what was typed or shown in the recordings of the sessions, and with "also deleted sessions" in the signed records of sessions that no longer exist. Reading recordings takes the aexec-auditor role.'),
    form, status, results);
  if (!v.pattern) return;

  const button = $('#search-button', form);
  button.disabled = true;
  status.className = 'verifying';
  status.textContent = 'Searching… (each recording is read and verified; this can take a while)';
  let data;
  try {
    data = await api(`/api/search${query({
      pattern: v.pattern, namespace: v.ns, since: v.since === 'all' ? '' : v.since,
      requester: v.requester, stream: v.stream, archived: v.archived ? '1' : '',
    })}`, { signal: page.signal });
  } catch (e) {
    if (isAbort(e)) throw e;
    status.className = '';
    status.textContent = `The search failed: ${e.message}`;
    throw e;
  } finally {
    button.disabled = false;
  }
  renderHits(status, results, data, highlighter(v.pattern));
}

function renderHits(status, results, data, re) {
  const hits = data.hits || [];
  const sessions = new Set(hits.map((x) => `${x.namespace}/${x.session}`)).size;
  const problems = data.problems || [];
  const cols = ['Session', 'Namespace', 'Requester', 'At', 'Stream', 'Line', 'Replay'];
  const td = (label, ...c) => h('td', { dataset: { label } }, ...c);
  const body = h('tbody', {
    onclick: (e) => {
      if (e.target.closest('a, button') || String(window.getSelection())) return;
      const tr = e.target.closest('tr[data-hit]');
      const a = tr && $('a', tr);
      if (a) location.hash = a.getAttribute('href');
    },
  });
  hits.forEach((x, i) => {
    // A deleted session has no page here: its name, marked, and the replay command.
    const href = x.archived ? null : sessionHash(x.namespace, x.session, x.at);
    const link = (text, extra = {}) => (href ? h('a', { href, ...extra }, text) : h('span', {}, text));
    const replay = x.replay || `kubectl aexec replay ${x.session} -n ${x.namespace}`;
    body.append(h('tr', { dataset: { hit: String(i), session: `${x.namespace}/${x.session}` } },
      td('Session', link(x.session), x.archived ? h('span', { class: 'muted small', title: 'The ExecSession no longer exists: read from its signed record in the store' }, ' (archived)') : null),
      td('Namespace', x.namespace),
      td('Requester', x.requester || '—'),
      td('At', link(formatOffset(x.at), { title: `${x.at} s into the session`, 'aria-label': `Play from ${formatOffset(x.at)}` })),
      td('Stream', h('span', { class: `stream stream-${x.stream}` }, x.stream)),
      td('Line', h('code', { class: 'hit-line' }, highlight(String(x.line ?? ''), re))),
      td('Replay', h('code', { class: 'cmd' }, replay), ' ', copyButton(replay, `Copy the replay command for ${x.session}`))));
  });
  if (!hits.length) body.append(h('tr', { class: 'empty' }, h('td', { colspan: cols.length }, 'No matches.')));
  status.className = '';
  status.textContent = `${hits.length} match${hits.length === 1 ? '' : 'es'} in ${sessions} session${sessions === 1 ? '' : 's'}` +
    (data.scanned !== undefined && data.scanned !== null ? `; ${data.scanned} scanned.` : '.');
  if (data.truncated) {
    status.textContent += ` Only the first ${hits.length} matches are shown: narrow the pattern, the namespace or the time.`;
  }
  // (replaceChildren would turn a null into the text "null": appendChildren skips it.)
  results.replaceChildren();
  appendChildren(results, [
    problems.length ? h('ul', { id: 'search-problems', class: 'problems' }, problems.map((m) => h('li', {}, m))) : null,
    h('div', { class: 'table-wrap' }, h('table', { id: 'search-results', class: 'data stack' },
      h('caption', { class: 'visually-hidden' }, 'Search matches'),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))), body))]);
}

// ---------------------------------------------------------------------------------------------
// Start

async function loadWhoami() {
  try {
    const w = await api('/api/whoami');
    state.whoami = w;
    const el = $('#whoami');
    fill(el, h('span', { class: 'user' }, w.user || 'unknown'),
      w.context ? h('span', { class: 'muted' }, ` · ${w.context}`) : null);
    el.title = `${w.user}${(w.groups || []).length ? `, groups: ${w.groups.join(', ')}` : ''}`;
    $('#footer-version').textContent = `kubectl aexec ui ${w.version || ''} · kubeconfig namespace ${w.namespace || 'default'}`;
  } catch (e) {
    showError(e.message);
  }
}

function start() {
  // Dismissing the banner drops the focus on its button: hand it to the page.
  const dismiss = () => { hideBanner(); $('#main').focus({ preventScroll: true }); };
  $('#banner-close').addEventListener('click', dismiss);
  $('#banner').addEventListener('keydown', (e) => { if (e.key === 'Escape') dismiss(); });
  window.addEventListener('hashchange', route);
  // Who we are first: it names the namespace pages start on.
  loadWhoami().then(route);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
