// An Express backend for a mini program that logs in through weapp-server: it never sees a
// WeChat secret or a session_key.
//
// - GET /api/profile trusts `Authorization: Bearer <access token>` after verifying the JWT
//   alone (jose and the server's JWKS: ES256 only, issuer, audience = our appid, expiry).
// - POST /webhooks/weapp receives weapp-server's webhooks and checks `Weapp-Signature` with
//   node:crypto.
// - POST /api/notify sends the signed-in user a subscribe message with an access token from
//   weapp-server's broker (plain fetch; no WeChat SDK), reporting a rejected token once.
// - POST /api/orders places a WeChat Pay order for the signed-in user through weapp-server
//   (POST /v1/apps/{appid}/pay/orders, client key with pay:write; the price is ours, never the
//   mini program's) and answers the wx.requestPayment parameters. The payment arrives as the
//   signed webhook TRANSACTION.SUCCESS; POST /api/orders/:no/refund refunds a paid order
//   (POST /v1/apps/{appid}/pay/refunds) and REFUND.SUCCESS follows. weapp-server holds the
//   merchant's keys; this backend never sees them.
import crypto from 'node:crypto';
import express from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';

// How far a webhook's timestamp may be from our clock (older ones are refused as replays).
const WEBHOOK_TOLERANCE_SECS = 300;
// What the shop sells, in fen (分): the backend decides the amount, never the mini program.
const CATALOG = { coffee: ['咖啡 coffee', 990], tea: ['茶 tea', 660] };
// Tokens WeChat rejects because another was issued, or it expired.
const STALE_TOKEN_ERRCODES = new Set([40001, 40014, 42001]);

