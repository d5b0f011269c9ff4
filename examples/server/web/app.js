// The flows demo page: pick a flow, fill in its inputs, start it, and
// follow every started task live over Server-Sent Events.
//
// Every URL is relative, so the page works wherever the API is mounted.
//
// How a card stays exact:
//   - The page reads the update stream (?mode=updates): it opens with an
//     "event: snapshot" message, the task's whole snapshot at the point
//     the stream starts from, which replaces what the card holds; then
//     each "event: update" carries only what one event changed (a step
//     with its index, the status, the percentage...), which the card
//     merges into its snapshot. A step lands at its index, so a replay
//     cannot show it twice.
//   - Updates and tokens ("event: token") are added one by one. Each
//     message has an id, and one is applied only when its id comes after
//     the last id the card has seen, so a replay never doubles anything.
//     The step that opens an attempt after the first empties the streamed
//     text: that attempt streams its answer again from the start.
//   - The task list, each card's last snapshot, last event id and streamed
//     text are kept in localStorage. After a reload, a card is drawn from
//     what was kept and its stream resumes after the kept id, through the
//     lastEventId query parameter: a new EventSource cannot send the
//     Last-Event-ID header. (When a live stream drops, the EventSource
//     reconnects by itself and sends that header.) A resumed stream opens
//     with the snapshot at that id, so the card is right even if what was
//     kept was not.
//   - A stream that resumes after the task's end is answered 204, which
//     stops the EventSource for good; the card then reads the task once.
(function () {
  'use strict';

  const TERMINAL = new Set(['SUCCESS', 'FAILURE']);
  // The log step that opens an attempt after the first ("attempt 2 of 3
  // starts: attempt 1 failed").
  const ATTEMPT_STARTS = /^attempt \d+ of \d+ starts: /;
  const STORAGE_KEY = `flows-demo:${location.pathname}:tasks`;
  // Tasks kept in the list: running ones always, finished ones up to this.
  const MAX_KEPT = 50;
  // Streamed text kept per task in localStorage (characters).
  const MAX_LIVE_KEPT = 64 * 1024;
  // Streams open at once. Over HTTP/1.1 a browser opens at most six
  // connections to a server; keeping two free lets the page still start
  // and cancel tasks while many run. Other running tasks wait their turn.
  const MAX_STREAMS = 4;
  // How often a card waiting for a stream reads its task's snapshot (ms).
  const PEEK_INTERVAL = 2000;
  // How often a finished card reads where its notifications stand (ms),
  // and how many reads find none before it stops looking.
  const NOTIFY_INTERVAL = 1500;
  const NOTIFY_MAX_EMPTY = 20;
  // What each state of a notification is called on a card.
  const DELIVERY_TEXT = {
    queued: 'queued', sending: 'sending…', retrying: 'retrying', sent: 'sent', failed: 'failed',
  };

  const form = document.getElementById('start-form');
  const select = document.getElementById('flow-select');
  const description = document.getElementById('flow-description');
  const flowLabels = document.getElementById('flow-labels');
  const inputsBox = document.getElementById('inputs');
  const startButton = document.getElementById('start-button');
  const formMessage = document.getElementById('form-message');
  const taskList = document.getElementById('tasks');
  const noTasks = document.getElementById('no-tasks');
  const taskCount = document.getElementById('task-count');
  const clearButton = document.getElementById('clear-finished');
  const announcer = document.getElementById('announcer');
  const template = document.getElementById('task-template');

  /** @type {Map<string, object>} flows by name, as GET flows/ lists them */
  const flows = new Map();
  /** @type {Map<string, TaskCard>} cards by task id */
  const cards = new Map();
  // Whether the server sends notifications: true until it says it does
  // not.
  let notificationsOn = true;

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

  function setMessage(text, isError) {
    formMessage.textContent = text;
    formMessage.classList.toggle('error', Boolean(isError));
  }

  function announce(text) {
    // Clearing first makes a repeated message be read again.
    announcer.textContent = '';
    setTimeout(() => { announcer.textContent = text; }, 50);
  }

  // errorText turns a failed response into a readable line, using the
  // API's {"error": "..."} body when there is one.
  async function errorText(resp) {
    let detail = resp.statusText || 'request failed';
    try {
      const body = await resp.json();
      if (body && typeof body.error === 'string') detail = body.error;
    } catch (_) { /* not JSON */ }
    return `${resp.status}: ${detail}`;
  }

  // renderLabels shows a flow's labels as chips. The "model" label says
  // which language model answers; an offline one is marked so that nobody
  // takes its scripted text for a real model's.
  function renderLabels(list, labels) {
    list.replaceChildren();
    for (const [key, value] of Object.entries(labels || {})) {
      const item = el('li', { class: 'label', 'data-key': key });
      if (/offline|scripted|sample/i.test(String(value))) item.classList.add('label-offline');
      item.append(el('span', { class: 'label-key' }, key), ': ', el('span', { class: 'label-value' }, value));
      list.append(item);
    }
    list.hidden = list.childElementCount === 0;
  }

  function pretty(value) {
    if (typeof value === 'string') return value;
    return JSON.stringify(value, null, 2);
  }

  function shortID(id) {
    return id.slice(0, 8);
  }

  // eventOrder parses an event id into numbers to compare: the in-memory
  // store's ids are integers, and Redis's of earlier versions "<n>-<k>".
  // Other ids are opaque and give null, as Redis's "<n>-<k>-<tag>" are:
  // after a failover that lost events, others take their positions, with
  // another tag, and do not come before the card's id for all their n.
  function eventOrder(id) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(id || '');
    return m ? [Number(m[1]), Number(m[2] || 0)] : null;
  }

  // isAfter reports whether the event id comes after last, the id the card
  // saw last. Without a last id everything is new; ids that cannot be
  // ordered count as new unless equal.
  function isAfter(id, last) {
    if (!last) return true;
    if (!id) return false;
    const a = eventOrder(id);
    const b = eventOrder(last);
    if (!a || !b) return id !== last;
    return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
  }

  // applyUpdate returns snap with the update u of an update stream merged
  // in: the members u carries replace the snapshot's, and u.step lands at
  // u.index of step_results (dropping any steps after it, which a resumed
  // stream sends again).
  function applyUpdate(snap, u) {
    const base = snap || { state: 'PENDING', details: { status: '', progress: 0, step_results: [], final_result: null } };
    const details = { ...(base.details || {}) };
    const next = { ...base, details };
    if ('state' in u) next.state = u.state;
    if ('status' in u) details.status = u.status;
    if ('progress' in u) details.progress = u.progress;
    if ('step' in u && Number.isInteger(u.index) && u.index >= 0) {
      const steps = Array.isArray(details.step_results) ? details.step_results : [];
      details.step_results = u.index === steps.length ? steps : steps.slice(0, u.index);
      details.step_results.push(u.step);
    }
    if ('final_result' in u) details.final_result = u.final_result;
    if ('started_at' in u) next.started_at = u.started_at;
    if ('ended_at' in u) next.ended_at = u.ended_at;
    if ('at' in u) next.updated_at = u.at;
    return next;
  }

  // ---- the kept task list ---------------------------------------------------

  const storage = {
    timer: 0,

    load() {
      try {
        const list = JSON.parse(localStorage.getItem(STORAGE_KEY) || '[]');
        return Array.isArray(list) ? list.filter((r) => r && typeof r.id === 'string') : [];
      } catch (_) {
        return [];
      }
    },

    // saveSoon saves within a moment, once for a burst of changes.
    saveSoon() {
      if (!this.timer) this.timer = setTimeout(() => this.save(), 250);
    },

    save() {
      clearTimeout(this.timer);
      this.timer = 0;
      const records = [];
      let finished = 0;
      // The list is newest first, like the page.
      for (const item of taskList.children) {
        const card = cards.get(item.dataset.taskId);
        if (!card) continue;
        if (card.finished() && ++finished > MAX_KEPT) continue;
        records.push(card.record());
      }
      try {
        localStorage.setItem(STORAGE_KEY, JSON.stringify(records));
      } catch (_) {
        // Full or disabled storage: the page still works, it just forgets.
      }
    },
  };

  // ---- streams --------------------------------------------------------------

  // streams hands out the few event streams the page may hold at once, in
  // the order cards ask for them.
  const streams = {
    open: new Set(),
    waiting: [],

    request(card) {
      if (this.open.has(card) || this.waiting.includes(card)) return;
      if (this.open.size < MAX_STREAMS) {
        this.open.add(card);
        card.connect();
      } else {
        this.waiting.push(card);
        card.setConnection('waiting');
        card.peekSoon();
      }
    },

    release(card) {
      this.waiting = this.waiting.filter((c) => c !== card);
      if (!this.open.delete(card)) return;
      const next = this.waiting.shift();
      if (next) {
        this.open.add(next);
        next.connect();
      }
    },
  };

  // ---- flows and their input forms ---------------------------------------

  async function loadFlows() {
    let list;
    try {
      const resp = await fetch('flows/', { headers: { Accept: 'application/json' } });
      if (!resp.ok) throw new Error(await errorText(resp));
      list = await resp.json();
    } catch (err) {
      select.replaceChildren(el('option', { value: '' }, 'Could not load flows'));
      setMessage(`Could not load the flows: ${err.message}. Reload the page to try again.`, true);
      return;
    }
    select.replaceChildren();
    if (!Array.isArray(list) || list.length === 0) {
      select.append(el('option', { value: '' }, 'No flows registered'));
      return;
    }
    for (const info of list) {
      flows.set(info.name, info);
      select.append(el('option', { value: info.name }, info.name));
    }
    select.disabled = false;
    startButton.disabled = false;
    showFlow(select.value);
  }

  function fieldOrder(schema) {
    const props = Object.keys(schema.properties || {});
    const ordered = (schema['x-order'] || []).filter((name) => props.includes(name));
    for (const name of props.sort()) if (!ordered.includes(name)) ordered.push(name);
    return ordered;
  }

  function showFlow(name) {
    const info = flows.get(name);
    description.textContent = info ? info.description || '' : '';
    renderLabels(flowLabels, info && info.labels);
    inputsBox.replaceChildren(el('legend', {}, 'Inputs'));
    if (!info) return;
    const schema = info.input_schema || {};
    const required = new Set(schema.required || []);
    const names = fieldOrder(schema);
    if (names.length === 0) {
      inputsBox.append(el('p', { class: 'hint' }, 'This flow takes no inputs.'));
      return;
    }
    for (const name of names) {
      inputsBox.append(inputField(name, schema.properties[name] || {}, required.has(name)));
    }
  }

  // inputField builds the control for one input: a text box for strings, a
  // number box for integers and numbers, a checkbox for booleans, and a
  // JSON text area for anything else.
  function inputField(name, prop, required) {
    const id = `input-${name}`;
    const wrap = el('div', { class: 'field' });
    const label = el('label', { for: id }, prop.title || name);
    if (required) label.append(' ', el('span', { class: 'required-mark', 'aria-hidden': 'true' }, '*'));
    let control;
    switch (prop.type) {
      case 'string':
        control = el('input', { type: 'text', autocomplete: 'off' });
        break;
      case 'integer':
        control = el('input', { type: 'number', step: '1', inputmode: 'numeric' });
        break;
      case 'number':
        control = el('input', { type: 'number', step: 'any', inputmode: 'decimal' });
        break;
      case 'boolean':
        control = el('input', { type: 'checkbox' });
        wrap.classList.add('field-checkbox');
        break;
      default:
        control = el('textarea', { rows: '3', spellcheck: 'false', placeholder: 'JSON value', class: 'json' });
    }
    Object.assign(control, { id, name });
    control.dataset.kind = prop.type || 'json';
    control.dataset.name = name;
    if (required && prop.type !== 'boolean') {
      control.required = true;
      control.setAttribute('aria-required', 'true');
    }
    if (prop.type === 'boolean') wrap.append(control, label);
    else wrap.append(label, control);
    const describedBy = [];
    if (prop.description) {
      const hint = el('p', { class: 'hint', id: `${id}-hint` }, prop.description);
      describedBy.push(hint.id);
      wrap.append(hint);
    }
    const problem = el('p', { class: 'field-error', id: `${id}-error`, hidden: true });
    describedBy.push(problem.id);
    wrap.append(problem);
    control.setAttribute('aria-describedby', describedBy.join(' '));
    control.addEventListener('input', () => markField(control, ''));
    return wrap;
  }

  // markField shows (or clears, with '') the problem of one input, both to
  // the browser's validation and next to the field.
  function markField(control, problem) {
    control.setCustomValidity(problem);
    control.toggleAttribute('aria-invalid', problem !== '');
    const p = document.getElementById(`${control.id}-error`);
    if (p) {
      p.textContent = problem;
      p.hidden = problem === '';
    }
  }

  // collectInputs reads the form into the inputs object, or returns null
  // after pointing the user at the first invalid field. Required fields are
  // checked here as the server would: a blank string is missing.
  function collectInputs() {
    const inputs = {};
    let firstBad = null;
    for (const control of inputsBox.querySelectorAll('[data-name]')) {
      const { kind, name } = control.dataset;
      let problem = '';
      if (kind === 'boolean') {
        inputs[name] = control.checked;
      } else if (control.value.trim() === '') {
        if (control.required) problem = `${name} is required.`;
      } else if (kind === 'string') {
        inputs[name] = control.value;
      } else if (kind === 'integer' || kind === 'number') {
        const n = Number(control.value);
        if (!Number.isFinite(n) || (kind === 'integer' && !Number.isInteger(n))) {
          problem = `${name} must be ${kind === 'integer' ? 'a whole number' : 'a number'}.`;
        } else {
          inputs[name] = n;
        }
      } else {
        try {
          inputs[name] = JSON.parse(control.value);
        } catch (_) {
          problem = `${name} must be valid JSON.`;
        }
      }
      markField(control, problem);
      if (problem && !firstBad) firstBad = control;
    }
    if (firstBad) {
      setMessage(firstBad.validationMessage, true);
      firstBad.focus();
      return null;
    }
    return inputs;
  }

  // starting is set while a start-task request is on its way: the Start
  // button is then aria-disabled (a disabled button would drop the focus).
  let starting = false;

  async function startTask(event) {
    event.preventDefault();
    if (starting) return;
    const name = select.value;
    const info = flows.get(name);
    if (!info) return;
    const inputs = collectInputs();
    if (!inputs) return;
    starting = true;
    startButton.setAttribute('aria-disabled', 'true');
    setMessage(`Starting ${name}…`);
    try {
      const resp = await fetch('start-task/', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ flow: name, inputs }),
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      const { task_id: id } = await resp.json();
      const card = addCard({ id, flow: name, labels: info.labels || {}, inputs }, true);
      storage.save();
      streams.request(card);
      setMessage(`Started ${name} (task ${shortID(id)}).`);
    } catch (err) {
      setMessage(`Could not start ${name}: ${err.message}`, true);
    } finally {
      starting = false;
      startButton.removeAttribute('aria-disabled');
    }
  }

  // ---- task cards ----------------------------------------------------------

  // addCard makes the card of a task record, first in the list for a new
  // task, last for one restored from storage (which is kept newest first).
  function addCard(record, first) {
    const item = template.content.firstElementChild.cloneNode(true);
    const card = new TaskCard(record, item);
    cards.set(record.id, card);
    if (first) taskList.prepend(item);
    else taskList.append(item);
    updateList();
    return card;
  }

  // updateList refreshes what depends on the whole list: the empty-list
  // hint, the count and the "Clear finished" button.
  function updateList() {
    const all = [...cards.values()];
    const done = all.filter((c) => c.finished()).length;
    noTasks.hidden = all.length > 0;
    taskCount.textContent = all.length ? `(${all.length - done} running, ${done} finished)` : '';
    clearButton.disabled = done === 0;
  }

  function clearFinished() {
    const done = [...cards.values()].filter((c) => c.finished());
    for (const card of done) card.remove({ quiet: true });
    storage.save();
    announce(`Cleared ${done.length} finished task${done.length === 1 ? '' : 's'}.`);
    document.getElementById('tasks-heading').focus();
  }

  class TaskCard {
    constructor(record, item) {
      this.id = record.id;
      this.flow = String(record.flow || 'flow');
      this.labels = record.labels || {};
      this.inputs = record.inputs || {};
      this.item = item;
      this.q = (selector) => item.querySelector(selector);
      this.snap = null;
      this.lastEventId = typeof record.lastEventId === 'string' ? record.lastEventId : '';
      this.liveText = typeof record.live === 'string' ? record.live : '';
      this.gone = Boolean(record.gone);
      this.source = null;
      this.retryTimer = 0;
      this.peekTimer = 0;
      this.retries = 0;
      this.reconnects = 0;
      this.stepsShown = 0;
      this.cancelling = false;
      this.removed = false;
      this.notifyTimer = 0;
      this.notifyEmpty = 0;
      this.notifyDone = false;
      this.deliveries = new Map(); // channel -> state last shown

      const short = shortID(this.id);
      const name = `${this.flow} task ${short}`;
      item.dataset.taskId = this.id;
      const titleId = `task-${this.id}-title`;
      this.q('.task-title').id = titleId;
      this.q('.task-card').setAttribute('aria-labelledby', titleId);
      this.q('.task-flow').textContent = this.flow;
      this.q('.task-id').textContent = short;
      this.q('.task-id').title = `Task ${this.id}`;
      this.q('.task-progress').setAttribute('aria-label', `Progress of ${name}`);
      renderLabels(this.q('.task-labels'), this.labels);
      const dl = this.q('.task-inputs');
      for (const [k, v] of Object.entries(this.inputs)) {
        dl.append(el('dt', {}, k), el('dd', {}, pretty(v)));
      }
      dl.hidden = dl.childElementCount === 0;

      this.q('.cancel').setAttribute('aria-label', `Cancel ${name}`);
      this.q('.remove').setAttribute('aria-label', `Remove ${name}`);
      this.q('.cancel').addEventListener('click', () => this.cancel());
      this.q('.remove').addEventListener('click', () => this.remove());

      const snap = record.snap && typeof record.snap === 'object' ? record.snap
        : { state: 'PENDING', details: { status: 'Queued', progress: 0, step_results: [], final_result: null } };
      this.render(snap, false);
      if (this.liveText) this.showLive();
      if (this.gone) this.setConnection('gone');
      else if (this.finished()) this.setConnection('closed');
    }

    // finished reports whether the card will not change any more.
    finished() {
      return this.gone || (this.snap != null && TERMINAL.has(this.snap.state));
    }

    // record is what is kept of the card. A streamed text too long to
    // keep is dropped together with the last event id, so that a stream
    // resumed after a reload replays the task from its first event.
    record() {
      const keepLive = this.liveText.length <= MAX_LIVE_KEPT;
      return {
        id: this.id,
        flow: this.flow,
        labels: this.labels,
        inputs: this.inputs,
        snap: this.snap,
        lastEventId: keepLive ? this.lastEventId : '',
        live: keepLive ? this.liveText : '',
        gone: this.gone || undefined,
      };
    }

    // connect opens the task's event stream, resuming after the last event
    // the card has seen. Call it through streams.request.
    connect() {
      clearTimeout(this.retryTimer);
      this.retryTimer = 0;
      if (this.removed) return;
      if (this.source || this.finished()) {
        if (this.finished()) streams.release(this);
        return;
      }
      let url = `task-status/${encodeURIComponent(this.id)}/?mode=updates`;
      if (this.lastEventId) url += `&lastEventId=${encodeURIComponent(this.lastEventId)}`;
      const source = new EventSource(url);
      this.source = source;
      if (this.item.dataset.connection !== 'reconnecting') this.setConnection('connecting');
      source.onopen = () => {
        if (source !== this.source) return;
        this.retries = 0;
        this.setConnection('live');
      };
      // The state the stream starts from: the snapshot at the id it
      // resumes after, or the PENDING one (no id) before the first event.
      source.addEventListener('snapshot', (e) => {
        if (source !== this.source) return;
        let snap;
        try {
          snap = JSON.parse(e.data);
        } catch (_) {
          return;
        }
        // The snapshot replaces the card: what comes next follows its id.
        // Without one while the card had one, the stream starts again
        // from the first event (the server did not know the card's id:
        // after a Redis failover that lost events the card saw), and the
        // text streamed so far comes again too.
        if (!e.lastEventId && this.lastEventId) {
          this.liveText = '';
          this.showLive();
        }
        this.lastEventId = e.lastEventId;
        this.show(snap);
      });
      source.addEventListener('update', (e) => {
        if (source !== this.source) return;
        // An event the card has seen (a replay from the start) is skipped.
        if (!isAfter(e.lastEventId, this.lastEventId)) return;
        let u;
        try {
          u = JSON.parse(e.data);
        } catch (_) {
          return;
        }
        if (!u || typeof u !== 'object') return;
        this.lastEventId = e.lastEventId;
        // A new attempt streams its answer from the start: the text an
        // earlier attempt streamed before it failed or its worker died
        // is dropped, not shown in front of the new one.
        if (u.step && u.step.type === 'log' && ATTEMPT_STARTS.test(u.step.message || '')) {
          this.liveText = '';
          this.showLive();
        }
        this.show(applyUpdate(this.snap, u));
      });
      source.addEventListener('token', (e) => {
        if (source !== this.source) return;
        if (!isAfter(e.lastEventId, this.lastEventId)) return;
        let token;
        try {
          ({ token } = JSON.parse(e.data));
        } catch (_) {
          return;
        }
        this.lastEventId = e.lastEventId;
        if (typeof token === 'string') {
          this.liveText += token;
          this.showLive();
        }
        storage.saveSoon();
      });
      source.onerror = () => {
        if (source !== this.source) return;
        if (source.readyState === EventSource.CONNECTING) {
          // The stream dropped; the EventSource reconnects by itself and
          // sends the Last-Event-ID header.
          this.setConnection('reconnecting');
          return;
        }
        // Closed for good: a 204 after the end, a 404 for a task the
        // server forgot, or an error status. Find out which.
        source.close();
        this.source = null;
        this.recover();
      };
    }

    // show draws a snapshot the stream gave, keeps it, and closes the
    // stream once the task has ended.
    show(snap) {
      this.render(snap, true);
      storage.saveSoon();
      if (TERMINAL.has(snap.state)) this.stop('closed');
    }

    // recover reads the task once after its stream was refused: it draws
    // a finished task's last snapshot, marks a forgotten one, and tries
    // the stream again later otherwise.
    async recover() {
      let resp;
      try {
        resp = await fetch(`tasks/${encodeURIComponent(this.id)}/`, { headers: { Accept: 'application/json' } });
      } catch (_) {
        this.retryLater();
        return;
      }
      if (this.removed) return;
      if (resp.status === 404) {
        this.gone = true;
        this.stop('gone');
        announce(`${this.flow} task ${shortID(this.id)}: no longer known to the server`);
        return;
      }
      let snap = null;
      if (resp.ok) {
        try {
          snap = await resp.json();
        } catch (_) { /* treated as an error below */ }
      }
      if (snap && TERMINAL.has(snap.state)) {
        this.render(snap, true);
        this.stop('closed');
        return;
      }
      this.retryLater();
    }

    // peekSoon reads the task's snapshot in a moment, and again after
    // that, while the card waits for a stream: a waiting card still shows
    // the state and steps, if not the tokens. When the stream opens from
    // the first event, its opening snapshot and updates replace what the
    // peeks showed.
    peekSoon() {
      clearTimeout(this.peekTimer);
      this.peekTimer = setTimeout(async () => {
        if (this.item.dataset.connection !== 'waiting') return;
        try {
          const resp = await fetch(`tasks/${encodeURIComponent(this.id)}/`, { headers: { Accept: 'application/json' } });
          if (this.item.dataset.connection !== 'waiting') return;
          if (resp.status === 404) {
            this.gone = true;
            this.stop('gone');
            return;
          }
          if (resp.ok) {
            const snap = await resp.json();
            if (this.item.dataset.connection !== 'waiting') return;
            this.render(snap, true);
            if (TERMINAL.has(snap.state)) {
              this.stop('closed');
              return;
            }
          }
        } catch (_) { /* try again at the next peek */ }
        this.peekSoon();
      }, PEEK_INTERVAL);
    }

    retryLater() {
      if (this.removed || this.finished() || this.retryTimer) return;
      this.setConnection('reconnecting');
      const delay = Math.min(30000, 1000 * 2 ** Math.min(this.retries, 5));
      this.retries++;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = 0;
        this.connect();
      }, delay);
    }

    // watchNotifications reads, once the task has finished, whether its
    // notifications were sent, are being retried or failed, and reads
    // again until each is sent or failed. A server that sends none says
    // so ("enabled": false): the section stays hidden on every card.
    watchNotifications() {
      if (!notificationsOn || this.notifyDone || this.notifyTimer || this.removed || this.gone) return;
      const delay = this.deliveries.size || this.notifyEmpty ? NOTIFY_INTERVAL : 0;
      this.notifyTimer = setTimeout(async () => {
        this.notifyTimer = 0;
        let resp;
        try {
          resp = await fetch(`notifications/${encodeURIComponent(this.id)}/`, { headers: { Accept: 'application/json' } });
        } catch (_) {
          this.watchNotifications();
          return;
        }
        if (this.removed) return;
        if (resp.status === 404) { // the server forgot the task
          this.notifyDone = true;
          return;
        }
        let list = null;
        if (resp.ok) {
          try {
            const answer = await resp.json();
            if (answer.enabled === false) {
              notificationsOn = false;
              this.notifyDone = true;
              return;
            }
            list = answer.notifications;
          } catch (_) { /* read again below */ }
        }
        if (Array.isArray(list)) this.renderNotifications(list);
        const settled = Array.isArray(list) && list.length > 0 && list.every((d) => d.state === 'sent' || d.state === 'failed');
        if (Array.isArray(list) && list.length === 0 && ++this.notifyEmpty >= NOTIFY_MAX_EMPTY) {
          this.q('.notify-waiting').textContent = 'No notification was queued for this task.';
          this.notifyDone = true;
          return;
        }
        if (settled) {
          this.notifyDone = true;
          return;
        }
        this.watchNotifications();
      }, delay);
    }

    // renderNotifications shows one line per channel, in words (not only
    // in colour), and announces each that was sent or failed.
    renderNotifications(list) {
      const section = this.q('.task-notify');
      section.hidden = false;
      this.q('.notify-waiting').hidden = list.length > 0;
      const ul = this.q('.notify-list');
      ul.replaceChildren();
      for (const d of list) {
        const channel = String(d.channel || 'channel');
        const state = String(d.state || '');
        const item = el('li', { class: 'notify-item' });
        item.dataset.channel = channel;
        item.dataset.delivery = state;
        let words = DELIVERY_TEXT[state] || state;
        if (state === 'sent' && d.attempts > 1) words += ` (attempt ${d.attempts})`;
        item.append(el('span', { class: 'notify-channel' }, channel), ': ', el('span', { class: 'notify-state' }, words));
        if (d.detail && state !== 'sent') item.append(el('span', { class: 'notify-detail' }, String(d.detail)));
        ul.append(item);
        const before = this.deliveries.get(channel);
        if (before !== state && (state === 'sent' || state === 'failed' || state === 'retrying')) {
          announce(`${this.flow} task ${shortID(this.id)}: ${channel} notification ${DELIVERY_TEXT[state]}`);
        }
        this.deliveries.set(channel, state);
      }
    }

    // stop closes the stream for good and gives its place to another card.
    stop(connection) {
      clearTimeout(this.retryTimer);
      clearTimeout(this.peekTimer);
      this.retryTimer = 0;
      if (this.source) this.source.close();
      this.source = null;
      streams.release(this);
      this.setConnection(connection);
      storage.saveSoon();
      updateList();
    }

    setConnection(state) {
      const previous = this.item.dataset.connection;
      this.item.dataset.connection = state;
      const text = {
        reconnecting: 'Connection lost, reconnecting…',
        waiting: 'Waiting for a free connection to follow this task…',
        gone: 'The server no longer has this task (it expired, or the server restarted).',
      }[state] || '';
      const p = this.q('.task-connection');
      p.textContent = text;
      p.hidden = text === '';
      if (state === 'reconnecting' && previous !== 'reconnecting') {
        this.reconnects++;
        this.item.dataset.reconnects = String(this.reconnects);
      }
      if (state === 'gone' && previous !== 'gone') this.render(this.snap, false);
    }

    showLive() {
      this.q('.live-text').textContent = this.liveText;
      this.syncLive();
    }

    // syncLive shows the streamed text until the result is there: the
    // result holds the whole text. A task that failed mid-stream keeps
    // what it wrote.
    syncLive() {
      const result = this.snap && this.snap.details ? this.snap.details.final_result : null;
      this.q('.task-live').hidden = this.liveText === '' || result != null;
      this.item.classList.toggle('streaming', !this.finished() && this.liveText !== '');
    }

    render(snap, announceChange) {
      if (!snap) return;
      const details = snap.details || {};
      const previous = this.snap ? this.snap.state : '';
      this.snap = snap;
      this.item.dataset.state = snap.state;
      this.q('.badge').textContent = snap.state;
      const pct = Math.max(0, Math.min(100, Number(details.progress) || 0));
      this.q('.task-progress').value = pct;
      this.q('.task-percent').textContent = `${pct}%`;
      const done = this.finished();
      const status = details.status || '';
      const shown = this.cancelling && !done ? 'Cancelling…' : status;
      if (this.q('.task-status').textContent !== shown) this.q('.task-status').textContent = shown;

      const steps = Array.isArray(details.step_results) ? details.step_results : [];
      const list = this.q('.step-list');
      // step_results only grows, so the steps shown are a prefix of it.
      if (steps.length < this.stepsShown) {
        list.replaceChildren();
        this.stepsShown = 0;
      }
      for (const step of steps.slice(this.stepsShown)) list.append(stepItem(step));
      this.stepsShown = steps.length;
      this.q('.task-steps').hidden = steps.length === 0;

      const result = details.final_result;
      this.q('.task-result').hidden = result == null;
      this.q('.result-text').textContent = result == null ? '' : pretty(result);
      this.q('.result-text').classList.toggle('json', result != null && typeof result !== 'string');
      this.syncLive();

      const cancel = this.q('.cancel');
      const hadFocus = document.activeElement === cancel;
      cancel.hidden = done;
      this.q('.remove').hidden = !done;
      if (done && hadFocus) this.q('.remove').focus();
      if (announceChange && previous !== snap.state) {
        announce(`${this.flow} task ${shortID(this.id)}: ${snap.state}${status ? `, ${status}` : ''}`);
      }
      if (previous !== snap.state) updateList();
      if (done) this.watchNotifications();
    }

    // cancel asks the server to stop the task. The button stays focusable
    // (aria-disabled, not disabled) so that the keyboard focus is not lost;
    // it moves to Remove when the task ends.
    async cancel() {
      if (this.cancelling) return;
      const button = this.q('.cancel');
      this.cancelling = true;
      button.setAttribute('aria-disabled', 'true');
      try {
        const resp = await fetch(`cancel-task/${encodeURIComponent(this.id)}/`, { method: 'POST' });
        if (resp.status === 409) return; // it finished first
        if (!resp.ok) throw new Error(await errorText(resp));
        if (!this.finished()) this.q('.task-status').textContent = 'Cancelling…';
      } catch (err) {
        this.cancelling = false;
        button.removeAttribute('aria-disabled');
        setMessage(`Could not cancel ${this.flow} task ${shortID(this.id)}: ${err.message}`, true);
      }
    }

    remove(opts) {
      this.removed = true;
      clearTimeout(this.notifyTimer);
      this.stop(this.item.dataset.connection);
      cards.delete(this.id);
      const next = this.item.nextElementSibling || this.item.previousElementSibling;
      this.item.remove();
      updateList();
      if (opts && opts.quiet) return;
      storage.save();
      const focusTarget = next ? next.querySelector('button:not([hidden])') : null;
      (focusTarget || document.getElementById('tasks-heading')).focus();
    }
  }

  // stepItem renders one step result: a log line, or a tool result as a
  // collapsible block of pretty-printed JSON.
  function stepItem(step) {
    if (step && step.type === 'tool_result') {
      const item = el('li', { class: 'step step-tool' });
      const details = el('details', { open: true });
      const summary = el('summary');
      summary.append(el('span', { class: 'step-kind' }, 'Tool result'), ' ', el('strong', { class: 'tool-name' }, step.tool || 'tool'));
      if (step.step_name) summary.append(' ', el('span', { class: 'step-name' }, `step ${step.step_name}`));
      // Focusable, so that a keyboard can scroll a long block.
      const label = `Data of tool ${step.tool || 'tool'}${step.step_name ? ` in step ${step.step_name}` : ''}`;
      details.append(summary, el('pre', { class: 'tool-data', tabindex: '0', role: 'region', 'aria-label': label }, pretty(step.data)));
      item.append(details);
      return item;
    }
    return el('li', { class: 'step step-log' }, step && step.message != null ? String(step.message) : '');
  }

  // ---- start ------------------------------------------------------------------

  select.addEventListener('change', () => {
    setMessage('');
    showFlow(select.value);
  });
  form.addEventListener('submit', startTask);
  clearButton.addEventListener('click', clearFinished);
  // Keep the latest state when the page goes away (reload, tab closed).
  window.addEventListener('pagehide', () => storage.save());

  for (const record of storage.load()) {
    if (cards.has(record.id)) continue;
    const card = addCard(record, false);
    if (!card.finished()) streams.request(card);
  }
  loadFlows();
})();
