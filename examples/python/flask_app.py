"""The seed's Flask login, on the weapp Python package.

The mini program calls ``wx.login()`` and posts ``{"jsCode": …}`` to ``/v1/verify``; this backend
exchanges it with WeChat (``code2session``), keeps the ``session_key`` on the server (never in a
response, never in a log) and answers a session token of its own. With that token the mini
program can then ask for the user's phone number, have ``encryptedData`` decrypted, and be sent
a subscribe message.

    WEAPP_APPID=wx… WEAPP_SECRET=… WEAPP_TOKEN_STORE=redis://127.0.0.1:6379/0 \\
        gunicorn --preload -w 4 'flask_app:create_app()'

``--preload`` is safe: the client connects nothing until its first call in each worker.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any, Dict, Optional, Tuple

from flask import Flask, jsonify, request

import weapp

Answer = Tuple[Any, int]


class Sessions:
    """Sessions of this backend (in memory here; a table or Redis in production)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: Dict[str, Tuple[str, weapp.SessionKey]] = {}

    def open(self, openid: str, key: weapp.SessionKey) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._by_token[token] = (openid, key)
        return token

    def find(self, token: str) -> Optional[Tuple[str, weapp.SessionKey]]:
        with self._lock:
            return self._by_token.get(token)


def error(status: int, code: str, message: str) -> Answer:
    return jsonify({"error": {"code": code, "message": message}}), status


def create_app(client: Optional[weapp.Client] = None) -> Flask:
    """The app; ``client`` defaults to one configured from ``WEAPP_*`` variables."""
    if client is None:
        client = weapp.Client(
            os.environ["WEAPP_APPID"],
            os.environ["WEAPP_SECRET"],
            token_store=os.environ.get("WEAPP_TOKEN_STORE") or None,
            token_mode="classic" if os.environ.get("WEAPP_TOKEN_MODE") == "classic" else "stable",
            base_url=os.environ.get("WEAPP_BASE_URL") or None,
        )
    wx = client
    sessions = Sessions()
    app = Flask(__name__)

    def current() -> Optional[Tuple[str, weapp.SessionKey]]:
        header = request.headers.get("Authorization", "")
        return sessions.find(header[7:]) if header.startswith("Bearer ") else None

    @app.errorhandler(weapp.ApiError)
    def wechat_refused(e: weapp.ApiError) -> Answer:
        # errcode and rid are what WeChat's support asks for; errmsg never holds a secret.
        return error(502, "wechat_error", f"WeChat error {e.errcode} (rid {e.rid})")

    @app.errorhandler(weapp.WeappError)
    def unavailable(e: weapp.WeappError) -> Answer:
        return error(503, "wechat_unavailable", type(e).__name__)

    @app.post("/v1/verify")
    def verify() -> Answer:
        body = request.get_json(silent=True) or {}
        code = body.get("jsCode")
        if not isinstance(code, str) or not code:
            return error(400, "bad_request", "jsCode is required")
        try:
            session = wx.auth.code2session(code)
        except weapp.InvalidCodeError:
            return error(400, "invalid_code", "the login code is wrong, used or expired")
        token = sessions.open(session["openid"], session["session_key"])
        return jsonify({"token": token, "openid": session["openid"], "unionid": session["unionid"]}), 200

    @app.post("/v1/phone")
    def phone() -> Answer:
        who = current()
        body = request.get_json(silent=True) or {}
        if who is None:
            return error(401, "unauthorized", "log in first")
        if not isinstance(body.get("code"), str):
            return error(400, "bad_request", "code is required")
        try:
            info = wx.auth.get_phone_number(body["code"])
        except weapp.InvalidCodeError:
            return error(400, "invalid_code", "the phone code is wrong, used or expired")
        return jsonify({"phone": info["phoneNumber"], "country_code": info["countryCode"]}), 200

    @app.post("/v1/decrypt")
    def decrypt() -> Answer:
        who = current()
        body = request.get_json(silent=True) or {}
        if who is None:
            return error(401, "unauthorized", "log in first")
        try:
            data = weapp.decrypt_user_data(who[1], body.get("encryptedData"), body.get("iv"), appid=wx.appid)
        except weapp.DecryptError:
            return error(400, "bad_encrypted_data", "the data does not decrypt with this session")
        return jsonify(data), 200

    @app.post("/v1/subscribe")
    def subscribe() -> Answer:
        who = current()
        body = request.get_json(silent=True) or {}
        if who is None:
            return error(401, "unauthorized", "log in first")
        try:
            sent = wx.subscribe.send(who[0], str(body.get("template_id", "")), body.get("data") or {}, page=body.get("page"))
        except weapp.ApiError as e:
            if e.rid is None:  # refused before sending: a value breaks its key's rules
                return error(400, "bad_message", e.errmsg)
            raise
        return jsonify(sent), 200

    @app.get("/v1/share-code")
    def share_code() -> Any:
        """A mini program code for sharing (a PNG): every worker needs the access token."""
        scene = request.args.get("scene", "")
        if not scene:
            return error(400, "bad_request", "scene is required")
        png = wx.wxacode.get_unlimited(scene, check_path=False)
        return app.response_class(png, mimetype="image/png")

    return app
