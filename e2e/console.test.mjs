// The console, end to end, in Debian's Chromium against `weapp serve --sandbox`: the virtual
// phone drives the real weapp-server (login, phone number), subscribe messages sent with
// `weapp api` reach the phone, customer-service messages are pushed to the server and their
// delivery shows, a forgotten laptop's token fetch shows 40001 and the broker's recovery (a
// classic fetch, and a foreign force_refresh of the stable token), the page says which token
// another machine killed and when it stops working, the clock moves countdowns, a warning shows
// while the clock is further from real time than the server's push replay window, every input
// and box has a visible label, and a flood of a thousand events a second does not freeze
// Traffic. Screenshots land in target/e2e/; the phone after a subscribe message is also
// target/e2e/console.png (copy it to docs/console.png when the page changes).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  sandboxConfig, startSandbox, stopSandbox, weappApi, launchBrowser, openConsole, shot, eventually, SHOTS,
} from './lib.mjs';

const apps = sandboxConfig();
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
/** A GET on a kept-alive connection (lighter than fetch, so the flood is the server's work). */
const get = (url) => new Promise((resolve, reject) => {
  http.get(url, { agent }, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject);
});
let sandbox;
let browser;
let ui; // { page, problems, foreign, loaded }

const tid = (s) => `[data-testid="${s}"]`;
const text = (page, s) => page.locator(tid(s)).innerText();
const storage = async (page) => JSON.parse(await text(page, 'storage'));
const exchange = async (page) => JSON.parse(await text(page, 'exchange'));

async function selectApp(page, appid) {
  await page.selectOption(tid('app-select'), appid);
  await eventually(async () => (await page.locator(tid('app-select')).inputValue()) === appid, { what: 'app selected' });
}

async function newUser(page) {
  const before = await page.locator(`${tid('user-select')} option`).allInnerTexts();
  await page.click(tid('create-user'));
  await eventually(async () => {
    const now = await page.locator(`${tid('user-select')} option`).allInnerTexts();
    return now.length > 0 && now.some((o) => o.startsWith('o') && !before.includes(o));
  }, { what: 'the new user in the picker' });
  return page.locator(tid('user-select')).inputValue();
}

async function tab(page, name) {
  await page.click(tid(`tab-${name}`));
  await page.waitForSelector(`#tab-${name}.active`);
}

const TABS = ['phone', 'tokens', 'traffic', 'pushes', 'faults', 'platforms'];

/** What on the page shows no visible label: a control (input, select, textarea) whose <label>s
 * are all hidden or empty — a placeholder is not a label — or a box (a <pre>, a list, a status
 * or alert box) without an aria-labelledby naming a visible element with text. Only what is
 * visible now is checked. */
function unlabelled(page) {
  return page.evaluate(() => {
    const shown = (n) => !!n && n.checkVisibility() && n.innerText.trim() !== '';
    const name = (n) => `${n.tagName.toLowerCase()}#${n.id || '?'}${n.dataset.testid ? `[${n.dataset.testid}]` : ''}`;
    const bad = [];
    for (const c of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
      if (!c.checkVisibility()) continue;
      if (![...(c.labels || [])].some(shown)) bad.push(name(c));
    }
    for (const b of document.querySelectorAll('pre, ul, [role=status], [role=alert]')) {
      if (!b.checkVisibility() || b.parentElement.closest('li')) continue;
      const ids = (b.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean);
      if (!ids.some((id) => shown(document.getElementById(id)))) bad.push(name(b));
    }
    return bad;
  });
}

/** `unlabelled` over every tab. */
async function unlabelledAnywhere(page) {
  const bad = [];
  for (const name of TABS) {
    await tab(page, name);
    bad.push(...(await unlabelled(page)).map((b) => `${name}: ${b}`));
  }
  await tab(page, 'phone');
  return bad;
}

before(async () => {
  sandbox = await startSandbox(apps);
  browser = await launchBrowser();
  // `/` redirects to the console.
  ui = await openConsole(browser, `${sandbox.sim}/`);
});

after(async () => {
  if (ui) await ui.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  await stopSandbox(sandbox);
});

