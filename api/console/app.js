// The CEP console: a client of the service's API, in plain JavaScript (no build step, nothing
// loaded from elsewhere). Pages: patterns, playground, pipelines, live outputs, key inspector.
'use strict';

(function () {
  const API = '/api/v1';
  const TOKEN_KEY = 'cep-console-token';

  // ---- DOM helpers ----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function $(id) { return document.getElementById(id); }

  function debounce(f, ms) {
    let t = null;
    return function (...args) {
      clearTimeout(t);
      t = setTimeout(() => f(...args), ms);
    };
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return '-';
    if (ms >= 8.64e15 || ms <= -8.64e15) return ms > 0 ? 'end' : '-';
    return String(ms);
  }

  function fmtDate(ms) {
    if (ms === null || ms === undefined || Math.abs(ms) > 8.64e15) return '';
    try { return new Date(ms).toISOString().replace('T', ' ').replace('Z', ''); } catch (e) { return ''; }
  }

  function fmtLag(ms) {
    if (ms === null || ms === undefined) return '-';
    const a = Math.abs(ms);
    if (a < 1000) return ms + ' ms';
    if (a < 120000) return (ms / 1000).toFixed(1) + ' s';
    if (a < 7200000) return (ms / 60000).toFixed(1) + ' min';
    if (a < 172800000) return (ms / 3600000).toFixed(1) + ' h';
    return (ms / 86400000).toFixed(1) + ' d';
  }

  function short(value, n) {
    const t = typeof value === 'string' ? value : JSON.stringify(value);
    return t.length > n ? t.slice(0, n - 1) + '…' : t;
  }

  // ---- The API, with the bearer token ----

  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || ('HTTP ' + status));
      this.status = status;
      this.code = e.code;
      this.details = e.details;
    }
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  let tokenWaiters = null;
  function askToken() {
    if (!tokenWaiters) {
      tokenWaiters = [];
      $('token-dialog').hidden = false;
      $('token-input').value = '';
      $('token-input').focus();
    }
    return new Promise((resolve, reject) => tokenWaiters.push({ resolve, reject }));
  }
  function tokenDone(ok) {
    $('token-dialog').hidden = true;
    const waiters = tokenWaiters || [];
    tokenWaiters = null;
    for (const w of waiters) ok ? w.resolve() : w.reject(new ApiError(401, { error: { code: 'unauthorized', message: 'a valid bearer token is required' } }));
  }

  // `body`: a string is sent as is (the validation reports malformed JSON), anything else as
  // JSON. A 401 asks for the token once and repeats the call.
  async function api(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const init = { method, headers: Object.assign({}, authHeaders()) };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = typeof body === 'string' ? body : JSON.stringify(body);
      }
      const r = await fetch(API + path, init);
      if (r.status === 401 && attempt < 3) {
        await askToken();
        continue;
      }
      const text = await r.text();
      let json = null;
      try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
      if (!r.ok) throw new ApiError(r.status, json);
      return json;
    }
  }

  // Server-Sent Events over fetch (EventSource cannot send the Authorization header).
  function sseStream(path, lastId, onEvent, onState) {
    const controller = new AbortController();
    let stopped = false;
    (async () => {
      let last = lastId;
      while (!stopped) {
        try {
          const headers = Object.assign({ Accept: 'text/event-stream' }, authHeaders());
          if (last !== null && last !== undefined) headers['Last-Event-ID'] = String(last);
          const r = await fetch(API + path, { headers, signal: controller.signal });
          if (r.status === 401) { await askToken(); continue; }
          if (!r.ok) throw new Error('HTTP ' + r.status);
          onState('live');
          const reader = r.body.getReader();
          const decoder = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += decoder.decode(value, { stream: true });
            let cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              let event = 'message', data = [], id = null;
              for (const line of block.split('\n')) {
                if (line.startsWith(':')) continue;
                const i = line.indexOf(':');
                const field = i < 0 ? line : line.slice(0, i);
                const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
                if (field === 'event') event = val;
                else if (field === 'data') data.push(val);
                else if (field === 'id') id = val;
              }
              if (id !== null) last = id;
              if (data.length) onEvent(event, data.join('\n'));
            }
          }
        } catch (e) {
          if (stopped) return;
          onState('reconnecting (' + e.message + ')');
        }
        if (!stopped) await new Promise(r => setTimeout(r, 1000));
      }
    })();
    return { stop() { stopped = true; controller.abort(); } };
  }

  // ---- Pages ----

  const pages = {};
  let current = null;
  // Counts page changes: an answer that arrives after its page was left is dropped.
  let generation = 0;
  function left(g) { return g !== generation; }

  function route() {
    const hash = location.hash.replace(/^#\/?/, '');
    const [name, ...rest] = hash.split('/');
    const page = pages[name] ? name : 'patterns';
    if (current && current.leave) current.leave();
    generation++;
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
    const main = $('main');
    main.replaceChildren();
    current = pages[page];
    main.dataset.page = page;
    current.enter(main, rest.map(decodeURIComponent));
  }

  function errorBox(id) {
    return h('div', { id, class: 'error', hidden: true });
  }

  // Where a JSON path (`stages[1].where`) is in a JSON text: [start, end) of its value, or of
  // the closest enclosing value that exists (a missing field is reported at its object).
  function jsonSpan(text, path) {
    const segs = [];
    String(path || '').replace(/([^.[\]]+)|\[(\d+)\]/g, (m, key, index) => { segs.push(index !== undefined ? +index : key); return m; });
    let i = 0;
    const ws = () => { while (i < text.length && /\s/.test(text[i])) i++; };
    const skipString = () => { i++; while (i < text.length && text[i] !== '"') { if (text[i] === '\\') i++; i++; } i++; };
    function skipValue() {
      ws();
      const c = text[i];
      if (c === '"') { skipString(); return; }
      if (c === '{' || c === '[') {
        const close = c === '{' ? '}' : ']';
        i++; ws();
        while (i < text.length && text[i] !== close) {
          if (c === '{') { skipString(); ws(); i++; }
          skipValue(); ws();
          if (text[i] === ',') i++;
          ws();
        }
        i++;
        return;
      }
      const from = i;
      while (i < text.length && !/[,\]}\s]/.test(text[i])) i++;
      if (i === from) i++;
    }
    function value(depth) {
      ws();
      const start = i;
      const seg = segs[depth];
      if (depth < segs.length && text[i] === '{' && typeof seg === 'string') {
        i++; ws();
        while (i < text.length && text[i] !== '}') {
          const ks = i;
          skipString();
          const key = JSON.parse(text.slice(ks, i));
          ws(); i++;
          if (key === seg) return value(depth + 1);
          skipValue(); ws();
          if (text[i] === ',') i++;
          ws();
        }
      } else if (depth < segs.length && text[i] === '[' && typeof seg === 'number') {
        i++; ws();
        for (let n = 0; i < text.length && text[i] !== ']'; n++) {
          if (n === seg) return value(depth + 1);
          skipValue(); ws();
          if (text[i] === ',') i++;
          ws();
        }
      }
      i = start;
      skipValue();
      return [start, i];
    }
    try { return value(0); } catch (e) { return null; }
  }

  function lineOf(text, offset) { return text.slice(0, offset).split('\n').length; }

  // Selects [start, end) in a text field and scrolls it into view.
  function selectIn(field, start, end) {
    field.focus();
    field.setSelectionRange(start, end);
    const line = lineOf(field.value, start);
    const lineHeight = parseFloat(getComputedStyle(field).lineHeight) || 17;
    field.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }

  // `source`: the text field the error is about; its errors then say their line, and a click
  // selects what they are about.
  function showError(box, e, source) {
    box.hidden = false;
    box.replaceChildren(h('strong', {}, e.message));
    const errors = e.details && e.details.errors;
    const text = source ? source.value : null;
    if (Array.isArray(errors)) {
      box.append(h('ul', {}, errors.map(x => {
        const span = text !== null ? jsonSpan(text, x.path) : null;
        return h('li', {
          'data-path': x.path || '',
          class: span ? 'locatable' : null,
          title: span ? 'select it in the text' : null,
          onclick: span ? () => selectIn(source, span[0], span[1]) : null
        },
        x.path ? h('code', {}, x.path) : null, x.path ? ': ' : '', x.message,
        x.column ? ' (column ' + x.column + ')' : '',
        span ? h('span', { class: 'muted' }, ' · line ' + lineOf(text, span[0])) : null);
      })));
    } else if (e.details && e.details.line) {
      const at = h('div', { class: source ? 'locatable' : null }, 'at line ' + e.details.line + ', column ' + e.details.column);
      if (source) {
        at.addEventListener('click', () => {
          const lines = source.value.split('\n');
          let offset = 0;
          for (let n = 0; n < e.details.line - 1 && n < lines.length; n++) offset += lines[n].length + 1;
          offset += Math.max(0, e.details.column - 1);
          selectIn(source, offset, offset + 1);
        });
      }
      box.append(at);
    } else if (e.details && Array.isArray(e.details.pipelines)) {
      box.append(h('div', {}, 'used by: ' + e.details.pipelines.join(', ')));
    }
  }

  // ---- Patterns ----

  const PAGE_SIZE = 100;
  const NEW_PATTERN = JSON.stringify({
    name: 'login-failures',
    within: '2s',
    after_match: 'skip_past_last_event',
    stages: [{ name: 'fail', where: "type == 'fail'", times: 3, consecutive: true }]
  }, null, 2);

  pages.patterns = {
    enter(main, args) {
      this.list = [];
      this.page = 0;
      this.selected = args[0] || null;
      main.append(
        h('section', { class: 'columns' },
          h('div', { class: 'col-list' },
            h('div', { class: 'toolbar' },
              h('input', { id: 'pattern-filter', placeholder: 'filter by name', oninput: () => { this.page = 0; this.renderList(); } }),
              h('button', { id: 'pattern-new', type: 'button', onclick: () => this.edit(null) }, 'New')),
            h('div', { id: 'pattern-count', class: 'muted' }),
            h('ul', { id: 'pattern-list', class: 'list' }),
            h('div', { class: 'pager' },
              h('button', { id: 'pattern-prev', type: 'button', class: 'small secondary', onclick: () => { this.page--; this.renderList(); } }, '‹ prev'),
              h('span', { id: 'pattern-page', class: 'muted' }),
              h('button', { id: 'pattern-next', type: 'button', class: 'small secondary', onclick: () => { this.page++; this.renderList(); } }, 'next ›'))),
          h('div', { class: 'col-main' },
            h('h2', { id: 'pattern-title' }, 'New pattern'),
            h('textarea', { id: 'pattern-editor', spellcheck: 'false', rows: 14, oninput: debounce(() => this.validate(), 250) }),
            h('div', { id: 'pattern-status', class: 'status' }),
            errorBox('pattern-errors'),
            h('div', { class: 'toolbar' },
              h('button', { id: 'pattern-save', type: 'button', onclick: () => this.save() }, 'Save'),
              h('button', { id: 'pattern-try', type: 'button', class: 'secondary', onclick: () => this.tryIt() }, 'Try in playground'),
              h('button', { id: 'pattern-delete', type: 'button', class: 'danger', onclick: () => this.remove() }, 'Delete')),
            h('div', { id: 'pattern-users', class: 'muted' }),
            h('h3', {}, 'Automaton'),
            h('div', { id: 'automaton', class: 'graph' }))));
      this.load();
    },

    async load() {
      const t0 = performance.now();
      const g = generation;
      try {
        const [patterns, pipelines] = await Promise.all([api('GET', '/patterns'), api('GET', '/pipelines')]);
        if (left(g)) return;
        this.list = patterns.patterns.sort((a, b) => a.name.localeCompare(b.name));
        this.pipelines = pipelines.pipelines;
      } catch (e) {
        if (!left(g)) showError($('pattern-errors'), e);
        return;
      }
      this.renderList();
      if (this.selected) this.edit(this.selected);
      else this.edit(null);
      window.consoleTimings = window.consoleTimings || {};
      window.consoleTimings.patterns = performance.now() - t0;
    },

    filtered() {
      const f = $('pattern-filter').value.trim().toLowerCase();
      return f ? this.list.filter(p => p.name.toLowerCase().includes(f)) : this.list;
    },

    renderList() {
      const items = this.filtered();
      const pages = Math.max(1, Math.ceil(items.length / PAGE_SIZE));
      this.page = Math.min(Math.max(this.page, 0), pages - 1);
      const shown = items.slice(this.page * PAGE_SIZE, (this.page + 1) * PAGE_SIZE);
      $('pattern-count').textContent = items.length + ' of ' + this.list.length + ' patterns';
      $('pattern-page').textContent = 'page ' + (this.page + 1) + ' / ' + pages;
      $('pattern-list').replaceChildren(...shown.map(p => h('li', {
        class: p.name === this.selected ? 'selected' : null,
        'data-name': p.name,
        onclick: () => { history.replaceState(null, '', '#/patterns/' + encodeURIComponent(p.name)); this.edit(p.name); }
      }, h('span', { class: 'name' }, p.name), h('span', { class: 'muted' }, ' ' + p.stages.length + ' stage' + (p.stages.length === 1 ? '' : 's') + (p.within ? ', within ' + p.within : '') + (p.version ? ', v' + p.version : '')))));
    },

    edit(name) {
      this.selected = name;
      const p = name && this.list.find(x => x.name === name);
      $('pattern-title').textContent = p ? 'Pattern ' + name + (p.version ? ' (version ' + p.version + ')' : '') : 'New pattern';
      // The version is the service's (read-only): the text is the definition.
      const { version, ...definition } = p || {};
      $('pattern-editor').value = p ? JSON.stringify(definition, null, 2) : NEW_PATTERN;
      $('pattern-delete').disabled = !p;
      const users = p ? this.users(name) : [];
      $('pattern-users').textContent = p ? (users.length ? 'Used by pipelines: ' + users.join(', ') : 'Used by no pipeline') : '';
      for (const li of document.querySelectorAll('#pattern-list li')) li.classList.toggle('selected', li.dataset.name === name);
      this.validate();
    },

    users(name) {
      return (this.pipelines || []).filter(pl => pl.patterns === '*' || (Array.isArray(pl.patterns) && pl.patterns.includes(name))).map(pl => pl.name);
    },

    async validate() {
      const text = $('pattern-editor').value;
      const seq = (this.seq = (this.seq || 0) + 1);
      const g = generation;
      const status = $('pattern-status');
      const box = $('pattern-errors');
      try {
        const r = await api('POST', '/patterns/validate', text);
        if (seq !== this.seq || left(g)) return;
        box.hidden = true;
        status.className = 'status ok';
        status.textContent = 'Valid: ' + r.name + (r.exists ? ' (registered; saving replaces it)' : ' (new)');
        this.valid = r;
        $('automaton').classList.remove('stale');
        drawAutomaton($('automaton'), r.automaton);
      } catch (e) {
        if (seq !== this.seq || left(g)) return;
        this.valid = null;
        status.className = 'status bad';
        status.textContent = 'Invalid';
        // What is drawn is the last valid version, not this text.
        $('automaton').classList.add('stale');
        showError(box, e, $('pattern-editor'));
      }
    },

    async save() {
      const text = $('pattern-editor').value;
      const box = $('pattern-errors');
      const g = generation;
      try {
        const r = await api('POST', '/patterns/validate', text);
        const doc = JSON.parse(text);
        if (r.exists) await api('PUT', '/patterns/' + encodeURIComponent(r.name), doc);
        else await api('POST', '/patterns', doc);
        if (left(g)) return;
        $('pattern-status').className = 'status ok';
        $('pattern-status').textContent = 'Saved ' + r.name;
        this.selected = r.name;
        history.replaceState(null, '', '#/patterns/' + encodeURIComponent(r.name));
        await this.load();
        if (left(g)) return;
        $('pattern-status').textContent = 'Saved ' + r.name;
      } catch (e) {
        if (!left(g)) showError(box, e, $('pattern-editor'));
      }
    },

    async remove() {
      const name = this.selected;
      if (!name) return;
      const g = generation;
      try {
        await api('DELETE', '/patterns/' + encodeURIComponent(name));
        if (left(g)) return;
        this.selected = null;
        history.replaceState(null, '', '#/patterns');
        await this.load();
        if (left(g)) return;
        $('pattern-status').textContent = 'Deleted ' + name;
      } catch (e) {
        if (!left(g)) showError($('pattern-errors'), e);
      }
    },

    tryIt() {
      sessionStorage.setItem('cep-console-try', $('pattern-editor').value);
      location.hash = '#/playground';
    }
  };

  // The automaton as a graph: states left to right by distance from the start, stop states
  // below; take, ignore and proceed edges labelled with their conditions.
  function drawAutomaton(box, automaton) {
    box.replaceChildren();
    if (!automaton) return;
    const states = automaton.states;
    const start = states.find(st => st.kind === 'start');
    const depth = new Map();
    const queue = start ? [start.id] : [];
    if (start) depth.set(start.id, 0);
    while (queue.length) {
      const id = queue.shift();
      for (const t of states[id].transitions) {
        if (!depth.has(t.target)) {
          depth.set(t.target, depth.get(id) + 1);
          queue.push(t.target);
        }
      }
    }
    let maxDepth = 0;
    for (const d of depth.values()) maxDepth = Math.max(maxDepth, d);
    const pos = new Map();
    const perColumn = new Map();
    const colW = 250, top = 150, rowH = 140;
    for (const st of states) {
      let col = depth.has(st.id) ? depth.get(st.id) : maxDepth + 1;
      if (st.kind === 'final') col = Math.max(col, maxDepth);
      const row = perColumn.get(col) || 0;
      perColumn.set(col, row + 1);
      const extra = st.kind === 'stop' ? 1 : 0;
      pos.set(st.id, { x: 90 + col * colW, y: top + (row + extra) * rowH });
    }
    let width = 0, height = 0;
    for (const p of pos.values()) { width = Math.max(width, p.x + 150); height = Math.max(height, p.y + 90); }
    const svg = s('svg', { id: 'automaton-svg', width, height, viewBox: '0 0 ' + width + ' ' + height, class: 'automaton' });
    svg.append(s('defs', {},
      ['take', 'ignore', 'proceed'].map(a => s('marker', { id: 'arrow-' + a, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow ' + a })))));
    const edges = s('g', {}), nodes = s('g', {});
    svg.append(edges, nodes);
    const R = 34;
    const pairCount = new Map();
    for (const st of states) {
      const a = pos.get(st.id);
      let loops = 0;
      for (const t of st.transitions) {
        const b = pos.get(t.target);
        const label = t.action + (t.condition && t.condition !== 'true' ? ': ' + t.condition : '');
        const cls = 'edge ' + t.action;
        if (t.target === st.id) {
          const hgt = 50 + loops * 28;
          loops++;
          const d = `M ${a.x - 14} ${a.y - R + 4} C ${a.x - 40} ${a.y - R - hgt}, ${a.x + 40} ${a.y - R - hgt}, ${a.x + 14} ${a.y - R + 4}`;
          edges.append(s('path', { d, class: cls, 'marker-end': 'url(#arrow-' + t.action + ')' }));
          edges.append(s('text', { x: a.x, y: a.y - R - hgt * 0.75 - 2, class: 'edge-label ' + t.action, 'text-anchor': 'middle' }, short(label, 60)));
        } else {
          const key = Math.min(st.id, t.target) + ':' + Math.max(st.id, t.target);
          const n = pairCount.get(key) || 0;
          pairCount.set(key, n + 1);
          const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
          const ux = dx / len, uy = dy / len;
          const sx = a.x + ux * R, sy = a.y + uy * R, ex = b.x - ux * R, ey = b.y - uy * R;
          const bend = (n % 2 ? -1 : 1) * (22 + n * 20);
          const cx = (sx + ex) / 2 - uy * bend, cy = (sy + ey) / 2 + ux * bend;
          edges.append(s('path', { d: `M ${sx} ${sy} Q ${cx} ${cy} ${ex} ${ey}`, class: cls, 'marker-end': 'url(#arrow-' + t.action + ')' }));
          const lx = (sx + 2 * cx + ex) / 4, ly = (sy + 2 * cy + ey) / 4;
          edges.append(s('text', { x: lx, y: ly - 4, class: 'edge-label ' + t.action, 'text-anchor': 'middle' }, short(label, 48)));
        }
      }
      nodes.append(s('g', { class: 'state ' + st.kind, 'data-state': st.name },
        s('circle', { cx: a.x, cy: a.y, r: R }),
        st.kind === 'final' ? s('circle', { cx: a.x, cy: a.y, r: R - 5, class: 'inner' }) : null,
        s('text', { x: a.x, y: a.y + 4, 'text-anchor': 'middle', class: 'state-name' }, short(st.name === '$endState$' ? 'end' : st.name, 12)),
        s('text', { x: a.x, y: a.y + R + 16, 'text-anchor': 'middle', class: 'state-kind' }, st.kind),
        s('title', {}, st.name + ' (' + st.kind + ')')));
    }
    box.append(svg);
    box.append(h('div', { class: 'legend muted' },
      h('span', { class: 'take' }, '— take'), ' ', h('span', { class: 'ignore' }, '— ignore'), ' ', h('span', { class: 'proceed' }, '— proceed'),
      automaton.window ? '   window: ' + automaton.window + ' ms' : '   no window',
      automaton.matcher ? '   runs on: ' + automaton.matcher : ''));
    // Every transition in full, for automata whose drawing gets crowded.
    const name = st => (st.name === '$endState$' ? 'end' : st.name);
    box.append(h('details', { class: 'transitions' },
      h('summary', {}, states.reduce((n, st) => n + st.transitions.length, 0) + ' transitions'),
      h('table', { class: 'grid' },
        h('tr', {}, ['from', 'action', 'to', 'condition'].map(t => h('th', {}, t))),
        states.flatMap(st => st.transitions.map(t => h('tr', {},
          h('td', {}, name(st), h('span', { class: 'muted' }, ' ' + st.kind)),
          h('td', {}, h('span', { class: t.action }, t.action)),
          h('td', {}, name(states[t.target])),
          h('td', { class: 'mono' }, t.condition)))))));
  }

  // ---- Playground ----

  const SAMPLE_EVENTS = [
    { key: 'alice', ts: 1000, type: 'fail' },
    { key: 'alice', ts: 1500, type: 'fail' },
    { key: 'bob', ts: 1600, type: 'fail' },
    { key: 'alice', ts: 1800, type: 'fail' },
    { watermark: 5000 }
  ].map(e => JSON.stringify(e)).join('\n');

  pages.playground = {
    enter(main) {
      const stored = sessionStorage.getItem('cep-console-try');
      main.append(
        h('section', { class: 'columns' },
          h('div', { class: 'col-half' },
            h('h2', {}, 'Pattern'),
            h('div', { class: 'toolbar' },
              h('select', { id: 'pg-registered', onchange: e => this.useRegistered(e.target.value) }, h('option', { value: '' }, 'registered pattern…'))),
            h('textarea', { id: 'pg-pattern', spellcheck: 'false', rows: 10, value: stored || NEW_PATTERN }),
            h('div', { class: 'row' },
              h('label', {}, 'key_by ', h('input', { id: 'pg-key-by', value: 'key', size: 10 })),
              h('label', {}, 'time field ', h('input', { id: 'pg-time-field', value: 'ts', size: 8 })),
              h('label', {}, 'format ', h('select', { id: 'pg-time-format' }, ['epoch_ms', 'epoch_s', 'rfc3339'].map(f => h('option', { value: f }, f)))),
              h('label', {}, 'out of orderness ', h('input', { id: 'pg-ooo', value: '0ms', size: 6 })))),
          h('div', { class: 'col-half' },
            h('h2', {}, 'Events'),
            h('p', { class: 'muted' }, 'One JSON event per line; a line {"watermark": 5000} (or "end") moves the watermark.'),
            h('div', { class: 'toolbar' },
              h('select', { id: 'pg-from-pipeline', onchange: e => this.fromPipeline(e.target.value) }, h('option', { value: '' }, 'events of a pipeline’s recent outputs…'))),
            h('textarea', { id: 'pg-events', spellcheck: 'false', rows: 10, value: SAMPLE_EVENTS }),
            h('div', { class: 'toolbar' },
              h('label', {}, h('input', { id: 'pg-end', type: 'checkbox' }), ' end of input after the last line'),
              h('button', { id: 'pg-run', type: 'button', onclick: () => this.run() }, 'Run')))),
        errorBox('pg-error'),
        h('section', {},
          h('h2', {}, 'Outputs ', h('span', { id: 'pg-output-count', class: 'muted' })),
          h('table', { id: 'pg-outputs', class: 'grid' }),
          h('h2', {}, 'Step by step'),
          h('table', { id: 'pg-steps', class: 'grid' })));
      sessionStorage.removeItem('cep-console-try');
      const g = generation;
      api('GET', '/patterns').then(r => {
        if (left(g)) return;
        const sel = $('pg-registered');
        for (const p of r.patterns.sort((a, b) => a.name.localeCompare(b.name)).slice(0, 2000)) sel.append(h('option', { value: p.name }, p.name));
        this.patterns = r.patterns;
      }).catch(() => {});
      api('GET', '/pipelines').then(r => {
        if (left(g)) return;
        this.pipelines = r.pipelines;
        $('pg-from-pipeline').append(...r.pipelines.map(p => h('option', { value: p.name }, p.name)));
      }).catch(() => {});
    },

    // The events a pipeline's recent outputs hold (the service keeps no raw input), in time
    // order and once each, with the pipeline's key and time settings.
    async fromPipeline(name) {
      const p = (this.pipelines || []).find(x => x.name === name);
      if (!p) return;
      const g = generation;
      let r;
      try { r = await api('GET', '/pipelines/' + encodeURIComponent(name) + '/matches?limit=1000'); } catch (e) { if (!left(g)) showError($('pg-error'), e); return; }
      if (left(g)) return;
      const time = p.time || { field: 'ts', format: 'epoch_ms' };
      const seen = new Set(), events = [];
      for (const o of r.outputs) {
        const evs = o.events ? Object.values(o.events).flat() : [o.event];
        for (const ev of evs) {
          const text = JSON.stringify(ev);
          if (!seen.has(text)) { seen.add(text); events.push(ev); }
        }
      }
      events.sort((a, b) => (eventTime(a, time) || 0) - (eventTime(b, time) || 0));
      $('pg-events').value = events.map(e => JSON.stringify(e)).join('\n');
      $('pg-key-by').value = p.key_by || 'key';
      $('pg-time-field').value = time.field || 'ts';
      $('pg-time-format').value = time.format || 'epoch_ms';
      $('pg-ooo').value = (p.watermark && p.watermark.out_of_orderness) || '0ms';
      $('pg-end').checked = true;
    },

    useRegistered(name) {
      const p = (this.patterns || []).find(x => x.name === name);
      if (p) $('pg-pattern').value = JSON.stringify(p, null, 2);
    },

    async run() {
      const box = $('pg-error');
      box.hidden = true;
      let pattern;
      try { pattern = JSON.parse($('pg-pattern').value); } catch (e) {
        showError(box, new Error('pattern: malformed JSON: ' + e.message));
        return;
      }
      const steps = [], lines = [];
      const text = $('pg-events').value.split('\n');
      for (let i = 0; i < text.length; i++) {
        const line = text[i].trim();
        if (!line) continue;
        let v;
        try { v = JSON.parse(line); } catch (e) {
          showError(box, new Error('events line ' + (i + 1) + ': malformed JSON: ' + e.message));
          return;
        }
        const keys = v && typeof v === 'object' && !Array.isArray(v) ? Object.keys(v) : [];
        steps.push(keys.length === 1 && keys[0] === 'watermark' ? { watermark: v.watermark } : { event: v });
        lines.push(i + 1);
      }
      if ($('pg-end').checked) { steps.push({ watermark: 'end' }); lines.push(null); }
      const body = {
        pattern,
        key_by: $('pg-key-by').value,
        time: { field: $('pg-time-field').value, format: $('pg-time-format').value },
        out_of_orderness: $('pg-ooo').value,
        steps
      };
      const g = generation;
      try {
        const r = await api('POST', '/try', body);
        if (left(g)) return;
        this.render(r, steps, lines);
      } catch (e) {
        if (left(g)) return;
        // Say which line of the text a step's error is about.
        const m = /^steps\[(\d+)\]/.exec(e.message);
        if (m && lines[+m[1]]) e.message = 'line ' + lines[+m[1]] + ': ' + e.message;
        // A pattern's errors are located in the pattern's text.
        const errors = e.details && e.details.errors;
        if (Array.isArray(errors) && errors.length && errors.every(x => /^pattern([.[]|$)/.test(x.path || ''))) {
          const inPattern = errors.map(x => Object.assign({}, x, { path: x.path.replace(/^pattern\.?/, '') }));
          showError(box, Object.assign(e, { details: { errors: inPattern } }), $('pg-pattern'));
        } else {
          showError(box, e);
        }
      }
    },

    render(r, steps, lines) {
      $('pg-output-count').textContent = '(' + r.outputs.length + ')';
      $('pg-outputs').replaceChildren(
        h('tr', {}, h('th', {}, 'kind'), h('th', {}, 'key'), h('th', {}, 'timestamp'), h('th', {}, 'events')),
        ...r.outputs.map(o => h('tr', { class: 'output-row kind-' + o.kind },
          h('td', {}, h('span', { class: 'badge ' + o.kind }, o.kind)), h('td', {}, o.key), h('td', {}, fmtTime(o.timestamp)),
          h('td', { class: 'mono' }, short(o.events || o.event, 160)))));
      if (!r.outputs.length) $('pg-outputs').append(h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'no outputs')));
      $('pg-steps').replaceChildren(
        h('tr', {}, h('th', {}, 'line'), h('th', {}, 'input'), h('th', {}, 'watermark'), h('th', {}, 'outputs'), h('th', {}, 'partial matches alive after it')),
        ...r.steps.map((st, i) => h('tr', { class: 'step-row' },
          h('td', {}, lines[i] || 'end'),
          h('td', { class: 'mono' }, st.kind === 'event' ? short(steps[i].event, 70) : 'watermark → ' + fmtTime(steps[i].watermark === 'end' ? 9e15 : steps[i].watermark)),
          h('td', {}, fmtTime(st.watermark)),
          h('td', {}, st.outputs.map(k => h('span', { class: 'badge ' + r.outputs[k].kind }, r.outputs[k].kind + ' ' + r.outputs[k].key))),
          h('td', {}, st.partial_matches.length ? h('ul', { class: 'pm-list' }, st.partial_matches.map(pm => h('li', { class: 'pm' },
            h('code', {}, pm.key), ' in ', h('strong', {}, pm.state), ', ',
            Object.entries(pm.events).map(([stage, evs]) => stage + ' ×' + evs.length).join(', '),
            pm.times_out_at !== null ? ', times out at ' + pm.times_out_at : ''))) : h('span', { class: 'muted' }, 'none')))));
    }
  };

  // ---- Pipelines ----

  const NEW_PIPELINE = JSON.stringify({
    name: 'logins', key_by: 'key', time: { field: 'ts', format: 'epoch_ms' },
    watermark: { out_of_orderness: '0ms' }, patterns: '*'
  }, null, 2);

  pages.pipelines = {
    enter(main) {
      this.prev = new Map();
      main.append(
        h('section', {},
          h('h2', {}, 'Pipelines'),
          h('table', { id: 'pl-table', class: 'grid' }),
          h('div', { id: 'pl-kafka' })),
        h('section', {},
          h('h2', {}, 'Create or replace a pipeline'),
          h('p', { class: 'muted' }, 'The form writes the JSON below (an HTTP pipeline); edit the JSON for everything else (Kafka source and sinks, window stage, state bounds, workers, idleness: docs/pipelines.md).'),
          h('div', { class: 'row', id: 'pl-form', oninput: () => this.formToJson(), onchange: () => this.formToJson() },
            h('label', {}, 'name ', h('input', { id: 'plf-name', size: 12, value: 'logins' })),
            h('label', {}, 'key_by ', h('input', { id: 'plf-key-by', size: 10, value: 'key' })),
            h('label', {}, 'time field ', h('input', { id: 'plf-time-field', size: 8, value: 'ts' })),
            h('label', {}, 'format ', h('select', { id: 'plf-time-format' }, ['epoch_ms', 'epoch_s', 'rfc3339'].map(f => h('option', { value: f }, f)))),
            h('label', {}, 'out of orderness ', h('input', { id: 'plf-ooo', size: 6, value: '0ms' })),
            h('label', {}, 'patterns ', h('input', { id: 'plf-patterns', size: 24, value: '*', title: '* for all, or names separated by commas' }))),
          h('textarea', { id: 'pl-editor', spellcheck: 'false', rows: 8, value: NEW_PIPELINE }),
          errorBox('pl-error'),
          h('div', { class: 'toolbar' }, h('button', { id: 'pl-create', type: 'button', onclick: () => this.create() }, 'Save pipeline'))));
      this.refresh();
      this.timer = setInterval(() => this.refresh(), 2000);
    },
    leave() { clearInterval(this.timer); },

    async refresh() {
      const g = generation;
      let r;
      try { r = await api('GET', '/pipelines'); } catch (e) { if (!left(g)) showError($('pl-error'), e); return; }
      if (left(g)) return;
      const now = Date.now();
      const rows = r.pipelines.map(p => {
        const st = p.status || {}, stats = st.stats || {};
        const prev = this.prev.get(p.name);
        const rate = prev ? ((stats.events || 0) - prev.events) / Math.max((now - prev.at) / 1000, 0.001) : null;
        this.prev.set(p.name, { events: stats.events || 0, at: now });
        const wm = st.watermark;
        return h('tr', { class: 'pl-row', 'data-name': p.name },
          h('td', {}, h('strong', {}, p.name), h('div', { class: 'muted' }, (p.source && p.source.type) || 'http', ' · ', Array.isArray(p.patterns) ? p.patterns.join(', ') : 'all patterns')),
          h('td', {}, st.paused ? h('span', { class: 'badge late' }, 'paused') : h('span', { class: 'badge match' }, 'running')),
          h('td', { class: 'num' }, stats.events || 0),
          h('td', { class: 'num' }, rate === null ? '…' : rate.toFixed(1)),
          h('td', {}, fmtTime(wm), h('div', { class: 'muted' }, fmtDate(wm))),
          h('td', { class: 'num' }, wm === null || wm === undefined ? '-' : fmtLag(now - wm)),
          h('td', { class: 'num' }, stats.keys || 0),
          h('td', { class: 'num' }, stats.partial_matches || 0),
          h('td', { class: 'num' }, stats.late || 0),
          h('td', {},
            st.paused
              ? h('button', { type: 'button', class: 'small pl-resume', 'data-name': p.name, onclick: () => this.act(p.name, 'resume') }, 'Resume')
              : h('button', { type: 'button', class: 'small secondary pl-pause', 'data-name': p.name, onclick: () => this.act(p.name, 'pause') }, 'Pause'),
            ' ', h('a', { href: '#/live/' + encodeURIComponent(p.name) }, 'live'),
            ' ', h('a', { href: '#/keys/' + encodeURIComponent(p.name) }, 'keys'),
            ' ', h('a', { href: '#', onclick: e => { e.preventDefault(); const c = Object.assign({}, p); delete c.status; $('pl-editor').value = JSON.stringify(c, null, 2); } }, 'edit')));
      });
      $('pl-table').replaceChildren(
        h('tr', {}, ['name', 'state', 'events', 'events/s', 'watermark', 'lag behind wall clock', 'keys', 'partial matches', 'late', ''].map(t => h('th', {}, t))),
        ...rows);
      if (!rows.length) $('pl-table').append(h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'no pipelines yet')));
      const kafka = r.pipelines.filter(p => p.status && p.status.kafka);
      $('pl-kafka').replaceChildren(...kafka.map(p => {
        const k = p.status.kafka;
        const parts = k.partitions || [];
        return h('div', {},
          h('h3', {}, 'Kafka: ' + p.name + ' ', h('span', { class: 'muted' }, [k.state, k.instance_id && 'instance ' + k.instance_id].filter(Boolean).join(' · '))),
          k.error ? h('div', { class: 'error' }, k.error) : '',
          h('p', { class: 'muted' }, 'records ' + (k.records || 0) + ' · dead letters ' + (k.dead_letters || 0) + ' · outputs ' + (k.outputs || 0) +
            ' · epochs ' + (k.epochs || 0) + ' · restores ' + (k.restores || 0) + (k.last_commit_ms ? ' · last commit ' + fmtDate(k.last_commit_ms) : '')),
          h('table', { class: 'grid' },
            h('tr', {}, ['topic', 'partition', 'position', 'committed', 'end', 'lag', 'max timestamp'].map(t => h('th', {}, t))),
            parts.map(pt => h('tr', {}, [pt.topic, pt.partition, pt.position, pt.committed, pt.end, pt.lag, fmtTime(pt.max_timestamp)].map(v => h('td', {}, v === undefined || v === null ? '-' : v))))));
      }));
    },

    async act(name, action) {
      const g = generation;
      try { await api('POST', '/pipelines/' + encodeURIComponent(name) + '/' + action); } catch (e) { if (!left(g)) showError($('pl-error'), e); }
      if (left(g)) return;
      this.refresh();
    },

    formToJson() {
      const names = $('plf-patterns').value.split(',').map(x => x.trim()).filter(Boolean);
      const doc = {
        name: $('plf-name').value.trim(),
        key_by: $('plf-key-by').value.trim(),
        time: { field: $('plf-time-field').value.trim(), format: $('plf-time-format').value },
        watermark: { out_of_orderness: $('plf-ooo').value.trim() },
        patterns: names.length === 1 && names[0] === '*' ? '*' : names
      };
      $('pl-editor').value = JSON.stringify(doc, null, 2);
    },

    async create() {
      const box = $('pl-error');
      box.hidden = true;
      let doc;
      try { doc = JSON.parse($('pl-editor').value); } catch (e) { showError(box, new Error('malformed JSON: ' + e.message)); return; }
      const g = generation;
      try {
        if (doc.name) await api('PUT', '/pipelines/' + encodeURIComponent(doc.name), doc);
        else await api('POST', '/pipelines', doc);
      } catch (e) { if (!left(g)) showError(box, e); return; }
      if (left(g)) return;
      this.refresh();
    }
  };

  // ---- Live outputs ----

  const ROW_H = 28;
  const MAX_OUTPUTS = 50000;

  pages.live = {
    enter(main, args) {
      this.outputs = [];
      this.view = [];
      this.counts = new Map();
      this.stream = null;
      this.dirty = false;
      main.append(
        h('section', {},
          h('div', { class: 'toolbar' },
            h('label', {}, 'pipeline ', h('select', { id: 'live-pipeline', onchange: () => this.connect() })),
            h('label', {}, 'pattern ', h('input', { id: 'live-pattern', size: 14, oninput: () => this.refilter() })),
            h('label', {}, 'key ', h('input', { id: 'live-key', size: 12, oninput: () => this.refilter() })),
            h('label', {}, 'kind ', h('select', { id: 'live-kind', onchange: () => this.refilter() }, ['', 'match', 'timeout', 'late'].map(k => h('option', { value: k }, k || 'any')))),
            h('span', { id: 'live-state', class: 'muted' }),
            h('span', { id: 'live-count', class: 'muted' })),
          h('div', { id: 'sparklines', class: 'sparklines' }),
          h('div', { class: 'columns' },
            h('div', { class: 'col-main' },
              h('div', { class: 'vhead' }, h('span', {}, 'seq'), h('span', {}, 'kind'), h('span', {}, 'pattern'), h('span', {}, 'key'), h('span', {}, 'timestamp'), h('span', {}, 'events')),
              h('div', { id: 'live-list', class: 'vlist', onscroll: () => this.renderRows() }, h('div', { id: 'live-spacer' }))),
            h('div', { class: 'col-side' }, h('h3', {}, 'Output'), h('pre', { id: 'live-detail', class: 'detail muted' }, 'Click an output to see its events.')))));
      this.loadPipelines(args[0]);
      this.frame = () => {
        if (this.dirty) { this.dirty = false; this.renderAll(); }
        this.raf = requestAnimationFrame(this.frame);
      };
      this.raf = requestAnimationFrame(this.frame);
      this.sparkTimer = setInterval(() => this.renderSparklines(), 1000);
    },

    leave() {
      if (this.stream) this.stream.stop();
      cancelAnimationFrame(this.raf);
      clearInterval(this.sparkTimer);
    },

    async loadPipelines(wanted) {
      const g = generation;
      try {
        const r = await api('GET', '/pipelines');
        if (left(g)) return;
        const sel = $('live-pipeline');
        sel.replaceChildren(...r.pipelines.map(p => h('option', { value: p.name }, p.name)));
        if (wanted) sel.value = wanted;
        this.connect();
      } catch (e) { if (!left(g)) $('live-state').textContent = e.message; }
    },

    async connect() {
      if (this.stream) this.stream.stop();
      this.outputs = [];
      this.counts = new Map();
      const name = $('live-pipeline').value;
      if (!name) { $('live-state').textContent = 'no pipeline'; return; }
      history.replaceState(null, '', '#/live/' + encodeURIComponent(name));
      const t0 = performance.now();
      const g = generation;
      const attempt = (this.attempt = (this.attempt || 0) + 1);
      let last = null;
      try {
        const r = await api('GET', '/pipelines/' + encodeURIComponent(name) + '/matches?limit=' + MAX_OUTPUTS);
        if (left(g) || attempt !== this.attempt) return;
        for (const o of r.outputs) this.add(o, false);
        last = r.outputs.length ? r.outputs[r.outputs.length - 1].seq : null;
      } catch (e) {
        if (left(g) || attempt !== this.attempt) return;
        $('live-state').textContent = e.message;
      }
      this.renderAll();
      window.consoleTimings = window.consoleTimings || {};
      window.consoleTimings.live = performance.now() - t0;
      this.stream = sseStream('/pipelines/' + encodeURIComponent(name) + '/matches/stream', last, (event, data) => {
        if (left(g)) return;
        if (event === 'lagged') { $('live-state').textContent = 'missed ' + data; return; }
        try { this.add(JSON.parse(data), true); } catch (e) { /* not an output */ }
      }, state => { if (!left(g)) $('live-state').textContent = state; });
    },

    add(o, live) {
      o.arrived = live ? Date.now() : null;
      this.outputs.push(o);
      if (this.outputs.length > MAX_OUTPUTS) this.outputs.splice(0, this.outputs.length - MAX_OUTPUTS);
      const p = o.pattern || '(late)';
      let c = this.counts.get(p);
      if (!c) { c = { total: 0, arrivals: [] }; this.counts.set(p, c); }
      c.total++;
      // The sparkline counts what arrives live; outputs read from the ring only add to the total.
      if (live) c.arrivals.push(o.arrived);
      if (c.arrivals.length > 5000) c.arrivals.splice(0, c.arrivals.length - 5000);
      this.dirty = true;
    },

    refilter() {
      $('live-list').scrollTop = 0;
      this.dirty = true;
    },

    renderAll() {
      const t0 = performance.now();
      const pat = $('live-pattern').value.trim(), key = $('live-key').value.trim(), kind = $('live-kind').value;
      // Newest first.
      this.view = [];
      for (let i = this.outputs.length - 1; i >= 0; i--) {
        const o = this.outputs[i];
        if (pat && !(o.pattern || '').includes(pat)) continue;
        if (key && o.key !== key) continue;
        if (kind && o.kind !== kind) continue;
        this.view.push(o);
      }
      $('live-count').textContent = this.view.length + ' shown of ' + this.outputs.length;
      $('live-spacer').style.height = (this.view.length * ROW_H) + 'px';
      this.renderRows();
      if (!this.sparkDrawn) { this.sparkDrawn = true; this.renderSparklines(); }
      window.consoleTimings = window.consoleTimings || {};
      window.consoleTimings.liveRender = performance.now() - t0;
    },

    renderRows() {
      const list = $('live-list');
      if (!list) return;
      const first = Math.floor(list.scrollTop / ROW_H);
      const count = Math.ceil(list.clientHeight / ROW_H) + 2;
      const rows = [];
      for (let i = first; i < Math.min(first + count, this.view.length); i++) {
        const o = this.view[i];
        rows.push(h('div', { class: 'vrow kind-' + o.kind, style: 'top:' + (i * ROW_H) + 'px', 'data-seq': o.seq, onclick: () => this.detail(o) },
          h('span', {}, o.seq), h('span', {}, h('span', { class: 'badge ' + o.kind }, o.kind)), h('span', {}, o.pattern || ''), h('span', {}, o.key),
          h('span', {}, fmtTime(o.timestamp)), h('span', { class: 'mono' }, short(o.events || o.event, 90))));
      }
      $('live-spacer').replaceChildren(...rows);
    },

    detail(o) {
      const d = $('live-detail');
      d.classList.remove('muted');
      d.textContent = JSON.stringify(o, (k, v) => (k === 'arrived' ? undefined : v), 2);
    },

    renderSparklines() {
      const box = $('sparklines');
      if (!box) return;
      const now = Date.now(), span = 60;
      const items = [...this.counts.entries()].sort((a, b) => b[1].total - a[1].total).slice(0, 12);
      box.replaceChildren(...items.map(([p, c]) => {
        const buckets = new Array(span).fill(0);
        for (const t of c.arrivals) {
          const b = span - 1 - Math.floor((now - t) / 1000);
          if (b >= 0 && b < span) buckets[b]++;
        }
        const max = Math.max(1, ...buckets);
        const pts = buckets.map((v, i) => (i * 2) + ',' + (22 - (v / max) * 20).toFixed(1)).join(' ');
        return h('div', { class: 'spark', 'data-pattern': p, title: 'outputs per second over the last minute' },
          h('span', { class: 'spark-name' }, p), ' ', h('strong', {}, c.total),
          s('svg', { width: 120, height: 24 }, s('polyline', { points: pts, class: 'spark-line' })));
      }));
    }
  };

  // ---- Key inspector ----

  pages.keys = {
    enter(main, args) {
      main.append(
        h('section', {},
          h('div', { class: 'toolbar' },
            h('label', {}, 'pipeline ', h('select', { id: 'key-pipeline' })),
            h('label', {}, 'key ', h('input', { id: 'key-name', size: 20, value: args[1] || '', onkeydown: e => { if (e.key === 'Enter') this.inspect(); } })),
            h('button', { id: 'key-inspect', type: 'button', onclick: () => this.inspect() }, 'Inspect')),
          errorBox('key-error'),
          h('div', { id: 'key-result' }),
          h('div', { id: 'key-timeline', class: 'graph' })));
      const g = generation;
      api('GET', '/pipelines').then(r => {
        if (left(g)) return;
        this.pipelines = r.pipelines;
        $('key-pipeline').replaceChildren(...r.pipelines.map(p => h('option', { value: p.name }, p.name)));
        if (args[0]) $('key-pipeline').value = args[0];
        if (args[1]) this.inspect();
      }).catch(e => { if (!left(g)) showError($('key-error'), e); });
    },

    async inspect() {
      const name = $('key-pipeline').value, key = $('key-name').value;
      const box = $('key-error');
      box.hidden = true;
      if (!name || !key) return;
      history.replaceState(null, '', '#/keys/' + encodeURIComponent(name) + '/' + encodeURIComponent(key));
      const g = generation;
      let r;
      try { r = await api('GET', '/pipelines/' + encodeURIComponent(name) + '/keys/' + encodeURIComponent(key)); } catch (e) { if (!left(g)) showError(box, e); return; }
      if (left(g)) return;
      const spec = (this.pipelines || []).find(p => p.name === name) || {};
      const time = spec.time || { field: 'ts', format: 'epoch_ms' };
      const timeOf = ev => eventTime(ev, time);
      const pms = r.partial_matches || [];
      const waiting = r.waiting_events || [];
      $('key-result').replaceChildren(
        h('p', {}, 'Watermark ', h('strong', { id: 'key-watermark' }, fmtTime(r.watermark)), ' · ', h('strong', { id: 'key-pm-count' }, pms.length), ' partial match' + (pms.length === 1 ? '' : 'es') + ' held for key ', h('code', {}, key)),
        h('table', { id: 'key-table', class: 'grid' },
          h('tr', {}, ['pattern', 'state', 'started', 'times out at', 'events (buffered)'].map(t => h('th', {}, t))),
          pms.map(pm => h('tr', { class: 'key-pm' },
            h('td', {}, pm.pattern), h('td', {}, pm.state), h('td', {}, fmtTime(pm.start_timestamp)), h('td', {}, fmtTime(pm.times_out_at)),
            h('td', { class: 'mono' }, Object.entries(pm.events).map(([stage, evs]) => h('div', {}, stage + ': ', evs.map(e => short(e, 80)).join(' '))))))),
        h('p', {}, h('strong', { id: 'key-waiting-count' }, waiting.length), ' event' + (waiting.length === 1 ? '' : 's') + ' waiting for the watermark to pass ' + (waiting.length === 1 ? 'it' : 'them')),
        waiting.length ? h('table', { id: 'key-waiting', class: 'grid' },
          h('tr', {}, h('th', {}, 'timestamp'), h('th', {}, 'event')),
          waiting.map(w => h('tr', { class: 'key-waiting' }, h('td', {}, fmtTime(w.timestamp)), h('td', { class: 'mono' }, short(w.event, 140))))) : '');
      drawTimeline($('key-timeline'), pms, waiting, r.watermark, timeOf);
    }
  };

  function eventTime(ev, time) {
    let v = ev;
    for (const part of String(time.field || 'ts').split('.')) {
      if (v === null || typeof v !== 'object') return null;
      v = v[part];
    }
    if (time.format === 'epoch_s' && typeof v === 'number') return v * 1000;
    if (time.format === 'rfc3339' && typeof v === 'string') return Date.parse(v);
    return typeof v === 'number' ? v : null;
  }

  // Each partial match is a row: its events as dots (by stage) from its start to its timeout,
  // against the watermark.
  function drawTimeline(box, pms, waiting, watermark, timeOf) {
    box.replaceChildren();
    if (!pms.length && !waiting.length) return;
    const times = waiting.map(w => w.timestamp);
    if (watermark !== null) times.push(watermark);
    for (const pm of pms) {
      times.push(pm.start_timestamp);
      if (pm.times_out_at !== null && pm.times_out_at !== undefined) times.push(pm.times_out_at);
      for (const evs of Object.values(pm.events)) for (const e of evs) { const t = timeOf(e); if (t !== null) times.push(t); }
    }
    let lo = Math.min(...times), hi = Math.max(...times);
    if (hi === lo) { hi = lo + 1000; }
    const pad = (hi - lo) * 0.05;
    lo -= pad; hi += pad;
    const rows = pms.length + (waiting.length ? 1 : 0);
    const W = 1100, left = 170, rowH = 34, H = 50 + rows * rowH;
    const x = t => left + (t - lo) / (hi - lo) * (W - left - 20);
    const svg = s('svg', { id: 'timeline-svg', width: W, height: H, class: 'timeline' });
    svg.append(s('line', { x1: left, y1: H - 22, x2: W - 20, y2: H - 22, class: 'axis' }));
    for (let i = 0; i <= 4; i++) {
      const t = lo + (hi - lo) * i / 4;
      const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
      svg.append(s('text', { x: x(t), y: H - 6, 'text-anchor': anchor, class: 'tick' }, Math.round(t)));
    }
    const stages = new Map();
    pms.forEach((pm, i) => {
      const y = 24 + i * rowH;
      svg.append(s('text', { x: 8, y: y + 4, class: 'row-label' }, short(pm.pattern + ' · ' + pm.state, 24)));
      const end = pm.times_out_at !== null && pm.times_out_at !== undefined ? pm.times_out_at : hi;
      svg.append(s('rect', { x: x(pm.start_timestamp), y: y - 6, width: Math.max(2, x(end) - x(pm.start_timestamp)), height: 12, class: 'span' + (pm.times_out_at === null ? ' open' : '') }, s('title', {}, 'from ' + pm.start_timestamp + (pm.times_out_at !== null ? ' until ' + pm.times_out_at : ''))));
      for (const [stage, evs] of Object.entries(pm.events)) {
        if (!stages.has(stage)) stages.set(stage, stages.size);
        for (const e of evs) {
          const t = timeOf(e);
          if (t === null) continue;
          svg.append(s('circle', { cx: x(t), cy: y, r: 6, class: 'ev ev' + (stages.get(stage) % 6) }, s('title', {}, stage + ': ' + JSON.stringify(e))));
        }
      }
    });
    if (waiting.length) {
      const y = 24 + pms.length * rowH;
      svg.append(s('text', { x: 8, y: y + 4, class: 'row-label' }, 'waiting for the watermark'));
      for (const w of waiting) {
        svg.append(s('circle', { cx: x(w.timestamp), cy: y, r: 6, class: 'ev waiting' }, s('title', {}, 'waiting: ' + JSON.stringify(w.event))));
      }
    }
    if (watermark !== null) {
      svg.append(s('line', { x1: x(watermark), y1: 6, x2: x(watermark), y2: H - 22, class: 'watermark' }));
      svg.append(s('text', { x: x(watermark) + 4, y: 14, class: 'watermark-label' }, 'watermark ' + watermark));
    }
    box.append(svg);
  }

  // ---- Start ----

  $('token-form').addEventListener('submit', e => {
    e.preventDefault();
    const t = $('token-input').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    tokenDone(!!t);
  });
  $('token-cancel').addEventListener('click', () => tokenDone(false));
  $('token-button').addEventListener('click', () => { askToken().then(() => route(), () => {}); });
  window.addEventListener('hashchange', route);
  route();
})();
