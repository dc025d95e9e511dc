"""wechatpy 1.8.18 against a real `weapp serve` whose broker token dies upstream.

Starts `weapp sim` (WeChat) and two `weapp serve` (one app in stable token mode, one in classic),
then checks, with wechatpy's own code:

- a wechatpy client changed in its token fetch alone (pointed at the mirror, a broker client
  key in place of the AppSecret) survives the broker's token dying upstream (a foreign
  force_refresh and WeChat's 5-minute grace; two foreign classic fetches): one call succeeds
  with at most 3 mirror fetches and at most 1 new upstream token;
- the same with 20 such clients at once: at most 1 new upstream token;
- `force_refresh: true` on the mirror replaces only a dead token;
- the recipe's `WeappWeChatClient` does the same, and ends a 40001 that never clears with a
  WeChatClientException after its bounded refetches — no recursion — whose text carries
  neither the token nor the client key.

WeChat's API host is hard-coded in wechatpy: its calls reach the simulator through a requests
transport adapter, as they would reach WeChat in production. Nothing else of wechatpy changes.

Usage: python test_recipe.py   (WEAPP_BIN, else target/{debug,release}/weapp)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from requests.adapters import HTTPAdapter
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weapp_wechatpy import WeappWeChatClient  # noqa: E402

WECHAT = "https://api.weixin.qq.com"
ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "legacy-backend-key-0123456789"


def weapp_bin():
    if os.environ.get("WEAPP_BIN"):
        return os.environ["WEAPP_BIN"]
    found = [p for p in (ROOT / "target/debug/weapp", ROOT / "target/release/weapp") if p.exists()]
    if not found:
        sys.exit("build weapp first: cargo build -p weapp-cli (or set WEAPP_BIN)")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{url}: the process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    sys.exit(f"{url} did not come up")


def control(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


class ToSimulator(HTTPAdapter):
    """Sends wechatpy's requests for WeChat's host to the simulator."""

    def __init__(self, base):
        super().__init__()
        self.base = base.rstrip("/")

    def send(self, request, **kwargs):
        request.url = self.base + request.url[len(WECHAT):]
        return super().send(request, **kwargs)


class MirrorWeChatClient(WeChatClient):
    """wechatpy exactly as a user would change it: the token fetch alone, to the mirror."""

    broker = None

    def __init__(self, appid, secret, counter):
        super().__init__(appid, secret)
        self.counter = counter

    def fetch_access_token(self):
        self.counter.append(1)
        return self._fetch_access_token(
            url=self.broker + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


class Counted(WeappWeChatClient):
    def __init__(self, *args, counter, **kwargs):
        super().__init__(*args, **kwargs)
        self.counter = counter

    def fetch_access_token(self, force_refresh=False):
        self.counter.append(1)
        return super().fetch_access_token(force_refresh)


def main():
    binary = weapp_bin()
    work = Path(tempfile.mkdtemp(prefix="weapp-wechatpy-"))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    procs = []

    def start(args, log):
        p = subprocess.Popen([binary, *args], stdout=open(work / log, "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        sim = start(["sim", "--listen", f"127.0.0.1:{sim_port}"], "sim.log")
        wait_for(sim_url + "/_sim/stats", sim)
        servers = {}
        for mode in ("stable", "classic"):
            app = control(sim_url, "/_sim/apps", {})
            port = free_port()
            (work / f"{mode}.toml").write_text(
                f'listen = "127.0.0.1:{port}"\n'
                f'database_url = "sqlite://{work}/{mode}.db"\n'
                f"allow_generated_data_key = true\n"
                f'webhook_allow_private = ["127.0.0.0/8"]\n'
                f"[[apps]]\n"
                f'appid = "{app["appid"]}"\n'
                f'secret = "{app["secret"]}"\n'
                f'api_base = "{sim_url}"\n'
                f'token_mode = "{mode}"\n'
                f"[[clients]]\n"
                f'name = "legacy"\n'
                f'key = "{CLIENT_KEY}"\n'
                f'apps = ["{app["appid"]}"]\n'
            )
            server = start(["serve", "--config", str(work / f"{mode}.toml")], f"{mode}.log")
            url = f"http://127.0.0.1:{port}"
            wait_for(url + "/healthz", server)
            servers[mode] = (url, app)
        return run_checks(sim_url, servers, work)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def run_checks(sim_url, servers, work):
    passed = failed = 0

    def check(name, cond, detail=""):
        nonlocal passed, failed
        if cond:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name} {detail}")

    def issued(appid, mode):
        return control(sim_url, "/_sim/stats")["tokens_issued"].get(appid, {}).get(mode, 0)

    def kill(appid, mode):
        if mode == "stable":
            control(sim_url, f"/_sim/apps/{appid}/foreign-token", {"kind": "stable_force"})
        else:
            for _ in range(2):
                control(sim_url, f"/_sim/apps/{appid}/foreign-token", {"kind": "classic"})
        control(sim_url, "/_sim/clock", {"advance_secs": 301})

    def api_call(client):
        return client.get(WECHAT + "/wxaapi/newtmpl/getcategory")

    def naive(url, appid, counter):
        MirrorWeChatClient.broker = url
        c = MirrorWeChatClient(appid, CLIENT_KEY, counter)
        c._http.mount(WECHAT + "/", ToSimulator(sim_url))
        return c

    for mode, (url, app) in servers.items():
        appid = app["appid"]
        # One long-running client: it holds the token when the token dies.
        fetches = []
        one = naive(url, appid, fetches)
        check(f"{mode}: a call works through the mirror", api_call(one).get("errcode", 0) == 0)
        kill(appid, mode)
        before = issued(appid, mode)
        fetches.clear()
        try:
            ok = api_call(one).get("errcode", 0) == 0
        except (WeChatClientException, RecursionError) as e:
            ok = False
            print(f"     {type(e).__name__}")
        check(f"{mode}: one call succeeds after the token died upstream", ok)
        check(f"{mode}: with at most 3 mirror fetches ({len(fetches)})", len(fetches) <= 3)
        new = issued(appid, mode) - before
        check(f"{mode}: and at most 1 new upstream token ({new})", new <= 1)

        # Twenty such clients at once.
        clients = []
        for _ in range(20):
            counter = []
            c = naive(url, appid, counter)
            api_call(c)
            clients.append((c, counter))
        kill(appid, mode)
        before = issued(appid, mode)
        results = [None] * 20

        def run(i, c, counter):
            counter.clear()
            try:
                results[i] = (api_call(c).get("errcode", 0) == 0, len(counter))
            except (WeChatClientException, RecursionError) as e:
                results[i] = (False, f"{type(e).__name__} after {len(counter)} fetches")

        threads = [threading.Thread(target=run, args=(i, c, n)) for i, (c, n) in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(f"{mode}: 20 clients at once all succeed", all(r and r[0] for r in results), results)
        check(f"{mode}: each with at most 3 mirror fetches",
              all(r and isinstance(r[1], int) and r[1] <= 3 for r in results), results)
        new = issued(appid, mode) - before
        most = max((r[1] for r in results if r and isinstance(r[1], int)), default=None)
        check(f"{mode}: 20 clients cost at most 1 new upstream token ({new}; most fetches by one client: {most})",
              new <= 1)

    # force_refresh on the mirror: a live token is kept, a dead one replaced.
    url, app = servers["stable"]
    appid = app["appid"]

    def stable_fetch(force):
        body = {"grant_type": "client_credential", "appid": appid, "secret": CLIENT_KEY, "force_refresh": force}
        req = urllib.request.Request(url + "/cgi-bin/stable_token", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    live = stable_fetch(False)["access_token"]
    before = issued(appid, "stable")
    check("force_refresh keeps a live token", stable_fetch(True)["access_token"] == live)
    check("force_refresh of a live token costs no upstream token", issued(appid, "stable") == before)
    kill(appid, "stable")
    fresh = stable_fetch(True)["access_token"]
    check("force_refresh replaces a dead token", fresh != live)

    # The recipe: the same outage, and a 40001 that never clears.
    for mode, (url, app) in servers.items():
        appid = app["appid"]
        counter = []
        recipe = Counted(appid, url, CLIENT_KEY, counter=counter)
        recipe._http.mount(WECHAT + "/", ToSimulator(sim_url))
        check(f"recipe {mode}: a call works", api_call(recipe).get("errcode", 0) == 0)
        kill(appid, mode)
        counter.clear()
        check(f"recipe {mode}: one call succeeds after the token died", api_call(recipe).get("errcode", 0) == 0)
        check(f"recipe {mode}: with at most 3 mirror fetches", len(counter) <= 3, len(counter))

    url, app = servers["classic"]
    appid = app["appid"]
    counter = []
    recipe = Counted(appid, url, CLIENT_KEY, counter=counter)
    recipe._http.mount(WECHAT + "/", ToSimulator(sim_url))
    api_call(recipe)
    token = recipe.access_token
    fault = control(sim_url, "/_sim/faults", {"path": "/wxaapi/newtmpl/getcategory", "errcode": 40001})
    counter.clear()
    try:
        api_call(recipe)
        check("recipe: a 40001 that never clears fails", False)
    except RecursionError:
        check("recipe: a 40001 that never clears fails without recursion", False)
    except WeChatClientException as e:
        check("recipe: a 40001 that never clears is a WeChatClientException", e.errcode == 40001, e)
        check("recipe: after at most 2 refetches", len(counter) <= 2, len(counter))
        text = f"{e} {e!r} {recipe!r}"
        check("recipe: the error names neither the token nor the key",
              token not in text and CLIENT_KEY not in text, text)
    urllib.request.urlopen(urllib.request.Request(sim_url + "/_sim/faults", method="DELETE")).read()
    del fault

    bad = WeappWeChatClient(appid, url, "not-a-client-key-0123456789")
    try:
        bad.access_token
        check("recipe: a wrong key fails", False)
    except WeChatClientException as e:
        check("recipe: a wrong key is the mirror's 40125", e.errcode == 40125, e)
        check("recipe: its text does not carry the key", "not-a-client-key" not in f"{e} {e!r}")

    for log in work.glob("*.log"):
        text = log.read_text()
        check(f"{log.name} carries no client key", CLIENT_KEY not in text)

    print(f"wechatpy recipe: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