test('the console loads from the binary alone: no errors, nothing from elsewhere, under 300 KB', async () => {
  assert.match(sandbox.console, /\/_sim\/console$/);
  const { page } = ui;
  assert.equal(new URL(page.url()).pathname, '/_sim/console');
  await page.waitForTimeout(500);
  const total = ui.loaded.reduce((n, r) => n + r.bytes, 0);
  writeFileSync(path.join(SHOTS, 'first-load.json'), JSON.stringify({ total_bytes: total, requests: ui.loaded }, null, 2));
  assert.ok(total > 10_000 && total < 300 * 1024, `first load ${total} bytes`);
  assert.deepEqual(ui.foreign, [], 'requests outside the simulator');
  const appids = await page.locator(`${tid('app-select')} option`).allInnerTexts();
  assert.deepEqual(appids.sort(), [apps.stable.appid, apps.classic.appid].sort());
  // The sandbox pre-filled its own login and phone routes as the backend.
  assert.equal(await page.locator(tid('backend-url')).inputValue(), sandbox.server);
  assert.equal(await page.locator(tid('backend-login-path')).inputValue(), '/v1/login');
  await shot(page, '01-loaded');
  assert.deepEqual(ui.problems, []);
});

test('every input and every box has a visible label', async () => {
  const { page } = ui;
  assert.deepEqual(await unlabelledAnywhere(page), []);
  // The subscribe popup's choices too.
  await selectApp(page, apps.stable.appid);
  await newUser(page);
  await page.click(tid('subscribe'));
  await page.waitForSelector(`${tid('subscribe-popup')}:not(.hidden)`);
  assert.deepEqual(await unlabelled(page), []);
  await page.click('#popup-cancel');
  assert.deepEqual(ui.problems, []);
});

test('wx.login → the backend logs the user in → the session is on the phone', async () => {
  const { page } = ui;
  await selectApp(page, apps.stable.appid);
  const openid = await newUser(page);
  await page.click(tid('wx-login'));
  const kept = await eventually(async () => {
    const s = await storage(page);
    return s.token && s.openid === openid ? s : null;
  }, { what: 'the session token in storage' });
  assert.match(kept.token, /\S{20,}/);
  const ex = await exchange(page);
  assert.equal(ex.request.url, `${sandbox.server}/v1/login`);
  assert.equal(ex.request.body.appid, apps.stable.appid);
  assert.equal(ex.response.status, 200);
  // The session is real: the server answers /v1/me with it.
  const me = await fetch(`${sandbox.server}/v1/me`, { headers: { authorization: `Bearer ${kept.token}` } });
  assert.equal(me.status, 200);
  assert.equal((await me.json()).openid, openid);
  // getPhoneNumber → /v1/me/phone with the stored token → the number comes back.
  await page.click(tid('get-phone'));
  const withPhone = await eventually(async () => {
    const s = await storage(page);
    return s.phone_number ? s : null;
  }, { what: 'the phone number in storage' });
  assert.match(withPhone.phone_number, /^\+?\d{6,}/);
  await shot(page, '02-login-and-phone');
  assert.deepEqual(ui.problems, []);
});

