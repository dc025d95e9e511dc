"""weapp.AsyncClient: the same surface awaited; cancellation drops the Rust future."""

from __future__ import annotations

import asyncio
import time

import pytest

import weapp
from weapp import _native
from weapp.testing import Sim


def test_async_surface_and_errors(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()

    async def main() -> None:
        async with weapp_sim.async_client(app) as client:
            code, openid = weapp_sim.login(app)
            session = await client.auth.code2session(code)
            assert session["openid"] == openid and isinstance(session["session_key"], weapp.SessionKey)
            png = await client.wxacode.get_unlimited("a=1")
            assert png.startswith(b"\x89PNG")
            with pytest.raises(weapp.InvalidCodeError):
                await client.auth.code2session(code)
            assert "quota" in await client.call("POST", "/cgi-bin/openapi/quota/get", {"cgi_path": "/wxa/getwxacodeunlimit"})

    asyncio.run(main())


def test_one_hundred_tasks_share_one_token(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    weapp_sim.fault("/cgi-bin/stable_token", latency_ms=300, count=1)

    async def main() -> set[str]:
        client = weapp_sim.async_client(app)
        tokens = await asyncio.gather(*(client.access_token() for _ in range(100)))
        return set(tokens)

    assert len(asyncio.run(main())) == 1
    assert weapp_sim.tokens_issued(app) == 1


def test_cancelling_the_task_drops_the_rust_future(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    weapp_sim.fault("/cgi-bin/openapi/quota/get", latency_ms=5000)

    async def main() -> None:
        client = weapp_sim.async_client(app, timeout=30.0)
        await client.access_token()
        assert _native.in_flight() == 0
        task = asyncio.ensure_future(client.openapi.quota("/wxa/getwxacodeunlimit"))
        await asyncio.sleep(0.3)
        assert _native.in_flight() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 2
        while _native.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert _native.in_flight() == 0, "the Rust future outlived its cancelled task"

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 4, "cancellation waited for the slow call"


def test_async_timeout(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    weapp_sim.fault("/cgi-bin/openapi/quota/get", latency_ms=3000)

    async def main() -> None:
        client = weapp_sim.async_client(app, timeout=1.0)
        await client.access_token()
        with pytest.raises(weapp.WeappTimeoutError):
            await client.openapi.quota("/wxa/getwxacodeunlimit")

    asyncio.run(main())
