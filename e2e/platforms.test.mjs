// The console's Platforms tab, end to end, in Debian's Chromium against `weapp serve --sandbox`:
// a third-party platform registered and given a ticket and a component token over the
// simulator's WeChat API, its ticket pushes shown and pushed on demand, a merchant scanning the
// authorization page from the console (the redirect with auth_code shown), an authorizer option
// and an IP whitelist (61004) shown, de-authorization, and the tab in Chinese. Screenshots land in target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  sandboxConfig, startSandbox, stopSandbox, launchBrowser, openConsole, shot, eventually,
} from './lib.mjs';

const apps = sandboxConfig();
const tid = (s) => `[data-testid="${s}"]`;
let sandbox;
let browser;
let ui;
let receiver;
const received = [];
let platform;

const post = async (url, body) => {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return r.json();
};

before(async () => {
  sandbox = await startSandbox(apps);
  // The platform's authorization-event URL: answers `success` to everything it gets.
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => { received.push({ url: req.url, body }); res.end('success'); });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const eventUrl = `http://127.0.0.1:${receiver.address().port}/events`;
  platform = await post(`${sandbox.sim}/_sim/platforms`, { event_url: eventUrl });
  assert.ok(platform.component_appid, JSON.stringify(platform));
  browser = await launchBrowser();
  ui = await openConsole(browser, `${sandbox.sim}/_sim/console`);
});

after(async () => {
  if (ui) await ui.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (receiver) receiver.close();
  await stopSandbox(sandbox);
});

test('a platform: tickets, a merchant authorizing from the console, de-authorization, in Chinese too', async () => {
  const id = platform.component_appid;
  // The platform's server side, as WeChat's API sees it: a ticket, a component token, a page.
  const { ticket } = await post(`${sandbox.sim}/_sim/platforms/${id}/ticket`, {});
  const tok = await post(`${sandbox.sim}/cgi-bin/component/api_component_token`, {
    component_appid: id, component_appsecret: platform.secret, component_verify_ticket: ticket,
  });
  assert.ok(tok.component_access_token, JSON.stringify(tok));
  const pre = await post(`${sandbox.sim}/cgi-bin/component/api_create_preauthcode?component_access_token=${tok.component_access_token}`, { component_appid: id });
  assert.ok(pre.pre_auth_code.startsWith('preauthcode@@@'));
  await eventually(async () => received.length >= 2, { what: 'two ticket pushes received' });
  assert.ok(received.every((r) => r.body.includes('<AppId>') && r.url.includes('msg_signature=')));

  const { page } = ui;
  await page.click(tid('tab-platforms'));
  await page.waitForSelector('#tab-platforms.active');
  const card = page.locator(tid(`platform-${id}`));
  await card.waitFor();
  await eventually(async () => /ticket pushes: [2-9]/.test(await card.locator(tid('ticket-stats')).innerText()), { what: 'ticket pushes shown' });
  assert.match(await card.locator(tid('ticket-stats')).innerText(), /component tokens issued: 1/);

  // The merchant scans the page the platform opened.
  const form = card.locator(tid(`authorize-form-${id}`));
  assert.equal(await form.locator(tid('authorize-code')).inputValue(), pre.pre_auth_code);
  await form.locator(tid('authorize-app')).selectOption(apps.stable.appid);
  await form.locator(tid('authorize-submit')).click();
  const merchant = card.locator(tid(`merchant-${apps.stable.appid}`));
  await eventually(async () => (await merchant.locator(tid('merchant-status')).innerText()) === 'authorized', { what: 'the merchant authorized' });
  // The console's periodic refresh can show the merchant before the page's own answer (the
  // redirect) has come back: wait for the answer.
  await eventually(async () => (await card.locator(tid('authorize-result')).innerText()) !== '', { what: 'the redirect shown' });
  const result = await card.locator(tid('authorize-result')).innerText();
  assert.match(result, /^authorized · redirected to https:\/\/example\.com\/authorized\?auth_code=queryauthcode%40%40%40\w+&expires_in=600$/);
  // The code was used: no page is open any more.
  assert.equal(await card.locator(tid(`authorize-form-${id}`)).count(), 0);
  await eventually(async () => received.length >= 3, { what: 'the authorized push' });
  await shot(page, '30-platform-authorized');

  // An option set over WeChat's API, and an IP whitelist that shuts this machine out: both shown.
  const opt = await post(`${sandbox.sim}/cgi-bin/component/api_set_authorizer_option?component_access_token=${tok.component_access_token}`, {
    component_appid: id, authorizer_appid: apps.stable.appid, option_name: 'location_report', option_value: '2',
  });
  assert.equal(opt.errcode, 0, JSON.stringify(opt));
  await eventually(async () => (await merchant.locator(tid('merchant-options')).innerText()) === 'options: location_report=2', { what: 'the option shown' });
  assert.match(await card.locator(tid('ip-whitelist')).innerText(), /^IP whitelist: any address$/);
  const put = await fetch(`${sandbox.sim}/_sim/platforms/${id}/ip_whitelist`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ips: ['10.1.2.3'] }) });
  assert.equal(put.status, 200);
  const refused = await post(`${sandbox.sim}/cgi-bin/component/api_create_preauthcode?component_access_token=${tok.component_access_token}`, { component_appid: id });
  assert.equal(refused.errcode, 61004, JSON.stringify(refused));
  assert.match(refused.errmsg, /^access clientip is not registered requestIP: 127\.0\.0\.1 rid: /);
  await eventually(async () => (await card.locator(tid('ip-whitelist')).innerText()) === 'IP whitelist: 10.1.2.3', { what: 'the whitelist shown' });
  const lifted = await fetch(`${sandbox.sim}/_sim/platforms/${id}/ip_whitelist`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ips: null }) });
  assert.equal(lifted.status, 200);
  await eventually(async () => (await card.locator(tid('ip-whitelist')).innerText()) === 'IP whitelist: any address', { what: 'the whitelist lifted' });

  // De-authorization from the console.
  await merchant.locator(tid(`deauthorize-${apps.stable.appid}`)).click();
  await eventually(async () => (await merchant.locator(tid('merchant-status')).innerText()) === 'de-authorized', { what: 'the merchant de-authorized' });
  await eventually(async () => received.length >= 4, { what: 'the unauthorized push' });

  // A ticket on demand.
  const before = received.length;
  await card.locator(tid(`push-ticket-${id}`)).click();
  await eventually(async () => received.length > before, { what: 'a ticket pushed from the console' });

  // 中文.
  await page.click(tid('lang'));
  await eventually(async () => (await page.locator(tid('tab-platforms')).innerText()) === '第三方平台', { what: 'the tab in Chinese' });
  await eventually(async () => (await merchant.locator(tid('merchant-status')).innerText()) === '已取消授权', { what: 'the status in Chinese' });
  await shot(page, '31-platforms-zh');
  assert.deepEqual(ui.problems, []);
  assert.deepEqual(ui.foreign, []);
});
