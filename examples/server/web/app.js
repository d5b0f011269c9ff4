// The flows demo page: pick a flow, fill in its inputs, start it, and
// follow every started task live over Server-Sent Events.
//
// Every URL is relative, so the page works wherever the API is mounted.
(function () {
  'use strict';

  const TERMINAL = new Set(['SUCCESS', 'FAILURE']);

  const form = document.getElementById('start-form');
  const select = document.getElementById('flow-select');
  const description = document.getElementById('flow-description');
  const flowLabels = document.getElementById('flow-labels');
  const inputsBox = document.getElementById('inputs');
  const startButton = document.getElementById('start-button');
  const formMessage = document.getElementById('form-message');
  const taskList = document.getElementById('tasks');
  const noTasks = document.getElementById('no-tasks');
  const template = document.getElementById('task-template');

  /** @type {Map<string, object>} flows by name, as GET flows/ lists them */
  const flows = new Map();

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

  function renderLabels(list, labels) {
    list.replaceChildren();
    for (const [key, value] of Object.entries(labels || {})) {
      const item = el('li', { class: 'label' });
      item.append(el('span', { class: 'label-key' }, key), ': ', el('span', { class: 'label-value' }, value));
      list.append(item);
    }
    list.hidden = list.childElementCount === 0;
  }

  function pretty(value) {
    if (typeof value === 'string') return value;
    return JSON.stringify(value, null, 2);
  }

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
    const label = el('label', { for: id }, name);
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
        control = el('textarea', { rows: '3', spellcheck: 'false', placeholder: 'JSON value' });
    }
    Object.assign(control, { id, name });
    control.dataset.kind = prop.type || 'json';
    control.dataset.name = name;
    if (required && prop.type !== 'boolean') control.required = true;
    if (prop.type === 'boolean') wrap.append(control, label);
    else wrap.append(label, control);
    if (prop.description) {
      const hint = el('p', { class: 'hint', id: `${id}-hint` }, prop.description);
      control.setAttribute('aria-describedby', hint.id);
      wrap.append(hint);
    }
    return wrap;
  }

  // collectInputs reads the form into the inputs object, or returns null
  // after pointing the user at the first invalid field.
  function collectInputs() {
    const inputs = {};
    for (const control of inputsBox.querySelectorAll('[data-name]')) {
      control.setCustomValidity('');
      const { kind, name } = control.dataset;
      if (kind === 'boolean') {
        inputs[name] = control.checked;
        continue;
      }
      const raw = control.value;
      if (raw.trim() === '') {
        if (control.required) control.setCustomValidity(`${name} is required.`);
        continue;
      }
      if (kind === 'string') {
        inputs[name] = raw;
      } else if (kind === 'integer' || kind === 'number') {
        const n = Number(raw);
        if (!Number.isFinite(n) || (kind === 'integer' && !Number.isInteger(n))) {
          control.setCustomValidity(`${name} must be ${kind === 'integer' ? 'a whole number' : 'a number'}.`);
        } else {
          inputs[name] = n;
        }
      } else {
        try {
          inputs[name] = JSON.parse(raw);
        } catch (_) {
          control.setCustomValidity(`${name} must be valid JSON.`);
        }
      }
    }
    return form.reportValidity() ? inputs : null;
  }

  async function startTask(event) {
    event.preventDefault();
    const name = select.value;
    const info = flows.get(name);
    if (!info) return;
    const inputs = collectInputs();
    if (!inputs) return;
    startButton.disabled = true;
    setMessage(`Starting ${name}…`);
    try {
      const resp = await fetch('start-task/', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ flow: name, inputs }),
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      const { task_id: id } = await resp.json();
      addTask(id, info, inputs);
      setMessage(`Started ${name} (task ${id.slice(0, 8)}).`);
    } catch (err) {
      setMessage(`Could not start ${name}: ${err.message}`, true);
    } finally {
      startButton.disabled = false;
    }
  }

  // ---- task cards ----------------------------------------------------------

  function addTask(id, info, inputs) {
    const item = template.content.firstElementChild.cloneNode(true);
    const card = new TaskCard(id, info, inputs, item);
    taskList.prepend(item);
    noTasks.hidden = true;
    card.watch();
  }

  class TaskCard {
    constructor(id, info, inputs, item) {
      this.id = id;
      this.item = item;
      this.q = (selector) => item.querySelector(selector);
      this.stepsShown = 0;
      this.liveText = '';
      this.state = '';
      this.source = null;

      const titleId = `task-${id}-title`;
      this.q('.task-title').id = titleId;
      this.q('.task-card').setAttribute('aria-labelledby', titleId);
      this.q('.task-flow').textContent = info.name;
      this.q('.task-id').textContent = id.slice(0, 8);
      this.q('.task-id').title = `Task ${id}`;
      this.q('.task-progress').setAttribute('aria-label', `Progress of ${info.name} task ${id.slice(0, 8)}`);
      renderLabels(this.q('.task-labels'), info.labels);
      const dl = this.q('.task-inputs');
      for (const [k, v] of Object.entries(inputs)) {
        dl.append(el('dt', {}, k), el('dd', {}, pretty(v)));
      }
      dl.hidden = dl.childElementCount === 0;

      this.q('.cancel').setAttribute('aria-label', `Cancel ${info.name} task ${id.slice(0, 8)}`);
      this.q('.remove').setAttribute('aria-label', `Remove ${info.name} task ${id.slice(0, 8)}`);
      this.q('.cancel').addEventListener('click', () => this.cancel());
      this.q('.remove').addEventListener('click', () => this.remove());
      this.render({ state: 'PENDING', details: { status: 'Queued', progress: 0, step_results: [], final_result: null } });
    }

    // watch opens the task's event stream. EventSource reconnects by itself
    // after a network error and sends Last-Event-ID, so the server resumes
    // exactly where the stream stopped.
    watch() {
      const source = new EventSource(`task-status/${encodeURIComponent(this.id)}/`);
      this.source = source;
      source.onopen = () => this.connection('');
      source.onmessage = (e) => {
        const snap = JSON.parse(e.data);
        this.render(snap);
        if (TERMINAL.has(snap.state)) this.close();
      };
      source.addEventListener('token', (e) => {
        const { token } = JSON.parse(e.data);
        if (typeof token === 'string') this.appendToken(token);
      });
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          this.close();
          this.refresh();
        } else {
          this.connection('Connection lost, reconnecting…');
        }
      };
    }

    close() {
      if (this.source) this.source.close();
      this.source = null;
    }

    // refresh fetches the snapshot once, for a stream the server refused.
    async refresh() {
      try {
        const resp = await fetch(`tasks/${encodeURIComponent(this.id)}/`, { headers: { Accept: 'application/json' } });
        if (!resp.ok) throw new Error(await errorText(resp));
        this.render(await resp.json());
        this.connection(TERMINAL.has(this.state) ? '' : 'Live updates stopped.');
      } catch (err) {
        this.connection(`Live updates stopped: ${err.message}`);
      }
    }

    connection(text) {
      const p = this.q('.task-connection');
      p.textContent = text;
      p.hidden = text === '';
    }

    appendToken(token) {
      this.liveText += token;
      const live = this.q('.task-live');
      live.hidden = false;
      this.q('.live-text').textContent = this.liveText;
    }

    render(snap) {
      const details = snap.details || {};
      this.state = snap.state;
      this.item.dataset.state = snap.state;
      this.q('.badge').textContent = snap.state;
      const pct = Math.max(0, Math.min(100, Number(details.progress) || 0));
      this.q('.task-progress').value = pct;
      this.q('.task-percent').textContent = `${pct}%`;
      this.q('.task-status').textContent = details.status || '';

      const steps = details.step_results || [];
      const list = this.q('.step-list');
      if (steps.length < this.stepsShown) {
        list.replaceChildren();
        this.stepsShown = 0;
      }
      for (const step of steps.slice(this.stepsShown)) list.append(stepItem(step));
      this.stepsShown = steps.length;
      this.q('.task-steps').hidden = steps.length === 0;

      const done = TERMINAL.has(snap.state);
      const result = details.final_result;
      if (result != null) {
        const text = pretty(result);
        this.q('.result-text').textContent = text;
        this.q('.task-result').hidden = false;
        // The result holds the whole streamed text: show it once.
        if (text === this.liveText) this.q('.task-live').hidden = true;
      }
      this.q('.cancel').hidden = done;
      this.q('.remove').hidden = !done;
    }

    async cancel() {
      const button = this.q('.cancel');
      button.disabled = true;
      try {
        const resp = await fetch(`cancel-task/${encodeURIComponent(this.id)}/`, { method: 'POST' });
        if (resp.status === 409) return; // it finished first
        if (!resp.ok) throw new Error(await errorText(resp));
        this.q('.task-status').textContent = 'Cancelling…';
      } catch (err) {
        this.connection(`Could not cancel: ${err.message}`);
        button.disabled = false;
      }
    }

    remove() {
      this.close();
      const next = this.item.nextElementSibling || this.item.previousElementSibling;
      this.item.remove();
      noTasks.hidden = taskList.childElementCount > 0;
      const focusTarget = next ? next.querySelector('button:not([hidden])') : null;
      (focusTarget || document.getElementById('tasks-heading')).focus();
    }
  }

  // stepItem renders one step result: a log line, or a tool result as a
  // collapsible block of pretty-printed JSON.
  function stepItem(step) {
    if (step.type === 'tool_result') {
      const item = el('li', { class: 'step step-tool' });
      const details = el('details');
      const summary = el('summary');
      summary.append('Tool result: ', el('strong', {}, step.tool || 'tool'));
      if (step.step_name) summary.append(` (step ${step.step_name})`);
      details.append(summary, el('pre', { class: 'tool-data' }, pretty(step.data)));
      item.append(details);
      return item;
    }
    return el('li', { class: 'step step-log' }, step.message || '');
  }

  select.addEventListener('change', () => {
    setMessage('');
    showFlow(select.value);
  });
  form.addEventListener('submit', startTask);
  loadFlows();
})();
