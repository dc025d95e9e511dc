"""Driver of scripts/bench-python-login (see there)."""

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from weapp.testing import Sim

ROOT = os.environ["ROOT"]
ROUNDS = int(os.environ["ROUNDS"])
LOGINS = int(os.environ["LOGINS"])
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def start(kind, sim, app):
    port = free_port()
    if kind == "weapp":
        cwd, target = os.path.join(ROOT, "examples/python"), "flask_app:create_app()"
    else:
        cwd, target = os.path.join(ROOT, "scripts"), "bench_wechatpy_login:create_app()"
    env = {**os.environ, "WEAPP_APPID": app.appid, "WEAPP_SECRET": app.secret, "WEAPP_BASE_URL": sim.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", target],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: gunicorn did not start")
            time.sleep(0.1)
    while not children(proc.pid):
        time.sleep(0.05)
    return proc, port, children(proc.pid)[0]


def run(sim, app, port, worker, n):
    codes = [sim.login(app)[0] for _ in range(n)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    # One warm-up login (token fetch, imports, connection pools) outside the measurement.
    conn.request("POST", "/v1/verify", body=json.dumps({"jsCode": sim.login(app)[0]}), headers={"Content-Type": "application/json"})
    conn.getresponse().read()
    latencies = []
    before = cpu_secs(worker)
    for code in codes:
        t = time.perf_counter()
        conn.request("POST", "/v1/verify", body=json.dumps({"jsCode": code}), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        latencies.append(time.perf_counter() - t)
        assert r.status == 200, r.status
    cpu = cpu_secs(worker) - before
    return statistics.median(latencies) * 1e6, cpu / n * 1e6


def main():
    sim = Sim()
    results = {"weapp": [], "wechatpy": []}
    servers = {}
    try:
        for kind in ("weapp", "wechatpy"):
            app = sim.create_app()
            servers[kind] = (app,) + start(kind, sim, app)
        for r in range(ROUNDS):
            for kind in (("weapp", "wechatpy") if r % 2 == 0 else ("wechatpy", "weapp")):
                app, _, port, worker = servers[kind]
                results[kind].append(run(sim, app, port, worker, LOGINS))
        print(f"{LOGINS} logins per round, {ROUNDS} rounds, gunicorn 1 sync worker each")
        for kind, rows in results.items():
            lat = ", ".join(f"{l:.0f}" for l, _ in rows)
            cpu = ", ".join(f"{c:.0f}" for _, c in rows)
            print(f"{kind:9} median latency µs per round: {lat}; worker CPU µs per login: {cpu}")
        w = statistics.median(c for _, c in results["weapp"])
        p = statistics.median(c for _, c in results["wechatpy"])
        print(f"median worker CPU per login: weapp {w:.0f} µs, wechatpy {p:.0f} µs (ratio {p / w:.2f}×)")
    finally:
        for _, proc, _, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        sim.stop()


if __name__ == "__main__":
    main()