test('accept a subscribe template, send with `weapp api`, the message reaches the phone', async () => {
  const { page } = ui;
  const added = await weappApi(sandbox.sim, apps.stable, 'POST', '/wxaapi/newtmpl/addtemplate',
    { tid: 1001, kidList: [1, 2], sceneDesc: 'e2e' });
  assert.equal(added.errcode, 0);
  const templateId = added.priTmplId;
  const openid = await page.locator(tid('user-select')).inputValue();
  await page.click(tid('subscribe'));
  await page.waitForSelector(`${tid('subscribe-popup')}:not(.hidden)`);
  await page.check(tid('accept-0'));
  await shot(page, '03-subscribe-popup');
  await page.click(tid('popup-ok'));
  // The popup's choice is pushed to the server (subscribe_msg_popup_event).
  await tab(page, 'pushes');
  await eventually(async () => (await page.locator(tid('delivery')).allInnerTexts())
    .some((d) => d.includes('subscribe_msg_popup_event') && d.includes('HTTP 200')), { what: 'the popup event delivery' });
  await tab(page, 'phone');
  const sent = await weappApi(sandbox.sim, apps.stable, 'POST', '/cgi-bin/message/subscribe/send', {
    touser: openid, template_id: templateId,
    data: { character_string1: { value: 'E2E-42' }, thing2: { value: '黄焖鸡米饭' } },
  });
  assert.equal(sent.errcode, 0);
  const note = await eventually(async () => (await page.locator(tid('notification')).allInnerTexts())
    .find((n) => n.includes('E2E-42')), { what: 'the subscribe message on the phone' });
  assert.match(note, /黄焖鸡米饭/);
  // Sending again fails: the grant was one-time (43101), and the phone shows nothing new.
  await assert.rejects(weappApi(sandbox.sim, apps.stable, 'POST', '/cgi-bin/message/subscribe/send', {
    touser: openid, template_id: templateId, data: { character_string1: { value: 'E2E-43' }, thing2: { value: 'x' } },
  }), /43101/);
  await shot(page, '04-subscribe-message');
  await shot(page, 'console');
  assert.deepEqual(ui.problems, []);
});

test('a customer-service message is pushed to the server and its delivery shows', async () => {
  const { page } = ui;
  await page.fill(tid('cs-text'), '你好，我的订单在哪里？');
  await page.click(tid('cs-send'));
  await tab(page, 'pushes');
  const item = await eventually(async () => (await page.locator(tid('delivery')).allInnerTexts())
    .find((d) => d.includes('你好，我的订单在哪里？')), { what: 'the customer-service delivery' });
  assert.match(item, /delivered|已送达/);
  assert.match(item, /HTTP 200/);
  assert.match(item, /success/);
  // The push configuration shows where pushes go, without the token or the key.
  const config = await text(page, 'push-config');
  assert.match(config, /\/v1\/apps\/wxe2e00000000000a1\/push/);
  assert.doesNotMatch(config, new RegExp(apps.stable.secret));
  await shot(page, '05-push-delivery');
  assert.deepEqual(ui.problems, []);
});

test('a foreign token fetch plus five minutes: 40001 in Traffic, then the broker recovers', async () => {
  const { page } = ui;
  await tab(page, 'phone');
  await selectApp(page, apps.classic.appid);
  await newUser(page);
  await page.click(tid('wx-login'));
  await eventually(async () => (await storage(page)).token, { what: 'login on the classic app' });
  // The broker fetches and caches a classic token for the phone number.
  await page.click(tid('get-phone'));
  await eventually(async () => (await storage(page)).phone_number, { what: 'a first phone number' });
  await tab(page, 'tokens');
  await page.click(tid('foreign-fetch'));
  // Waiting for the card to change was not enough: the tab's first render (the broker's token,
  // no previous one) is a change too. The foreign fetch shows as the broker's token moved to
  // "previous", still working for its five minutes.
  await eventually(async () => /previous: SIMC_.*(works for|还能用)|上一个: SIMC_.*(works for|还能用)/s.test(await text(page, 'tokens-classic')), { what: 'the broker\'s token now the previous one, still working' });
  // The page says what happened: which token was killed, and until when it works.
  const said = await eventually(async () => {
    const r = await text(page, 'foreign-result');
    return /\/cgi-bin\/token/.test(r) && /Killed: the classic token SIMC_\S+ .*works until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.test(r) ? r : null;
  }, { what: 'what the foreign fetch did' });
  assert.match(said, /Stable tokens are not affected/);
  await shot(page, '06-foreign-fetch');
  await page.click(tid('advance-300'));
  await eventually(async () => /no longer works|已失效/.test(await text(page, 'tokens-classic')), { what: 'the old token retired' });
  await eventually(async () => /Killed: the classic token SIMC_.* stopped working at/.test(await text(page, 'foreign-result')),
    { what: 'the result saying the token is dead now' });
  // The broker still holds the retired token: the next call gets 40001, refreshes, retries.
  await tab(page, 'phone');
  await page.click(tid('get-phone'));
  await eventually(async () => {
    const ex = await exchange(page);
    return ex.request.url.endsWith('/v1/me/phone') && ex.response.status === 200 && ex.response.body.phone_number;
  }, { what: 'the phone number after recovery' });
  await tab(page, 'traffic');
  await page.selectOption(tid('filter-app'), apps.classic.appid);
  const rows = await eventually(async () => {
    const all = await page.locator(`${tid('traffic')} tr`).allInnerTexts();
    const calls = all.map((r) => r.split('\t')).filter((c) => c[2] === 'call').reverse(); // oldest first
    const bad = calls.findIndex((c) => c[4].includes('getuserphonenumber') && c[5] === '40001');
    if (bad < 0) return null;
    const later = calls.slice(bad + 1);
    const refetch = later.findIndex((c) => c[4] === '/cgi-bin/token' && c[5] === '');
    const ok = later.findIndex((c, i) => i > refetch && c[4].includes('getuserphonenumber') && c[5] === '');
    return refetch >= 0 && ok >= 0 ? calls : null;
  }, { what: '40001, a fresh token and a successful retry in Traffic' });
  assert.ok(rows.length >= 3);
  // Click the 40001 row: its request and response.
  await page.fill(tid('filter-errcode'), '40001');
  await page.locator(`${tid('traffic')} tr`).first().click();
  const detail = await text(page, 'traffic-detail');
  assert.match(detail, /40001/);
  assert.match(detail, /getStableAccessToken|rid: /);
  assert.doesNotMatch(detail, new RegExp(apps.classic.secret));
  await shot(page, '07-traffic-40001');
  await page.fill(tid('filter-errcode'), '');
  await page.selectOption(tid('filter-app'), '');
  assert.deepEqual(ui.problems, []);
});

