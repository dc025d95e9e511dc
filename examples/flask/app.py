"""The seed's Flask backend, done right: the mini program logs in through weapp-server, and this
backend never sees a WeChat secret or a session_key.

- ``GET /api/profile`` trusts ``Authorization: Bearer <access token>`` after verifying the JWT
  alone (PyJWT and the server's JWKS: ES256 only, issuer, audience = our appid, expiry).
- ``POST /webhooks/weapp`` receives weapp-server's webhooks (pushes from WeChat, verified and
  decrypted there) and checks ``Weapp-Signature`` with the standard library.
- ``POST /api/notify`` sends the signed-in user a subscribe message with an access token from
  weapp-server's broker (plain ``requests``; no WeChat SDK), reporting a rejected token once.

Configuration (environment, or arguments of ``create_app``): ``WEAPP_URL``, ``WEAPP_APPID``,
``WEAPP_ISSUER``, ``WEAPP_CLIENT_KEY``, ``WEAPP_WEBHOOK_SECRET``, ``WECHAT_API_BASE``.
"""

import hashlib
import hmac
import json
import os
import time

import jwt
import requests
from flask import Flask, jsonify, request

# How far a webhook's timestamp may be from our clock (replays older than this are refused).
WEBHOOK_TOLERANCE_SECS = 300
# Tokens WeChat rejects because another was issued, or it expired.
STALE_TOKEN_ERRCODES = {40001, 40014, 42001}


class Unauthorized(Exception):
    """A request without a valid access token."""


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
    # The JWKS is cached for `jwks_cache_secs` (keep it under weapp-server's
    # signing_key_publish_ahead_secs, 600 by default: the next key is then known before it
    # signs). A token naming an unknown kid makes PyJWKClient fetch the set again, but at most
    # once per 30-second cool-down.
    jwks = jwt.PyJWKClient(
        f"{weapp_url}/.well-known/jwks.json", cache_keys=True, lifespan=jwks_cache_secs
    )
    app.config["EVENTS"] = []
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

    @app.get("/api/profile")
    def profile():
        user = current_user()
        return jsonify(openid=user["openid"], unionid=user.get("unionid"), appid=user["aud"])

    @app.post("/webhooks/weapp")
    def webhook():
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
        return "", 204

    def broker_token():
        r = requests.get(
            f"{weapp_url}/v1/apps/{appid}/access_token",
            headers={"Authorization": f"Bearer {client_key}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["access_token"]

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
            answer = requests.post(
                f"{wechat_api}/cgi-bin/message/subscribe/send",
                params={"access_token": token},
                json=message,
                timeout=10,
            ).json()
            if answer.get("errcode") in STALE_TOKEN_ERRCODES and attempt == 0:
                # Tell the broker (it refreshes once, fleet-wide) and try again with the new one.
                requests.post(
                    f"{weapp_url}/v1/apps/{appid}/access_token/invalidate",
                    headers={"Authorization": f"Bearer {client_key}"},
                    json={"access_token": token},
                    timeout=10,
                )
                continue
            break
        status = 200 if answer.get("errcode", 0) == 0 else 502
        return jsonify(answer), status

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
