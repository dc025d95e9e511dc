// Runs the Express example against a real `weapp serve --sandbox` (weapp-server with its
// built-in WeChat simulator): login through weapp-server, access tokens verified by Express
// alone (and refused when forged, expired, for another app or from another issuer), refresh
// and logout, signed webhooks of a real push, a subscribe message sent with a broker token, and
// a WeChat Pay order placed, paid and refunded (TRANSACTION.SUCCESS, REFUND.SUCCESS as webhooks).
// WEAPP_BIN names the weapp binary (default: target/debug/weapp of this repository).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createApp } from '../app.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const APPID = 'wxexpressexample1';
const ISSUER = 'https://login.example.test';
const WEBHOOK_SECRET = 'express-example-webhook-secret';
let weapp, sim, clientKey, adminKey, server, app, listener, expressUrl;

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const post = (url, body, headers = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

before(async () => {
  const [weappPort, expressPort] = [await freePort(), await freePort()];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'weapp-express-'));
  const aes = crypto.randomBytes(32).toString('base64').replace(/=+$/, '');
  fs.writeFileSync(
    path.join(work, 'weapp.toml'),
    `access_token_ttl_secs = 5
access_token_issuer = "${ISSUER}"
signing_key_publish_ahead_secs = 4
webhook_retry_base_ms = 100
webhook_allow_private = ["127.0.0.1"]

[[apps]]
appid = "${APPID}"
secret = "express-example-app-secret"

[apps.push]
token = "expressexample"
encoding_aes_key = "${aes}"
webhook_url = "http://127.0.0.1:${expressPort}/webhooks/weapp"
webhook_secret = "${WEBHOOK_SECRET}"
`,
  );
  const bin = process.env.WEAPP_BIN ?? path.join(root, 'target', 'debug', 'weapp');
  server = spawn(bin, ['serve', '--sandbox', '--config', path.join(work, 'weapp.toml'),
    '--listen', `127.0.0.1:${weappPort}`, '--database-url', `sqlite://${work}/weapp.db`],
  { env: { ...process.env, WEAPP_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  server.stdout.on('data', (d) => { out += d; });
  for (let i = 0; i < 200 && !out.includes('listening'); i++) await sleep(50);
  sim = out.match(/^sandbox WeChat simulator: (\S+)/m)[1];
  clientKey = out.match(/^ {2}broker client key: (\S+)/m)[1];
  adminKey = out.match(/^ {2}admin key: (\S+)/m)[1];
  weapp = `http://127.0.0.1:${weappPort}`;
  app = createApp({ weappUrl: weapp, appid: APPID, issuer: ISSUER, clientKey, webhookSecret: WEBHOOK_SECRET, wechatApi: sim, jwksCacheMs: 2000 });
  listener = app.listen(expressPort, '127.0.0.1');
  expressUrl = `http://127.0.0.1:${expressPort}`;
});

after(() => {
  listener?.close();
  server?.kill();
});

// What the mini program does: wx.login() (here: the simulator), then POST /v1/login.
async function login() {
  const code = await (await post(`${sim}/_sim/login`, { appid: APPID })).json();
  const r = await post(`${weapp}/v1/login`, { appid: APPID, code: code.code });
  assert.equal(r.status, 200);
  return { ...(await r.json()), openid: code.openid };
}

const profile = (token, base = expressUrl) =>
  fetch(`${base}/api/profile`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });

test('access tokens verify alone and forgeries do not', async () => {
  const s = await login();
  const r = await profile(s.access_token);
  assert.equal(r.status, 200);
  const me = await r.json();
  assert.equal(me.openid, s.openid);
  assert.equal(me.appid, APPID);

  assert.equal((await profile()).status, 401);
  assert.equal((await profile(s.token)).status, 401); // the opaque session token is no JWT
  const [head, payload, sig] = s.access_token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url'));
  claims.openid = claims.sub = 'someone-else';
  const forged = Buffer.from(JSON.stringify(claims)).toString('base64url');
  assert.equal((await profile(`${head}.${forged}.${sig}`)).status, 401);
  const none = Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url');
  assert.equal((await profile(`${none}.${payload}.`)).status, 401);
});

test('audience and issuer are enforced', async () => {
  const s = await login();
  for (const options of [{ appid: 'wxanotherapp0001', issuer: ISSUER }, { appid: APPID, issuer: 'https://impostor.test' }]) {
    const other = createApp({ weappUrl: weapp, ...options }).listen(0, '127.0.0.1');
    await new Promise((r) => other.once('listening', r));
    const r = await profile(s.access_token, `http://127.0.0.1:${other.address().port}`);
    other.close();
    assert.equal(r.status, 401, JSON.stringify(options));
  }
});

test('expired tokens are refused, and refresh lasts until logout', async () => {
  const s = await login();
  assert.equal((await profile(s.access_token)).status, 200);
  await sleep((s.access_token_expires_at - Date.now() / 1000 + 1.5) * 1000); // the test server's ttl: 5 s
  const r = await profile(s.access_token);
  assert.equal(r.status, 401);
  assert.match((await r.json()).error.message, /ERR_JWT_EXPIRED/);

  const session = { authorization: `Bearer ${s.token}` };
  const fresh = await fetch(`${weapp}/v1/session/refresh`, { method: 'POST', headers: session });
  assert.equal(fresh.status, 200);
  assert.equal((await profile((await fresh.json()).access_token)).status, 200);
  assert.equal((await fetch(`${weapp}/v1/logout`, { method: 'POST', headers: session })).status, 204);
  assert.equal((await fetch(`${weapp}/v1/session/refresh`, { method: 'POST', headers: session })).status, 401);
});

test('webhooks of a real push arrive signed, and forgeries are refused', async () => {
  const s = await login();
  const r = await post(`${sim}/_sim/user-message`, { appid: APPID, openid: s.openid, kind: 'text', content: 'hello from the phone' });
  assert.equal(r.status, 200);
  let got = [];
  for (let i = 0; i < 100 && got.length === 0; i++) {
    got = app.locals.events.filter((e) => JSON.stringify(e).includes('hello from the phone'));
    if (got.length === 0) await sleep(100);
  }
  assert.equal(got.length, 1);
  assert.equal(got[0].appid, APPID);

  const body = JSON.stringify({ id: 999999, appid: APPID, type: 'text', payload: {} });
  const hook = `${expressUrl}/webhooks/weapp`;
  const now = Math.floor(Date.now() / 1000);
  const send = (sig) => fetch(hook, { method: 'POST', headers: { 'content-type': 'application/json', ...(sig ? { 'weapp-signature': sig } : {}) }, body });
  assert.equal((await send(`t=${now},v1=${'0'.repeat(64)}`)).status, 401);
  assert.equal((await send()).status, 401);
  const old = now - 3600;
  const mac = crypto.createHmac('sha256', WEBHOOK_SECRET).update(`${old}.${body}`).digest('hex');
  assert.equal((await send(`t=${old},v1=${mac}`)).status, 401);
  const good = crypto.createHmac('sha256', WEBHOOK_SECRET).update(`${now}.${body}`).digest('hex');
  assert.equal((await send(`t=${now},v1=${good}`)).status, 204);
});

test('a subscribe message goes out with a broker token', async () => {
  const s = await login();
  // The backend picks a template from the public library, as it would in production.
  const token = await (await fetch(`${weapp}/v1/apps/${APPID}/access_token`, { headers: { authorization: `Bearer ${clientKey}` } })).json();
  const added = await (await post(`${sim}/wxaapi/newtmpl/addtemplate?access_token=${token.access_token}`, { tid: '1001', kidList: [2, 3], sceneDesc: 'delivery' })).json();
  assert.equal(added.errcode, 0);
  const { templates } = await (await fetch(`${sim}/_sim/apps/${APPID}/templates`)).json();
  const t = templates.find((x) => x.priTmplId === added.priTmplId);
  const keys = [...t.content.matchAll(/\{\{(\w+)\.DATA\}\}/g)].map((m) => m[1]);
  const examples = t.example.trim().split('\n').map((l) => l.slice(l.indexOf(':') + 1));
  const data = Object.fromEntries(keys.map((k, i) => [k, { value: examples[i] }]));
  const grant = await post(`${sim}/_sim/subscribe-grant`, { appid: APPID, openid: s.openid, template_id: t.priTmplId });
  assert.equal(grant.status, 200);

  const auth = { authorization: `Bearer ${s.access_token}` };
  const r = await post(`${expressUrl}/api/notify`, { template_id: t.priTmplId, data }, auth);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).errcode, 0);
  const { messages } = await (await fetch(`${sim}/_sim/messages?appid=${APPID}&openid=${s.openid}`)).json();
  assert.ok(messages.some((m) => m.template_id === t.priTmplId), JSON.stringify(messages));
  const again = await post(`${expressUrl}/api/notify`, { template_id: t.priTmplId, data }, auth);
  assert.equal(again.status, 502);
  assert.equal((await again.json()).errcode, 43101);
});

