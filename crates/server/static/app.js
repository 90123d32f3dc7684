'use strict';
// The chat page of `mistral-run serve`: streams /v1/chat/completions (SSE)
// into the message list. Model output only ever goes through textContent.

const $ = (id) => document.getElementById(id);
const ui = {
  messages: $('messages'), composer: $('composer'), prompt: $('prompt'),
  send: $('send'), stop: $('stop'), newChat: $('new-chat'), model: $('model'),
  temperature: $('temperature'), topP: $('top-p'), maxTokens: $('max-tokens'),
  seed: $('seed'), system: $('system'), apiKey: $('api-key'),
};
const KEY_STORE = 'mistral-run.api-key';

let history = [];        // [{role, content}] without the system prompt
let controller = null;   // AbortController of the request in flight
let modelId = null;
let chatId = 0;          // bumped by New chat: a late answer must not join the new chat

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = ui.apiKey.value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

async function errorText(res) {
  const body = await res.text().catch(() => '');
  try {
    const msg = JSON.parse(body).error.message;
    if (msg) return msg;
  } catch (_) { /* not the JSON error shape */ }
  return `HTTP ${res.status} ${res.statusText}` + (body ? `: ${body.slice(0, 300)}` : '');
}

async function loadModel() {
  try {
    const res = await fetch('v1/models', { headers: headers() });
    if (!res.ok) throw new Error(await errorText(res));
    const data = (await res.json()).data || [];
    if (!data.length) throw new Error('no model listed');
    modelId = data[0].id;
    ui.model.textContent = modelId;
    ui.model.title = '';
    document.body.dataset.model = modelId;
  } catch (e) {
    modelId = null;
    ui.model.textContent = 'model unavailable';
    ui.model.title = e.message;
  }
  return modelId;
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 40;
}

function addMessage(role, text) {
  const el = document.createElement('div');
  el.className = 'msg ' + role;
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = text;
  el.append(body);
  ui.messages.append(el);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  return el;
}

function number(input, fallback, parse = parseFloat) {
  const v = parse(input.value);
  return Number.isFinite(v) ? v : fallback;
}

function setStreaming(on) {
  ui.send.disabled = on;
  ui.stop.disabled = !on;
  document.body.classList.toggle('streaming', on);
}

function fmtMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// Parses one SSE event (its lines) into the data payload, or null.
function eventData(block) {
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  return data.length ? data.join('\n') : null;
}

async function send() {
  const text = ui.prompt.value.trim();
  if (!text || controller) return;
  controller = new AbortController();
  setStreaming(true);
  if (!modelId && !(await loadModel())) {
    controller = null;
    setStreaming(false);
    const el = addMessage('error', 'No model: ' + (ui.model.title || 'GET /v1/models failed'));
    el.dataset.done = 'true';
    return;
  }
  const chat = chatId;
  ui.prompt.value = '';
  addMessage('user', text);
  history.push({ role: 'user', content: text });

  const messages = [...history];
  const system = ui.system.value.trim();
  if (system) messages.unshift({ role: 'system', content: system });
  const req = {
    model: modelId, messages, stream: true, stream_options: { include_usage: true },
    temperature: number(ui.temperature, 0.7),
    top_p: number(ui.topP, 1.0),
    max_tokens: number(ui.maxTokens, 256, (s) => parseInt(s, 10)),
  };
  const seed = parseInt(ui.seed.value, 10);
  if (Number.isFinite(seed)) req.seed = seed;

  const el = addMessage('assistant pending', '');
  const body = el.querySelector('.body');
  const stats = document.createElement('div');
  stats.className = 'stats';
  el.append(stats);

  const t0 = performance.now();
  let tFirst = 0, tLast = 0, chunks = 0, usage = null, error = null, stopped = false;
  let answer = '';

  try {
    const res = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(req), signal: controller.signal,
    });
    if (!res.ok) throw new Error(await errorText(res));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '', done = false;
    while (!done) {
      const { value, done: end } = await reader.read();
      buf += decoder.decode(value || new Uint8Array(), { stream: !end });
      const blocks = buf.split(/\r?\n\r?\n/);
      buf = end ? '' : blocks.pop();
      for (const block of blocks) {
        const data = eventData(block);
        if (data === null) continue;
        if (data === '[DONE]') { done = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          const stick = nearBottom();
          tLast = performance.now();
          if (!chunks++) { tFirst = tLast; el.classList.remove('pending'); }
          answer += delta.content;
          body.textContent = answer;
          if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
        }
      }
      if (end) break;
    }
  } catch (e) {
    if (e.name === 'AbortError') stopped = true;
    else error = e.message || String(e);
  } finally {
    controller = null;
    setStreaming(false);
  }

  el.classList.remove('pending');
  if (chat !== chatId) return;
  if (error) {
    // The request failed: show why, and give the prompt back for a retry.
    el.className = 'msg error';
    body.textContent = (answer ? answer + '\n\n' : '') + 'Error: ' + error;
    stats.remove();
    history.pop();
    if (!ui.prompt.value) ui.prompt.value = text;
  } else {
    history.push({ role: 'assistant', content: answer });
    const parts = [];
    const tokens = usage ? usage.completion_tokens : chunks;
    if (tokens != null) parts.push(`${tokens} token${tokens === 1 ? '' : 's'}`);
    // Rate over the gaps between first and last token: n tokens, n - 1 gaps.
    if (tokens > 1 && tLast > tFirst) {
      parts.push(`${((tokens - 1) * 1000 / (tLast - tFirst)).toFixed(1)} tok/s`);
    }
    if (chunks) parts.push(`first token ${fmtMs(tFirst - t0)}`);
    if (usage && usage.prompt_tokens != null) parts.push(`prompt ${usage.prompt_tokens} tokens`);
    if (stopped) parts.push('(stopped)');
    stats.textContent = parts.join(' · ');
    if (stopped) el.dataset.stopped = 'true';
  }
  el.dataset.done = 'true';
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

ui.composer.addEventListener('submit', (e) => { e.preventDefault(); send(); });
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener('click', () => { if (controller) controller.abort(); });
ui.newChat.addEventListener('click', () => {
  if (controller) controller.abort();
  chatId++;
  history = [];
  ui.messages.replaceChildren();
  ui.prompt.focus();
});

ui.apiKey.value = localStorage.getItem(KEY_STORE) || '';
ui.apiKey.addEventListener('change', () => {
  const key = ui.apiKey.value.trim();
  if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
  loadModel();
});

loadModel();
