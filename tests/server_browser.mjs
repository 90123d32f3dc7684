// Drives the chat page of `mistral-run serve` in headless chromium; run by
// tests/server-browser.sh, which starts the server and sets BASE_URL, PW_DIR
// (where playwright-core is installed), CHROMIUM and SCREENSHOT.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const { BASE_URL, PW_DIR, SCREENSHOT } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE_URL || !PW_DIR) {
  console.error('server_browser: set BASE_URL and PW_DIR (run tests/server-browser.sh)');
  process.exit(2);
}
const require = createRequire(path.join(PW_DIR, 'package.json'));
const { chromium } = require('playwright-core');

let passed = 0;
let failed = 0;
const log = (...a) => console.log('server_browser:', ...a);
class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passed++;
    log(`ok   ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    failed++;
    log(`FAIL ${name}: ${e instanceof Failure ? e.message : e.stack || e}`);
    throw e;
  }
}

// Samples the last assistant bubble's text every 20 ms (in the page) until it
// is done; resolves with the distinct non-empty lengths seen while streaming.
function sampleAnswer(page, index, timeoutMs) {
  return page.evaluate(({ index, timeoutMs }) => new Promise((resolve) => {
    const start = performance.now();
    const lengths = [];
    const timer = setInterval(() => {
      const el = document.querySelectorAll('#messages .msg:not(.user)')[index];
      if (el && el.dataset.done === 'true') {
        clearInterval(timer);
        resolve({ lengths, done: true, cls: el.className });
        return;
      }
      const n = el ? el.querySelector('.body').textContent.length : 0;
      if (n > 0 && n !== lengths[lengths.length - 1]) lengths.push(n);
      if (performance.now() - start > timeoutMs) {
        clearInterval(timer);
        resolve({ lengths, done: false });
      }
    }, 20);
  }), { index, timeoutMs });
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-run-chromium-'));
const pageErrors = [];
let context;
const watchdog = setTimeout(() => {
  log('FAIL the whole test took over 170 s');
  process.exit(1);
}, 170_000);

try {
  context = await chromium.launchPersistentContext(dataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 720 },
    timeout: 60_000,
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    // The browser logs every 4xx/5xx response; the error step makes one on purpose.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      pageErrors.push('console: ' + m.text());
    }
  });

  await step('page loads and lists the model', async () => {
    const res = await page.goto(BASE_URL + '/');
    check(res && res.status() === 200, `GET / answered ${res && res.status()}`);
    for (const id of ['prompt', 'send', 'stop', 'new-chat', 'messages', 'temperature',
      'top-p', 'max-tokens', 'seed', 'system', 'api-key']) {
      check(await page.locator('#' + id).count() === 1, `#${id} missing`);
    }
    await page.waitForFunction(() => document.body.dataset.model, null, { timeout: 15_000 })
      .catch(() => { throw new Failure('the page did not get a model from GET /v1/models'); });
    check(await page.isDisabled('#stop'), '#stop is enabled before any request');
  });

  await step('first answer streams and shows stats', async () => {
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '48');
    await page.fill('#prompt', 'Write a short poem about the sea.');
    const sampling = sampleAnswer(page, 0, 90_000);
    const reqPromise = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.click('#send');
    const body = (await reqPromise).postDataJSON();
    check(body.stream === true && body.stream_options?.include_usage === true, 'request is not streamed with usage');
    check(body.temperature === 0 && body.max_tokens === 48 && body.top_p === 1, `sampling settings not sent: ${JSON.stringify(body)}`);
    check(typeof body.model === 'string' && body.model, 'no model in the request');
    check(!('seed' in body), 'seed sent though the field is empty');
    check(body.messages?.length === 1 && body.messages[0].role === 'user', 'messages are not [user]');
    const s = await sampling;
    check(s.done, `no data-done="true" within 90 s (text lengths seen: ${s.lengths.join(',')})`);
    check(s.cls.includes('assistant'), `the answer ended as "${s.cls}": ${await page.textContent('#messages .msg:not(.user)')}`);
    check(s.lengths.length >= 2, `the answer did not stream: distinct lengths while streaming ${JSON.stringify(s.lengths)}`);
    const msg = page.locator('#messages .msg.assistant').first();
    const text = await msg.locator('.body').textContent();
    check(text.trim().length > 0, 'empty answer');
    const stats = await msg.locator('.stats').textContent();
    const m = stats.match(/([\d.]+) tok\/s/);
    check(m && Number(m[1]) > 0, `no tok/s in the stats "${stats}"`);
    check(!(await msg.getAttribute('data-stopped')), 'answer marked stopped');
    check(await page.isEnabled('#send') && await page.isDisabled('#stop'), 'buttons not reset after the answer');
    log(`answer (${s.lengths.length} distinct lengths): ${JSON.stringify(text.slice(0, 120))}`);
    log(`stats: ${stats}`);
    if (SCREENSHOT) {
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT });
      log(`screenshot: ${SCREENSHOT}`);
    }
  });

  await step('Stop aborts a long answer and keeps the partial text', async () => {
    await page.fill('#max-tokens', '2000');
    await page.fill('#prompt', 'Now tell me a very long story about a lighthouse keeper.');
    const reqPromise = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.press('#prompt', 'Enter'); // Enter sends
    const body = (await reqPromise).postDataJSON();
    check(body.messages?.length === 3 && body.messages[1].role === 'assistant',
      `history not sent: ${JSON.stringify(body.messages?.map((m) => m.role))}`);
    const second = page.locator('#messages .msg:not(.user)').nth(1);
    await page.waitForFunction(() => {
      const el = document.querySelectorAll('#messages .msg:not(.user)')[1];
      return el && (el.dataset.done === 'true' || el.querySelector('.body').textContent.length > 0);
    }, null, { timeout: 60_000 }).catch(() => { throw new Failure('no text within 60 s'); });
    check(!(await second.getAttribute('data-done')),
      `the answer finished before Stop: ${await second.textContent()}`);
    check(await page.isEnabled('#stop') && await page.isDisabled('#send'), 'Stop/Send states wrong while streaming');
    await page.click('#stop');
    await page.waitForSelector('#messages .msg.assistant[data-stopped="true"]', { timeout: 10_000 })
      .catch(() => { throw new Failure('no data-stopped="true" within 10 s of Stop'); });
    check(await second.getAttribute('data-done') === 'true', 'stopped answer lacks data-done');
    check((await second.locator('.body').textContent()).length > 0, 'partial text lost');
    check((await second.locator('.stats').textContent()).includes('(stopped)'), 'stats lack "(stopped)"');
    check(await page.isEnabled('#send') && await page.isDisabled('#stop'), 'Send not enabled again after Stop');
  });

  await step('the server still answers after the abort', async () => {
    const health = await fetch(BASE_URL + '/health', { signal: AbortSignal.timeout(10_000) });
    check(health.status === 200, `GET /health answered ${health.status}`);
    const res = await fetch(BASE_URL + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        model: await page.evaluate(() => document.body.dataset.model),
        messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, temperature: 0,
      }),
      signal: AbortSignal.timeout(30_000),
    });
    const raw = await res.text();
    check(res.status === 200, `a completion after the abort answered ${res.status}: ${raw}`);
    const j = JSON.parse(raw);
    check(typeof j.choices?.[0]?.message?.content === 'string', `odd completion ${JSON.stringify(j)}`);
  });

  await step('error responses show in the chat', async () => {
    await page.route('**/v1/chat/completions', (route) => route.fulfill({
      status: 400, contentType: 'application/json',
      body: JSON.stringify({ error: { message: 'max_tokens <b>must</b> be positive', type: 'invalid_request_error', code: 400 } }),
    }));
    await page.fill('#prompt', 'This one fails.');
    await page.click('#send');
    const err = page.locator('#messages .msg.error');
    await err.waitFor({ timeout: 10_000 });
    const text = await err.textContent();
    check(text.includes('max_tokens <b>must</b> be positive'), `error text "${text}"`);
    check(await page.inputValue('#prompt') === 'This one fails.', 'the failed prompt was not given back');
    check(await page.isEnabled('#send'), 'Send not enabled after an error');
    await page.unroute('**/v1/chat/completions');
  });

  await step('New chat clears the history', async () => {
    await page.click('#new-chat');
    check(await page.locator('#messages .msg').count() === 0, 'messages left after New chat');
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join('; ')}`);
  });
} catch (e) {
  if (!failed) {
    failed++;
    log(`FAIL ${e.stack || e}`);
  }
} finally {
  clearTimeout(watchdog);
  if (context) await context.close().catch(() => {});
  fs.rmSync(dataDir, { recursive: true, force: true });
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
