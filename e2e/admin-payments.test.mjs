// The admin console's Payments tab, end to end, in Debian's Chromium: `weapp sim --real-time`
// (WeChat and WeChat Pay) and `weapp serve` with a [[merchants]] entry the simulator issued.
// A backend places orders through the API (its client key has pay:write), the "phone" pays them
// through /_sim/pay/request_payment, the simulator notifies the server; the console shows the
// orders and their states, the notifications with their attempts and decrypted resource, a
// mismatch as an alert, a probe counted as refused — in English and in Chinese. The merchants
// and reconciliation views are checked against the merchants API's documented shape (served by
// this server when it has that API, else stood in for by the browser). Screenshots land in
// target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BIN, launchBrowser, openConsole, shot, eventually } from './lib.mjs';

const APPID = 'wxadminpay0000001';
const SECRET = randomBytes(16).toString('hex');
const ADMIN_KEY = `admin-${randomBytes(12).toString('hex')}`;
const SHOP_KEY = `shop-${randomBytes(12).toString('hex')}`;
const OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o';
const tid = (s) => `[data-testid="${s}"]`;
// The browser logs every 4xx answer as a failed load: 404 is how an absent merchants API shows.
const noise = (problems) => problems.filter((p) => !/status of 404/.test(p));

let sim;
let server;
let dir;
let merchant;
let browser;
let ui;
const answers = [];

const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

/** Starts `weapp <args>`; resolves once `ready` matches its stdout. */
function start(args, ready, env = {}) {
  const child = spawn(BIN, args, { cwd: dir, env: { ...process.env, WEAPP_LOG: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`weapp ${args[0]} did not start:\n${out}\n${err}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`weapp ${args[0]} exited ${code}:\n${out}\n${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = ready.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    });
  });
}

async function stop(p) {
  if (!p || p.child.exitCode !== null) return;
  const exited = new Promise((resolve) => p.child.on('exit', resolve));
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

const call = async (method, url, { bearer, body } = {}) => {
  const headers = {};
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  if (bearer === ADMIN_KEY) answers.push(text);
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  return { status: r.status, body: json };
};

/** A backend placing an order through the service, and the phone paying it. */
async function orderAndPay(no, amount, beforePaying) {
  const { status, body: created } = await call('POST', `${server.url}/v1/apps/${APPID}/pay/orders`, {
    bearer: SHOP_KEY, body: { out_trade_no: no, description: 'A cup of tea', amount, openid: OPENID },
  });
  assert.equal(status, 200, JSON.stringify(created));
  if (beforePaying) beforePaying();
  const rp = created.request_payment;
  const { body: paid } = await call('POST', `${sim.url}/_sim/pay/request_payment`, {
    body: { appid: rp.appId, openid: OPENID, timeStamp: rp.timeStamp, nonceStr: rp.nonceStr, package: rp.package, signType: rp.signType, paySign: rp.paySign },
  });
  assert.equal(paid.errMsg, 'requestPayment:ok', JSON.stringify(paid));
}

/** The inbox row of `no` once applied (through the admin API). */
const applied = (no) => eventually(async () => {
  const { body } = await call('GET', `${server.url}/v1/admin/pay/notifications?limit=100`, { bearer: ADMIN_KEY });
  return body.notifications.find((n) => n.business_no === no && n.outcome !== 'pending');
}, { what: `the notification of ${no} applied` });

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'weapp-e2e-pay-'));
  sim = await start(['sim', '--real-time', '--listen', `127.0.0.1:${await freePort()}`, '--app', `${APPID}:${SECRET}`], /^(http:\/\/\S+)$/m);
  ({ body: merchant } = await call('POST', `${sim.url}/_sim/pay/merchants`, { body: { appids: [APPID] } }));
  assert.ok(merchant.mchid, JSON.stringify(merchant));
  const port = await freePort();
  const q = (s) => JSON.stringify(s);
  const config = path.join(dir, 'weapp.toml');
  writeFileSync(config, [
    `listen = "127.0.0.1:${port}"`,
    `database_url = ${q(`sqlite://${path.join(dir, 'weapp.db')}`)}`,
    `data_key = "${randomBytes(32).toString('base64')}"`,
    'webhook_allow_private = ["127.0.0.0/8"]',
    '', '[[apps]]', `appid = "${APPID}"`, `secret = "${SECRET}"`, `api_base = ${q(sim.url)}`,
    '', '[[clients]]', 'name = "shop"', `key = "${SHOP_KEY}"`, `apps = ["${APPID}"]`, 'scopes = ["pay:write"]',
    '', '[[admins]]', 'name = "ops"', `key = "${ADMIN_KEY}"`,
    '', '[[merchants]]', `mchid = "${merchant.mchid}"`, `appids = ["${APPID}"]`,
    `serial_no = ${q(merchant.merchant_serial_no)}`, `private_key = ${q(merchant.merchant_private_key)}`,
    `apiv3_key = ${q(merchant.apiv3_key)}`,
    ...(merchant.wechatpay_public_key ? [`public_key_id = ${q(merchant.wechatpay_public_key_id)}`, `public_key = ${q(merchant.wechatpay_public_key)}`] : ['platform_certificates = true']),
    `api_base = ${q(sim.url)}`,
    `notify_url = "http://127.0.0.1:${port}/v1/pay/${merchant.mchid}/notify"`, '',
  ].join('\n'));
  server = await start(['serve', '--config', config], /weapp-server listening on (\S+)/);
  browser = await launchBrowser();
  ui = await openConsole(browser, `${server.url}/admin`, { ready: 'body[data-ready="true"]' });
  ui.page.on('dialog', (d) => d.accept());
  await ui.page.fill(tid('key-input'), ADMIN_KEY);
  await ui.page.click(tid('key-submit'));
  await ui.page.waitForSelector('#main:not(.hidden)');
});

