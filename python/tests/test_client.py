"""weapp.Client against the in-extension simulator: every domain, every error type."""

from __future__ import annotations

import pickle
import struct
import zlib

import pytest

import weapp
from weapp.testing import Sim


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\xff\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_nothing_starts_before_the_first_call(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    assert client.appid == app.appid
    assert client.token_mode == "stable"


def test_auth_login_phone_session_key(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    with weapp_sim.client(app) as client:
        code, openid = weapp_sim.login(app)
        session = client.auth.code2session(code)
        assert session["openid"] == openid
        key = session["session_key"]
        assert isinstance(key, weapp.SessionKey)
        assert key.reveal() not in repr(session) and "***" in repr(key)
        client.auth.check_session_key(openid, key)
        reset = client.auth.reset_session_key(openid, key)
        assert reset["openid"] == openid and reset["session_key"] != key
        with pytest.raises(weapp.ApiError) as dead:
            client.auth.check_session_key(openid, key)
        assert dead.value.errcode == 87009
        phone = client.auth.get_phone_number(weapp_sim.phone_code(app, openid, "13800138000"))
        assert phone["purePhoneNumber"] == "13800138000"
        assert phone["watermark"]["appid"] == app.appid


def test_used_code_is_an_invalid_code_error_with_rid_and_endpoint(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    code, _ = weapp_sim.login(app)
    client.auth.code2session(code)
    with pytest.raises(weapp.InvalidCodeError) as err:
        client.auth.code2session(code)
    e = err.value
    assert isinstance(e, weapp.ApiError) and isinstance(e, weapp.WeappError)
    assert e.errcode == 40163 and e.endpoint == "/sns/jscode2session" and e.rid
    assert e.rid in str(e) and e.errmsg in str(e)


def test_wxacode_and_url_links(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    for png in (
        client.wxacode.get("pages/index/index", width=280),
        client.wxacode.get_unlimited("a=1", page="pages/index/index", check_path=False, env_version="trial"),
        client.wxacode.create_qrcode("pages/index/index"),
    ):
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    with pytest.raises(weapp.ApiError) as long_scene:
        client.wxacode.get_unlimited("x" * 33)  # over 32 characters: refused before sending
    assert long_scene.value.errcode == 40169 and long_scene.value.rid is None
    scheme = client.url_link.generate_scheme(path="pages/index/index", query="a=1")["openlink"]
    assert scheme.startswith("weixin://")
    assert client.url_link.query_scheme(scheme)["details"]["path"] == "pages/index/index"
    link = client.url_link.generate_url_link(path="pages/index/index", expire_interval=1)["url_link"]
    assert link.startswith("https://")
    assert client.url_link.query_url_link(link)["details"]["path"] == "pages/index/index"
    short = client.url_link.generate_short_link("pages/index/index", page_title="t")["link"]
    assert short.startswith("#")


def test_subscribe_value_rules_and_send(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    _, openid = weapp_sim.login(app)
    # Local value rules: a `number` key with letters is refused before anything is sent.
    with pytest.raises(weapp.ApiError) as refused:
        client.subscribe.send(openid, "tmpl", {"number1": "12a"})
    assert refused.value.errcode == 47003 and refused.value.rid is None
    assert weapp_sim.stats()["calls"].get("/cgi-bin/message/subscribe/send", 0) == 0
    categories = client.subscribe.categories()
    assert isinstance(categories, list)
    templates = client.subscribe.templates()
    assert isinstance(templates, list)


def test_customer_service_media_security_openapi(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    media = client.media.upload_image(png_bytes())
    assert media["media_id"]
    assert client.media.get(media["media_id"]).startswith(b"\x89PNG")
    _, openid = weapp_sim.login(app)
    verdict = client.security.msg_sec_check("hello", openid=openid, scene=2)
    assert verdict["result"]["suggest"] == "pass"
    assert client.security.media_check_async("https://example.com/a.png", media_type=2, openid=openid, scene=1)["trace_id"]
    with pytest.raises(weapp.InvalidArgumentError):
        client.security.msg_sec_check("hello", openid=openid, scene=9)
    quota = client.openapi.quota("/wxa/getwxacodeunlimit")
    assert "quota" in quota
    with pytest.raises(weapp.ApiError) as err:
        # No customer-service window open for this user: WeChat's 45047-family refusal.
        client.customer_service.send_text(openid, "hi")
    assert err.value.errcode != 0


def test_analytics(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    assert isinstance(client.analytics.daily_summary("20260101"), list)
    assert isinstance(client.analytics.daily_retain("20260101"), dict)
    assert isinstance(client.analytics.visit_page("20260101"), dict)


def test_call_goes_through_the_same_pipeline(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    answer = client.call("POST", "/cgi-bin/openapi/quota/get", {"cgi_path": "/wxa/getwxacodeunlimit"})
    assert "quota" in answer
    weapp_sim.fault("/cgi-bin/openapi/quota/get", errcode=40001, count=1)
    # A 40001 is retried once with a new token.
    assert "quota" in client.call("POST", "/cgi-bin/openapi/quota/get", {"cgi_path": "/wxa/getwxacodeunlimit"})


@pytest.mark.parametrize(
    "errcode, cls",
    [
        (40029, weapp.InvalidCodeError),
        (45011, weapp.QuotaError),
        (40164, weapp.IpNotAllowedError),
        (40001, weapp.TokenInvalidError),
        (48001, weapp.ApiError),
    ],
)
def test_each_errcode_family(weapp_sim: Sim, errcode: int, cls: type[weapp.ApiError]) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    client.access_token()
    weapp_sim.fault("/wxa/getwxacodeunlimit", errcode=errcode)
    with pytest.raises(cls) as err:
        client.wxacode.get_unlimited("a=1")
    assert err.value.errcode == errcode and type(err.value) is cls
    again = pickle.loads(pickle.dumps(err.value))
    assert type(again) is cls and (again.errcode, again.errmsg, again.rid, again.endpoint) == (
        err.value.errcode,
        err.value.errmsg,
        err.value.rid,
        err.value.endpoint,
    )


def test_http_status_decode_and_timeout_errors(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app, timeout=1.0)
    client.access_token()
    weapp_sim.fault("/wxa/getwxacodeunlimit", http_status=502)
    with pytest.raises(weapp.WeappError) as err:
        client.wxacode.get_unlimited("a=1")
    assert isinstance(err.value, (weapp.HttpStatusError, weapp.TransportError))
    weapp_sim.clear_faults()
    weapp_sim.fault("/cgi-bin/openapi/quota/get", latency_ms=3000)
    with pytest.raises(weapp.WeappTimeoutError) as slow:
        client.openapi.quota("/wxa/getwxacodeunlimit")
    assert isinstance(slow.value, TimeoutError)
    assert pickle.loads(pickle.dumps(slow.value)).endpoint == slow.value.endpoint


def test_transport_error_and_store_error() -> None:
    # Nothing listens on port 9 of loopback: a transport error, without the URL's token.
    client = weapp.Client("wx0000000000000001", "secret", base_url="http://127.0.0.1:9", timeout=2.0)
    with pytest.raises(weapp.TransportError) as err:
        client.access_token()
    assert "secret" not in str(err.value) and "secret" not in repr(err.value)
    assert pickle.loads(pickle.dumps(err.value)).endpoint == err.value.endpoint
    with pytest.raises(weapp.StoreError):
        weapp.Client("wx0000000000000001", "secret", token_store="redis://127.0.0.1:9/0", timeout=2.0).access_token()


def test_bad_arguments_are_value_errors_and_change_nothing() -> None:
    with pytest.raises(weapp.InvalidArgumentError) as err:
        weapp.Client("wx1", "s", token_mode="fast")  # type: ignore[arg-type]
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError):
        weapp.Client("wx1", "s", token_store="memcached://x")
    with pytest.raises(ValueError):
        weapp.Client("wx1", "s", timeout=-1)


def test_no_secret_in_repr_or_errors(weapp_sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    app = weapp_sim.create_app()
    client = weapp.Client(
        app.appid, app.secret, base_url=weapp_sim.url, token_store="redis://:hunter2pass@127.0.0.1:9/0", timeout=2.0
    )
    assert app.secret not in repr(client) and "hunter2pass" not in repr(client)
    with pytest.raises(weapp.StoreError) as err:
        client.access_token()
    assert "hunter2pass" not in str(err.value) and app.secret not in str(err.value)
    good = weapp_sim.client(app)
    token = good.access_token()
    for record in caplog.records:
        assert app.secret not in record.getMessage() and token not in record.getMessage()


def test_rust_events_reach_python_logging_without_secrets(weapp_sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    weapp_sim.fault("/cgi-bin/stable_token", errcode=40013, count=1)
    with caplog.at_level("INFO", logger="weapp"):
        with pytest.raises(weapp.ApiError):
            client.access_token()
        # The failure is remembered for a minute by this client (no storm on WeChat); a
        # client of its own asks again.
        token = weapp_sim.client(app).access_token()
    records = [r for r in caplog.records if r.name.startswith("weapp.token")]
    assert records, [r.name for r in caplog.records]
    assert any("40013" in r.getMessage() for r in records)
    for r in caplog.records:
        assert app.secret not in r.getMessage() and token not in r.getMessage()


def test_garbage_answer_is_a_decode_error(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    client.access_token()
    weapp_sim.fault("/cgi-bin/openapi/quota/get", body='{"quota": "not an object"', count=1)
    with pytest.raises(weapp.DecodeError) as err:
        client.openapi.quota("/wxa/getwxacodeunlimit")
    assert err.value.endpoint == "/cgi-bin/openapi/quota/get"
    assert pickle.loads(pickle.dumps(err.value)).endpoint == err.value.endpoint
