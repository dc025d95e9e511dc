// The sandbox's payment journey, end to end, in Debian's Chromium against `weapp serve --sandbox`
// with nothing set up: the sandbox prints each app's simulator merchant; on the console's phone
// the user signs in (wx.login → the server), taps "request payment" — the pre-filled backend
// request goes to the server's demo shop, which places the order through the payments domain —
// the payment sheet shows the shop's price and merchant, Pay; the simulator notifies the server;
// the console's Payments tab shows the order paid and the notification delivered; and the
// admin console shows the app's TRANSACTION.SUCCESS event. Screenshots land in target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  sandboxConfig, startSandbox, stopSandbox, launchBrowser, openConsole, shot, eventually,
} from './lib.mjs';

const apps = sandboxConfig();
const tid = (s) => `[data-testid="${s}"]`;
let sandbox;
let browser;
let phone;
let admin;
const merchants = {};

before(async () => {
  sandbox = await startSandbox(apps);
  for (const m of sandbox.stdout().matchAll(/^ {2}WeChat Pay merchant of (\S+): (\d+) /gm)) merchants[m[1]] = m[2];
  browser = await launchBrowser();
  phone = await openConsole(browser, sandbox.console);
});

after(async () => {
  for (const ui of [phone, admin]) if (ui) await ui.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await stopSandbox(sandbox);
});

test('the sandbox prints a simulator merchant for each app, known to its simulator', async () => {
  assert.deepEqual(Object.keys(merchants).sort(), [apps.stable.appid, apps.classic.appid].sort(), sandbox.stdout());
  assert.notEqual(merchants[apps.stable.appid], merchants[apps.classic.appid]);
  const { merchants: atSim } = await (await fetch(`${sandbox.sim}/_sim/pay/merchants`)).json();
  for (const [appid, mchid] of Object.entries(merchants)) {
    const m = atSim.find((x) => x.mchid === mchid);
    assert.ok(m, `${mchid} at the simulator`);
    assert.deepEqual(m.appids, [appid]);
  }
  // Its keys stay in the server: the banner names no key.
  assert.doesNotMatch(sandbox.stdout(), /PRIVATE KEY/);
});

test('the phone buys from the demo shop, pays on the sheet, and the event shows in the admin console', async () => {
  const { page } = phone;
  const appid = apps.stable.appid;
  const mchid = merchants[appid];
  await page.selectOption(tid('app-select'), appid);
  await eventually(async () => (await page.locator(tid('app-select')).inputValue()) === appid, { what: 'app selected' });
  const before = await page.locator(`${tid('user-select')} option`).allInnerTexts();
  await page.click(tid('create-user'));
  await eventually(async () => {
    const now = await page.locator(`${tid('user-select')} option`).allInnerTexts();
    return now.some((o) => o.startsWith('o') && !before.includes(o));
  }, { what: 'the new user' });
  const openid = await page.locator(tid('user-select')).inputValue();
  // The sandbox pre-filled the phone's pay request: the server's demo shop.
  assert.equal(await page.locator(tid('backend-pay-path')).inputValue(), '/v1/sandbox/shop/{{appid}}/buy');
  // Sign in: the session token the shop knows the buyer by.
  await page.click(tid('wx-login'));
  await eventually(async () => {
    const s = JSON.parse(await page.locator(tid('storage')).innerText());
    return s.token && s.openid === openid;
  }, { what: 'the session on the phone' });

  await page.click(tid('request-payment'));
  const sheet = page.locator(tid('pay-sheet'));
  await sheet.waitFor({ state: 'visible' });
  assert.equal(await sheet.locator(tid('pay-sheet-amount')).innerText(), '¥9.90');
  assert.equal(await sheet.locator(tid('pay-sheet-merchant')).innerText(), `weapp sandbox shop (${mchid})`);
  const outTradeNo = await sheet.locator(tid('pay-sheet-order')).innerText();
  assert.match(outTradeNo, /^sbx\d+[0-9a-f]{8}$/);
  assert.match(await page.locator(tid('pay-sheet-title')).innerText(), /request_payment/);
  await shot(page, '50-shop-pay-sheet');
  await sheet.locator(tid('pay-sheet-pay')).click();
  await eventually(async () => (await page.locator(tid('pay-errmsg')).innerText().catch(() => '')) === 'requestPayment:ok', { what: 'requestPayment:ok' });

  // The simulator's side: the order paid, its notification delivered to the server.
  await page.click(tid('tab-payments'));
  const card = page.locator(tid(`pay-merchant-${mchid}`));
  await card.waitFor();
  await eventually(async () => (await card.locator(`${tid(`order-${outTradeNo}`)} ${tid('trade-state')}`).innerText().catch(() => '')) === 'SUCCESS', { what: 'the order SUCCESS' });
  const note = card.locator(`${tid(`pay-notifications-${mchid}`)} tr[data-testid^="notification-"]`).first();
  await eventually(async () => (await note.locator(tid('notification-status')).innerText()) === 'delivered', { what: 'the notification delivered' });
  assert.match(await note.locator(tid('notification-attempts')).innerText(), /^1: 204 @/);
  await shot(page, '51-shop-paid');
  assert.deepEqual(phone.problems, []);

  // The server's side, in the admin console: the app's event.
  admin = await openConsole(browser, sandbox.admin);
  const a = admin.page;
  await a.fill(tid('key-input'), sandbox.adminKey);
  await a.click(tid('key-submit'));
  await a.waitForSelector('#main:not(.hidden)');
  await a.click(tid('tab-events'));
  await a.waitForSelector('#tab-events.active');
  await a.selectOption(tid('ev-app'), appid);
  const row = a.locator(tid('event-row'), { hasText: 'TRANSACTION.SUCCESS' });
  await eventually(async () => {
    await a.click(tid('ev-load'));
    return (await row.count()) === 1;
  }, { what: 'the TRANSACTION.SUCCESS event in the admin console' });
  await shot(a, '52-shop-event');
  // One event, the decrypted transaction, for this user and this order.
  const r = await fetch(`${sandbox.server}/v1/apps/${appid}/events`, { headers: { authorization: `Bearer ${sandbox.clientKey}` } });
  const { events } = await r.json();
  const paid = events.filter((e) => e.type === 'TRANSACTION.SUCCESS');
  assert.equal(paid.length, 1, JSON.stringify(events));
  assert.equal(paid[0].payload.out_trade_no, outTradeNo);
  assert.equal(paid[0].payload.mchid, mchid);
  assert.equal(paid[0].payload.amount.total, 990);
  assert.equal(paid[0].payload.payer.openid, openid);
  // The order as the payments API shows it.
  const o = await fetch(`${sandbox.server}/v1/apps/${appid}/pay/orders/${outTradeNo}`, { headers: { authorization: `Bearer ${sandbox.clientKey}` } });
  assert.equal((await o.json()).state, 'SUCCESS');
  assert.deepEqual(admin.problems, []);
});
