"""Runs the Flask example against a real `weapp serve --sandbox` (weapp-server with its built-in
WeChat simulator): login through weapp-server, access tokens verified by Flask alone (and
refused when forged, expired, for another app or from another issuer), refresh and logout,
signed webhooks of a real push, and a subscribe message sent with a broker token.

`WEAPP_BIN` names the weapp binary (default: target/debug/weapp of this repository)."""

import base64
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from app import create_app

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
APPID = "wxflaskexample001"
ISSUER = "https://login.example.test"
WEBHOOK_SECRET = "flask-example-webhook-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world():
    weapp_port, flask_port = free_port(), free_port()
    work = tempfile.mkdtemp()
    aes = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    config = f"""
access_token_ttl_secs = 5
access_token_issuer = "{ISSUER}"
signing_key_publish_ahead_secs = 4
webhook_retry_base_ms = 100

[[apps]]
appid = "{APPID}"
secret = "flask-example-app-secret"

[apps.push]
token = "flaskexample"
encoding_aes_key = "{aes}"
webhook_url = "http://127.0.0.1:{flask_port}/webhooks/weapp"
webhook_secret = "{WEBHOOK_SECRET}"
"""
    with open(os.path.join(work, "weapp.toml"), "w") as f:
        f.write(config)
    binary = os.environ.get("WEAPP_BIN", os.path.join(ROOT, "target", "debug", "weapp"))
    out = open(os.path.join(work, "out"), "w+")
    server = subprocess.Popen(
        [binary, "serve", "--sandbox", "--config", os.path.join(work, "weapp.toml"),
         "--listen", f"127.0.0.1:{weapp_port}", "--database-url", f"sqlite://{work}/weapp.db"],
        stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "WEAPP_LOG": "warn"},
    )
    text = ""
    for _ in range(200):
        out.seek(0)
        text = out.read()
        if "listening" in text:
            break
        time.sleep(0.05)
    sim = re.search(r"^sandbox WeChat simulator: (\S+)", text, re.M).group(1)
    client_key = re.search(r"^  broker client key: (\S+)", text, re.M).group(1)
    admin_key = re.search(r"^  admin key: (\S+)", text, re.M).group(1)
    weapp = f"http://127.0.0.1:{weapp_port}"
    app = create_app(weapp_url=weapp, appid=APPID, issuer=ISSUER, client_key=client_key,
                     webhook_secret=WEBHOOK_SECRET, wechat_api=sim, jwks_cache_secs=2)
    http = make_server("127.0.0.1", flask_port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield {"weapp": weapp, "sim": sim, "app": app, "flask": f"http://127.0.0.1:{flask_port}",
           "client_key": client_key, "admin_key": admin_key}
    http.shutdown()
    server.terminate()
    server.wait(timeout=10)


def login(w):
    """What the mini program does: wx.login() (here: the simulator), then POST /v1/login."""
    code = requests.post(f"{w['sim']}/_sim/login", json={"appid": APPID}).json()
    r = requests.post(f"{w['weapp']}/v1/login", json={"appid": APPID, "code": code["code"]})
    assert r.status_code == 200, r.text
    return r.json() | {"openid": code["openid"]}


def profile(w, token):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{w['flask']}/api/profile", headers=headers)


def test_access_tokens_verify_alone_and_forgeries_do_not(world):
    s = login(world)
    r = profile(world, s["access_token"])
    assert r.status_code == 200, r.text
    assert r.json()["openid"] == s["openid"] and r.json()["appid"] == APPID

    assert profile(world, None).status_code == 401
    assert profile(world, s["token"]).status_code == 401  # the opaque session token is no JWT
    head, payload, sig = s["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["openid"] = claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert profile(world, f"{head}.{forged}.{sig}").status_code == 401
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    assert profile(world, f"{none_alg}.{payload}.").status_code == 401


def test_audience_and_issuer_are_enforced(world):
    s = login(world)
    auth = {"Authorization": f"Bearer {s['access_token']}"}
    for other in (
        create_app(weapp_url=world["weapp"], appid="wxanotherapp0001", issuer=ISSUER),
        create_app(weapp_url=world["weapp"], appid=APPID, issuer="https://impostor.test"),
    ):
        r = other.test_client().get("/api/profile", headers=auth)
        assert r.status_code == 401, r.get_data(as_text=True)
    ok = create_app(weapp_url=world["weapp"], appid=APPID, issuer=ISSUER)
    assert ok.test_client().get("/api/profile", headers=auth).status_code == 200


def test_expired_tokens_are_refused_and_refresh_lasts_until_logout(world):
    s = login(world)
    assert profile(world, s["access_token"]).status_code == 200
    time.sleep(s["access_token_expires_at"] - time.time() + 1.5)  # the test server's ttl: 5 s
    r = profile(world, s["access_token"])
    assert r.status_code == 401 and "ExpiredSignature" in r.json()["error"]["message"]

    session = {"Authorization": f"Bearer {s['token']}"}
    fresh = requests.post(f"{world['weapp']}/v1/session/refresh", headers=session)
    assert fresh.status_code == 200, fresh.text
    assert profile(world, fresh.json()["access_token"]).status_code == 200

    assert requests.post(f"{world['weapp']}/v1/logout", headers=session).status_code == 204
    assert requests.post(f"{world['weapp']}/v1/session/refresh", headers=session).status_code == 401


def test_webhooks_of_a_real_push_arrive_signed_and_forgeries_are_refused(world):
    s = login(world)
    r = requests.post(f"{world['sim']}/_sim/user-message",
                      json={"appid": APPID, "openid": s["openid"], "kind": "text",
                            "content": "hello from the phone"})
    assert r.status_code == 200, r.text
    deadline = time.time() + 10
    while time.time() < deadline:
        got = [e for e in world["app"].config["EVENTS"]
               if "hello from the phone" in json.dumps(e, ensure_ascii=False)]
        if got:
            break
        time.sleep(0.1)
    assert got, world["app"].config["EVENTS"]
    assert got[0]["appid"] == APPID

    body = json.dumps({"id": 999999, "appid": APPID, "type": "text", "payload": {}})
    hook = f"{world['flask']}/webhooks/weapp"
    forged = {"Weapp-Signature": f"t={int(time.time())},v1={'0' * 64}",
              "Content-Type": "application/json"}
    assert requests.post(hook, data=body, headers=forged).status_code == 401
    assert requests.post(hook, data=body, headers={"Content-Type": "application/json"}).status_code == 401
    import hashlib
    import hmac
    old = int(time.time()) - 3600
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{old}.{body}".encode(), hashlib.sha256).hexdigest()
    replayed = {"Weapp-Signature": f"t={old},v1={mac}", "Content-Type": "application/json"}
    assert requests.post(hook, data=body, headers=replayed).status_code == 401


def test_a_subscribe_message_goes_out_with_a_broker_token(world):
    s = login(world)
    # The backend picks a template from the public library, as it would in production.
    token = requests.get(f"{world['weapp']}/v1/apps/{APPID}/access_token",
                         headers={"Authorization": f"Bearer {world['client_key']}"}).json()
    added = requests.post(f"{world['sim']}/wxaapi/newtmpl/addtemplate",
                          params={"access_token": token["access_token"]},
                          json={"tid": "1001", "kidList": [2, 3], "sceneDesc": "delivery"}).json()
    assert added["errcode"] == 0, added
    templates = requests.get(f"{world['sim']}/_sim/apps/{APPID}/templates").json()["templates"]
    t = next(t for t in templates if t["priTmplId"] == added["priTmplId"])
    # Fill every key with the template's own example value.
    keys = re.findall(r"\{\{(\w+)\.DATA\}\}", t["content"])
    examples = [line.split(":", 1)[-1] for line in t["example"].splitlines()]
    data = {k: {"value": v} for k, v in zip(keys, examples)}
    grant = requests.post(f"{world['sim']}/_sim/subscribe-grant",
                          json={"appid": APPID, "openid": s["openid"], "template_id": t["priTmplId"]})
    assert grant.status_code == 200, grant.text

    auth = {"Authorization": f"Bearer {s['access_token']}"}
    r = requests.post(f"{world['flask']}/api/notify", headers=auth,
                      json={"template_id": t["priTmplId"], "data": data})
    assert r.status_code == 200, r.text
    assert r.json()["errcode"] == 0
    got = requests.get(f"{world['sim']}/_sim/messages",
                       params={"appid": APPID, "openid": s["openid"]}).json()["messages"]
    assert any(m.get("template_id") == t["priTmplId"] for m in got), got
    # No grant left: WeChat's 43101 comes back as an upstream failure.
    again = requests.post(f"{world['flask']}/api/notify", headers=auth,
                          json={"template_id": t["priTmplId"], "data": data})
    assert again.status_code == 502 and again.json()["errcode"] == 43101


def test_a_key_rotation_is_followed_and_old_tokens_keep_verifying(world):
    """The next key is published before it signs (4 s here, 600 by default) and the backend's
    JWKS cache is shorter (2 s here, 300 by default): the backend knows the key before it meets
    it, with the libraries' refetch cool-downs intact."""
    first = login(world)
    assert profile(world, first["access_token"]).status_code == 200  # the JWKS is cached now
    admin = {"Authorization": f"Bearer {world['admin_key']}"}
    r = requests.post(f"{world['weapp']}/v1/admin/signing-keys/rotate", json={}, headers=admin)
    assert r.status_code == 201, r.text
    kid = lambda tok: json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))["kid"]
    # Meanwhile the old key still signs, and the backend's cache expires and is refilled (the
    # next key included).
    time.sleep(2.5)
    before = login(world)
    assert kid(before["access_token"]) == kid(first["access_token"])
    assert profile(world, before["access_token"]).status_code == 200
    time.sleep(2.0)
    after = login(world)
    assert kid(after["access_token"]) != kid(before["access_token"]), "the next key signs now"
    r = profile(world, after["access_token"])
    assert r.status_code == 200, r.text
    # The retired key stays published: its tokens still verify.
    assert profile(world, before["access_token"]).status_code == 200
