"""The Flask login on the weapp package, against the simulator the package brings
(`weapp_sim`, no WeChat account, no other binary)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import json
import concurrent.futures
import urllib.error
from typing import Any, Dict, Tuple

import pytest
from flask.testing import FlaskClient

import weapp
from weapp.testing import Sim, SimApp

from flask_app import create_app


def login(sim: Sim, app: SimApp, http: FlaskClient) -> Tuple[str, str]:
    code, openid = sim.login(app)
    r = http.post("/v1/verify", json={"jsCode": code})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["openid"] == openid and "session_key" not in json.dumps(body)
    return body["token"], openid


def template(client: weapp.Client) -> Tuple[str, Dict[str, str]]:
    """A private template of the app, and a valid value for each of its keys."""
    category = client.subscribe.categories()[0]["id"]
    tid = client.subscribe.public_templates([category])["data"][0]["tid"]
    keywords = client.subscribe.public_keywords(tid)[:2]
    tmpl = client.subscribe.add_template(tid, [k["kid"] for k in keywords], "test")["priTmplId"]
    content = next(t for t in client.subscribe.templates() if t["priTmplId"] == tmpl)["content"]
    values = {"thing": "咖啡", "number": "3", "amount": "1.00", "time": "2026-12-07 10:00", "date": "2026-12-07",
              "phrase": "已完成", "name": "张三", "letter": "A", "character_string": "A1", "phone_number": "13800138000",
              "car_number": "粤A12345", "symbol": "%"}
    data = {}
    for part in content.split("{{")[1:]:
        key = part.split(".DATA")[0]
        data[key] = values[key.rstrip("0123456789")]
    return tmpl, data


def test_login_phone_decrypt_subscribe(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    http = create_app(client).test_client()
    token, openid = login(weapp_sim, app, http)
    auth = {"Authorization": f"Bearer {token}"}

    r = http.post("/v1/phone", json={"code": weapp_sim.phone_code(app, openid, "13800138000")}, headers=auth)
    assert r.status_code == 200 and r.get_json()["phone"] == "13800138000"

    data, iv = weapp_sim.open_data(app, openid, {"nickName": "小程序用户"})
    r = http.post("/v1/decrypt", json={"encryptedData": data, "iv": iv}, headers=auth)
    assert r.status_code == 200 and r.get_json()["nickName"] == "小程序用户"
    r = http.post("/v1/decrypt", json={"encryptedData": data[:-4] + "AAA=", "iv": iv}, headers=auth)
    assert r.status_code == 400

    tmpl, values = template(client)
    weapp_sim.subscribe_grant(app, openid, tmpl)
    r = http.post("/v1/subscribe", json={"template_id": tmpl, "data": values}, headers=auth)
    assert r.status_code == 200, r.get_json()
    assert len(weapp_sim.messages(app, openid)) == 1
    # The one grant is used: WeChat refuses the second (43101), the backend says so.
    r = http.post("/v1/subscribe", json={"template_id": tmpl, "data": values}, headers=auth)
    assert r.status_code == 502 and "43101" in r.get_json()["error"]["message"]


def test_bad_input_is_a_clear_4xx(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    http = create_app(weapp_sim.client(app)).test_client()
    assert http.post("/v1/verify", json={}).status_code == 400
    code, _ = weapp_sim.login(app)
    assert http.post("/v1/verify", json={"jsCode": code}).status_code == 200
    reused = http.post("/v1/verify", json={"jsCode": code})
    assert reused.status_code == 400 and reused.get_json()["error"]["code"] == "invalid_code"
    assert http.post("/v1/phone", json={"code": "x"}).status_code == 401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_preload_workers_share_one_token(weapp_sim: Sim, redis_url: str) -> None:
    """gunicorn --preload builds the app (and its client) in the master, then forks: each
    worker makes its own runtime, and the fleet fetches one token through Redis."""
    app = weapp_sim.create_app()
    port = free_port()
    env = {
        **os.environ,
        "WEAPP_APPID": app.appid,
        "WEAPP_SECRET": app.secret,
        "WEAPP_BASE_URL": weapp_sim.url,
        "WEAPP_TOKEN_STORE": redis_url,
        "WEAPP_TOKEN_MODE": "classic",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "-b", f"127.0.0.1:{port}", "flask_app:create_app()"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        weapp_sim.fault("/cgi-bin/token", latency_ms=300, count=1)

        def fetch(i: int) -> bytes:
            url = f"http://127.0.0.1:{port}/v1/share-code?scene=s{i}"
            return bytes(urllib.request.urlopen(url, timeout=30).read())

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            pngs = list(pool.map(fetch, range(36)))
        assert all(p.startswith(b"\x89PNG") for p in pngs)
        # Three workers, 36 codes, one token: the master built the client but connected
        # nothing; each worker made its own runtime; Redis held one lock and one token.
        assert weapp_sim.tokens_issued(app) == 1
        assert weapp_sim.stats()["calls"]["/cgi-bin/token"] == 1
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
        assert b"Traceback" not in stderr, stderr.decode()[-2000:]
