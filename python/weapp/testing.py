"""A WeChat to test against: the pytest plugin of :mod:`weapp`.

``pip install weapp`` gives every test a ``weapp_sim`` fixture: weapp-sim, the local WeChat,
served by the extension itself on ``127.0.0.1`` (no other binary, no network, no account)::

    def test_login(weapp_sim):
        app = weapp_sim.create_app()
        client = weapp_sim.client(app)
        code, openid = weapp_sim.login(app)
        assert client.auth.code2session(code)["openid"] == openid

The simulator's clock is virtual (frozen unless advanced: ``weapp_sim.advance(7200)``);
faults are injected with ``weapp_sim.fault(path, errcode=…)``. The full control API is
documented in weapp-sim's README; ``weapp_sim.control(method, path, body)`` reaches any of it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import _native
from ._client import AsyncClient, Client

__all__ = ["Sim", "SimApp"]


@dataclass(frozen=True)
class SimApp:
    """An app registered in the simulator."""

    appid: str
    secret: str


class Sim:
    """A running simulator and helpers for its control API (``/_sim/…``)."""

    def __init__(self, *, real_clock: bool = False) -> None:
        self._native = _native.NativeSim([], 0, real_clock)

    @property
    def url(self) -> str:
        """The base URL to give ``Client(base_url=…)``."""
        return str(self._native.url)

    def stop(self) -> None:
        """Stops the server."""
        self._native.stop()

    def control(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        """Calls the control API; returns the decoded JSON (or ``None`` for an empty answer)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None
        return json.loads(text) if text.strip() else None

    def create_app(self, appid: Optional[str] = None, secret: Optional[str] = None, *, unionid: bool = False) -> SimApp:
        """Registers an app (generated appid and secret unless given)."""
        answer = self.control("POST", "/_sim/apps", {k: v for k, v in {"appid": appid, "secret": secret, "unionid": unionid}.items() if v is not None})
        return SimApp(answer["appid"], answer["secret"])

    def client(self, app: SimApp, **kwargs: Any) -> Client:
        """A :class:`weapp.Client` for ``app`` on this simulator."""
        return Client(app.appid, app.secret, base_url=self.url, **kwargs)

    def async_client(self, app: SimApp, **kwargs: Any) -> AsyncClient:
        """A :class:`weapp.AsyncClient` for ``app`` on this simulator."""
        return AsyncClient(app.appid, app.secret, base_url=self.url, **kwargs)

    def login(self, app: SimApp, openid: Optional[str] = None) -> Tuple[str, str]:
        """What ``wx.login()`` hands the mini program: ``(code, openid)``."""
        answer = self.control("POST", "/_sim/login", {"appid": app.appid, **({"openid": openid} if openid else {})})
        return answer["code"], answer["openid"]

    def phone_code(self, app: SimApp, openid: str, phone: Optional[str] = None) -> str:
        """What the getPhoneNumber button hands over."""
        body: Dict[str, Any] = {"appid": app.appid, "openid": openid}
        if phone:
            body["phone"] = phone
        return str(self.control("POST", "/_sim/phone-code", body)["code"])

    def open_data(self, app: SimApp, openid: str, data: Dict[str, Any]) -> Tuple[str, str]:
        """``(encryptedData, iv)`` of ``data`` under the user's current session_key."""
        answer = self.control("POST", "/_sim/open-data", {"appid": app.appid, "openid": openid, "data": data})
        return answer["encryptedData"], answer["iv"]

    def advance(self, secs: int) -> int:
        """Moves the virtual clock; returns its new Unix time."""
        return int(self.control("POST", "/_sim/clock", {"advance_secs": secs})["now"])

    def fault(
        self,
        path: str,
        *,
        errcode: Optional[int] = None,
        http_status: Optional[int] = None,
        latency_ms: Optional[int] = None,
        count: Optional[int] = None,
        body: Optional[str] = None,
    ) -> None:
        """Makes calls to ``path`` fail (or stall, or answer ``body`` verbatim) — ``count``
        times, or until cleared."""
        fault = {"path": path, "errcode": errcode, "http_status": http_status, "latency_ms": latency_ms, "count": count, "body": body}
        self.control("POST", "/_sim/faults", {k: v for k, v in fault.items() if v is not None})

    def clear_faults(self) -> None:
        """Removes every fault."""
        self.control("DELETE", "/_sim/faults")

    def stats(self) -> Dict[str, Any]:
        """``{"calls": {path: n}, "tokens_issued": {appid: {"classic": n, "stable": n}}}``."""
        return dict(self.control("GET", "/_sim/stats"))

    def tokens_issued(self, app: SimApp) -> int:
        """How many access tokens WeChat issued to ``app`` (both kinds)."""
        issued = self.stats().get("tokens_issued", {}).get(app.appid, {})
        return int(issued.get("classic", 0)) + int(issued.get("stable", 0))

    def subscribe_grant(self, app: SimApp, openid: str, template_id: str, count: int = 1) -> None:
        """What accepting the ``wx.requestSubscribeMessage`` popup does: ``count`` sends of
        ``template_id`` to ``openid`` are allowed."""
        self.control("POST", "/_sim/subscribe-grant", {"appid": app.appid, "openid": openid, "template_id": template_id, "count": count})

    def messages(self, app: SimApp, openid: str) -> List[Dict[str, Any]]:
        """The subscribe and customer-service messages the user received."""
        answer = self.control("GET", f"/_sim/messages?appid={app.appid}&openid={openid}")
        return list(answer["messages"])

    def pay_merchant(self, appids: List[str], verification: str = "public_key") -> Dict[str, Any]:
        """Issues a WeChat Pay merchant (keys, serials, APIv3 key) for ``appids``."""
        return dict(self.control("POST", "/_sim/pay/merchants", {"appids": appids, "verification": verification}))


def _sim_for_a_test() -> Iterator[Sim]:
    """A fresh simulator on loopback for one test."""
    sim = Sim()
    try:
        yield sim
    finally:
        sim.stop()


try:
    import pytest
except ImportError:  # Sim and SimApp work without pytest; only the fixture needs it
    pass
else:
    weapp_sim = pytest.fixture(name="weapp_sim")(_sim_for_a_test)