test("a foreign force_refresh kills the server's stable token five minutes later; the broker recovers", async () => {
  const { page } = ui;
  await tab(page, 'phone');
  await selectApp(page, apps.stable.appid);
  await page.selectOption(tid('user-select'), { index: 0 });
  // The server logs in and fetches the phone number with its (stable) token.
  const earlier = await text(page, 'exchange');
  await page.click(tid('wx-login'));
  await eventually(async () => {
    if ((await text(page, 'exchange')) === earlier) return false;
    const ex = await exchange(page);
    return ex.request.url.endsWith('/v1/login') && ex.response.status === 200;
  }, { what: 'a login on the stable app' });
  const loggedIn = await text(page, 'exchange');
  await page.click(tid('get-phone'));
  await eventually(async () => {
    if ((await text(page, 'exchange')) === loggedIn) return false;
    const ex = await exchange(page);
    return ex.request.url.endsWith('/v1/me/phone') && ex.response.status === 200;
  }, { what: 'a phone number on the stable app' });
  await tab(page, 'tokens');
  // The token the server holds: the simulator's current stable token.
  const held = await eventually(async () => {
    const v = await (await fetch(`${sandbox.sim}/_sim/apps/${apps.stable.appid}/tokens`)).json();
    const shown = await page.locator(`${tid('tokens-stable')} .tok`).first().innerText();
    return v.stable.current && shown === v.stable.current.access_token ? shown : null;
  }, { what: 'the stable token shown' });
  await page.click(tid('foreign-stable-force'));
  const said = await eventually(async () => {
    const r = await text(page, 'foreign-result');
    return r.includes('/cgi-bin/stable_token') && r.includes(held) ? r : null;
  }, { what: 'what the foreign force_refresh did' });
  const killed = new RegExp(`Killed: the stable token ${held.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(the one your servers hold\\) works until (\\S+ \\S+) — (0?[45]m \\d\\ds) from now`);
  const m = killed.exec(said);
  assert.ok(m, said);
  // Five minutes of grace, on the simulator's clock.
  const now = new Date((await text(page, 'now')).replace(' ', 'T')).getTime();
  const until = new Date(m[1].replace(' ', 'T')).getTime();
  assert.ok(Math.abs(until - now - 300_000) <= 5_000, `${m[1]} is not five minutes after ${await text(page, 'now')}`);
  assert.match(said, /Advance the clock by 5 min/);
  assert.match(said, /Classic tokens are not affected/);
  await eventually(async () => /previous: SIMS_.*works for/s.test(await text(page, 'tokens-stable')), { what: 'the server\'s stable token now the previous one' });
  await shot(page, '07-foreign-stable-force');
  await page.click(tid('advance-300'));
  await eventually(async () => new RegExp(`stable token ${held.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} stopped working at`).test(await text(page, 'foreign-result')),
    { what: 'the result saying the stable token is dead' });
  assert.match(await text(page, 'tokens-stable'), /no longer works/);
  // The server's next call with it gets 40001; the broker takes the new stable token and retries.
  await tab(page, 'phone');
  const before = await text(page, 'exchange');
  await page.click(tid('get-phone'));
  await eventually(async () => {
    if ((await text(page, 'exchange')) === before) return false;
    const ex = await exchange(page);
    return ex.request.url.endsWith('/v1/me/phone') && ex.response.status === 200 && ex.response.body.phone_number;
  }, { what: 'the phone number after the stable token died' });
  const v = await (await fetch(`${sandbox.sim}/_sim/events?appid=${apps.stable.appid}&errcode=40001`)).json();
  assert.ok(v.events.some((e) => (e.path || '').includes('getuserphonenumber')), 'a 40001 on the stable app');
  assert.deepEqual(ui.problems, []);
});