export function createApp({
  weappUrl = process.env.WEAPP_URL ?? 'http://127.0.0.1:8080',
  appid = process.env.WEAPP_APPID,
  issuer = process.env.WEAPP_ISSUER ?? 'weapp-server',
  clientKey = process.env.WEAPP_CLIENT_KEY,
  webhookSecret = process.env.WEAPP_WEBHOOK_SECRET,
  wechatApi = process.env.WECHAT_API_BASE ?? 'https://api.weixin.qq.com',
  jwksCacheMs = 300_000,
} = {}) {
  if (!appid) throw new Error('WEAPP_APPID is required: tokens of other apps must be refused');
  weappUrl = weappUrl.replace(/\/$/, '');
  // Cached for `jwksCacheMs` (keep it under weapp-server's signing_key_publish_ahead_secs, 600 s
  // by default: the next key is then known before it signs). A token naming an unknown kid
  // fetches the set again, but at most once per 30-second cool-down.
  const jwks = createRemoteJWKSet(new URL(`${weappUrl}/.well-known/jwks.json`), { cacheMaxAge: jwksCacheMs });
  const app = express();
  app.locals.events = [];
  // Orders by out_trade_no (a real backend keeps them in its database): who, what, state.
  app.locals.orders = new Map();
  const seenEventIds = new Set();

  async function currentUser(req) {
    const [scheme, token] = (req.get('authorization') ?? '').split(' ');
    if (scheme?.toLowerCase() !== 'bearer' || !token) {
      throw Object.assign(new Error('missing Authorization: Bearer <access token>'), { status: 401 });
    }
    try {
      const { payload } = await jwtVerify(token, jwks, {
        algorithms: ['ES256'], // never "none", never HS256 with a public key
        audience: appid,
        issuer,
        requiredClaims: ['exp', 'iat', 'sub'],
      });
      return payload;
    } catch (e) {
      throw Object.assign(new Error(`access token refused: ${e.code ?? e.name}`), { status: 401 });
    }
  }

  app.get('/api/profile', async (req, res) => {
    const user = await currentUser(req);
    res.json({ openid: user.openid, unionid: user.unionid ?? null, appid: user.aud });
  });

  // The raw body is what was signed: parse JSON only after checking the signature.
  app.post('/webhooks/weapp', express.raw({ type: '*/*', limit: '1mb' }), (req, res) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const parts = Object.fromEntries(
      (req.get('weapp-signature') ?? '')
        .split(',')
        .map((p) => p.trim().split('='))
        .filter((kv) => kv.length === 2),
    );
    const t = Number.parseInt(parts.t ?? '', 10);
    const expected = crypto
      .createHmac('sha256', webhookSecret)
      .update(`${t}.`)
      .update(body)
      .digest('hex');
    const given = Buffer.from(parts.v1 ?? '');
    const fresh = Number.isFinite(t) && Math.abs(Date.now() / 1000 - t) <= WEBHOOK_TOLERANCE_SECS;
    if (!fresh || given.length !== expected.length || !crypto.timingSafeEqual(given, Buffer.from(expected))) {
      return res.status(401).json({ error: 'bad signature' });
    }
    const event = JSON.parse(body.toString('utf8'));
    // Deliveries are at least once: the event id makes handling idempotent.
    if (!seenEventIds.has(event.id)) {
      seenEventIds.add(event.id);
      app.locals.events.push(event);
      onPaymentEvent(event);
    }
    res.status(204).end();
  });

  // WeChat Pay's news, verified and decrypted by weapp-server (which cross-checked the amount
  // and the merchant against the order it stored): mark our order.
  function onPaymentEvent(event) {
    const order = app.locals.orders.get(event.payload?.out_trade_no);
    if (!order) return;
    if (event.type === 'TRANSACTION.SUCCESS' && event.payload.trade_state === 'SUCCESS') {
      order.state = 'PAID';
      order.transactionId = event.payload.transaction_id;
    } else if (event.type === 'REFUND.SUCCESS') {
      order.state = 'REFUNDED';
    } else if (event.type === 'REFUND.ABNORMAL' || event.type === 'REFUND.CLOSED') {
      order.refundProblem = event.type;
    }
  }

  // A call to weapp-server's payments API with our client key: its JSON, or an error.
  async function payments(path, body) {
    const r = await fetch(`${weappUrl}/v1/apps/${appid}/pay/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${clientKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => null);
    if (!r.ok) {
      throw Object.assign(new Error(`weapp-server answered ${r.status} (${answer?.error?.code ?? '?'})`), { status: 502 });
    }
    return answer;
  }

  app.post('/api/orders', express.json(), async (req, res) => {
    const user = await currentUser(req);
    const item = req.body?.item ?? 'coffee';
    if (!Object.hasOwn(CATALOG, item)) {
      return res.status(400).json({ error: { code: 'invalid_item', message: `we sell ${Object.keys(CATALOG).join(', ')}` } });
    }
    const [description, amount] = CATALOG[item];
    const outTradeNo = `ex${Date.now()}${crypto.randomBytes(4).toString('hex')}`;
    // Stored before weapp-server is asked (a retry after a timeout sends the same number, and
    // weapp-server answers the same prepay).
    app.locals.orders.set(outTradeNo, { openid: user.openid, item, amount, state: 'NOTPAY' });
    const placed = await payments('orders', { out_trade_no: outTradeNo, description, amount, openid: user.openid });
    res.json({ out_trade_no: outTradeNo, amount, request_payment: placed.request_payment });
  });

  app.post('/api/orders/:no/refund', express.json(), async (req, res) => {
    const user = await currentUser(req);
    const order = app.locals.orders.get(req.params.no);
    if (!order || order.openid !== user.openid) {
      return res.status(404).json({ error: { code: 'not_found', message: 'no such order' } });
    }
    if (order.state !== 'PAID') {
      return res.status(409).json({ error: { code: 'not_paid', message: `the order is ${order.state}` } });
    }
    // One refund per order, kept with it: asking again (a timeout, a double click) sends the
    // same request, which weapp-server answers with the same refund, never a second.
    if (!order.refund) {
      order.refund = { out_trade_no: req.params.no, out_refund_no: `${req.params.no}-r`, amount: order.amount };
      if (req.body?.reason) order.refund.reason = String(req.body.reason).slice(0, 80);
    }
    const refund = await payments('refunds', order.refund);
    res.json({ out_refund_no: refund.out_refund_no, status: refund.status });
  });

  async function brokerToken() {
    const r = await fetch(`${weappUrl}/v1/apps/${appid}/access_token`, {
      headers: { authorization: `Bearer ${clientKey}` },
    });
    if (!r.ok) throw new Error(`broker answered ${r.status}`);
    return (await r.json()).access_token;
  }

  app.post('/api/notify', express.json(), async (req, res) => {
    const user = await currentUser(req);
    const message = {
      touser: user.openid,
      template_id: req.body.template_id,
      data: req.body.data,
      page: req.body.page ?? 'pages/index/index',
    };
    let answer;
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = await brokerToken();
      const r = await fetch(
        `${wechatApi}/cgi-bin/message/subscribe/send?access_token=${encodeURIComponent(token)}`,
        { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(message) },
      );
      answer = await r.json();
      if (STALE_TOKEN_ERRCODES.has(answer.errcode) && attempt === 0) {
        // Tell the broker (it refreshes once, fleet-wide) and try again with the new one.
        await fetch(`${weappUrl}/v1/apps/${appid}/access_token/invalidate`, {
          method: 'POST',
          headers: { authorization: `Bearer ${clientKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ access_token: token }),
        });
        continue;
      }
      break;
    }
    res.status((answer.errcode ?? 0) === 0 ? 200 : 502).json(answer);
  });

  // Errors (Express 5 passes rejected promises here) as JSON.
  app.use((err, req, res, _next) => {
    const status = err.status ?? 500;
    res.status(status).json({ error: { code: status === 401 ? 'unauthorized' : 'error', message: err.message } });
  });
  return app;
}