test('a key rotation is followed, and old tokens keep verifying', async () => {
  // The next key is published before it signs (4 s here, 600 by default) and the backend's JWKS
  // cache is shorter (2 s here, 5 min by default): the backend knows the key before it meets it,
  // with jose's refetch cool-down intact.
  const first = await login();
  assert.equal((await profile(first.access_token)).status, 200); // the JWKS is cached now
  const r = await post(`${weapp}/v1/admin/signing-keys/rotate`, {}, { authorization: `Bearer ${adminKey}` });
  assert.equal(r.status, 201);
  const kid = (tok) => JSON.parse(Buffer.from(tok.split('.')[0], 'base64url')).kid;
  // Meanwhile the old key still signs, and the cache expires and is refilled (the next key
  // included).
  await sleep(2500);
  const before = await login();
  assert.equal(kid(before.access_token), kid(first.access_token));
  assert.equal((await profile(before.access_token)).status, 200);
  await sleep(2000);
  const after = await login();
  assert.notEqual(kid(after.access_token), kid(before.access_token), 'the next key signs now');
  assert.equal((await profile(after.access_token)).status, 200);
  // The retired key stays published: its tokens still verify.
  assert.equal((await profile(before.access_token)).status, 200);
});

// The webhook events of `type` about `outTradeNo` the backend received (verified).
async function eventsAbout(type, outTradeNo) {
  for (let i = 0; i < 200; i++) {
    const got = app.locals.events.filter((e) => e.type === type && e.payload?.out_trade_no === outTradeNo);
    if (got.length) return got;
    await sleep(100);
  }
  throw new Error(`no ${type} for ${outTradeNo}: ${JSON.stringify(app.locals.events)}`);
}

