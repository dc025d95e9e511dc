// The admin console, end to end, in Debian's Chromium against `weapp serve --sandbox`: an admin
// key gets in (a wrong one does not); the apps show their token health; an app added here is
// served and refreshed, disabled and enabled; a broker client's key is shown once, works, and
// stops working when rotated; a user's sessions are found and ended; push events and the audit
// log show. Screenshots land in target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  sandboxConfig, startSandbox, stopSandbox, launchBrowser, openConsole, shot, eventually, SHOTS,
} from './lib.mjs';

const apps = sandboxConfig();
const NEW_APP = 'wxadmine2e0000001';
const NEW_SECRET = 'adminE2eSecret0123456789abcdef';
let sandbox;
let browser;
let ui;

const tid = (s) => `[data-testid="${s}"]`;
const text = (page, s) => page.locator(tid(s)).first().innerText();
const json = async (method, url, { bearer, body } = {}) => {
  const headers = {};
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: await r.json().catch(() => null) };
};
const appRow = (page, appid) => page.locator(`${tid('app-row')}[data-appid="${appid}"]`);

async function tab(page, name) {
  await page.click(tid(`tab-${name}`));
  await page.waitForSelector(`#tab-${name}.active`);
}

before(async () => {
  sandbox = await startSandbox(apps);
  browser = await launchBrowser();
  ui = await openConsole(browser, sandbox.admin, { ready: 'body[data-ready="true"]' });
  ui.page.on('dialog', (d) => d.accept());
});

after(async () => {
  if (ui) await ui.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await stopSandbox(sandbox);
});

test('the admin console loads from the binary alone, and only an admin key gets in', async () => {
  const { page } = ui;
  assert.match(sandbox.admin, /\/admin$/);
  await page.waitForTimeout(300);
  const total = ui.loaded.reduce((n, r) => n + r.bytes, 0);
  writeFileSync(path.join(SHOTS, 'admin-first-load.json'), JSON.stringify({ total_bytes: total, requests: ui.loaded }, null, 2));
  assert.ok(total > 5_000 && total < 300 * 1024, `first load ${total} bytes`);
  assert.deepEqual(ui.foreign, []);
  assert.ok(await page.locator(tid('login')).isVisible());
  // A broker client key is not an admin key.
  await page.fill(tid('key-input'), sandbox.clientKey);
  await page.click(tid('key-submit'));
  await eventually(async () => (await text(page, 'login-error')).length > 0, { what: 'the refusal' });
  await shot(page, 'admin-01-login');
  await page.fill(tid('key-input'), sandbox.adminKey);
  await page.click(tid('key-submit'));
  await page.waitForSelector('#main:not(.hidden)');
  // The file's apps, each with its token (the fleet warms them).
  for (const { appid } of [apps.stable, apps.classic]) {
    await eventually(async () => /^\d+$/.test(await appRow(page, appid).locator(tid('app-version')).innerText()),
      { what: `a token for ${appid}`, timeout: 30_000 });
  }
  assert.match(await text(page, 'fleet-line'), /1/);
  // The key is not in the page's storage for other tabs, nor in the DOM.
  assert.equal(await page.evaluate(() => localStorage.getItem('weapp-admin-key')), null);
  assert.ok(!(await page.content()).includes(sandbox.adminKey));
  await shot(page, 'admin-02-apps');
  // 401 was counted as one failed authentication, and the page did not error.
  assert.deepEqual(ui.problems.filter((p) => !p.includes('401')), []);
});

test('an app added here is served, warmed, disabled and enabled', async () => {
  const { page } = ui;
  await page.fill(tid('app-appid'), NEW_APP);
  await page.fill(tid('app-secret'), NEW_SECRET);
  await page.selectOption(tid('app-mode'), 'classic');
  await page.click(tid('app-create'));
  await eventually(async () => (await appRow(page, NEW_APP).count()) === 1, { what: 'the new app listed' });
  // In the sandbox it talks to the simulator, which learned it: the fleet fetches its token.
  await eventually(async () => /^\d+$/.test(await appRow(page, NEW_APP).locator(tid('app-version')).innerText()),
    { what: 'a token for the new app', timeout: 30_000 });
  assert.ok(!(await page.content()).includes(NEW_SECRET), 'the secret is never shown');
  // The change names the version the console showed (If-Match: its rev), so a stale row
  // cannot undo someone else's change.
  const { body: seen } = await json('GET', `${sandbox.server}/v1/admin/apps/${NEW_APP}`, { bearer: sandbox.adminKey });
  const patched = page.waitForRequest((r) => r.method() === 'PATCH' && r.url().endsWith(`/v1/admin/apps/${NEW_APP}`));
  await appRow(page, NEW_APP).locator(tid('app-toggle')).click();
  assert.equal((await patched).headers()['if-match'], `"${seen.rev}"`);
  await eventually(async () => /disabled/.test(await appRow(page, NEW_APP).locator(tid('app-state')).innerText()),
    { what: 'disabled' });
  await shot(page, 'admin-03-app-disabled');
  await appRow(page, NEW_APP).locator(tid('app-toggle')).click();
  await eventually(async () => /enabled/.test(await appRow(page, NEW_APP).locator(tid('app-state')).innerText()),
    { what: 'enabled again' });
});