test('the clock buttons move the expiry countdowns', async () => {
  const { page } = ui;
  // The classic app: its broker holds a classic token (the stable app has none).
  await tab(page, 'phone');
  await selectApp(page, apps.classic.appid);
  await tab(page, 'tokens');
  const seconds = async () => {
    const t = await page.locator(`${tid('tokens-classic')} ${tid('countdown')}`).first().innerText();
    const m = /(?:(\d+)h )?(?:(\d+)m )?(\d+)s/.exec(t);
    return (Number(m[1] || 0) * 3600) + (Number(m[2] || 0) * 60) + Number(m[3]);
  };
  // Read the countdown from a view that shows the simulator's current token (the tab's refresh
  // is asynchronous: right after switching, the view can still show the previous test's state).
  await eventually(async () => {
    const v = await (await fetch(`${sandbox.sim}/_sim/apps/${apps.classic.appid}/tokens`)).json();
    const shown = await page.locator(`${tid('tokens-classic')} .tok`).first().innerText();
    return v.classic.current && shown === v.classic.current.access_token;
  }, { what: 'the tokens view up to date' });
  const before = await seconds();
  await page.click(tid('advance-3600'));
  await eventually(async () => {
    const after = await seconds();
    return before - after >= 3600 && before - after < 3600 + 30;
  }, { what: 'the countdown one hour shorter' });
  await shot(page, '08-clock');
  // WeChat's clock now runs hours ahead of the server's, whose receiver refuses pushes stamped
  // outside its replay window; "now" brings the simulator back, and pushes are accepted again.
  // Far past the server's replay window: the warning says so.
  await eventually(async () => page.locator(tid('clock-warning')).isVisible(), { what: 'the clock warning' });
  assert.match(await text(page, 'clock-warning'), /refused as stale[\s\S]*\dh \d\dm \d\ds ahead of real time[\s\S]*300 s, as set for this backend/);
  await page.click(tid('resync'));
  await eventually(async () => {
    const shown = new Date((await text(page, 'now')).replace(' ', 'T')).getTime();
    return Math.abs(shown - Date.now()) < 120_000;
  }, { what: 'the clock back at the wall clock' });
  await eventually(async () => !(await page.locator(tid('clock-warning')).isVisible()), { what: 'no warning after resync' });
  await tab(page, 'phone');
  await page.fill(tid('cs-text'), 'after resync');
  await page.click(tid('cs-send'));
  await tab(page, 'pushes');
  await eventually(async () => (await page.locator(tid('delivery')).allInnerTexts())
    .some((d) => d.includes('after resync') && d.includes('HTTP 200')), { what: 'a push accepted after resync' });
  assert.deepEqual(ui.problems, []);
});

