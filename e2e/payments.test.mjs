// The console's Payments tab, end to end, in Debian's Chromium against `weapp serve --sandbox`:
// a WeChat Pay merchant issued over the control API, an order placed with a signed /v3 call
// (node's own RSA), paid through /_sim/pay/request_payment, its notification refused once then
// acknowledged (two attempts shown), a refund ended from the console, delivery switched off, and
// the tab in Chinese; the day's bill in the tab; and the phone paying: its backend request
// template sent to a backend of the test's (which places the order with a signed /v3 call and
// answers the five wx.requestPayment parameters), the payment sheet, Pay and Cancel.
// Screenshots land in target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import {
  sandboxConfig, startSandbox, stopSandbox, launchBrowser, openConsole, shot, eventually,
} from './lib.mjs';

const apps = sandboxConfig();
const tid = (s) => `[data-testid="${s}"]`;
const APPID = 'wx1111111111111111';
const OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o';
let sandbox;
let browser;
let ui;
let receiver;
const received = [];
let merchant;
// The phone's merchant (bound to a sandbox app) and the mini program's backend.
let shop;
let backend;
const backendBodies = [];

const control = async (method, url, body) => {
  const r = await fetch(url, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return r.json();
};

/** A signed /v3 call as the merchant (the wall clock: the sandbox's simulator runs in real time). */
const v3 = async (method, path, body, m = merchant) => {
  const text = body === undefined ? '' : JSON.stringify(body);
  const ts = Math.floor(Date.now() / 1000);
  const nonce = crypto.randomBytes(16).toString('hex');
  const signature = crypto.createSign('RSA-SHA256').update(`${method}\n${path}\n${ts}\n${nonce}\n${text}\n`).sign(m.merchant_private_key, 'base64');
  const auth = `WECHATPAY2-SHA256-RSA2048 mchid="${m.mchid}",nonce_str="${nonce}",timestamp="${ts}",serial_no="${m.merchant_serial_no}",signature="${signature}"`;
  const r = await fetch(`${sandbox.sim}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json', accept: 'application/json' }, body: text || undefined });
  return { status: r.status, json: await r.json().catch(() => null) };
};

before(async () => {
  sandbox = await startSandbox(apps);
  // The merchant's notify URL: refuses the first notification, acknowledges the rest.
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      received.push(body);
      res.statusCode = received.length === 1 ? 500 : 204;
      res.end(received.length === 1 ? '{"code":"FAIL","message":"busy"}' : '');
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  merchant = await control('POST', `${sandbox.sim}/_sim/pay/merchants`, { appids: [APPID] });
  assert.ok(merchant.mchid, JSON.stringify(merchant));
  browser = await launchBrowser();
  ui = await openConsole(browser, `${sandbox.sim}/_sim/console`);
});

after(async () => {
  if (ui) await ui.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (receiver) receiver.close();
  if (backend) backend.close();
  await stopSandbox(sandbox);
});

test('payments: an order paid and notified with its attempts, a refund ended from the console, in Chinese too', async () => {
  const notifyUrl = `http://127.0.0.1:${receiver.address().port}/pay/notify`;
  const prepay = await v3('POST', '/v3/pay/transactions/jsapi', {
    appid: APPID, mchid: merchant.mchid, description: 'e2e', out_trade_no: 'e2e_order_1',
    notify_url: notifyUrl, amount: { total: 100, currency: 'CNY' }, payer: { openid: OPENID },
  });
  assert.equal(prepay.status, 200, JSON.stringify(prepay.json));
  const pkg = `prepay_id=${prepay.json.prepay_id}`;
  const ts = String(Math.floor(Date.now() / 1000));
  const nonce = 'e2e0nonce';
  const paySign = crypto.createSign('RSA-SHA256').update(`${APPID}\n${ts}\n${nonce}\n${pkg}\n`).sign(merchant.merchant_private_key, 'base64');
  const paid = await control('POST', `${sandbox.sim}/_sim/pay/request_payment`, {
    appid: APPID, openid: OPENID, timeStamp: ts, nonceStr: nonce, package: pkg, signType: 'RSA', paySign,
  });
  assert.equal(paid.errMsg, 'requestPayment:ok');
  await eventually(async () => received.length >= 1, { what: 'the first notification (refused)' });

  const { page } = ui;
  await page.click(tid('tab-payments'));
  await page.waitForSelector('#tab-payments.active');
  const card = page.locator(tid(`pay-merchant-${merchant.mchid}`));
  await card.waitFor();
  const order = card.locator(tid('order-e2e_order_1'));
  await eventually(async () => (await order.locator(tid('trade-state')).innerText()) === 'SUCCESS', { what: 'the order SUCCESS' });
  const note = card.locator(`${tid(`pay-notifications-${merchant.mchid}`)} tr[data-testid^="notification-"]`).first();
  await eventually(async () => /^1: 500 @/.test(await note.locator(tid('notification-attempts')).innerText()), { what: 'the refused attempt shown' });
  await shot(page, '40-payments-refused');

  // The retry is 15 s later on the simulator's clock: move it.
  await control('POST', `${sandbox.sim}/_sim/clock`, { advance_secs: 15 });
  await eventually(async () => received.length >= 2, { what: 'the retry (acknowledged)' });
  await eventually(async () => (await note.locator(tid('notification-status')).innerText()) === 'delivered', { what: 'delivered shown' });
  assert.match(await note.locator(tid('notification-attempts')).innerText(), /^2: 500 @ .* · 204 @ /);

  // A refund, ended from the console.
  const refund = await v3('POST', '/v3/refund/domestic/refunds', {
    out_trade_no: 'e2e_order_1', out_refund_no: 'e2e_refund_1', notify_url: notifyUrl, amount: { refund: 40, total: 100, currency: 'CNY' },
  });
  assert.equal(refund.status, 200, JSON.stringify(refund.json));
  const row = card.locator(tid('refund-e2e_refund_1'));
  await eventually(async () => (await row.locator(tid('refund-status')).innerText()) === 'PROCESSING', { what: 'the refund processing' });
  await row.locator(tid('abnormal-e2e_refund_1')).click();
  await eventually(async () => (await row.locator(tid('refund-status')).innerText()) === 'ABNORMAL', { what: 'the refund abnormal' });
  await eventually(async () => received.some((b) => b.includes('"REFUND.ABNORMAL"')), { what: 'REFUND.ABNORMAL delivered' });
  assert.equal((await v3('GET', '/v3/refund/domestic/refunds/e2e_refund_1')).json.status, 'ABNORMAL');
  await shot(page, '41-payments-refund');

  // Delivery off from the console.
  await card.locator(tid(`toggle-delivery-${merchant.mchid}`)).click();
  await eventually(async () => /^delivery off/.test(await card.locator(tid('pay-delivery')).innerText()), { what: 'delivery off shown' });
  const merchants = await control('GET', `${sandbox.sim}/_sim/pay/merchants`);
  assert.equal(merchants.merchants.find((m) => m.mchid === merchant.mchid).deliver, false);

  // 中文.
  await page.click(tid('lang'));
  await eventually(async () => (await page.locator(tid('tab-payments')).innerText()) === '支付', { what: 'the tab in Chinese' });
  await eventually(async () => (await note.locator(tid('notification-status')).innerText()) === '已送达', { what: 'the status in Chinese' });
  await shot(page, '42-payments-zh');
  assert.deepEqual(ui.problems, []);
});

test('payments: the day\'s bill of a merchant with orders, in the Payments tab', async () => {
  const { page } = ui;
  await page.click(tid('tab-payments'));
  const card = page.locator(tid(`pay-merchant-${merchant.mchid}`));
  await card.waitFor();
  await card.locator(tid(`bill-show-${merchant.mchid}`)).click();
  const bill = card.locator(tid(`bill-${merchant.mchid}`));
  await bill.waitFor();
  const rows = bill.locator('tr[data-testid="bill-row"]');
  await eventually(async () => (await rows.count()) >= 1, { what: 'the bill rows' });
  const text = await rows.first().innerText();
  assert.match(text, /e2e_order_1/);
  assert.match(text, /1\.00/);
  const hash = await bill.locator(tid('bill-hash')).innerText();
  assert.match(hash, /^[0-9a-f]{40}$/);
  // The same bill over the control API (what the tab shows).
  const date = await card.locator(tid(`bill-date-${merchant.mchid}`)).inputValue();
  const api = await control('GET', `${sandbox.sim}/_sim/pay/merchants/${merchant.mchid}/bills?kind=trade&bill_date=${date}`);
  assert.equal(api.hash_value, hash);
  assert.equal(api.ready, false, 'today\'s bill is not downloadable yet');
  // The fund-flow bill of the same day: the payment in.
  await card.locator(tid(`bill-kind-${merchant.mchid}`)).selectOption('fundflow');
  await card.locator(tid(`bill-show-${merchant.mchid}`)).click();
  await eventually(async () => /e2e_order_1/.test(await card.locator(tid(`bill-${merchant.mchid}`)).innerText())
    && (await card.locator(tid(`bill-${merchant.mchid}`)).innerText()).includes('收入'), { what: 'the fund-flow bill' });
  await shot(page, '43-payments-bill');
  assert.deepEqual(ui.problems, []);
});

test('payments: the phone pays through its backend request template, the sheet, Pay and Cancel', async () => {
  const appid = apps.stable.appid;
  const openid = 'oE2ePhonePayer0000000000001';
  shop = await control('POST', `${sandbox.sim}/_sim/pay/merchants`, { appids: [appid], name: 'E2E 小店' });
  assert.ok(shop.mchid, JSON.stringify(shop));
  // The mini program's backend: places the order with a signed /v3 call and answers the five
  // parameters (under "request_payment" the first time, at the top level the second).
  let orders = 0;
  backend = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', async () => {
      try {
        backendBodies.push({ path: req.url, body });
        const asked = JSON.parse(body);
        orders += 1;
        const total = orders === 1 ? 990 : 1234;
        const prepay = await v3('POST', '/v3/pay/transactions/jsapi', {
          appid: asked.appid, mchid: shop.mchid, description: `e2e phone order ${orders}`, out_trade_no: `e2e_phone_${orders}`,
          notify_url: 'http://127.0.0.1:9/pay/notify', amount: { total, currency: 'CNY' }, payer: { openid: asked.openid },
        }, shop);
        if (prepay.status !== 200) throw new Error(JSON.stringify(prepay.json));
        const params = { timeStamp: String(Math.floor(Date.now() / 1000)), nonceStr: crypto.randomBytes(12).toString('hex'), package: `prepay_id=${prepay.json.prepay_id}`, signType: 'RSA' };
        params.paySign = crypto.createSign('RSA-SHA256').update(`${asked.appid}\n${params.timeStamp}\n${params.nonceStr}\n${params.package}\n`).sign(shop.merchant_private_key, 'base64');
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(orders === 1 ? { out_trade_no: `e2e_phone_${orders}`, request_payment: params } : params));
      } catch (err) {
        res.statusCode = 500;
        res.end(JSON.stringify({ error: String(err.message || err) }));
      }
    });
  });
  await new Promise((r) => backend.listen(0, '127.0.0.1', r));

  const { page } = ui;
  await page.click(tid('tab-phone'));
  await page.locator(tid('app-select')).selectOption(appid);
  await page.fill(tid('new-openid'), openid);
  await page.click(tid('create-user'));
  await eventually(async () => (await page.locator(tid('phone-user')).innerText()) === openid, { what: 'the new user on the phone' });
  // The backend's pay request template.
  await page.fill(tid('backend-url'), `http://127.0.0.1:${backend.address().port}`);
  await page.fill(tid('backend-pay-path'), '/pay/orders');
  await page.fill(tid('backend-pay-body'), '{"appid": "{{appid}}", "openid": "{{openid}}"}');
  await page.fill(tid('backend-pay-headers'), '{}');
  await page.click(tid('backend-save'));
  await eventually(async () => {
    const { backend: saved } = await control('GET', `${sandbox.sim}/_sim/apps/${appid}/backend`);
    return saved && saved.pay && saved.pay.path === '/pay/orders';
  }, { what: 'the pay template saved' });

  // Pay.
  await page.click(tid('request-payment'));
  const sheet = page.locator(tid('pay-sheet'));
  await sheet.waitFor({ state: 'visible' });
  assert.equal(await sheet.locator(tid('pay-sheet-amount')).innerText(), '¥9.90');
  assert.equal(await sheet.locator(tid('pay-sheet-merchant')).innerText(), `E2E 小店 (${shop.mchid})`);
  assert.equal(await sheet.locator(tid('pay-sheet-order')).innerText(), 'e2e_phone_1');
  assert.match(await page.locator(tid('pay-sheet-title')).innerText(), /request_payment/);
  await shot(page, '44-phone-pay-sheet');
  await sheet.locator(tid('pay-sheet-pay')).click();
  await eventually(async () => (await page.locator(tid('pay-errmsg')).innerText().catch(() => '')) === 'requestPayment:ok', { what: 'requestPayment:ok on the phone' });
  await sheet.waitFor({ state: 'hidden' });
  assert.deepEqual(JSON.parse(backendBodies[0].body), { appid, openid });

  // Cancel a second order.
  await page.click(tid('request-payment'));
  await sheet.waitFor({ state: 'visible' });
  assert.equal(await sheet.locator(tid('pay-sheet-amount')).innerText(), '¥12.34');
  await sheet.locator(tid('pay-sheet-cancel')).click();
  await eventually(async () => (await page.locator(tid('pay-errmsg')).innerText().catch(() => '')) === 'requestPayment:fail cancel', { what: 'requestPayment:fail cancel on the phone' });
  await shot(page, '45-phone-pay-cancelled');

  // The Payments tab: the first order paid, the second still unpaid.
  await page.click(tid('tab-payments'));
  const card = page.locator(tid(`pay-merchant-${shop.mchid}`));
  await card.waitFor();
  await eventually(async () => (await card.locator(`${tid('order-e2e_phone_1')} ${tid('trade-state')}`).innerText().catch(() => '')) === 'SUCCESS', { what: 'the paid order SUCCESS' });
  await eventually(async () => (await card.locator(`${tid('order-e2e_phone_2')} ${tid('trade-state')}`).innerText().catch(() => '')) === 'NOTPAY', { what: 'the cancelled order NOTPAY' });
  await shot(page, '46-payments-phone-orders');
  assert.equal(orders, 2);
  assert.deepEqual(ui.problems, []);
});
