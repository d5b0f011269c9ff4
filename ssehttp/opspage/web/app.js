// The flows operations page: reads the operators' routes of the flows API
// (GET tasks/, stats/, dead/) every few seconds, draws a small live chart
// of throughput and run time from the stats it reads, follows one task's
// event stream (task-status/{id}/?mode=updates), and cancels tasks and
// re-queues dead ones (resuming their completed steps, if asked) after a
// confirmation.
//
// Where the API lives and how often to read it come from the page's meta
// elements, which the Go handler fills in: nothing here is secret, the
// browser sends its own cookies, and the API decides what the user may do.
(function () {
  'use strict';

  const API = document.querySelector('meta[name="flows-api"]').content || '/';
  const REFRESH_MS = Math.max(100, Number(document.querySelector('meta[name="flows-refresh-ms"]').content) || 5000);
  // Tasks per page of the listing, and the most one refresh re-reads.
  const PAGE_SIZE = 50;
  const MAX_LIST = 1000;
  // Points kept in each chart.
  const MAX_POINTS = 60;
  // Events kept in the open task's list.
  const MAX_EVENTS = 500;
  const TERMINAL = new Set(['SUCCESS', 'FAILURE']);
  const STATE_WORDS = { PENDING: 'Pending', PROGRESS: 'Running', SUCCESS: 'Succeeded', FAILURE: 'Failed' };
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const alertBox = $('alert');
  const updated = $('updated');
  const stateSelect = $('filter-state');
  const flowSelect = $('filter-flow');
  const ownerInput = $('filter-owner');
  const sinceInput = $('filter-since');
  const untilInput = $('filter-until');
  const rangeError = $('range-error');
  const cancelMatching = $('cancel-matching');
  const listStatus = $('list-status');
  const taskRows = $('task-rows');
  const moreButton = $('more');
  const deadRows = $('dead-rows');
  const deadStatus = $('dead-status');
  const announcer = $('announcer');
  const detail = $('detail');
  const dialog = $('confirm');

  // ---- small helpers ------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === true) node.setAttribute(k, '');
      else if (v !== false && v != null) node.setAttribute(k, String(v));
    }
    if (text != null) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // place puts node into parent before ref. A node already there is
  // moved with moveBefore where the browser has it, which keeps the
  // focus inside it; insertBefore would blur it.
  function place(parent, node, ref) {
    if (node.isConnected && typeof parent.moveBefore === 'function') parent.moveBefore(node, ref);
    else parent.insertBefore(node, ref);
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // announce shows text in the status line, which screen readers read.
  // Messages that come within a second of the one before are joined to it,
  // so that the result of an action is not replaced by what the action
  // caused (a state change of the open task) before it could be read.
  const told = { texts: [], at: 0, timer: 0 };
  function announce(text) {
    const t = Date.now();
    if (t - told.at > 1000) told.texts = [];
    if (told.texts[told.texts.length - 1] !== text) told.texts.push(text);
    told.at = t;
    // Clearing first makes a repeated message be read again.
    announcer.textContent = '';
    clearTimeout(told.timer);
    told.timer = setTimeout(() => { announcer.textContent = told.texts.join(' '); }, 50);
  }

  function shortID(id) {
    return String(id).slice(0, 8);
  }

  // The server's clock minus the browser's, from the stats' "at", so
  // that ages are right when the two clocks disagree.
  let skew = 0;
  const now = () => Date.now() + skew;

  // age says how long ago an RFC 3339 time was, in words.
  function age(time) {
    const t = Date.parse(time);
    if (!Number.isFinite(t)) return '';
    const ms = now() - t;
    return ms < 1000 ? 'just now' : `${duration(ms)} ago`;
  }

  // duration writes milliseconds in the largest unit that fits.
  function duration(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    const m = s / 60;
    if (m < 60) return `${Math.floor(m)} min ${Math.round(s % 60)} s`;
    const h = m / 60;
    if (h < 48) return `${Math.floor(h)} h ${Math.round(m % 60)} min`;
    return `${Math.floor(h / 24)} d`;
  }

  // attemptText says which run of how many a task is at: the runs it
  // gets count one more for each hand-back (a run handed back through no
  // fault of its flow, which does not count), said apart: "3 of 4, 2
  // hand-backs not counted" (see queue.TaskSummary.Runs).
  function attemptText(t) {
    return attemptParts(t).join('');
  }

  // attemptParts splits attemptText into "3 of 4" and the rest, so that
  // the listing keeps the first on one line and lets the rest wrap.
  function attemptParts(t) {
    const max = Number(t.max_attempts) || 0;
    const backs = Number(t.hand_backs) || 0;
    const runs = `${Number(t.attempt) || 0} of ${max > 0 ? max + backs : 0}`;
    return [runs, backs > 0 ? `, ${backs} hand-back${backs === 1 ? '' : 's'} not counted` : ''];
  }

  // setAttempt fills a listing's Attempt cell: "3 of 4" on one line, the
  // hand-backs after it, and the dead task a resumed task came from on a
  // line of its own, so that the cell stays narrow at any width. Its text
  // reads as one sentence: "3 of 3, resumes dead task 5c3565f".
  function setAttempt(cell, t) {
    const [runs, rest] = attemptParts(t);
    const origin = t.resume && t.requeued_from ? `resumes dead task ${shortID(t.requeued_from)}` : '';
    if (cell.textContent === runs + rest + (origin ? `, ${origin}` : '')) return;
    // One span inside the cell: at phone width the cell is a flex row of
    // its label and this.
    const text = el('span');
    text.append(el('span', { class: 'attempt-runs' }, runs), rest);
    if (origin) {
      const line = el('span', { class: 'attempt-origin' });
      line.append(el('span', { class: 'visually-hidden' }, ', '), origin);
      text.append(line);
    }
    cell.replaceChildren(text);
  }

  function pretty(value) {
    if (typeof value === 'string') return value;
    return JSON.stringify(value, null, 2);
  }

  // apiError is the error of a failed call: its status and the API's
  // {"error": "..."} message, when there is one.
  async function apiError(resp) {
    let detail = resp.statusText || 'request failed';
    try {
      const body = await resp.json();
      if (body && typeof body.error === 'string') detail = body.error;
    } catch (_) { /* not JSON */ }
    const err = new Error(`${resp.status}: ${detail}`);
    err.status = resp.status;
    return err;
  }

  // call sends a request to the API and returns its JSON. A refusal of
  // a read (401, 403), which leaves the page empty, is shown at the top
  // of the page as well; the caller says what a refused action did.
  async function call(path, method) {
    const resp = await fetch(API + path, {
      method: method || 'GET',
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
    });
    if (!resp.ok) {
      const err = await apiError(resp);
      if (!method && (resp.status === 401 || resp.status === 403)) refused(err);
      throw err;
    }
    return resp.status === 204 ? null : resp.json();
  }

  function refused(err) {
    const who = err.status === 401 ? 'The API does not know who you are' : 'The API does not let you do this';
    showAlert(`${who} (${err.message}). This page needs an operator's session with the API: sign in as an operator, then reload.`);
  }

  let alertText = '';
  function showAlert(text) {
    if (text === alertText) return;
    alertText = text;
    alertBox.textContent = text;
    alertBox.hidden = text === '';
  }

  // ---- the confirmation dialog ----------------------------------------------

  // confirmAction asks the user to confirm, in a modal dialog, and resolves
  // to true for yes. The safe answer has the focus; Escape is no. When it
  // closes, the focus goes back where it was, or to the element fallback
  // names when that is gone. With option, the dialog also shows a checkbox
  // so labelled, unchecked at first, which confirmCheck reads once it is
  // answered; it comes before the buttons, Shift+Tab from the safe answer.
  //
  // The dialog's close event comes after the dialog has closed, in a task
  // of its own: a user quick enough (Escape, then Enter on the button
  // that the focus went back to) asks again before it comes. The question
  // before is then answered no at once (answered), and a close event that
  // finds the dialog open again is that old one's and is ignored.
  let answered = null;
  const confirmCheck = $('confirm-check');
  function confirmAction(title, text, yes, fallback, option = '') {
    if (answered) answered(false, false);
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-yes').textContent = yes;
    $('confirm-check-label').textContent = option;
    $('confirm-option').hidden = option === '';
    confirmCheck.checked = false;
    const opener = document.activeElement;
    return new Promise((resolve) => {
      const done = (answer, refocus = true) => {
        answered = null;
        $('confirm-yes').onclick = null;
        $('confirm-no').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        if (refocus) { // else the focus stays where the new question puts it
          if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
          else if (fallback) $(fallback).focus();
        }
        resolve(answer);
      };
      answered = done;
      $('confirm-yes').onclick = () => done(true);
      $('confirm-no').onclick = () => done(false);
      dialog.onclose = () => { if (!dialog.open) done(false); };
      dialog.showModal();
      $('confirm-no').focus();
    });
  }

  // ---- stats and the chart ----------------------------------------------------

  const samples = [];

  async function loadStats() {
    const st = await call('stats/');
    const at = Date.parse(st.at);
    if (Number.isFinite(at)) skew = at - Date.now();
    renderStats(st);
    const lm = st.last_minute || {};
    samples.push({
      at: Number.isFinite(at) ? at : Date.now(),
      perSecond: Number(lm.per_second) || 0,
      p50: Number(lm.run && lm.run.p50_ms) || 0,
      p95: Number(lm.run && lm.run.p95_ms) || 0,
      sampled: Number(lm.sampled) || 0,
    });
    if (samples.length > MAX_POINTS) samples.splice(0, samples.length - MAX_POINTS);
    drawCharts();
    addFlows((st.flows || []).map((f) => f.flow));
    return st;
  }

  function renderStats(st) {
    const c = st.counts || {};
    const tiles = {
      // Running is what is leased now: a task waiting for its retry is
      // PROGRESS by state, but delayed. An ended task waiting to run its
      // finish hooks again is counted apart, not delayed.
      pending: c.PENDING, running: st.running, success: c.SUCCESS, failure: c.FAILURE,
      ready: st.ready, delayed: st.delayed, hooks: st.hooks_waiting, dead: st.dead,
      workers: `${(st.workers || []).filter((w) => w.alive).length} alive`,
      oldest: st.oldest_ready ? duration(Math.max(0, Date.parse(st.at) - Date.parse(st.oldest_ready))) : 'none',
    };
    for (const [key, value] of Object.entries(tiles)) {
      setText(document.querySelector(`#totals [data-key="${key}"] dd`), String(value == null ? 0 : value));
    }

    const flowBody = $('flows-table').tBodies[0];
    flowBody.replaceChildren();
    for (const f of st.flows || []) {
      const fc = f.counts || {};
      const row = el('tr', { 'data-flow': f.flow });
      row.append(el('th', { scope: 'row' }, f.flow));
      for (const s of ['PENDING', 'PROGRESS', 'SUCCESS', 'FAILURE']) row.append(el('td', { 'data-state': s }, String(fc[s] || 0)));
      flowBody.append(row);
    }
    $('no-flows').hidden = flowBody.rows.length > 0;

    const workerBody = $('workers-table').tBodies[0];
    workerBody.replaceChildren();
    for (const w of st.workers || []) {
      const row = el('tr', { 'data-worker': w.name, 'data-alive': w.alive ? 'true' : 'false' });
      row.append(
        el('th', { scope: 'row' }, w.name),
        el('td', {}, w.host || ''),
        el('td', {}, `${w.running || 0} of ${w.slots || 0}`),
        el('td', {}, w.last_seen ? duration(Math.max(0, Date.parse(st.at) - Date.parse(w.last_seen))) + ' ago' : ''),
        el('td', { class: 'worker-state' }, w.alive ? 'alive' : 'dead'),
      );
      workerBody.append(row);
    }
    $('no-workers').hidden = workerBody.rows.length > 0;
  }

  function drawCharts() {
    const last = samples[samples.length - 1];
    drawChart($('throughput-chart'), [{ cls: 'line-rate', values: samples.map((s) => s.perSecond) }]);
    const peak = Math.max(...samples.map((s) => s.perSecond));
    setText($('throughput-summary'), `Now ${last.perSecond.toFixed(2)} tasks/s; peak ${peak.toFixed(2)} over ${samples.length} samples, one every ${duration(REFRESH_MS)}.`);
    drawChart($('latency-chart'), [
      { cls: 'line-p95', values: samples.map((s) => s.p95) },
      { cls: 'line-p50', values: samples.map((s) => s.p50) },
    ]);
    setText($('latency-summary'), last.sampled
      ? `Now median ${duration(last.p50)}, 95th percentile ${duration(last.p95)}, of ${last.sampled} tasks.`
      : 'No task ended in the last minute.');
  }

  // drawChart draws each series as a line across the chart, scaled to the
  // largest value of all, with a dot on each sample.
  function drawChart(chart, series) {
    const W = 300;
    const H = 100;
    const pad = 6;
    const n = Math.max(...series.map((s) => s.values.length));
    const top = Math.max(1e-9, ...series.flatMap((s) => s.values)) * 1.1;
    const x = (i) => (n <= 1 ? W / 2 : pad + (i * (W - 2 * pad)) / (MAX_POINTS - 1));
    const y = (v) => H - pad - (v / top) * (H - 2 * pad);
    const nodes = [svg('line', { class: 'axis', x1: 0, y1: H - pad, x2: W, y2: H - pad })];
    for (const s of series) {
      const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      nodes.push(svg('polyline', { class: `line ${s.cls}`, points }));
      s.values.forEach((v, i) => nodes.push(svg('circle', { class: `dot ${s.cls}`, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 1.6 })));
    }
    chart.replaceChildren(...nodes);
    chart.dataset.points = String(n);
  }

  // ---- the task listing -------------------------------------------------------

  const list = {
    tasks: [],
    next: '',
    generation: 0,
    loadingMore: false, // a "Load more" is under way
    rows: new Map(), // tr by task id
  };

  // The owner and time range last applied: the listing reads these, not
  // the inputs, so that a refresh does not pick up a half-typed value or
  // a range that ends before it starts.
  const applied = { owner: '', since: '', until: '' };

  // instant reads a datetime-local input, which holds a local time, as an
  // RFC 3339 time in UTC; '' when it is empty or incomplete.
  function instant(input) {
    if (!input.value) return '';
    const d = new Date(input.value);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }

  // applyFilters takes the owner and time range from their inputs, unless
  // the range ends before it starts: then it marks To as invalid, says
  // so, and returns false.
  function applyFilters() {
    const since = instant(sinceInput);
    const until = instant(untilInput);
    const bad = Boolean(since && until && until < since);
    untilInput.setAttribute('aria-invalid', bad ? 'true' : 'false');
    rangeError.hidden = !bad;
    if (bad) return false;
    applied.owner = ownerInput.value.trim();
    applied.since = since;
    applied.until = until;
    return true;
  }

  // filterQuery is the query of a listing, and of a cancellation by
  // filter: the state and flow chosen, the owner and time range applied,
  // and extra.
  function filterQuery(extra) {
    const q = new URLSearchParams();
    if (stateSelect.value) q.set('state', stateSelect.value);
    if (flowSelect.value) q.set('flow', flowSelect.value);
    for (const k of ['owner', 'since', 'until']) if (applied[k]) q.set(k, applied[k]);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  }

  // The last cancellation by filter that left tasks: its query and the
  // cursor its answer gave, so that cancelling again with the same
  // filters goes on where it stopped.
  const cancelled = { query: '', next: '' };

  // loadList reads the listing again: its first page when the filters
  // changed (reset), else as many tasks as are shown, so that a refresh
  // keeps the pages loaded with "Load more".
  async function loadList(reset) {
    const generation = reset ? ++list.generation : list.generation;
    const limit = reset ? PAGE_SIZE : Math.min(MAX_LIST, Math.max(PAGE_SIZE, list.tasks.length));
    const page = await call(`tasks/?${filterQuery({ limit })}`);
    // Dropped when the filters changed meanwhile, or when a "Load more"
    // is under way: it goes on from the cursor it read, and would append
    // its page to this listing, whose cursor may be elsewhere (tasks that
    // came in push the listing's end back), leaving out the tasks in
    // between. The next refresh lists them all.
    if (generation !== list.generation || (!reset && list.loadingMore)) return;
    list.tasks = page.tasks || [];
    list.next = page.next_cursor || '';
    renderList();
    if (reset) announce(listSummary());
  }

  // loadMore adds the next page. A refresh that started before it ends
  // would list fewer tasks: the generation moves on at both ends, so that
  // such a refresh is dropped; one that ends while it is under way is
  // dropped too (see loadList).
  async function loadMore() {
    if (!list.next || moreButton.getAttribute('aria-disabled') === 'true') return;
    const generation = ++list.generation;
    moreButton.setAttribute('aria-disabled', 'true');
    list.loadingMore = true;
    try {
      const page = await call(`tasks/?${filterQuery({ limit: PAGE_SIZE, cursor: list.next })}`);
      if (generation !== list.generation) return;
      const known = new Set(list.tasks.map((t) => t.task_id));
      const added = (page.tasks || []).filter((t) => !known.has(t.task_id));
      list.tasks.push(...added);
      list.next = page.next_cursor || '';
      list.generation++;
      const hadFocus = document.activeElement === moreButton;
      renderList();
      announce(`Loaded ${added.length} more. ${listSummary()}`);
      // The button goes away after the last page: the focus moves to the
      // first task it loaded.
      if (hadFocus && moreButton.hidden && added.length) {
        const row = list.rows.get(added[0].task_id);
        if (row) row.querySelector('.open').focus();
      }
    } catch (err) {
      announce(`Could not load more tasks: ${err.message}`);
    } finally {
      list.loadingMore = false;
      moreButton.removeAttribute('aria-disabled');
    }
  }

  function listSummary() {
    const n = list.tasks.length;
    const what = [stateSelect.value && STATE_WORDS[stateSelect.value].toLowerCase(), flowSelect.value].filter(Boolean).join(' ');
    const whose = [applied.owner && ` of ${applied.owner}`, (applied.since || applied.until) && ' in the time range'].filter(Boolean).join('');
    // A page by owner may hold no task and still have more after it.
    if (n === 0) return `No ${what ? `${what} ` : ''}tasks${whose}${list.next ? ' on this page, more to load' : ''}.`;
    return `${n} ${what ? `${what} ` : ''}task${n === 1 ? '' : 's'}${whose}${list.next ? ', more to load' : ''}.`;
  }

  // renderList updates the rows in place, by task id, so that a refresh
  // keeps the keyboard focus where it is.
  function renderList() {
    const focused = document.activeElement;
    const focusRow = focused && focused.closest ? focused.closest('#task-rows > tr') : null;
    const focusCls = focusRow ? [...focused.classList].find((c) => c === 'open' || c === 'cancel') : null;
    const keep = new Set();
    list.tasks.forEach((t, i) => {
      keep.add(t.task_id);
      let row = list.rows.get(t.task_id);
      if (!row) {
        row = taskRow(t.task_id);
        list.rows.set(t.task_id, row);
      }
      updateRow(row, t);
      if (taskRows.children[i] !== row) place(taskRows, row, taskRows.children[i] || null);
    });
    for (const [id, row] of list.rows) {
      if (!keep.has(id)) {
        row.remove();
        list.rows.delete(id);
      }
    }
    moreButton.hidden = !list.next;
    $('task-table').hidden = list.tasks.length === 0;
    setText(listStatus, listSummary());
    // A row that was moved, or a button that went away, loses the focus:
    // give it back to the same row.
    if (focusRow && (document.activeElement !== focused || focused.hidden || !focused.isConnected)) {
      const id = focusRow.dataset.taskId;
      const row = list.rows.get(id);
      const target = row && (row.querySelector(`.${focusCls}:not([hidden])`) || row.querySelector('.open'));
      if (target) target.focus();
      else $('tasks-heading').focus();
    }
  }

  function taskRow(id) {
    const row = el('tr', { 'data-task-id': id });
    const open = el('button', { type: 'button', class: 'open link', 'aria-label': `Open task ${id}`, title: id }, shortID(id));
    open.addEventListener('click', () => openTask(id, open));
    const cancel = el('button', { type: 'button', class: 'cancel danger', 'aria-label': `Cancel task ${id}` }, 'Cancel…');
    cancel.addEventListener('click', () => cancelTask(id, row.dataset.flow));
    const cell = (cls, label) => el('td', { class: cls, 'data-label': label });
    const taskCell = el('th', { scope: 'row', class: 'c-task', 'data-label': 'Task' });
    taskCell.append(open);
    const actions = cell('c-actions', 'Actions');
    actions.append(cancel);
    const state = cell('c-state', 'State');
    state.append(el('span', { class: 'badge' }));
    const status = cell('c-status', 'Status');
    status.append(el('span', { class: 'clamp' }));
    row.append(taskCell, cell('c-flow', 'Flow'), state, cell('c-progress', 'Progress'), status,
      cell('c-attempt', 'Attempt'), cell('c-since', 'Since'), actions);
    return row;
  }

  function changedAt(t) {
    if (TERMINAL.has(t.state)) return t.ended_at;
    if (t.state === 'PROGRESS') return t.started_at;
    return t.enqueued_at;
  }

  function updateRow(row, t) {
    const q = (s) => row.querySelector(s);
    const live = !TERMINAL.has(t.state);
    row.dataset.state = t.state;
    row.dataset.flow = t.flow;
    setText(q('.c-flow'), t.flow);
    const badge = q('.badge');
    setText(badge, STATE_WORDS[t.state] || t.state);
    badge.dataset.state = t.state;
    setText(q('.c-progress'), `${Number(t.progress) || 0}%`);
    const status = (t.cancelled && live ? 'Cancelling… ' : '') + (t.status || '');
    setText(q('.c-status .clamp'), status);
    q('.c-status .clamp').title = status;
    setAttempt(q('.c-attempt'), t);
    setText(q('.c-since'), age(changedAt(t) || t.enqueued_at));
    q('.cancel').hidden = !live || Boolean(t.cancelled);
  }

  // ---- flows of the filter ------------------------------------------------------

  const flowNames = new Set();

  function addFlows(names) {
    const fresh = names.filter((n) => n && !flowNames.has(n));
    if (!fresh.length) return;
    for (const n of fresh) flowNames.add(n);
    const chosen = flowSelect.value;
    const options = [...flowNames].sort().map((n) => el('option', { value: n }, n));
    flowSelect.replaceChildren(el('option', { value: '' }, 'All flows'), ...options);
    flowSelect.value = chosen;
  }

  async function loadFlows() {
    try {
      const flows = await call('flows/');
      if (Array.isArray(flows)) addFlows(flows.map((f) => f.name));
    } catch (_) { /* the flows seen in the stats are offered anyway */ }
  }

  function syncCancelMatching() {
    const state = stateSelect.value;
    const ok = (state === '' || state === 'PENDING' || state === 'PROGRESS') &&
      Boolean(state || flowSelect.value || applied.owner || applied.since || applied.until);
    // Focusable even when it cannot act, so that its hint is read.
    cancelMatching.setAttribute('aria-disabled', ok ? 'false' : 'true');
  }

  function filtersChanged() {
    if (!applyFilters()) {
      announce(rangeError.textContent);
      return;
    }
    syncCancelMatching();
    loadList(true).catch((err) => announce(`Could not list the tasks: ${err.message}`));
  }

  // ---- actions ----------------------------------------------------------------

  async function cancelTask(id, flow) {
    const ok = await confirmAction('Cancel this task?',
      `Task ${id}${flow ? ` of ${flow}` : ''} is asked to stop: a pending task ends at once, a running one when its flow returns. It ends as failed.`,
      'Cancel task', 'tasks-heading');
    if (!ok) return;
    try {
      await call(`cancel-task/${encodeURIComponent(id)}/`, 'POST');
      announce(`Task ${shortID(id)} is being cancelled.`);
    } catch (err) {
      announce(err.status === 409 ? `Task ${shortID(id)} had already finished.` : `Could not cancel task ${shortID(id)}: ${err.message}`);
    }
    refreshSoon();
  }

  async function cancelByFilter() {
    if (cancelMatching.getAttribute('aria-disabled') === 'true') {
      announce($('cancel-matching-hint').textContent);
      return;
    }
    const state = stateSelect.value;
    const what = [state ? STATE_WORDS[state].toLowerCase() : 'pending and running', 'tasks', flowSelect.value && `of ${flowSelect.value}`,
      applied.owner && `of owner ${applied.owner}`, (applied.since || applied.until) && 'in the time range'].filter(Boolean).join(' ');
    if (!await confirmAction(`Cancel all ${what}?`, `Every ${what.replace(/tasks/, 'task')} is asked to stop, up to ${MAX_LIST} at a time.`, 'Cancel them', 'cancel-matching')) return;
    // The same filters as the call before that left tasks: go on where it
    // stopped.
    const query = filterQuery();
    const extra = cancelled.query === query && cancelled.next ? { cursor: cancelled.next } : {};
    try {
      const res = await call(`cancel-tasks/?${filterQuery(extra)}`, 'POST');
      cancelled.query = res.more ? query : '';
      cancelled.next = res.more ? res.next || '' : '';
      const n = (res.cancelled || []).length;
      // Tasks asked to stop before, still running, are not asked again.
      const asked = (res.already_cancelled || []).length;
      const before = asked ? `, ${asked} ${asked === 1 ? 'was' : 'were'} already asked to stop` : '';
      announce(`${n} task${n === 1 ? '' : 's'} asked to stop${before}${res.more ? '; more are left, cancel again for them' : ''}.`);
    } catch (err) {
      announce(`Could not cancel the tasks: ${err.message}`);
    }
    refreshSoon();
  }

  // requeue re-queues the dead task id after a confirmation, whose
  // checkbox has the new task resume it (replay its completed steps).
  async function requeue(id, flow) {
    if (!await confirmAction('Requeue this dead task?', `Task ${id}${flow ? ` of ${flow}` : ''} runs again, as a new task with the same inputs.`, 'Requeue', 'dead-heading',
      'Resume from its completed steps (replay what the dead task finished)')) return;
    const resume = confirmCheck.checked;
    try {
      const res = await call(`dead/${encodeURIComponent(id)}/requeue/${resume ? '?resume=1' : ''}`, 'POST');
      const how = res.resume ? ', resuming its completed steps' : '';
      announce(`Task ${shortID(id)} requeued as task ${shortID(res.task_id)}${how}.`);
      setText(deadStatus, `Requeued task ${shortID(id)} as task ${res.task_id}${how}.`);
    } catch (err) {
      announce(`Could not requeue task ${shortID(id)}: ${err.message}`);
    }
    refreshSoon();
  }

  // ---- dead letters -----------------------------------------------------------

  const deadRowsByID = new Map();

  // loadDead reads the dead letters and updates their rows in place, by
  // task id, so that a refresh keeps the focus (and the button a
  // confirmation returns to) where it is.
  async function loadDead() {
    const res = await call(`dead/?limit=${PAGE_SIZE}`);
    const tasks = res.tasks || [];
    const focused = document.activeElement;
    const hadFocus = deadRows.contains(focused);
    const keep = new Set();
    tasks.forEach((d, i) => {
      keep.add(d.task_id);
      let row = deadRowsByID.get(d.task_id);
      if (!row) {
        row = deadRow(d);
        deadRowsByID.set(d.task_id, row);
      }
      setText(row.querySelector('.c-buried'), age(d.buried_at));
      if (deadRows.children[i] !== row) place(deadRows, row, deadRows.children[i] || null);
    });
    for (const [id, row] of deadRowsByID) {
      if (!keep.has(id)) {
        row.remove();
        deadRowsByID.delete(id);
      }
    }
    $('no-dead').hidden = tasks.length > 0;
    $('dead-table').hidden = tasks.length === 0;
    if (hadFocus && !deadRows.contains(focused)) {
      // Its row went (requeued): the focus goes to the first one left,
      // or to the section.
      (deadRows.querySelector('.requeue') || $('dead-heading')).focus();
    }
  }

  function deadRow(d) {
    const row = el('tr', { 'data-task-id': d.task_id });
    const open = el('button', { type: 'button', class: 'open link', 'aria-label': `Open dead task ${d.task_id}`, title: d.task_id }, shortID(d.task_id));
    open.addEventListener('click', () => openTask(d.task_id, open));
    const button = el('button', { type: 'button', class: 'requeue', 'aria-label': `Requeue task ${d.task_id}` }, 'Requeue…');
    button.addEventListener('click', () => requeue(d.task_id, d.flow));
    const th = el('th', { scope: 'row', 'data-label': 'Task' });
    th.append(open);
    const actions = el('td', { 'data-label': 'Actions' });
    actions.append(button);
    const reason = el('td', { 'data-label': 'Reason', class: 'c-status' });
    reason.append(el('span', { class: 'clamp', title: d.reason }, d.reason));
    row.append(th, el('td', { 'data-label': 'Flow' }, d.flow), reason,
      el('td', { 'data-label': 'Attempts' }, String(d.attempts)), el('td', { 'data-label': 'Buried', class: 'c-buried' }), actions);
    return row;
  }

  // ---- one task's live stream -------------------------------------------------

  const open = {
    id: '',
    source: null,
    opener: null,
    snap: null,
    lastEventId: '',
    events: 0,
    since: 0, // when it was opened, by the server's clock
  };

  function openTask(id, opener) {
    closeStream();
    Object.assign(open, { id, opener, snap: null, lastEventId: '', events: 0, since: now() });
    detail.hidden = false;
    detail.dataset.taskId = id;
    delete detail.dataset.state;
    setText($('detail-id'), id);
    setText($('detail-flow'), '');
    showOrigin(null);
    $('detail-events').replaceChildren();
    $('detail-output').textContent = '';
    $('detail-output-box').hidden = true;
    $('detail-result-box').hidden = true;
    render({ state: 'PENDING', details: { status: '', progress: 0 } });
    open.snap = null; // a placeholder, not the task's state
    $('detail-heading').focus();
    call(`tasks/${encodeURIComponent(id)}/`).then((t) => {
      if (open.id !== id) return;
      setText($('detail-flow'), t.flow ? `${t.flow}${t.attempt ? `, attempt ${t.max_attempts ? attemptText(t) : t.attempt}` : ''}` : '');
      showOrigin(t);
      if (!open.source && !open.snap) render(t);
    }).catch(() => { /* the stream says more */ });
    connect(id);
  }

  // showOrigin says, under the open task t's flow and attempt, which dead
  // task it was re-queued from and whether it resumes that task's
  // completed steps; nothing for a task that was not re-queued (or null).
  // While the listing or the dead letters show the dead task, its id is a
  // button that opens it.
  function showOrigin(t) {
    const box = $('detail-origin');
    const from = t && typeof t.requeued_from === 'string' ? t.requeued_from : '';
    box.hidden = from === '';
    if (!from) {
      box.replaceChildren();
      return;
    }
    const listed = () => list.rows.get(from) || deadRowsByID.get(from);
    let name = el('code', { title: from }, shortID(from));
    if (listed()) {
      name = el('button', { type: 'button', id: 'detail-origin-open', class: 'link', 'aria-label': `Open dead task ${from}`, title: from }, shortID(from));
      // Closing it goes back to its row, if it is still there.
      name.addEventListener('click', () => {
        const row = listed();
        openTask(from, row ? row.querySelector('.open') : null);
      });
    }
    box.replaceChildren('Re-queued from dead task ', name, t.resume ? ', resuming its completed steps' : '');
  }

  function connect(id) {
    setConnection('connecting', 'Connecting…');
    const source = new EventSource(`${API}task-status/${encodeURIComponent(id)}/?mode=updates`);
    open.source = source;
    source.onopen = () => {
      if (open.source === source) setConnection('live', 'Live: new events appear as they happen.');
    };
    source.addEventListener('snapshot', (e) => {
      if (open.source !== source) return;
      const snap = parse(e.data);
      if (!snap) return;
      if (e.lastEventId) open.lastEventId = e.lastEventId;
      addEvent(e.lastEventId, snap.updated_at, `Snapshot: ${STATE_WORDS[snap.state] || snap.state}, ${(snap.details && snap.details.progress) || 0}%, ${((snap.details && snap.details.step_results) || []).length} steps`, 'snapshot');
      render(snap);
    });
    source.addEventListener('update', (e) => {
      if (open.source !== source) return;
      const u = parse(e.data);
      if (!u) return;
      open.lastEventId = e.lastEventId;
      addEvent(e.lastEventId, u.at, describe(u), 'update');
      // The stream starts from the task's first event: only what happens
      // once the task is open is announced.
      render(applyUpdate(open.snap, u), Date.parse(u.at) >= open.since - 1000);
    });
    source.addEventListener('token', (e) => {
      if (open.source !== source) return;
      const t = parse(e.data);
      if (!t || typeof t.token !== 'string') return;
      const out = $('detail-output');
      out.textContent += t.token;
      $('detail-output-box').hidden = false;
    });
    source.onerror = () => {
      if (open.source !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        setConnection('reconnecting', 'Connection lost, reconnecting…');
        return;
      }
      // Closed for good: a 204 after the end, a 404, or a refusal. Read
      // the task once to say which.
      closeStream();
      call(`tasks/${encodeURIComponent(id)}/`).then((t) => {
        if (open.id !== id) return;
        render(t);
        setConnection('closed', TERMINAL.has(t.state) ? 'The task has ended; its stream is closed.' : 'The stream closed.');
      }).catch((err) => {
        if (open.id === id) setConnection('closed', `The stream closed: ${err.message}`);
      });
    };
  }

  function parse(data) {
    try {
      const v = JSON.parse(data);
      return v && typeof v === 'object' ? v : null;
    } catch (_) {
      return null;
    }
  }

  // describe says in words what one update changed.
  function describe(u) {
    const parts = [];
    if ('state' in u) parts.push(`state ${STATE_WORDS[u.state] || u.state}`);
    if ('status' in u) parts.push(`status “${u.status}”`);
    if ('progress' in u) parts.push(`${u.progress}%`);
    if ('step' in u && u.step) {
      parts.push(u.step.type === 'tool_result' ? `tool result of ${u.step.tool || 'a tool'}` : `step: ${u.step.message || ''}`);
    }
    if ('final_result' in u) parts.push('result');
    return parts.join(', ') || 'update';
  }

  // applyUpdate merges an update of the stream into the snapshot, as the
  // API's documentation says.
  function applyUpdate(snap, u) {
    const base = snap || { state: 'PENDING', details: { status: '', progress: 0, step_results: [], final_result: null } };
    const details = { ...(base.details || {}) };
    const next = { ...base, details };
    if ('state' in u) next.state = u.state;
    if ('status' in u) details.status = u.status;
    if ('progress' in u) details.progress = u.progress;
    if ('step' in u && Number.isInteger(u.index) && u.index >= 0) {
      const steps = Array.isArray(details.step_results) ? details.step_results.slice(0, u.index) : [];
      steps.push(u.step);
      details.step_results = steps;
    }
    if ('final_result' in u) details.final_result = u.final_result;
    return next;
  }

  function addEvent(id, at, text, kind) {
    const events = $('detail-events');
    const item = el('li', { class: `event event-${kind}`, 'data-event-id': id || '' });
    const t = Date.parse(at);
    if (Number.isFinite(t)) item.append(el('time', { datetime: at }, new Date(t).toLocaleTimeString()), ' ');
    item.append(el('span', { class: 'event-text' }, text));
    events.append(item);
    while (events.children.length > MAX_EVENTS) events.firstElementChild.remove();
    open.events++;
    detail.dataset.events = String(open.events);
    // Follow the newest event unless the user scrolled up to read.
    if (events.scrollHeight - events.scrollTop - events.clientHeight < 80) events.scrollTop = events.scrollHeight;
  }

  // render shows the task's snapshot; announce says whether a change of
  // state is announced.
  function render(snap, announceChange) {
    const previous = open.snap ? open.snap.state : '';
    open.snap = snap;
    const details = snap.details || {};
    const state = snap.state || 'PENDING';
    detail.dataset.state = state;
    const badge = $('detail-state');
    setText(badge, STATE_WORDS[state] || state);
    badge.dataset.state = state;
    const pct = Math.max(0, Math.min(100, Number(details.progress) || 0));
    $('detail-progress').value = pct;
    setText($('detail-percent'), `${pct}%`);
    setText($('detail-status'), details.status || '');
    const result = details.final_result;
    $('detail-result-box').hidden = result == null;
    setText($('detail-result'), result == null ? '' : pretty(result));
    const cancel = $('detail-cancel');
    const hadFocus = document.activeElement === cancel;
    cancel.hidden = TERMINAL.has(state);
    if (hadFocus && cancel.hidden) $('detail-close').focus();
    if (announceChange && previous && previous !== state) announce(`Task ${shortID(open.id)}: ${STATE_WORDS[state] || state}${details.status ? `, ${details.status}` : ''}`);
    if (TERMINAL.has(state) && open.source) {
      closeStream();
      setConnection('closed', 'The task has ended; its stream is closed.');
    }
  }

  function setConnection(state, text) {
    detail.dataset.connection = state;
    setText($('detail-connection'), text);
  }

  function closeStream() {
    if (open.source) open.source.close();
    open.source = null;
  }

  function closeTask() {
    closeStream();
    detail.hidden = true;
    const opener = open.opener;
    open.id = '';
    // Back to the button that opened it, or to its row's.
    const row = opener && opener.closest ? opener.closest('tr') : null;
    const back = row && row.isConnected ? row.querySelector('.open') : null;
    (back || $('tasks-heading')).focus();
  }

  // ---- refreshing -------------------------------------------------------------

  let timer = 0;
  let running = false;
  let again = false;

  // refresh reads the stats, the listing and the dead letters, then
  // schedules the next refresh. A page in a hidden tab reads nothing: it
  // catches up when it is shown again.
  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) return;
    if (running) {
      again = true; // once this one is done
      return;
    }
    running = true;
    const problems = [];
    const results = await Promise.allSettled([loadStats(), loadList(false), loadDead()]);
    results.forEach((r, i) => {
      if (r.status === 'rejected') problems.push(`${['stats', 'tasks', 'dead letters'][i]}: ${r.reason.message}`);
    });
    running = false;
    if (problems.length) {
      setText(updated, `Could not read ${problems.join('; ')}. Trying again every ${duration(REFRESH_MS)}.`);
    } else {
      setText(updated, `Updated ${new Date().toLocaleTimeString()}; every ${duration(REFRESH_MS)}.`);
      if (!results.some((r) => r.status === 'rejected' && (r.reason.status === 401 || r.reason.status === 403))) showAlert('');
    }
    timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
    again = false;
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 100);
  }

  // ---- wiring -----------------------------------------------------------------

  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    filtersChanged();
  });
  stateSelect.addEventListener('change', filtersChanged);
  flowSelect.addEventListener('change', filtersChanged);
  // Typing in the owner box changes nothing until it is applied: Enter
  // (the form's submit), Apply, or leaving the box.
  for (const input of [ownerInput, sinceInput, untilInput]) input.addEventListener('change', filtersChanged);
  cancelMatching.addEventListener('click', cancelByFilter);
  moreButton.addEventListener('click', loadMore);
  $('detail-close').addEventListener('click', closeTask);
  $('detail-cancel').addEventListener('click', () => cancelTask(open.id, open.snap && open.snap.flow));
  detail.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      closeTask();
    }
  });
  window.addEventListener('pagehide', closeStream);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });

  syncCancelMatching();
  loadFlows();
  refresh();
})();
