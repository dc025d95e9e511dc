"""The old login route (legacy_proxy.py) against a real `weapp serve --sandbox` that trusts this
backend (`trusted_proxies = ["127.0.0.1/32"]`) with a login limit of 3 a minute.

Each "user" is a real HTTP client with its own source address on the loopback network
(127.0.0.2, 127.0.0.3, …): the Flask backend sees that address and forwards it in
X-Forwarded-For; weapp-server sees the backend (127.0.0.1) as the peer."""

import threading
import time

import pytest
import requests
from requests.adapters import HTTPAdapter
from werkzeug.serving import make_server

from legacy_proxy import create_app
from weapp_sandbox import Sandbox, free_port

APPID = "wxlegacyproxy0001"
LIMIT = 3  # login_rate_limit_per_minute of the test server

CONFIG = f"""
login_rate_limit_per_minute = {LIMIT}
{{trusted}}

[[apps]]
appid = "{APPID}"
secret = "legacy-proxy-app-secret"
"""


class FromAddress(HTTPAdapter):
    """Connects from `address` (any 127.0.0.0/8 address is this machine's loopback)."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def user(address):
    s = requests.Session()
    s.mount("http://", FromAddress(address))
    return s


def start(trusted_proxies):
    trusted = f"trusted_proxies = {trusted_proxies!r}".replace("'", '"') if trusted_proxies else ""
    sandbox = Sandbox(CONFIG.format(trusted=trusted))
    port = free_port()
    http = make_server("127.0.0.1", port, create_app(weapp_url=sandbox.url, appid=APPID),
                       threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return sandbox, http, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def proxied():
    sandbox, http, backend = start(["127.0.0.1/32"])
    yield {"sandbox": sandbox, "backend": backend}
    http.shutdown()
    sandbox.stop()


@pytest.fixture(scope="module")
def untrusted():
    sandbox, http, backend = start(None)
    yield {"sandbox": sandbox, "backend": backend}
    http.shutdown()
    sandbox.stop()


def fresh_window():
    """The limit counts per wall-clock minute: start a burst well inside one."""
    if 60 - time.time() % 60 < 10:
        time.sleep(60 - time.time() % 60 + 0.2)


def verify(w, who, **headers):
    """The mini program's `wx.login()` (the simulator) and then the seed's `POST /v1/verify`."""
    code = requests.post(f"{w['sandbox'].sim}/_sim/login", json={"appid": APPID}).json()
    r = who.post(f"{w['backend']}/v1/verify", json={"jsCode": code["code"]}, headers=headers)
    return r, code["openid"]


def test_the_old_route_logs_in_through_weapp_server(proxied):
    r, openid = verify(proxied, user("127.0.0.2"))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["openid"] == openid and "session_key" not in answer
    assert answer["token"].startswith("wa_") and answer["access_token"].count(".") == 2
    # A real session of weapp-server: the mini program can use it there.
    me = requests.get(f"{proxied['sandbox'].url}/v1/me",
                      headers={"Authorization": f"Bearer {answer['token']}"})
    assert me.status_code == 200 and me.json()["openid"] == openid, me.text

    assert user("127.0.0.2").post(f"{proxied['backend']}/v1/verify", json={}).status_code == 400
    spent = user("127.0.0.2").post(f"{proxied['backend']}/v1/verify",
                                   json={"jsCode": "never-issued"})
    assert spent.status_code == 400 and spent.json()["error"]["wechat_errcode"] == 40029


def test_the_login_limit_applies_per_user_behind_the_proxy(proxied):
    fresh_window()
    alice, bob = user("127.0.0.3"), user("127.0.0.4")
    for _ in range(LIMIT):
        r, _ = verify(proxied, alice)
        assert r.status_code == 200, r.text
    r, _ = verify(proxied, alice)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    # Alice cannot escape by naming another address: the proxy replaces her X-Forwarded-For.
    r, _ = verify(proxied, alice, **{"X-Forwarded-For": "198.51.100.7"})
    assert r.status_code == 429, r.text
    # Bob, through the same backend, has a budget of his own.
    for _ in range(LIMIT):
        r, _ = verify(proxied, bob)
        assert r.status_code == 200, r.text


def test_without_trusted_proxies_every_user_shares_the_backends_budget(untrusted):
    """Why the setting matters: weapp-server then sees only the backend, and one busy user (or
    the whole user base at peak) locks everyone out."""
    fresh_window()
    alice, bob = user("127.0.0.5"), user("127.0.0.6")
    for _ in range(LIMIT):
        r, _ = verify(untrusted, alice)
        assert r.status_code == 200, r.text
    r, _ = verify(untrusted, bob)
    assert r.status_code == 429, r.text


def test_an_unreachable_weapp_server_is_a_502(proxied):
    app = create_app(weapp_url=f"http://127.0.0.1:{free_port()}", appid=APPID)
    r = app.test_client().post("/v1/verify", json={"jsCode": "some-code"})
    assert r.status_code == 502 and r.get_json()["error"]["code"] == "upstream_unavailable"