test("a client's key is shown once, works, and stops working when rotated", async () => {
  const { page } = ui;
  await tab(page, 'clients');
  await page.fill(tid('client-name'), 'e2e-shop');
  await page.fill(tid('client-apps'), NEW_APP);
  await page.click(tid('client-create'));
  await page.waitForSelector(`${tid('key-box')}:not(.hidden)`);
  const key = (await text(page, 'new-key')).trim();
  assert.match(key, /^wck_[0-9a-f]{40}$/);
  await shot(page, 'admin-04-client-key');
  await page.click(tid('key-done'));
  assert.ok(!(await page.content()).includes(key), 'the key is gone from the page');
  const token = `${sandbox.server}/v1/apps/${NEW_APP}/access_token`;
  assert.equal((await json('GET', token, { bearer: key })).status, 200);
  const other = `${sandbox.server}/v1/apps/${apps.stable.appid}/access_token`;
  assert.equal((await json('GET', other, { bearer: key })).status, 403, 'only its apps');
  await page.locator(`${tid('client-row')}[data-name="e2e-shop"]`).locator(tid('client-rotate')).click();
  await page.waitForSelector(`${tid('key-box')}:not(.hidden)`);
  const rotated = (await text(page, 'new-key')).trim();
  assert.notEqual(rotated, key);
  await page.click(tid('key-done'));
  assert.equal((await json('GET', token, { bearer: key })).status, 401);
  assert.equal((await json('GET', token, { bearer: rotated })).status, 200);
  assert.deepEqual(ui.problems.filter((p) => !p.includes('401')), []);
});

test("a user's sessions are found and ended", async () => {
  const { page } = ui;
  const { body: login } = await json('POST', `${sandbox.sim}/_sim/login`, { body: { appid: apps.stable.appid } });
  const { status, body: session } = await json('POST', `${sandbox.server}/v1/login`, { body: { appid: apps.stable.appid, code: login.code } });
  assert.equal(status, 200);
  await tab(page, 'users');
  await page.fill(tid('u-appid'), apps.stable.appid);
  await page.fill(tid('u-openid'), login.openid);
  await page.click(tid('u-find'));
  await eventually(async () => (await text(page, 'user-sessions')) === '1', { what: 'one session' });
  await shot(page, 'admin-05-user');
  await page.click(tid('user-revoke'));
  await eventually(async () => (await text(page, 'user-sessions')) === '0', { what: 'no session left' });
  assert.equal((await json('GET', `${sandbox.server}/v1/me`, { bearer: session.token })).status, 401);
});

test('push events and the audit log show, and the console speaks Chinese', async () => {
  const { page } = ui;
  const { body: login } = await json('POST', `${sandbox.sim}/_sim/login`, { body: { appid: apps.stable.appid } });
  await json('POST', `${sandbox.sim}/_sim/user-message`, { body: { appid: apps.stable.appid, openid: login.openid, kind: 'text', content: 'admin e2e' } });
  await tab(page, 'apps');
  await tab(page, 'events');
  await page.selectOption(tid('ev-app'), apps.stable.appid);
  await eventually(async () => {
    await page.click(tid('ev-load'));
    return (await page.locator(tid('event-row')).count()) > 0;
  }, { what: 'the pushed event' });
  // The admin API describes events as the client API (events:read) does: `type`, `created_at`
  // in Unix seconds, `stored` for an app without a webhook; the page shows today's date.
  const { status, body: listed } = await json('GET', `${sandbox.server}/v1/admin/apps/${apps.stable.appid}/events`, { bearer: sandbox.adminKey });
  assert.equal(status, 200);
  const pushed = listed.events.find((e) => e.payload && e.payload.Content === 'admin e2e');
  assert.ok(pushed, JSON.stringify(listed));
  assert.equal(pushed.type, 'text');
  assert.equal(pushed.kind, undefined);
  assert.equal(pushed.appid, apps.stable.appid);
  assert.ok(Math.abs(pushed.created_at - Date.now() / 1000) < 600, `created_at ${pushed.created_at} in seconds`);
  assert.ok(['delivered', 'pending', 'dead', 'stored'].includes(pushed.status), pushed.status);
  const year = String(new Date().getFullYear());
  assert.ok((await page.locator(tid('event-time')).allInnerTexts()).every((d) => d.startsWith(year)), 'event times are dates of this year');
  await shot(page, 'admin-06-events');
  await tab(page, 'audit');
  const actions = await eventually(async () => {
    const rows = await page.locator(tid('audit-row')).allInnerTexts();
    return rows.length >= 5 ? rows.join('\n') : null;
  }, { what: 'the audit log' });
  // Reads of users' data are audited too: whose phone number, which app's messages.
  for (const a of ['app.create', 'app.update', 'client.create', 'client.update', 'user.read', 'user.revoke', 'events.read']) {
    assert.ok(actions.includes(a), `${a} in the audit log`);
  }
  assert.ok(!actions.includes(NEW_SECRET));
  await shot(page, 'admin-07-audit');
  await page.click(tid('lang'));
  await eventually(async () => (await text(page, 'tab-apps')) === '小程序', { what: 'Chinese labels' });
  await tab(page, 'apps');
  await shot(page, 'admin-08-zh');
  await page.click(tid('lang'));
  assert.deepEqual(ui.problems.filter((p) => !p.includes('401')), []);
});
