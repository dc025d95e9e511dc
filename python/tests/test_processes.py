"""Across threads, forks and languages: one token, one upstream issue."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
from typing import List

import weapp
from weapp.testing import Sim


def _worker(client: weapp.Client, out: "multiprocessing.Queue[List[str]]") -> None:
    tokens: List[str] = []
    lock = threading.Lock()

    def read() -> None:
        token = client.access_token()
        with lock:
            tokens.append(token)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(tokens)


def test_forked_workers_share_one_token_through_redis(weapp_sim: Sim, redis_server, prefix: str) -> None:  # type: ignore[no-untyped-def]
    app = weapp_sim.create_app()
    weapp_sim.fault("/cgi-bin/token", latency_ms=300, count=1)
    # Made in the parent, used only in the children (gunicorn --preload, Celery): nothing may
    # have started before the fork.
    client = weapp.Client(
        app.appid, app.secret, base_url=weapp_sim.url, token_store=redis_server.url, token_mode="classic", redis_prefix=prefix
    )
    ctx = multiprocessing.get_context("fork")
    out: "multiprocessing.Queue[List[str]]" = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(client, out)) for _ in range(8)]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    tokens = {t for r in results for t in r}
    assert sum(len(r) for r in results) == 32
    assert len(tokens) == 1
    assert weapp_sim.tokens_issued(app) == 1


def test_a_client_used_before_the_fork_works_in_the_child(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    parent_token = client.access_token()  # the parent's runtime and HTTP pool now exist
    ctx = multiprocessing.get_context("fork")
    out: "multiprocessing.Queue[List[str]]" = ctx.Queue()
    child = ctx.Process(target=_worker, args=(client, out))
    child.start()
    tokens = out.get(timeout=60)
    child.join(timeout=30)
    assert child.exitcode == 0
    # Memory store: the child has its own copy; stable tokens are the same live token.
    assert set(tokens) == {parent_token}


def test_rust_and_python_processes_agree_on_one_token(weapp_sim: Sim, redis_server, prefix: str, weapp_bin: str) -> None:  # type: ignore[no-untyped-def]
    app = weapp_sim.create_app()
    weapp_sim.fault("/cgi-bin/token", latency_ms=300, count=1)
    rust = [
        subprocess.Popen(
            [weapp_bin, "token", "--appid", app.appid, "--api-base", weapp_sim.url, "--mode", "classic", "--store", redis_server.url, "--redis-prefix", prefix],
            env={**os.environ, "WEAPP_SECRET": app.secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    client = weapp.Client(
        app.appid, app.secret, base_url=weapp_sim.url, token_store=redis_server.url, token_mode="classic", redis_prefix=prefix
    )
    ctx = multiprocessing.get_context("fork")
    out: "multiprocessing.Queue[List[str]]" = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(client, out)) for _ in range(3)]
    for w in workers:
        w.start()
    python_tokens = {t for _ in workers for t in out.get(timeout=60)}
    rust_tokens = set()
    for p in rust:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        rust_tokens.add(stdout.strip())
    for w in workers:
        w.join(timeout=30)
    assert python_tokens == rust_tokens and len(rust_tokens) == 1
    assert weapp_sim.tokens_issued(app) == 1


def test_the_gil_is_released_while_rust_waits(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    client.access_token()
    weapp_sim.fault("/cgi-bin/openapi/quota/get", latency_ms=1000, count=1)
    spins = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal spins
        while not stop.is_set():
            spins += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        client.openapi.quota("/wxa/getwxacodeunlimit")  # waits a second in Rust
    finally:
        stop.set()
        spinner.join()
    # Had the waiting thread kept the GIL, the spinner would have run only in the
    # interpreter's 5 ms switch slices it never gets: a few hundred spins at most.
    assert spins > 100_000, spins
