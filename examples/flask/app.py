"""The seed's Flask backend, done right: the mini program logs in through weapp-server, and this
backend never sees a WeChat secret or a session_key.

- ``GET /api/profile`` trusts ``Authorization: Bearer <access token>`` after verifying the JWT
  alone (PyJWT and the server's JWKS: ES256 only, issuer, audience = our appid, expiry).
- ``POST /webhooks/weapp`` receives weapp-server's webhooks (pushes from WeChat, verified and
  decrypted there) and checks ``Weapp-Signature`` with the standard library.
- ``POST /api/notify`` sends the signed-in user a subscribe message with an access token from
  weapp-server's broker (plain ``requests``; no WeChat SDK), reporting a rejected token once.
- ``POST /api/orders`` places a WeChat Pay order for the signed-in user through weapp-server
  (``POST /v1/apps/{appid}/pay/orders``, client key with ``pay:write``; the price is ours, never
  the mini program's) and answers the ``wx.requestPayment`` parameters. The payment arrives as the
  signed webhook ``TRANSACTION.SUCCESS``; ``POST /api/orders/<out_trade_no>/refund`` refunds a paid
  order (``POST /v1/apps/{appid}/pay/refunds``), and ``REFUND.SUCCESS`` follows as a webhook.
  weapp-server holds the merchant's keys; this backend never sees them.

Configuration (environment, or arguments of ``create_app``): ``WEAPP_URL``, ``WEAPP_APPID``,
``WEAPP_ISSUER``, ``WEAPP_CLIENT_KEY``, ``WEAPP_WEBHOOK_SECRET``, ``WECHAT_API_BASE`` (against
``weapp serve --sandbox``: the simulator URL it prints — the sandbox's tokens mean nothing to
WeChat).

An access token travels in WeChat's URLs (``?access_token=…``), so it must never reach a log or an
answer: WeChat and broker calls catch their errors and answer 502 with a generic message, what is
logged names the failure with ``access_token=***``, and every log record of this app and of urllib3
passes through ``RedactingFilter``.
"""

import hashlib
import hmac
import json
import logging
import os
import re
import time
import traceback

import jwt
import requests
from flask import Flask, jsonify, request

# How far a webhook's timestamp may be from our clock (replays older than this are refused).
WEBHOOK_TOLERANCE_SECS = 300
# What the shop sells, in fen (分): the backend decides the amount, never the mini program.
CATALOG = {"coffee": ("咖啡 coffee", 990), "tea": ("茶 tea", 660)}
# Tokens WeChat rejects because another was issued, or it expired.
STALE_TOKEN_ERRCODES = {40001, 40014, 42001}


# Query parameters that carry secrets in WeChat's URLs (and the broker mirror's).
SECRET_PARAM = re.compile(r"\b(access_token|secret)=[^&#\s'\"<>)]+", re.IGNORECASE)