test("a warning shows once the clock is further from real time than the server's replay window, and not before", async () => {
  const { page } = ui;
  await tab(page, 'phone');
  await selectApp(page, apps.stable.appid);
  const offset = async () => (await (await fetch(`${sandbox.sim}/_sim/clock`)).json()).offset_secs;
  // Within the window: +1 min leaves it hidden (checked across a few of the page's clock polls).
  await page.click(tid('advance-60'));
  await eventually(async () => (await offset()) >= 60, { what: 'the clock a minute ahead' });
  await page.waitForTimeout(2_500);
  assert.equal(await page.locator(tid('clock-warning')).isVisible(), false, 'no warning within the window');
  // +5 min more: 6 minutes ahead, past the 300 s window.
  await page.click(tid('advance-300'));
  await eventually(async () => page.locator(tid('clock-warning')).isVisible(), { what: 'the warning past the window' });
  const warning = await text(page, 'clock-warning');
  assert.match(warning, /Pushes to your server will be refused as stale/);
  assert.match(warning, /0?(6m 0\ds|5m 5\ds) ahead of real time/);
  assert.match(warning, /“now”/);
  // It is right: a push now is refused by the server.
  await page.fill(tid('cs-text'), 'six minutes ahead');
  await page.click(tid('cs-send'));
  await tab(page, 'pushes');
  const refused = await eventually(async () => (await page.locator(tid('delivery')).allInnerTexts())
    .find((d) => d.includes('six minutes ahead')), { what: 'the stale push delivery' });
  assert.doesNotMatch(refused, /HTTP 200/);
  await shot(page, '09-clock-warning');
  // In Chinese too.
  await page.click(tid('lang'));
  await eventually(async () => /推送将被你的服务器当作过期而拒绝/.test(await text(page, 'clock-warning')), { what: 'the warning in Chinese' });
  assert.match(await text(page, 'clock-warning'), /快 0?(6m 0\ds|5m 5\ds)/);
  await page.click(tid('lang'));
  // The button in the warning resets the clock; the warning goes.
  await page.click(tid('clock-warning-reset'));
  await eventually(async () => !(await page.locator(tid('clock-warning')).isVisible()), { what: 'no warning after the reset' });
  assert.ok(Math.abs(await offset()) <= 2);
  // A backend that tells a shorter window (120 s) gets the warning sooner: at +5 min.
  await tab(page, 'phone');
  await page.fill(tid('backend-replay-window'), '120');
  await page.click(tid('backend-save'));
  await page.click(tid('advance-300'));
  await eventually(async () => /120 s, as set for this backend/.test(await text(page, 'clock-warning')), { what: 'the warning with the backend\'s window' });
  await page.fill(tid('backend-replay-window'), '');
  await page.click(tid('backend-save'));
  await page.click(tid('resync'));
  await eventually(async () => !(await page.locator(tid('clock-warning')).isVisible()), { what: 'no warning at the end' });
  assert.deepEqual(ui.problems, []);
});