after(async () => {
  if (ui) await ui.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await stop(server);
  await stop(sim);
});

test('an order paid through the simulator shows in the console with its notification, in English and Chinese', async () => {
  const { page } = ui;
  await orderAndPay('console_0001', 980);
  const note = await applied('console_0001');
  assert.equal(note.outcome, 'applied');
  // An amount changed here after the order was placed: the notification disagrees (an alert).
  await orderAndPay('console_0002', 200, () => {
    execFileSync('python3', ['-c', `import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("UPDATE pay_orders SET amount=990 WHERE out_trade_no='console_0002'"); c.commit()`, path.join(dir, 'weapp.db')]);
  });
  assert.equal((await applied('console_0002')).outcome, 'mismatch');
  // A copy of the first (one more attempt), and a probe (refused, stored nowhere).
  for (const what of ['notify', 'probe']) {
    const { status } = await call('POST', `${sim.url}/_sim/pay/merchants/${merchant.mchid}/orders/console_0001/${what}`);
    assert.equal(status, 200);
  }
  await eventually(async () => (await applied('console_0001')).deliveries === 2, { what: 'the copy counted' });

  // Orders: the paid one and the mismatched one (not paid), newest first.
  await page.click(tid('tab-payments'));
  await page.waitForSelector('#tab-payments.active');
  await page.click(tid('ptab-orders'));
  const order = (no) => page.locator(`${tid('pay-order-row')}[data-no="${no}"]`);
  await eventually(async () => (await order('console_0001').count()) === 1, { what: 'the order listed' });
  assert.equal(await order('console_0001').locator(tid('order-state')).getAttribute('data-state'), 'SUCCESS');
  assert.equal(await order('console_0001').locator(tid('order-state')).innerText(), 'paid');
  assert.equal(await order('console_0001').locator(tid('order-amount')).innerText(), '¥9.80');
  assert.equal(await order('console_0002').locator(tid('order-state')).getAttribute('data-state'), 'NOTPAY');
  assert.deepEqual(await page.locator(tid('pay-order-row')).evaluateAll((rows) => rows.map((r) => r.dataset.no)), ['console_0002', 'console_0001']);
  // The mismatch is an alert above every view.
  await eventually(async () => /disagree/.test(await page.locator(tid('pay-alerts')).innerText()), { what: 'the alert banner' });
  await shot(page, 'admin-pay-01-orders');
  // The state filter.
  await page.selectOption(tid('po-state'), 'SUCCESS');
  await page.click(tid('po-load'));
  await eventually(async () => (await page.locator(tid('pay-order-row')).count()) === 1, { what: 'only the paid order' });
  assert.equal(await order('console_0001').count(), 1);
  await page.selectOption(tid('po-state'), '');

  // Notifications: outcome, attempts, the mismatch highlighted, the resource on demand.
  await page.click(tid('ptab-notifications'));
  const noteRow = (no) => page.locator(`${tid('pay-note-row')}[data-business="${no}"]`);
  await eventually(async () => (await noteRow('console_0001').count()) === 1, { what: 'the notification listed' });
  assert.equal(await noteRow('console_0001').locator(tid('note-outcome')).getAttribute('data-outcome'), 'applied');
  assert.equal(await noteRow('console_0001').locator(tid('note-attempts')).innerText(), '2');
  assert.equal(await noteRow('console_0002').locator(tid('note-outcome')).getAttribute('data-outcome'), 'mismatch');
  assert.match(await noteRow('console_0002').getAttribute('class'), /alert/);
  assert.match(await noteRow('console_0002').locator(tid('note-outcome')).innerText(), /MISMATCH/);
  await noteRow('console_0001').locator(tid('note-detail')).click();
  const resource = JSON.parse(await page.locator(tid('note-resource')).innerText());
  assert.equal(resource.out_trade_no, 'console_0001');
  assert.equal(resource.amount.total, 980);
  assert.equal(resource.trade_state, 'SUCCESS');
  // The probe: refused at the door, counted.
  const refused = await page.locator(tid('refused-row')).allInnerTexts();
  assert.ok(refused.some((r) => r.includes(merchant.mchid) && /refused/.test(r) && /\b1$/.test(r.trim())), refused.join(' | '));
  await shot(page, 'admin-pay-02-notifications');

  // 中文.
  await page.click(tid('lang'));
  await eventually(async () => (await page.locator(tid('tab-payments')).innerText()) === '微信支付', { what: 'Chinese labels' });
  await eventually(async () => (await noteRow('console_0002').locator(tid('note-outcome')).innerText()).includes('不一致'), { what: 'the outcome in Chinese' });
  assert.match(await page.locator(tid('pay-alerts')).innerText(), /不符/);
  await shot(page, 'admin-pay-03-notifications-zh');
  await page.click(tid('ptab-orders'));
  await eventually(async () => (await order('console_0001').locator(tid('order-state')).innerText()) === '已支付', { what: 'the state in Chinese' });
  await shot(page, 'admin-pay-04-orders-zh');
  await page.click(tid('lang'));
  await eventually(async () => (await page.locator(tid('tab-payments')).innerText()) === 'Payments', { what: 'English again' });

  // No key of the merchant's anywhere: not in what the admin API answered, not in the page.
  const seen = answers.join('\n') + await page.content();
  assert.ok(!seen.includes(merchant.apiv3_key), 'the APIv3 key');
  for (const line of merchant.merchant_private_key.split('\n').filter((l) => l.length > 40)) assert.ok(!seen.includes(line), 'the private key');
  assert.ok(!seen.includes(SHOP_KEY) && !seen.includes(ADMIN_KEY));
  assert.deepEqual(noise(ui.problems), []);
  assert.deepEqual(ui.foreign, []);
});

