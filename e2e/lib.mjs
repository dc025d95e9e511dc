// Helpers for the console's end-to-end tests: start `weapp serve --sandbox`, run `weapp api`,
// launch Debian's Chromium through playwright-core (no browser download).
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Where `scripts/e2e` built it: CARGO_TARGET_DIR (relative to the repository) or target/.
export const BIN = process.env.WEAPP_BIN
  || path.join(path.resolve(ROOT, process.env.CARGO_TARGET_DIR || 'target'), 'debug', 'weapp');
export const SHOTS = path.join(ROOT, 'target', 'e2e');
mkdirSync(SHOTS, { recursive: true });

/** Two apps: one on stable tokens (the default), one on classic tokens (so a foreign fetch
 * retires the broker's token). */
export function sandboxConfig() {
  return {
    stable: { appid: 'wxe2e00000000000a1', secret: randomBytes(16).toString('hex') },
    classic: { appid: 'wxe2e00000000000c2', secret: randomBytes(16).toString('hex') },
  };
}

/** Starts `weapp serve --sandbox` on free ports; resolves once it listens. */
export async function startSandbox(apps) {
  const dir = mkdtempSync(path.join(tmpdir(), 'weapp-e2e-'));
  const config = path.join(dir, 'weapp.toml');
  writeFileSync(config, [
    '[[apps]]', `appid = "${apps.stable.appid}"`, `secret = "${apps.stable.secret}"`, '',
    '[[apps]]', `appid = "${apps.classic.appid}"`, `secret = "${apps.classic.secret}"`, 'token_mode = "classic"', '',
  ].join('\n'));
  const child = spawn(BIN, ['serve', '--sandbox', '--config', config, '--listen', '127.0.0.1:0',
    '--database-url', `sqlite://${path.join(dir, 'sandbox.db')}`], {
    cwd: dir,
    env: { ...process.env, WEAPP_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`weapp serve did not start:\n${out}\n${err}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`weapp serve exited ${code}:\n${out}\n${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const sim = /sandbox WeChat simulator: (\S+)/.exec(out);
      const server = /weapp-server listening on (\S+)/.exec(out);
      const consoleUrl = /open the console[^:]*: (\S+)/.exec(out);
      const key = /broker client key: (\S+)/.exec(out);
      const admin = /admin key: (\S+)/.exec(out);
      const adminUrl = /admin console[^:]*: (\S+)/.exec(out);
      if (sim && server && consoleUrl && key && admin && adminUrl) {
        clearTimeout(timer);
        resolve({
          sim: sim[1], server: server[1], console: consoleUrl[1], clientKey: key[1],
          adminKey: admin[1], admin: adminUrl[1],
        });
      }
    });
  });
  return { ...info, child, dir, stdout: () => out, stderr: () => err };
}

export async function stopSandbox(s) {
  if (!s || s.child.exitCode !== null) return;
  const exited = new Promise((resolve) => s.child.on('exit', resolve));
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** `weapp api` against the simulator, the secret in the environment; resolves to parsed JSON. */
export function weappApi(simUrl, app, method, apiPath, json) {
  const args = ['api', '--appid', app.appid, '--api-base', simUrl, method, apiPath];
  if (json !== undefined) args.push('--json', JSON.stringify(json));
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { env: { ...process.env, WEAPP_SECRET: app.secret, WEAPP_LOG: 'warn' } },
      (error, stdout, stderr) => {
        if (error) { reject(new Error(`weapp ${args.join(' ')}: ${stderr || error.message}`)); return; }
        try { resolve(JSON.parse(stdout)); } catch (e) { reject(new Error(`not JSON: ${stdout}`)); }
      });
  });
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A page that records console errors, page errors and every request that leaves the
 * simulator's origin (which are refused: the console must work offline). */
export async function openConsole(browser, url, { locale = 'en-US', ready = 'body[data-ready="true"]' } = {}) {
  const origin = new URL(url).origin;
  const context = await browser.newContext({ locale, viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const problems = [];
  const foreign = [];
  const loaded = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(origin) || u.startsWith('data:')) return route.continue();
    foreign.push(u);
    return route.abort();
  });
  page.on('requestfinished', async (req) => {
    try {
      const sizes = await req.sizes();
      loaded.push({ url: req.url(), bytes: sizes.responseBodySize + sizes.responseHeadersSize });
    } catch (_) { /* the page went away */ }
  });
  await page.goto(url);
  await page.waitForSelector(ready, { timeout: 30_000 });
  return { context, page, problems, foreign, loaded };
}

export const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });

/** Polls `fn` until it returns a truthy value (or throws after `timeout` ms). */
export async function eventually(fn, { timeout = 15_000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