test('Traffic keeps up with a thousand events a second without freezing', async () => {
  const { page } = ui;
  await tab(page, 'traffic');
  const startCount = Number(await text(page, 'traffic-count'));
  await page.evaluate(() => {
    window.__frames = [];
    let last = performance.now();
    const tick = (now) => {
      window.__frames.push(now - last);
      last = now;
      if (!window.__stopFrames) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  // 1,000 WeChat calls a second for three seconds (each is one journal event), paced in 10 ms
  // slices; each answers 40013, so nothing else happens in the simulator.
  const seconds = 3;
  const rate = 1000;
  const url = `${sandbox.sim}/cgi-bin/token?grant_type=client_credential&appid=wxflood0000000000&secret=x`;
  const started = performance.now();
  const inflight = [];
  for (let slice = 0; slice < seconds * 100; slice++) {
    const due = started + slice * 10;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    for (let i = 0; i < rate / 100; i++) inflight.push(get(url));
  }
  await Promise.all(inflight);
  const sendSecs = (performance.now() - started) / 1000;
  const sent = inflight.length;
  let seen = startCount;
  await eventually(async () => {
    seen = Number(await text(page, 'traffic-count'));
    return seen >= startCount + sent;
  }, { timeout: 20_000, what: `every event counted (${sent} sent)` }).catch((e) => {
    throw new Error(`${e.message}: the page counted ${seen - startCount}`);
  });
  const frames = await page.evaluate(() => { window.__stopFrames = true; return window.__frames; });
  const rows = await page.locator(`${tid('traffic')} tr`).count();
  const sorted = frames.slice().sort((a, b) => a - b);
  const stats = {
    events: sent,
    send_seconds: Number(sendSecs.toFixed(2)),
    events_per_second: Math.round(sent / sendSecs),
    frames: frames.length,
    median_frame_ms: Number(sorted[Math.floor(sorted.length / 2)].toFixed(1)),
    max_frame_gap_ms: Number(sorted[sorted.length - 1].toFixed(1)),
    rows,
  };
  writeFileSync(path.join(SHOTS, 'flood.json'), JSON.stringify(stats, null, 2));
  console.log('flood', JSON.stringify(stats));
  // The rate the flood reached is recorded (flood.json), not asserted: it measures this
  // machine's load generator as much as the page (on a slower machine it fell short of 800/s
  // once). What is asserted is the page's behaviour under it: every event counted, the table
  // bounded, and the page kept painting — no frame gap near a second (a page that redrew per
  // event would stall for many seconds here). The frame count itself is not asserted: headless
  // Chromium on a loaded 2-core machine paints at ~10 frames a second (median 100 ms) whatever
  // the page does, and a CI run once counted 29 frames in 3.3 s; the largest gap is the measure
  // of a freeze.
  assert.ok(rows <= 1000, `${rows} rows`);
  assert.ok(stats.max_frame_gap_ms < 1000, `the page froze for ${stats.max_frame_gap_ms} ms`);
  await shot(page, '09-flood');
  assert.deepEqual(ui.problems, []);
});

test('Chinese: a toggle, and the browser language is followed', async () => {
  const { page } = ui;
  await page.evaluate(() => localStorage.removeItem('weapp-console-lang'));
  await page.click(tid('lang'));
  await eventually(async () => (await text(page, 'tab-phone')) === '手机', { what: 'Chinese labels' });
  assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
  await tab(page, 'phone');
  await shot(page, '10-zh');
  assert.deepEqual(await unlabelledAnywhere(page), [], 'labels in Chinese');
  await page.click(tid('lang'));
  await eventually(async () => (await text(page, 'tab-phone')) === 'Phone', { what: 'English labels' });
  // A browser that prefers Chinese gets Chinese without touching the toggle.
  const zh = await openConsole(browser, `${sandbox.sim}/_sim/console`, { locale: 'zh-CN' });
  try {
    assert.equal(await zh.page.locator(tid('tab-traffic')).innerText(), '流量');
    assert.deepEqual(zh.problems, []);
  } finally {
    await zh.context.close();
  }
  assert.deepEqual(ui.problems, []);
});

test('faults: add one from the console, see it bite, remove it', async () => {
  const { page } = ui;
  await tab(page, 'faults');
  await page.fill(tid('fault-path'), '/wxa/business/getuserphonenumber');
  await page.fill(tid('fault-errcode'), '-1');
  await page.click(tid('fault-add'));
  await eventually(async () => (await page.locator(tid('fault')).count()) === 1, { what: 'the fault listed' });
  await tab(page, 'phone');
  await page.click(tid('get-phone'));
  await eventually(async () => {
    const ex = await exchange(page);
    return ex.request.url.endsWith('/v1/me/phone') && ex.response.status >= 500;
  }, { what: 'the backend reporting the upstream failure' });
  await tab(page, 'faults');
  await page.click(tid('fault-remove'));
  await eventually(async () => (await page.locator(tid('fault')).count()) === 0, { what: 'the fault gone' });
  await tab(page, 'phone');
  await page.click(tid('get-phone'));
  await eventually(async () => {
    const ex = await exchange(page);
    return ex.response.status === 200 && ex.response.body.phone_number;
  }, { what: 'the phone number again' });
  assert.deepEqual(ui.problems, []);
});
