"""Runs the Flask example against a real `weapp serve --sandbox` (weapp-server with its built-in
WeChat simulator): login through weapp-server, access tokens verified by Flask alone (and
refused when forged, expired, for another app or from another issuer), refresh and logout,
signed webhooks of a real push, a subscribe message sent with a broker token, failures of
WeChat that leak no token, the README's run command as printed, and a WeChat Pay order placed,
paid, refunded, with TRANSACTION.SUCCESS and REFUND.SUCCESS as signed webhooks.

The binary: `WEAPP_BIN`, else target/debug/weapp or target/release/weapp (weapp_sandbox.py)."""

import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from app import create_app
from weapp_sandbox import Sandbox, free_port, weapp_bin

HERE = os.path.dirname(os.path.abspath(__file__))
APPID = "wxflaskexample001"
ISSUER = "https://login.example.test"
WEBHOOK_SECRET = "flask-example-webhook-secret"


@pytest.fixture(scope="module")
def world():
    flask_port = free_port()
    aes = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    sandbox = Sandbox(f"""
access_token_ttl_secs = 5
access_token_issuer = "{ISSUER}"
signing_key_publish_ahead_secs = 4
webhook_retry_base_ms = 100
webhook_allow_private = ["127.0.0.1"]

[[apps]]
appid = "{APPID}"
secret = "flask-example-app-secret"

[apps.push]
token = "flaskexample"
encoding_aes_key = "{aes}"
webhook_url = "http://127.0.0.1:{flask_port}/webhooks/weapp"
webhook_secret = "{WEBHOOK_SECRET}"
""")
    weapp, sim, client_key = sandbox.url, sandbox.sim, sandbox.client_key
    app = create_app(weapp_url=weapp, appid=APPID, issuer=ISSUER, client_key=client_key,
                     webhook_secret=WEBHOOK_SECRET, wechat_api=sim, jwks_cache_secs=2)
    http = make_server("127.0.0.1", flask_port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield {"weapp": weapp, "sim": sim, "app": app, "flask": f"http://127.0.0.1:{flask_port}",
           "client_key": client_key, "admin_key": sandbox.admin_key}
    http.shutdown()
    sandbox.stop()


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


# --- Failures of WeChat leak no token ---------------------------------------------------------

SEND = "/cgi-bin/message/subscribe/send"


def broker_token(w):
    r = requests.get(f"{w['weapp']}/v1/apps/{APPID}/access_token",
                     headers={"Authorization": f"Bearer {w['client_key']}"})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def notify_in_process(w, wechat_api):
    """POST /api/notify on a fresh app whose WeChat is `wechat_api`, in this process (so pytest
    captures its logs)."""
    app = create_app(weapp_url=w["weapp"], appid=APPID, issuer=ISSUER,
                     client_key=w["client_key"], wechat_api=wechat_api)
    s = login(w)
    return app.test_client().post("/api/notify",
                                  headers={"Authorization": f"Bearer {s['access_token']}"},
                                  json={"template_id": "any-template", "data": {}})


def assert_nowhere(secrets, *texts):
    for secret in secrets:
        assert len(secret) > 20
        for text in texts:
            assert secret not in text


def test_an_unreachable_wechat_answers_502_and_logs_no_token(world, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    token = broker_token(world)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = notify_in_process(world, closed)
    assert r.status_code == 502, r.get_data(as_text=True)
    assert r.get_json()["error"]["code"] == "upstream_unavailable"
    # The failure is logged, with the URL redacted (requests' exception names the whole URL).
    assert f"{SEND}?access_token=***" in caplog.text, caplog.text
    out, err = capfd.readouterr()
    assert_nowhere([token, world["client_key"]], r.get_data(as_text=True), caplog.text, out, err)


def test_wechat_errors_answer_without_the_token(world, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    faults = f"{world['sim']}/_sim/faults"
    seen = {broker_token(world)}
    answers = []
    try:
        # A gateway's HTML error page.
        requests.post(faults, json={"path": SEND, "http_status": 502, "count": 1}).raise_for_status()
        r = notify_in_process(world, world["sim"])
        assert r.status_code == 502 and r.get_json()["error"]["code"] == "upstream_unavailable"
        answers.append(r.get_data(as_text=True))

        # A gateway that echoes the URL, token included, in its JSON.
        token = broker_token(world)
        seen.add(token)
        echo = json.dumps({"errcode": -1, "errmsg": f"bad gateway: {SEND}?access_token={token} ({token})"})
        requests.post(faults, json={"path": SEND, "body": echo, "count": 1}).raise_for_status()
        r = notify_in_process(world, world["sim"])
        assert r.status_code == 502 and r.get_json()["errcode"] == -1, r.get_data(as_text=True)
        assert "access_token=***" in r.get_json()["errmsg"]
        answers.append(r.get_data(as_text=True))

        # The token rejected twice: reported to the broker once, retried once, then WeChat's answer.
        requests.post(faults, json={"path": SEND, "errcode": 40001, "count": 2}).raise_for_status()
        r = notify_in_process(world, world["sim"])
        assert r.status_code == 502 and r.get_json()["errcode"] == 40001, r.get_data(as_text=True)
        answers.append(r.get_data(as_text=True))
        seen.add(broker_token(world))
    finally:
        requests.delete(faults)
    # The requests did go out with the token: urllib3's debug lines name their URLs, redacted.
    assert f"{SEND}?access_token=***" in caplog.text, caplog.text
    out, err = capfd.readouterr()
    assert_nowhere(seen | {world["client_key"]}, *answers, caplog.text, out, err)


# --- The README's run command, as printed -----------------------------------------------------

def readme_block(name):
    with open(os.path.join(HERE, "README.md")) as f:
        text = f.read()
    m = re.search(rf"<!-- test_app.py runs this block as printed: {name} -->\n```sh\n(.*?)```", text, re.S)
    assert m, f"README.md has no block marked {name!r}"
    return m.group(1)


def wait_for(check, what, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_the_readme_run_command_reaches_the_sandbox_not_wechat(tmp_path):
    """Both blocks of the README, unchanged, in a fresh directory: `weapp` on PATH, `.venv/bin/python`
    this Python, the ports from WEAPP_LISTEN and PORT (so the test needs no fixed port)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "weapp").symlink_to(weapp_bin())
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (tmp_path / "app.py").symlink_to(os.path.join(HERE, "app.py"))
    weapp_port, flask_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("WEAPP_URL", "WEAPP_APPID", "WEAPP_ISSUER", "WEAPP_CLIENT_KEY",
                        "WECHAT_API_BASE", "WEAPP_CONFIG", "WEAPP_WEBHOOK_SECRET")}
    env |= {"PATH": f"{tmp_path / 'bin'}:{env['PATH']}", "WEAPP_LISTEN": f"127.0.0.1:{weapp_port}",
            "PORT": str(flask_port), "WEAPP_LOG": "warn"}
    started = []

    def run(block):
        with open(tmp_path / f"{block}.log", "w") as log:
            started.append(subprocess.Popen(["bash", "-euo", "pipefail", "-c", readme_block(block)],
                                            cwd=tmp_path, env=env, stdout=log, stderr=log,
                                            start_new_session=True))

    printed = tmp_path / "sandbox.out"
    flask = f"http://127.0.0.1:{flask_port}"
    try:
        run("sandbox")
        wait_for(lambda: "listening" in printed.read_text(), "the sandbox")
        run("backend")
        wait_for(lambda: requests.get(f"{flask}/api/profile").status_code == 401, "the backend")

        exported = dict(re.findall(r"^export (\w+)=(\S+)", printed.read_text(), re.M))
        sim, appid = exported["WECHAT_API_BASE"], exported["WEAPP_APPID"]
        code = requests.post(f"{sim}/_sim/login", json={"appid": appid}).json()
        s = requests.post(f"http://127.0.0.1:{weapp_port}/v1/login",
                          json={"appid": appid, "code": code["code"]}).json()
        auth = {"Authorization": f"Bearer {s['access_token']}"}
        r = requests.get(f"{flask}/api/profile", headers=auth)
        assert r.status_code == 200 and r.json()["openid"] == code["openid"], r.text

        calls = lambda: requests.get(f"{sim}/_sim/stats").json()["calls"].get(SEND, 0)
        before = calls()
        r = requests.post(f"{flask}/api/notify", headers=auth,
                          json={"template_id": "not-a-template", "data": {}})
        # The simulator's answer (WeChat's errcode for a template it does not know), not a 500.
        assert r.status_code == 502 and r.json().get("errcode") not in (None, 0), r.text
        assert calls() == before + 1
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
    logs = "".join((tmp_path / f"{b}.log").read_text() for b in ("sandbox", "backend"))
    assert "Traceback" not in logs, logs


def test_an_unforeseen_exception_is_logged_without_the_token(caplog, capfd):
    """The last line of defence: Flask's own log of an unhandled exception (a bug of ours that
    lets a `requests` error through) passes the filter, which redacts the URL in the traceback."""
    caplog.set_level(logging.DEBUG)
    app = create_app(weapp_url="http://127.0.0.1:9", appid=APPID)
    token = "leaky-token-" + "x" * 40

    def buggy():
        raise requests.ConnectionError(
            f"Max retries exceeded with url: {SEND}?access_token={token} (Caused by ...)")

    app.add_url_rule("/buggy", view_func=buggy)
    r = app.test_client().get("/buggy")
    assert r.status_code == 500
    assert "Traceback" in caplog.text and f"{SEND}?access_token=***" in caplog.text
    out, err = capfd.readouterr()
    assert_nowhere([token], r.get_data(as_text=True), caplog.text, out, err)


def wait_for_event(w, kind, out_trade_no, timeout=20):
    """The webhook event of ``kind`` about ``out_trade_no`` the backend received (verified)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = [e for e in w["app"].config["EVENTS"]
               if e["type"] == kind and (e.get("payload") or {}).get("out_trade_no") == out_trade_no]
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"no {kind} for {out_trade_no}: {w['app'].config['EVENTS']}")


def test_an_order_is_paid_and_refunded_with_signed_webhooks(world):
    """The payment flow: the backend (client key with pay:write) places the order through
    weapp-server, the phone pays it (the simulator's wx.requestPayment), TRANSACTION.SUCCESS
    arrives as a signed webhook, the backend refunds it, and REFUND.SUCCESS follows."""
    s = login(world)
    auth = {"Authorization": f"Bearer {s['access_token']}"}
    # The price is the backend's: an unknown item is refused, and nothing is placed.
    assert requests.post(f"{world['flask']}/api/orders", json={"item": "caviar"},
                         headers=auth).status_code == 400
    assert requests.post(f"{world['flask']}/api/orders", json={"item": "coffee"}).status_code == 401
    r = requests.post(f"{world['flask']}/api/orders", json={"item": "coffee"}, headers=auth)
    assert r.status_code == 200, r.text
    order = r.json()
    no, rp = order["out_trade_no"], order["request_payment"]
    assert order["amount"] == 990 and rp["appId"] == APPID and rp["signType"] == "RSA"
    # Not paid yet: no refund.
    assert requests.post(f"{world['flask']}/api/orders/{no}/refund", headers=auth).status_code == 409

    # What the mini program does with the five parameters: wx.requestPayment (the simulator).
    paid = requests.post(f"{world['sim']}/_sim/pay/request_payment", json={
        "appid": APPID, "openid": s["openid"],
        **{k: rp[k] for k in ("timeStamp", "nonceStr", "package", "signType", "paySign")},
    })
    assert paid.json()["errMsg"] == "requestPayment:ok", paid.text
    event = wait_for_event(world, "TRANSACTION.SUCCESS", no)
    assert len(event) == 1
    assert event[0]["payload"]["amount"]["total"] == 990
    assert event[0]["payload"]["payer"]["openid"] == s["openid"]
    assert world["app"].config["ORDERS"][no]["state"] == "PAID"

    # Someone else cannot refund it.
    other = login(world)
    assert requests.post(f"{world['flask']}/api/orders/{no}/refund",
                         headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 404
    r = requests.post(f"{world['flask']}/api/orders/{no}/refund", json={"reason": "changed my mind"},
                      headers=auth)
    assert r.status_code == 200, r.text
    refund = r.json()
    assert refund["out_refund_no"] == f"{no}-r"
    assert refund["status"] in ("PROCESSING", "SUCCESS"), refund
    # Asked again (a double click): the same refund, not a second one.
    again = requests.post(f"{world['flask']}/api/orders/{no}/refund", headers=auth)
    assert again.status_code == 200 and again.json()["out_refund_no"] == refund["out_refund_no"]
    # WeChat finishes the refund (the simulator, now rather than after its delay).
    ended = requests.post(f"{world['sim']}/_sim/pay/refunds/{refund['out_refund_no']}",
                          json={"status": "SUCCESS"})
    assert ended.status_code == 200, ended.text
    refunded = wait_for_event(world, "REFUND.SUCCESS", no)
    assert len(refunded) == 1
    assert refunded[0]["payload"]["out_refund_no"] == refund["out_refund_no"]
    assert refunded[0]["payload"]["amount"]["refund"] == 990
    assert world["app"].config["ORDERS"][no]["state"] == "REFUNDED"
    # One event each, however often WeChat or the outbox delivered them.
    kinds = [e["type"] for e in world["app"].config["EVENTS"]
             if (e.get("payload") or {}).get("out_trade_no") == no]
    assert sorted(kinds) == ["REFUND.SUCCESS", "TRANSACTION.SUCCESS"], kinds
