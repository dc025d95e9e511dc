"""The seed's Flask login on wechatpy 1.8.18 (the peer of examples/python/flask_app.py's
POST /v1/verify), for scripts/bench-python-login. wechatpy hard-codes api.weixin.qq.com, so a
requests transport adapter sends its requests to WEAPP_BASE_URL; everything above is
wechatpy's own code (its code_to_session also fetches and sends an access token)."""

import os
import secrets
import threading

from flask import Flask, jsonify, request
from requests.adapters import HTTPAdapter
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException

WECHAT = "https://api.weixin.qq.com"


class ToSimulator(HTTPAdapter):
    def __init__(self, base):
        super().__init__()
        self.base = base.rstrip("/")

    def send(self, req, **kwargs):
        req.url = self.base + req.url[len(WECHAT):]
        return super().send(req, **kwargs)


def create_app():
    client = WeChatClient(os.environ["WEAPP_APPID"], os.environ["WEAPP_SECRET"], timeout=10)
    client._http.mount(WECHAT + "/", ToSimulator(os.environ["WEAPP_BASE_URL"]))
    sessions = {}
    lock = threading.Lock()
    app = Flask(__name__)

    @app.post("/v1/verify")
    def verify():
        body = request.get_json(silent=True) or {}
        code = body.get("jsCode")
        if not isinstance(code, str) or not code:
            return jsonify({"error": {"code": "bad_request"}}), 400
        try:
            session = client.wxa.code_to_session(code)
        except WeChatClientException:
            return jsonify({"error": {"code": "invalid_code"}}), 400
        token = secrets.token_urlsafe(32)
        with lock:
            sessions[token] = (session["openid"], session["session_key"])
        return jsonify({"token": token, "openid": session["openid"], "unionid": session.get("unionid")}), 200

    return app
