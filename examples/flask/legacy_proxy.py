"""The seed's login route, kept as a thin proxy to weapp-server while the mini program still calls
it (docs/migrating-from-flask.md, option a).

The mini program keeps sending ``POST /v1/verify {"jsCode": …}`` here; this backend forwards the
code to weapp-server's ``POST /v1/login {appid, code}`` and answers what weapp-server answered
(``{token, expires_at, openid, unionid, access_token, access_token_expires_at}``, or its error
with the same status — 429 and its ``Retry-After`` included). It no longer calls
``code_to_session``, holds no AppSecret and never sees a ``session_key``.

weapp-server limits logins per client address (``login_rate_limit_per_minute``). Every login now
arrives from this backend, so it sends the mini program user's address in ``X-Forwarded-For`` —
replacing whatever the user sent in that header, which proves nothing — and weapp-server believes
it only from a trusted proxy: ``trusted_proxies = ["<this backend's address>/32"]``. Without that
setting every user shares this backend's budget.

The user's address is ``request.remote_addr``. When this backend itself sits behind a load
balancer, make that the user's address first (``werkzeug.middleware.proxy_fix.ProxyFix``), or
pass ``client_address`` to ``legacy_login``.

Configuration of the runnable app (``python legacy_proxy.py``): ``WEAPP_URL``, ``WEAPP_APPID``,
``PORT`` (default 5000).
"""

import os

import requests
from flask import Blueprint, Flask, current_app, jsonify, request

# What weapp-server's answer carries that the mini program needs to see.
PASSED_HEADERS = ("Retry-After", "X-Request-Id")


def legacy_login(weapp_url, appid, client_address=None, timeout=10):
    """A blueprint with the old ``POST /v1/verify``, forwarding to weapp-server at ``weapp_url``
    for ``appid``. ``client_address()`` names the user's address (default:
    ``request.remote_addr``)."""
    weapp_url = weapp_url.rstrip("/")
    bp = Blueprint("legacy_login", __name__)
    http = requests.Session()  # keep-alive to weapp-server

    @bp.post("/v1/verify")
    def verify():
        body = request.get_json(silent=True) or {}
        code = body.get("jsCode") if isinstance(body, dict) else None
        if not isinstance(code, str) or not code:
            return jsonify(error={"code": "bad_request", "message": "jsCode is required"}), 400
        headers = {}
        user = client_address() if client_address else request.remote_addr
        if user:
            headers["X-Forwarded-For"] = user
        if request.headers.get("X-Request-Id"):
            headers["X-Request-Id"] = request.headers["X-Request-Id"]
        try:
            r = http.post(f"{weapp_url}/v1/login", json={"appid": appid, "code": code},
                          headers=headers, timeout=timeout)
        except requests.RequestException as e:
            # The login code is in the body, never in a URL; still, name only the failure's kind.
            current_app.logger.warning("weapp-server unreachable: %s", type(e).__name__)
            return jsonify(error={"code": "upstream_unavailable",
                                  "message": "login is unavailable, try again"}), 502
        passed = {h: r.headers[h] for h in PASSED_HEADERS if h in r.headers}
        # If the mini program expects the seed's own field names, map them here (for example
        # {"sessionId": answer["token"], "openid": answer["openid"]}).
        return current_app.response_class(r.content, status=r.status_code, headers=passed,
                                          mimetype="application/json")

    return bp


def create_app(weapp_url=None, appid=None, client_address=None):
    weapp_url = weapp_url or os.environ.get("WEAPP_URL", "http://127.0.0.1:8080")
    appid = appid or os.environ.get("WEAPP_APPID")
    if not appid:
        raise ValueError("WEAPP_APPID is required")
    app = Flask(__name__)
    app.register_blueprint(legacy_login(weapp_url, appid, client_address))
    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