// The merchants API's documented shape, for when this server has no such API: the browser
// answers in its place (each a route of the page only).
const MERCHANTS = () => ({
  merchants: [
    { mchid: merchant.mchid, appids: [APPID], serial_no: merchant.merchant_serial_no, public_key_id: merchant.wechatpay_public_key_id, platform_certificates: false, api_base: sim.url, notify_url: 'https://pay.example.com/v1/pay/notify', source: 'config', created_at: Date.now() - 86_400_000, updated_at: Date.now() - 86_400_000 },
    { mchid: '1900000999', appids: ['wxother0000000001'], serial_no: 'ABC123', public_key_id: null, platform_certificates: true, api_base: 'https://api.mch.weixin.qq.com', notify_url: 'https://pay.example.com/v1/pay/1900000999/notify', source: 'admin', created_at: Date.now(), updated_at: Date.now() },
  ],
});
const REPORT = { mchid: '1900000999', bill_date: '2026-12-01', status: 'done', bill_rows: 3, discrepancies: 2, created_at: Date.now() };

test('merchants and reconciliation reports show as the merchants API describes them; a merchant form sends the config names', async () => {
  const { page } = ui;
  const { status } = await call('GET', `${server.url}/v1/admin/merchants`, { bearer: ADMIN_KEY });
  await page.click(tid('ptab-merchants'));
  if (status === 404) {
    // Without the merchants API: said plainly, and no form to fill in vain.
    await page.waitForSelector(`${tid('pay-merchants-unavailable')}:not(.hidden)`);
    assert.match(await page.locator(tid('pay-merchants-unavailable')).innerText(), /\[\[merchants\]\]/);
    assert.ok(!(await page.locator(tid('merchant-form')).isVisible()));
    await shot(page, 'admin-pay-05-merchants-unavailable');
  }
  const posted = [];
  await page.route('**/v1/admin/merchants', (route) => {
    if (route.request().method() === 'POST') {
      posted.push(route.request().postDataJSON());
      return route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify({ ...MERCHANTS().merchants[1], mchid: '1900000777' }) });
    }
    return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(MERCHANTS()) });
  });
  await page.route('**/v1/admin/merchants/1900000999/reconciliations', (route) => route.fulfill({
    status: 200, contentType: 'application/json', body: JSON.stringify({ reports: [REPORT, { ...REPORT, bill_date: '2026-11-30', discrepancies: 0 }] }),
  }));
  await page.route('**/v1/admin/merchants/1900000999/reconciliations/2026-12-01', (route) => route.fulfill({
    status: 200, contentType: 'application/json', body: JSON.stringify({ ...REPORT, items: [
      { kind: 'missing_here', out_trade_no: 'paid_elsewhere_1', here: null, there: { amount: 500, state: 'SUCCESS' } },
      { kind: 'amount_differs', out_trade_no: 'console_0002', here: { amount: 990 }, there: { amount: 200 } },
    ] }),
  }));
  await page.click(tid('ptab-orders'));
  await page.click(tid('ptab-merchants'));
  const row = (m) => page.locator(`${tid('merchant-row')}[data-mchid="${m}"]`);
  await eventually(async () => (await row('1900000999').count()) === 1, { what: 'the merchants listed' });
  assert.equal(await row(merchant.mchid).locator(tid('merchant-edit')).count(), 0, "a configuration file's merchant is not changed here");
  assert.match(await row(merchant.mchid).innerText(), /configuration file/);
  assert.equal(await row('1900000999').locator(tid('merchant-edit')).count(), 1);
  // A new merchant: the config's names; the keys leave the form once sent.
  await page.fill(tid('m-mchid'), '1900000777');
  await page.fill(tid('m-appids'), 'wxnew0000000001, wxnew0000000002');
  await page.fill(tid('m-serial_no'), 'SERIAL777');
  await page.fill(tid('m-private_key'), '-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----');
  await page.fill(tid('m-apiv3_key'), 'k'.repeat(32));
  await page.fill(tid('m-notify_url'), 'https://pay.example.com/v1/pay/1900000777/notify');
  await page.click(tid('merchant-submit'));
  await eventually(async () => posted.length === 1, { what: 'the merchant sent' });
  assert.deepEqual(posted[0], {
    mchid: '1900000777', appids: ['wxnew0000000001', 'wxnew0000000002'], serial_no: 'SERIAL777',
    private_key: '-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----', apiv3_key: 'k'.repeat(32),
    notify_url: 'https://pay.example.com/v1/pay/1900000777/notify', platform_certificates: false,
  });
  await eventually(async () => (await page.inputValue(tid('m-apiv3_key'))) === '' && (await page.inputValue(tid('m-private_key'))) === '', { what: 'the keys cleared' });
  await shot(page, 'admin-pay-06-merchants');

  // Reconciliation: the reports, discrepancies highlighted, the items of one.
  await page.click(tid('ptab-reconciliations'));
  await page.fill(tid('rc-mchid'), '1900000999');
  await page.click(tid('rc-load'));
  const report = page.locator(`${tid('recon-row')}[data-date="2026-12-01"]`);
  await report.waitFor();
  assert.match(await report.getAttribute('class'), /alert/);
  assert.equal(await report.locator(tid('recon-discrepancies')).innerText(), '2');
  await report.locator(tid('recon-detail')).click();
  const items = await eventually(async () => {
    const rows = await page.locator(tid('recon-item')).allInnerTexts();
    return rows.length === 2 ? rows : null;
  }, { what: 'the report items' });
  assert.match(items[0], /missing here/);
  assert.match(items[1], /amount differs/);
  await shot(page, 'admin-pay-07-reconciliation');
  await page.click(tid('lang'));
  await eventually(async () => (await page.locator(tid('ptab-reconciliations')).innerText()) === '对账', { what: 'Chinese' });
  await report.waitFor();
  await report.locator(tid('recon-detail')).click();
  await eventually(async () => (await page.locator(tid('recon-item')).allInnerTexts()).some((r) => r.includes('本服务缺少')), { what: 'the kinds in Chinese' });
  await shot(page, 'admin-pay-08-reconciliation-zh');
  await page.click(tid('lang'));
  await page.unrouteAll();
  assert.deepEqual(noise(ui.problems), []);
});