test('an order is paid and refunded, with signed webhooks', async () => {
  const s = await login();
  const auth = { authorization: `Bearer ${s.access_token}` };
  // The price is the backend's: an unknown item is refused, and nothing is placed.
  assert.equal((await post(`${expressUrl}/api/orders`, { item: 'caviar' }, auth)).status, 400);
  assert.equal((await post(`${expressUrl}/api/orders`, { item: 'coffee' })).status, 401);
  const r = await post(`${expressUrl}/api/orders`, { item: 'coffee' }, auth);
  assert.equal(r.status, 200, await r.clone().text());
  const order = await r.json();
  const no = order.out_trade_no;
  const rp = order.request_payment;
  assert.equal(order.amount, 990);
  assert.equal(rp.appId, APPID);
  assert.equal(rp.signType, 'RSA');
  // Not paid yet: no refund.
  assert.equal((await post(`${expressUrl}/api/orders/${no}/refund`, {}, auth)).status, 409);

  // What the mini program does with the five parameters: wx.requestPayment (the simulator).
  const { timeStamp, nonceStr, package: pkg, signType, paySign } = rp;
  const paid = await (await post(`${sim}/_sim/pay/request_payment`, {
    appid: APPID, openid: s.openid, timeStamp, nonceStr, package: pkg, signType, paySign,
  })).json();
  assert.equal(paid.errMsg, 'requestPayment:ok');
  const event = await eventsAbout('TRANSACTION.SUCCESS', no);
  assert.equal(event.length, 1);
  assert.equal(event[0].payload.amount.total, 990);
  assert.equal(event[0].payload.payer.openid, s.openid);
  assert.equal(app.locals.orders.get(no).state, 'PAID');

  // Someone else cannot refund it.
  const other = await login();
  assert.equal((await post(`${expressUrl}/api/orders/${no}/refund`, {}, { authorization: `Bearer ${other.access_token}` })).status, 404);
  const refunded = await post(`${expressUrl}/api/orders/${no}/refund`, { reason: 'changed my mind' }, auth);
  assert.equal(refunded.status, 200, await refunded.clone().text());
  const refund = await refunded.json();
  assert.equal(refund.out_refund_no, `${no}-r`);
  assert.ok(['PROCESSING', 'SUCCESS'].includes(refund.status), refund.status);
  // Asked again (a double click): the same refund, not a second one.
  const again = await post(`${expressUrl}/api/orders/${no}/refund`, {}, auth);
  assert.equal(again.status, 200);
  assert.equal((await again.json()).out_refund_no, refund.out_refund_no);
  // WeChat finishes the refund (the simulator, now rather than after its delay).
  const ended = await post(`${sim}/_sim/pay/refunds/${refund.out_refund_no}`, { status: 'SUCCESS' });
  assert.equal(ended.status, 200, await ended.text());
  const done = await eventsAbout('REFUND.SUCCESS', no);
  assert.equal(done.length, 1);
  assert.equal(done[0].payload.out_refund_no, refund.out_refund_no);
  assert.equal(done[0].payload.amount.refund, 990);
  assert.equal(app.locals.orders.get(no).state, 'REFUNDED');
  // One event each, however often WeChat or the outbox delivered them.
  const kinds = app.locals.events.filter((e) => e.payload?.out_trade_no === no).map((e) => e.type).sort();
  assert.deepEqual(kinds, ['REFUND.SUCCESS', 'TRANSACTION.SUCCESS']);
});
