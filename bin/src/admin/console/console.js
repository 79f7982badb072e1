// Footprint's operator console: polls the admin API every two seconds and
// flips degrade switches after a confirmation. No framework, no build step.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = 'footprint-admin-token';
  const STORE_NAMES = { mysql: 'MySQL', redis: 'Redis' };

  let token = sessionStorage.getItem(TOKEN_KEY);
  let timer = null;
  let busy = false;
  // A refresh asked for while one runs: it runs again once that one ends,
  // so the page never keeps showing what was true before a change.
  let again = false;

  const $ = (sel, root = document) => root.querySelector(sel);
  const field = (name, root = document) => $(`[data-field="${name}"]`, root);

  class Unauthorized extends Error {}

  async function api(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) throw new Unauthorized();
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const why = data && data.error ? data.error : `HTTP ${res.status}`;
      throw new Error(`${method} ${path}: ${why}`);
    }
    return data;
  }

  // Numbers: the text is for people, `data-value` keeps the exact figure.
  function show(el, value, text) {
    if (!el) return;
    el.dataset.value = value === null || value === undefined ? '' : String(value);
    el.textContent = text !== undefined ? text : (value === null || value === undefined ? '–' : fmt(value));
  }
  const fmt = (n) => Number(n).toLocaleString('en-US');
  // A span of time, in the largest units that keep it readable.
  function secs(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 0) return `-${secs(-ms)}`;
    const s = ms / 1000;
    if (s < 120) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 120) return `${m} min ${Math.floor(s % 60)} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }
  const time = (ms) => (ms > 0 ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : 'none yet');
  const storeName = (sink) => (Object.hasOwn(STORE_NAMES, sink) ? STORE_NAMES[sink] : sink);

  function banner(text) {
    const el = $('#error');
    el.textContent = text || '';
    el.hidden = !text;
  }

  function needToken(refused) {
    $('#board').hidden = true;
    $('#auth').hidden = false;
    banner(refused
      ? 'The admin service refused this token (401). Nothing is shown and nothing can be changed until the right token is given.'
      : 'The admin service needs its bearer token (401). Nothing is shown and nothing can be changed until it is given.');
  }

  function row(tbody, key, attr, cells) {
    let tr = $(`tr[${attr}="${CSS.escape(key)}"]`, tbody);
    if (!tr) {
      tr = document.createElement('tr');
      tr.setAttribute(attr, key);
      for (const c of cells) {
        const td = document.createElement('td');
        td.dataset.field = c.name;
        if (c.numeric) td.className = 'n';
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    return tr;
  }

  function prune(tbody, attr, keep) {
    for (const tr of [...tbody.querySelectorAll(`tr[${attr}]`)]) {
      if (!keep.has(tr.getAttribute(attr))) tr.remove();
    }
  }

  function renderSinks(sinks) {
    const tbody = $('#sinks tbody');
    const cells = [
      { name: 'name' }, { name: 'mode' }, { name: 'breaker' }, { name: 'written', numeric: true },
      { name: 'diverted', numeric: true }, { name: 'failed', numeric: true },
      { name: 'write_p99_ms', numeric: true }, { name: 'action' },
    ];
    for (const [name, s] of Object.entries(sinks)) {
      const tr = row(tbody, name, 'data-sink', cells);
      show(field('name', tr), name, storeName(name));
      const mode = field('mode', tr);
      show(mode, s.mode, s.mode);
      mode.className = s.mode === 'degraded' ? 'bad' : 'good';
      const breaker = field('breaker', tr);
      show(breaker, s.breaker, s.breaker.replace('_', '-'));
      breaker.className = s.breaker === 'open' ? 'bad' : s.breaker === 'half_open' ? 'warn' : '';
      show(field('written', tr), s.written);
      const diverted = field('diverted', tr);
      show(diverted, s.diverted);
      diverted.classList.toggle('warn', s.diverted > 0);
      show(field('failed', tr), s.failed);
      show(field('write_p99_ms', tr), s.write_p99_ms,
        s.write_p99_ms === null ? '–' : `${s.write_p99_ms.toFixed(1)} ms`);
      const cell = field('action', tr);
      const target = s.mode === 'degraded' ? 'auto' : 'degraded';
      let button = $('button', cell);
      if (!button) {
        button = document.createElement('button');
        button.className = 'flip';
        button.addEventListener('click', () => ask(name, button.dataset.target));
        cell.appendChild(button);
      }
      button.dataset.target = target;
      button.textContent = target === 'degraded' ? 'Degrade' : 'Set to auto';
      button.classList.toggle('danger', target === 'degraded');
    }
    prune(tbody, 'data-sink', new Set(Object.keys(sinks)));
  }

  function renderRetry(retry, nowMs) {
    show(field('retry_backlog'), retry.backlog_records);
    show(field('journal_records'), retry.journal_records);
    const replay = field('replay');
    const words = {
      applying: 'applying records',
      caught_up: 'caught up',
      waiting: 'not applying',
      unknown: 'not measured',
    };
    show(replay, retry.replay, words[retry.replay] || retry.replay);
    replay.className = retry.replay === 'waiting' ? 'warn' : retry.replay === 'applying' ? 'good' : '';
    let detail = '';
    const span = secs(retry.replay_active_ms);
    if (retry.replay === 'waiting' && retry.backlog_records === 0) {
      detail = '(records wait in the local journal until the retry topic takes them)';
    } else if (retry.replay === 'waiting') {
      detail = `(records wait and no replay job has committed in the last ${span}: is \`footprint replay\` running?)`;
    } else if (retry.replay_moved_ms) {
      detail = `(last commit ${secs(nowMs - retry.replay_moved_ms)} ago, position ${fmt(retry.replay_position)})`;
    }
    field('replay_detail').textContent = detail;
  }

  function renderWatermark(st) {
    show(field('watermark'), st.watermark_ms, time(st.watermark_ms));
    show(field('watermark_delay'), st.watermark_delay_ms, secs(st.watermark_delay_ms));
    const wall = st.watermark_ms > 0 ? st.now_ms - st.watermark_ms : null;
    show(field('watermark_behind_wall'), wall, secs(wall));
  }

  function renderPartitions(parts) {
    const tbody = $('#partitions tbody');
    const cells = [
      { name: 'topic' }, { name: 'partition', numeric: true }, { name: 'lag', numeric: true },
      { name: 'watermark_ms' }, { name: 'state' },
    ];
    const keep = new Set();
    for (const p of parts) {
      const key = `${p.topic}/${p.partition}`;
      keep.add(key);
      const tr = row(tbody, key, 'data-partition', cells);
      show(field('topic', tr), p.topic, p.topic);
      show(field('partition', tr), p.partition, String(p.partition));
      show(field('lag', tr), p.lag);
      show(field('watermark_ms', tr), p.watermark_ms, time(p.watermark_ms));
      const state = field('state', tr);
      show(state, p.state, p.state === 'held' ? 'held (alignment)' : p.state);
      state.className = p.state === 'held' ? 'warn' : p.state === 'idle' ? 'quiet' : '';
    }
    prune(tbody, 'data-partition', keep);
    $('#no-partitions').hidden = parts.length > 0;
  }

  function renderSkipped(skipped) {
    const table = $('#skipped');
    const tbody = $('tbody', table);
    const cells = [
      { name: 'topic' }, { name: 'partition', numeric: true }, { name: 'range', numeric: true },
      { name: 'reason' }, { name: 'backfill' },
    ];
    const keep = new Set();
    for (const s of skipped) {
      const key = `${s.topic}/${s.partition}/${s.from}`;
      keep.add(key);
      const tr = row(tbody, key, 'data-range', cells);
      show(field('topic', tr), s.topic, s.topic);
      show(field('partition', tr), s.partition, String(s.partition));
      show(field('range', tr), s.to - s.from, `${fmt(s.from)} to ${fmt(s.to)} (${fmt(s.to - s.from)})`);
      show(field('reason', tr), s.reason, String(s.reason));
      const cell = field('backfill', tr);
      if (!$('code', cell)) {
        const code = document.createElement('code');
        const copy = document.createElement('button');
        copy.textContent = 'Copy';
        copy.addEventListener('click', () => copyText(code.textContent, copy));
        cell.append(code, ' ', copy);
      }
      $('code', cell).textContent = s.backfill === null
        ? 'none: these offsets were deleted by retention, so no backfill can read them'
        : s.backfill;
      $('button', cell).hidden = s.backfill === null;
    }
    prune(tbody, 'data-range', keep);
    table.hidden = skipped.length === 0;
    $('#no-skipped').hidden = skipped.length > 0;
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(button.previousSibling.previousSibling);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = 'Selected: press Ctrl+C';
    }
    setTimeout(() => { button.textContent = 'Copy'; }, 2000);
  }

  // Per-second rates between consecutive samples, drawn as a line.
  function renderHistory(history) {
    const s = history.samples;
    const series = { in: [], bad: [], late: [] };
    for (let i = 1; i < s.length; i++) {
      const dt = (s[i].at_ms - s[i - 1].at_ms) / 1000;
      if (dt <= 0) continue;
      series.in.push(Math.max(0, s[i].events_in - s[i - 1].events_in) / dt);
      series.bad.push(Math.max(0, s[i].events_bad - s[i - 1].events_bad) / dt);
      series.late.push(Math.max(0, s[i].events_late - s[i - 1].events_late) / dt);
    }
    const kept = 10 * 60 * 1000 / history.interval_ms;
    for (const name of Object.keys(series)) {
      const values = series[name];
      const last = values.length ? values[values.length - 1] : null;
      show(field(`rate_${name}`), last === null ? null : Math.round(last),
        last === null ? '–' : fmt(Math.round(last)));
      draw($(`#chart-${name}`), values, kept);
    }
  }

  function draw(svg, values, kept) {
    while (svg.firstChild) svg.firstChild.remove();
    if (values.length < 2) return;
    const top = Math.max(...values);
    const max = Math.max(1, top);
    const step = 300 / Math.max(1, kept - 1);
    const x0 = 300 - step * (values.length - 1);
    const points = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(58 - (v / max) * 54).toFixed(1)}`);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', points.join(' '));
    svg.appendChild(line);
    const label = document.createElementNS('http://www.w3.org/2000/svg', 'text');
    label.setAttribute('x', '2');
    label.setAttribute('y', '10');
    label.textContent = `max ${fmt(Math.round(top))}/s`;
    svg.appendChild(label);
  }

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    again = false;
    try {
      const [st, history] = await Promise.all([api('GET', '/status'), api('GET', '/history')]);
      $('#auth').hidden = true;
      $('#board').hidden = false;
      banner('');
      renderSinks(st.sinks);
      renderRetry(st.retry, st.now_ms);
      renderWatermark(st);
      show(field('events_in'), st.events_in);
      show(field('events_bad'), st.events_bad);
      show(field('events_late'), st.events_late);
      renderPartitions(st.partitions);
      renderSkipped(st.skipped);
      renderHistory(history);
      const broker = field('broker');
      show(broker, st.broker.state, st.broker.state);
      broker.className = st.broker.state === 'ok' ? 'good' : 'bad';
      show(field('updated'), st.now_ms, new Date(st.now_ms).toLocaleTimeString());
    } catch (e) {
      if (e instanceof Unauthorized) {
        needToken(Boolean(token));
      } else {
        banner(`Cannot reach the admin service: ${e.message}. Retrying every ${REFRESH_MS / 1000} s.`);
      }
    } finally {
      busy = false;
      if (again) refresh();
    }
  }

  function ask(sink, mode) {
    const name = storeName(sink);
    $('#confirm-title').textContent = `Set ${name} to ${mode}?`;
    $('#confirm-text').textContent = mode === 'degraded'
      ? `Writes to ${name} go to the retry topic until you set it back to auto. Readers keep what ${name} holds now; the replay job applies the diverted rows once it is back on auto.`
      : `Writes go to ${name} again. The replay job then applies the rows the retry topic holds for it, under the version rule.`;
    const dialog = $('#confirm');
    dialog.returnValue = '';
    dialog.onclose = () => {
      if (dialog.returnValue === 'yes') flip(sink, mode);
    };
    dialog.showModal();
  }

  async function flip(sink, mode) {
    const out = $('#action-result');
    out.hidden = false;
    out.className = 'banner result';
    out.textContent = `Setting ${storeName(sink)} to ${mode}…`;
    try {
      const r = await api('PUT', `/switches/${encodeURIComponent(sink)}`, { mode });
      out.className = 'banner result good';
      out.textContent = `${storeName(r.sink)} is now ${r.mode}.`;
      out.dataset.value = `${r.sink}=${r.mode}`;
    } catch (e) {
      out.className = 'banner result bad';
      out.dataset.value = 'error';
      if (e instanceof Unauthorized) {
        out.textContent = 'Refused: the admin service needs its token. Nothing was changed.';
        needToken(Boolean(token));
      } else {
        out.textContent = `Not changed: ${e.message}`;
      }
    }
    refresh();
  }

  function start() {
    $('#token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('#token-input');
      token = input.value.trim() || null;
      input.value = '';
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
      refresh();
    });
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }

  window.addEventListener('DOMContentLoaded', start);
  window.addEventListener('beforeunload', () => clearInterval(timer));
})();
