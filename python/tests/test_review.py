"""Inputs an adversarial review found mishandled: each must be refused with the package's own
exception, quote no secret, and change nothing."""

from __future__ import annotations

import math
import pickle
import time
from typing import Any, Dict, Iterator, List

import pytest

import weapp
import weapp.pay
from weapp.testing import Sim

KEY = "tiihtNczf5v6AKRyjwEUhQ=="
IV = "r7BXXKkLb8qrSNn05n0qiA=="


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session_key": "\ud800"},
        {"encrypted_data": "\udc80AAAA"},
        {"iv": "\ud800"},
        {"appid": "\ud800"},
        {"appid": 1},
        {"appid": b"wx"},
        {"max_age_secs": -1},
        {"max_age_secs": 2**70},
        {"max_age_secs": 1.5},
        {"max_age_secs": "60"},
        {"session_key": weapp.SessionKey("\ud800")},
    ],
)
def test_every_bad_decrypt_argument_is_a_decrypt_error(kwargs: Dict[str, Any]) -> None:
    args: Dict[str, Any] = {"session_key": KEY, "encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": IV, "appid": "wx1"}
    args.update(kwargs)
    with pytest.raises(weapp.DecryptError):
        weapp.decrypt_user_data(**args)


def test_raw_signature_of_non_text_is_false() -> None:
    assert weapp.verify_raw_signature(None, "x", "y") is False
    assert weapp.verify_raw_signature(KEY, b"x", "y") is False  # type: ignore[arg-type]
    assert weapp.verify_raw_signature(KEY, "x", "\ud800") is False


@pytest.mark.parametrize(
    "make",
    [
        lambda s: weapp.Client("wx1", s),
        lambda s: weapp.Client("wx1", broker_url="http://127.0.0.1:9", broker_key=s),
        lambda s: weapp.PushReceiver("wx1", s),
        lambda s: weapp.PushReceiver("wx1", "token", s),
        lambda s: weapp.pay.PayClient("1900000001", "SERIAL", s, "0" * 32, public_key_id="PUB_KEY_ID_1", public_key="k"),
        lambda s: weapp.pay.PayClient("1900000001", "SERIAL", "k", s, public_key_id="PUB_KEY_ID_1", public_key="k"),
    ],
)
def test_a_secret_that_is_not_utf8_is_refused_without_being_quoted(make: Any) -> None:
    # os.environ decodes an invalid byte as a lone surrogate: a realistic way to get one.
    secret = "SECRET_value_abcdef\udc80"
    with pytest.raises(weapp.InvalidArgumentError) as err:
        make(secret)
    for text in (str(err.value), repr(err.value), repr(err.value.args), repr(pickle.dumps(err.value))):
        assert "SECRET_value" not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize(
    "url",
    ["redis://:abc#def@127.0.0.1:9/0", "redis://:pa?ss@127.0.0.1:9/0", "redis://:p@ss/word@127.0.0.1:9/0", "redis://user:pw@127.0.0.1:9/0"],
)
def test_redis_passwords_never_show(url: str) -> None:
    client = weapp.Client("wx1", "s", token_store=url, timeout=1.0)
    shown = repr(client)
    for part in ("abc", "def", "pa?ss", "p@ss", "word", ":pw"):
        if part in url:
            assert part not in shown, shown
    assert "***@" in shown


def test_arguments_json_cannot_carry_are_refused(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    with pytest.raises(weapp.InvalidArgumentError):
        client.call("POST", "/cgi-bin/openapi/quota/get", json={"x": math.nan})
    with pytest.raises(weapp.InvalidArgumentError):
        client.call("POST", "/cgi-bin/openapi/quota/get", json={"x": b"bytes"})
    with pytest.raises(weapp.InvalidArgumentError):
        client.wxacode.get_unlimited("a=1", line_color=[1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(weapp.InvalidArgumentError):
        weapp.Client("wx1", "s", timeout="10")  # type: ignore[arg-type]
    assert weapp_sim.stats()["calls"].get("/cgi-bin/openapi/quota/get", 0) == 0
    # A message dict that names its own touser: ours wins, no TypeError.
    _, openid = weapp_sim.login(app)
    with pytest.raises(weapp.ApiError):
        client.customer_service.send(openid, {"touser": "someone else", "msgtype": "text", "text": {"content": "hi"}})


class QueryDict(Dict[str, List[str]]):
    """Django's QueryDict: a dict of lists whose item access gives the last value."""

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key)[-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def test_push_query_from_a_django_querydict() -> None:
    receiver = weapp.PushReceiver("wx1", "token")
    ts = str(int(time.time()))
    import hashlib

    signature = hashlib.sha1("".join(sorted(["token", ts, "n1"])).encode()).hexdigest()
    query = QueryDict({"signature": [signature], "timestamp": [ts], "nonce": ["n1"], "echostr": ["hello"]})
    assert receiver.verify_url(query) == "hello"


def test_pickling_keeps_added_attributes() -> None:
    e = weapp.exceptions._make("api", (40001, "invalid credential", "rid-1", "/cgi-bin/x"))
    e.task_id = "celery-1"  # type: ignore[attr-defined]
    add_note = getattr(e, "add_note", None)  # Python 3.11+
    if add_note is not None:
        add_note("while sending the order message")
    again = pickle.loads(pickle.dumps(e))
    assert again.task_id == "celery-1"
    assert getattr(again, "__notes__", None) == getattr(e, "__notes__", None)
    plain = pickle.loads(pickle.dumps(weapp.exceptions._make("store", ("redis down",))))
    assert type(plain) is weapp.StoreError and str(plain) == "redis down"


def test_timeout_bounds_a_token_refresh(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app, timeout=1.0, token_mode="classic")
    weapp_sim.fault("/cgi-bin/token", latency_ms=3000)
    started = time.monotonic()
    with pytest.raises(weapp.WeappTimeoutError):
        client.access_token()
    # Each request is cut at 1 s and the refresh as a whole at 2 s (not the SDK's 30 s).
    assert time.monotonic() - started < 10