def redact(text, *secrets):
    """``text`` with every ``access_token=…``/``secret=…`` value, and each of ``secrets``, as ``***``."""
    text = SECRET_PARAM.sub(r"\1=***", str(text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a log record whose message or traceback carries a secret query parameter (an
    exception of ``requests`` names the whole URL, token included). Installed on this app's
    logger and on urllib3's, whose debug lines name every request URL."""

    def filter(self, record):
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = record.exc_text = None
        record.msg, record.args = redact(message), ()
        return True


def _install_redaction(*loggers):
    for logger in loggers:
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


class Unauthorized(Exception):
    """A request without a valid access token."""


class Upstream(Exception):
    """WeChat or weapp-server failed us (unreachable, an HTTP error, not JSON). Its message is what
    the caller sees, and holds no token or key."""


def create_app(
    weapp_url=None,
    appid=None,
    issuer=None,
    client_key=None,
    webhook_secret=None,
    wechat_api=None,
    jwks_cache_secs=300,
):
    env = os.environ.get
    weapp_url = (weapp_url or env("WEAPP_URL", "http://127.0.0.1:8080")).rstrip("/")
    appid = appid or env("WEAPP_APPID")
    issuer = issuer or env("WEAPP_ISSUER", "weapp-server")
    client_key = client_key or env("WEAPP_CLIENT_KEY")
    webhook_secret = webhook_secret or env("WEAPP_WEBHOOK_SECRET")
    wechat_api = (wechat_api or env("WECHAT_API_BASE", "https://api.weixin.qq.com")).rstrip("/")
    if not appid:
        raise ValueError("WEAPP_APPID is required: tokens of other apps must be refused")

    app = Flask(__name__)
    _install_redaction(app.logger, logging.getLogger("urllib3.connectionpool"))
    # The JWKS is cached for `jwks_cache_secs` (keep it under weapp-server's
    # signing_key_publish_ahead_secs, 600 by default: the next key is then known before it
    # signs). A token naming an unknown kid makes PyJWKClient fetch the set again, but at most
    # once per 30-second cool-down.
    jwks = jwt.PyJWKClient(
        f"{weapp_url}/.well-known/jwks.json", cache_keys=True, lifespan=jwks_cache_secs
    )
    app.config["EVENTS"] = []
    # Orders by out_trade_no (a real backend keeps them in its database): who, what, state.
    app.config["ORDERS"] = {}
    seen_event_ids = set()

    def current_user():
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing Authorization: Bearer <access token>")
        try:
            key = jwks.get_signing_key_from_jwt(token)
            return jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],  # never "none", never HS256 with a public key
                audience=appid,
                issuer=issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(f"access token refused: {type(e).__name__}") from e

    @app.errorhandler(Unauthorized)
    def unauthorized(e):
        return jsonify(error={"code": "unauthorized", "message": str(e)}), 401

    @app.errorhandler(Upstream)
    def upstream(e):
        return jsonify(error={"code": "upstream_unavailable", "message": str(e)}), 502

    @app.get("/api/profile")
    def profile():
        user = current_user()
        return jsonify(openid=user["openid"], unionid=user.get("unionid"), appid=user["aud"])

    @app.post("/webhooks/weapp")
    def webhook():
        if not webhook_secret:
            # No app of this backend pushes here (WEAPP_WEBHOOK_SECRET is unset): refuse, loudly.
            app.logger.warning("a webhook arrived but WEAPP_WEBHOOK_SECRET is not set")
            return jsonify(error="webhooks are not configured"), 503
        body = request.get_data()
        parts = dict(
            p.strip().split("=", 1)
            for p in request.headers.get("Weapp-Signature", "").split(",")
            if "=" in p
        )
        try:
            t = int(parts.get("t", ""))
        except ValueError:
            return jsonify(error="bad signature"), 401
        expected = hmac.new(
            webhook_secret.encode(), f"{t}.".encode() + body, hashlib.sha256
        ).hexdigest()
        if abs(time.time() - t) > WEBHOOK_TOLERANCE_SECS or not hmac.compare_digest(
            expected, parts.get("v1", "")
        ):
            return jsonify(error="bad signature"), 401
        event = json.loads(body)
        # Deliveries are at least once: the event id makes handling idempotent.
        if event["id"] not in seen_event_ids:
            seen_event_ids.add(event["id"])
            app.config["EVENTS"].append(event)
            on_payment_event(event)
        return "", 204

    def on_payment_event(event):
        """WeChat Pay's news, verified and decrypted by weapp-server (which cross-checked the
        amount and the merchant against the order it stored): mark our order."""
        payload = event.get("payload") or {}
        order = app.config["ORDERS"].get(payload.get("out_trade_no"))
        if order is None:
            return
        if event["type"] == "TRANSACTION.SUCCESS" and payload.get("trade_state") == "SUCCESS":
            order["state"] = "PAID"
            order["transaction_id"] = payload.get("transaction_id")
        elif event["type"] == "REFUND.SUCCESS":
            order["state"] = "REFUNDED"
        elif event["type"] in ("REFUND.ABNORMAL", "REFUND.CLOSED"):
            order["refund_problem"] = event["type"]

    def broker(method, path, **kwargs):
        """A call to weapp-server's broker with our client key; its failures as ``Upstream``."""
        try:
            r = requests.request(
                method,
                f"{weapp_url}/v1/apps/{appid}/{path}",
                headers={"Authorization": f"Bearer {client_key}"},
                timeout=10,
                **kwargs,
            )
        except requests.RequestException as e:
            app.logger.warning("weapp-server's broker (%s) unreachable: %s", path, redact(e, client_key))
            raise Upstream("weapp-server could not be reached") from None
        if r.status_code >= 300:
            try:
                code = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            app.logger.warning("weapp-server's broker (%s) answered %s (%s)", path, r.status_code, code)
            raise Upstream(f"weapp-server's broker answered {r.status_code}")
        return r

    def broker_token():
        try:
            return broker("GET", "access_token").json()["access_token"]
        except (ValueError, KeyError, TypeError):
            app.logger.warning("weapp-server's broker answered no access token")
            raise Upstream("weapp-server's broker answered no access token") from None

    def wechat(path, token, body):
        """POST ``body`` to WeChat with ``token``: its JSON answer, or ``Upstream``. The token is
        in the URL, so no exception of ``requests`` leaves this function."""
        try:
            r = requests.post(
                f"{wechat_api}{path}", params={"access_token": token}, json=body, timeout=10
            )
        except requests.RequestException as e:
            app.logger.warning("WeChat %s failed: %s", path, redact(e, token))
            raise Upstream("WeChat could not be reached") from None
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            app.logger.warning("WeChat %s answered HTTP %s, not a JSON object", path, r.status_code)
            raise Upstream("WeChat answered no JSON object")
        # Nothing WeChat (or a gateway on the way) says goes back with our token in it.
        return json.loads(redact(json.dumps(answer), token))

    @app.post("/api/notify")
    def notify():
        user = current_user()
        body = request.get_json(force=True)
        message = {
            "touser": user["openid"],
            "template_id": body["template_id"],
            "data": body["data"],
            "page": body.get("page", "pages/index/index"),
        }
        for attempt in range(2):
            token = broker_token()
            answer = wechat("/cgi-bin/message/subscribe/send", token, message)
            if answer.get("errcode") in STALE_TOKEN_ERRCODES and attempt == 0:
                # Tell the broker (it refreshes once, fleet-wide) and try again with the new one.
                try:
                    broker("POST", "access_token/invalidate", json={"access_token": token})
                except Upstream:
                    pass  # logged; the retry gets whatever the broker holds now
                continue
            break
        status = 200 if answer.get("errcode", 0) == 0 else 502
        return jsonify(answer), status

    @app.post("/api/orders")
    def create_order():
        user = current_user()
        item = (request.get_json(silent=True) or {}).get("item", "coffee")
        if item not in CATALOG:
            return jsonify(error={"code": "invalid_item", "message": f"we sell {', '.join(CATALOG)}"}), 400
        description, amount = CATALOG[item]
        out_trade_no = f"fl{int(time.time() * 1000)}{os.urandom(4).hex()}"
        # Stored before weapp-server is asked (a retry after a timeout sends the same number,
        # and weapp-server answers the same prepay).
        app.config["ORDERS"][out_trade_no] = {
            "openid": user["openid"], "item": item, "amount": amount, "state": "NOTPAY",
        }
        placed = broker("POST", "pay/orders", json={
            "out_trade_no": out_trade_no, "description": description, "amount": amount,
            "openid": user["openid"],
        }).json()
        return jsonify(out_trade_no=out_trade_no, amount=amount,
                       request_payment=placed["request_payment"])

    @app.post("/api/orders/<out_trade_no>/refund")
    def refund_order(out_trade_no):
        user = current_user()
        order = app.config["ORDERS"].get(out_trade_no)
        if order is None or order["openid"] != user["openid"]:
            return jsonify(error={"code": "not_found", "message": "no such order"}), 404
        if order["state"] != "PAID":
            return jsonify(error={"code": "not_paid", "message": f"the order is {order['state']}"}), 409
        # One refund per order, kept with it: asking again (a timeout, a double click) sends
        # the same request, which weapp-server answers with the same refund, never a second.
        if "refund" not in order:
            order["refund"] = {"out_trade_no": out_trade_no, "out_refund_no": f"{out_trade_no}-r",
                               "amount": order["amount"]}
            reason = (request.get_json(silent=True) or {}).get("reason")
            if reason:
                order["refund"]["reason"] = str(reason)[:80]
        body = order["refund"]
        refund = broker("POST", "pay/refunds", json=body).json()
        return jsonify(out_refund_no=refund["out_refund_no"], status=refund["status"])

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
