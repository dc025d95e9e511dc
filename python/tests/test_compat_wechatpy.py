"""weapp.compat.wechatpy: wechatpy 1.8.18 code with one changed import, against the simulator."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import pickle
import threading
import warnings
from typing import Any, List

import pytest

import weapp
from weapp.compat.wechatpy import (
    APILimitedException,
    BinaryResponse,
    InvalidAppIdException,
    InvalidSignatureException,
    SessionKeyText,
    WeChatClient,
    WeChatClientException,
    WeChatCrypto,
    WeChatException,
    WeChatWxaCrypto,
    check_signature,
    check_wxa_signature,
)
from weapp.testing import Sim, SimApp

from test_client import png_bytes

# ------------------------------------------------------------------------------------------
# wechatpy's own test vectors (wechatpy/wechatpy@v1.8.18). Only the values are copied.
# ------------------------------------------------------------------------------------------

# tests/test_crypto.py, CryptoTestCase.test_wxa_decrypt_message (WeChat's official sample).
WXA_APPID = "wx4f4bc4dec97d474b"
WXA_SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="
WXA_ENCRYPTED_DATA = (
    "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC"
    "+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2"
    "/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz"
    "/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E"
    "/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns"
    "/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG"
    "20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
)
WXA_IV = "r7BXXKkLb8qrSNn05n0qiA=="

# tests/test_utils.py, UtilityTestCase.test_check_signature_should_ok / _should_fail.
SIG_TOKEN = "test"
SIG_GOOD = "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff"
SIG_BAD = "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe"
SIG_TIMESTAMP = "1410685589"
SIG_NONCE = "test"

# tests/test_utils.py, UtilityTestCase.test_check_wxa_signature (WeChat's sample, then one in Chinese).
RAW_DATA_1 = '{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}'  # noqa: E501
RAW_KEY_1 = "HyVFkGl5F5OQWJZZaNzBBg=="
RAW_SIG_1 = "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
RAW_DATA_2 = '{"nickName":"Xavier-Lam林","gender":1,"language":"zh_CN","city":"Ningde","province":"Fujian","country":"China","avatarUrl":"https://wx.qlogo.cn/mmopen/vi_32/vTxUxcbjcZ8t9eU6YfXBwRU89KS9uRILEDro01MTYp7UKYsyTjLFMIVhB0AlBuEvLHbhmO3OpaHw5zwlSetuLg/132"}'  # noqa: E501
RAW_KEY_2 = "GtYYez5b/M5HhT4L7n31gQ=="
RAW_SIG_2 = "8fde625b7640734a13c071c05d792b5cef21cf89"

# tests/test_crypto.py, CryptoTestCase (token, key and id) and test_decrypt_message: the
# message-push envelope (the same AES framing for official accounts and mini programs).
PUSH_TOKEN = "123456"
PUSH_AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
PUSH_APPID = "wx49f0ab532d5d035a"
PUSH_XML = """<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>
<Encrypt><![CDATA[RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=]]></Encrypt>
<AgentID><![CDATA[1]]></AgentID>
</xml>"""  # noqa: E501
PUSH_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
PUSH_TIMESTAMP = "1411525903"
PUSH_NONCE = "461056294"


def compat_client(sim: Sim, app: SimApp, **kwargs: Any) -> WeChatClient:
    return WeChatClient(app.appid, app.secret, base_url=sim.url, **kwargs)


def token_calls(sim: Sim) -> int:
    calls = sim.stats()["calls"]
    return int(calls.get("/cgi-bin/token", 0)) + int(calls.get("/cgi-bin/stable_token", 0))


# ------------------------------------------------------------------------------------------
# WeChatClient against the simulator
# ------------------------------------------------------------------------------------------


def test_wechatpy_style_login_phone_decrypt_and_codes(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = compat_client(weapp_sim, app)
    code, openid = weapp_sim.login(app)
    session = client.wxa.code_to_session(code)
    assert session["openid"] == openid
    assert "unionid" not in session  # absent, as WeChat (and so wechatpy) gives it
    key = session["session_key"]
    assert isinstance(key, str) and isinstance(key, SessionKeyText)
    assert key not in repr(session) and "***" in repr(session)
    assert json.loads(json.dumps(session))["session_key"] == key.reveal()
    # jscode2session takes no access token: none was fetched (wechatpy fetched one).
    assert token_calls(weapp_sim) == 0

    phone = client.wxa.get_phone_number(weapp_sim.phone_code(app, openid, "13800138000"))
    assert phone["errcode"] == 0 and phone["phone_info"]["purePhoneNumber"] == "13800138000"
    assert phone["phone_info"]["watermark"]["appid"] == app.appid

    encrypted, iv = weapp_sim.open_data(app, openid, {"nickName": "Band"})
    assert WeChatWxaCrypto(key, iv, app.appid).decrypt_message(encrypted)["nickName"] == "Band"
    with pytest.raises(InvalidAppIdException):
        WeChatWxaCrypto(key, iv, "wx0000000000000000").decrypt_message(encrypted)
    assert key not in repr(WeChatWxaCrypto(key, iv, app.appid))
    raw = '{"nickName":"Band"}'
    check_wxa_signature(key, raw, hashlib.sha1((raw + key).encode()).hexdigest())

    # wechatpy's default line_color is text ({"r": "0", …}); images come back as bytes that
    # still answer .content, as the requests.Response did.
    images = [
        client.wxa.get_wxa_code("pages/index/index", line_color={"r": "0", "g": "0", "b": "0"}),
        client.wxa.get_wxa_code_unlimited("a=1", page="pages/index/index", check_path=False),
        client.wxa.create_qrcode("pages/index/index", 280),
    ]
    for png in images:
        assert isinstance(png, BinaryResponse) and isinstance(png, bytes)
        assert png.startswith(b"\x89PNG") and png.content == bytes(png) and png.status_code == 200
    with pytest.raises(WeChatClientException) as long_scene:
        client.wxa.get_wxa_code_unlimited("x" * 33)
    assert long_scene.value.errcode == 40169

    scheme = client.wxa.get_url_scheme(jump_wxa={"path": "pages/index/index", "query": "a=1"})
    assert scheme["errcode"] == 0 and scheme["openlink"].startswith("weixin://")
    link = client.wxa.get_url_link("pages/index/index", "a=1", is_expire=True, expire_type=1, expire_interval=1)
    assert link["url_link"].startswith("https://")


def test_subscribe_message_sends_and_errors(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = compat_client(weapp_sim, app)
    _, openid = weapp_sim.login(app)
    template = client.weapp_client.subscribe.add_template(1001, [1, 2], "compat")["priTmplId"]
    data = {"character_string1": {"value": "A20231110123"}, "thing2": {"value": "黄焖鸡米饭"}}

    # No grant from the user yet: WeChat's 43101, with its rid and the weapp error as cause.
    with pytest.raises(WeChatClientException) as refused:
        client.wxa.send_subscribe_message(openid, template, data, page="pages/index/index")
    e = refused.value
    assert e.errcode == 43101 and e.rid and e.endpoint == "/cgi-bin/message/subscribe/send"
    assert isinstance(e.__cause__, weapp.ApiError) and e.__cause__.errcode == 43101
    assert str(e) == f"Error code: 43101, message: {e.errmsg}"
    assert e.client is None and e.response is None

    weapp_sim.control("POST", "/_sim/subscribe-grant", {"appid": app.appid, "openid": openid, "template_id": template})
    assert client.wxa.send_subscribe_message(openid, template, data, page="pages/index/index") == {"errcode": 0, "errmsg": "ok"}
    messages = weapp_sim.control("GET", f"/_sim/messages?appid={app.appid}&openid={openid}")["messages"]
    assert len(messages) == 1

    with pytest.raises(WeChatClientException) as unknown:
        client.wxa.send_subscribe_message(openid, "no-such-template", data)
    assert unknown.value.errcode == 40037

    # A value breaking its key's rule is refused before anything is sent.
    sent = weapp_sim.stats()["calls"]["/cgi-bin/message/subscribe/send"]
    with pytest.raises(WeChatClientException) as bad_value:
        client.wxa.send_subscribe_message(openid, template, {"character_string1": {"value": "单号"}, "thing2": {"value": "x"}})
    assert bad_value.value.errcode == 47003 and bad_value.value.rid is None
    assert weapp_sim.stats()["calls"]["/cgi-bin/message/subscribe/send"] == sent


def test_post_and_get_escape_hatch(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app(unionid=True)
    client = compat_client(weapp_sim, app)
    body = {"cgi_path": "/wxa/getwxacodeunlimit"}
    # A full URL, a /path, and wechatpy's endpoint relative to /cgi-bin/.
    for url in (
        "https://api.weixin.qq.com/cgi-bin/openapi/quota/get",
        "/cgi-bin/openapi/quota/get",
        "openapi/quota/get",
    ):
        answer = client.post(url, data=body)
        assert answer["errcode"] == 0 and "quota" in answer
    assert client.post("openapi/quota/get", data=json.dumps(body))["quota"]["daily_limit"] > 0
    assert client.post("openapi/quota/get", data=body, result_processor=lambda r: sorted(r["quota"])) == [
        "daily_limit",
        "remain",
        "used",
    ]

    # GET with params: weapp's token replaces any access_token given; None params are dropped.
    _, openid = weapp_sim.login(app)
    weapp_sim.control("POST", "/_sim/payment", {"appid": app.appid, "openid": openid, "transaction_id": "4200000001"})
    paid = client.get(
        "https://api.weixin.qq.com/wxa/getpaidunionid",
        params={"openid": openid, "transaction_id": "4200000001", "mch_id": None, "access_token": "STALE"},
    )
    assert paid["unionid"]
    assert client.wxa.get_paid_unionid(openid, transaction_id="4200000001") == paid["unionid"]

    with pytest.raises(WeChatClientException) as unknown_path:
        client.get("/cgi-bin/no/such/api")
    assert unknown_path.value.errcode is None and isinstance(unknown_path.value.__cause__, weapp.WeappError)
    with pytest.raises(ValueError):
        client.get("https://example.com/cgi-bin/openapi/quota/get")
    with pytest.raises(NotImplementedError):
        client.post("media/upload", files={"media": b"x"})


def test_40001_gets_one_new_token_and_no_recursion(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = compat_client(weapp_sim, app, token_mode="classic")
    client.wxa.get_wxa_code_unlimited("a=1")
    assert weapp_sim.tokens_issued(app) == 1
    path = "/wxa/getwxacodeunlimit"

    # One 40001: a new token, one retry, success.
    weapp_sim.fault(path, errcode=40001, count=1)
    before = weapp_sim.stats()["calls"][path]
    assert client.wxa.get_wxa_code_unlimited("a=1").startswith(b"\x89PNG")
    assert weapp_sim.tokens_issued(app) == 2
    assert weapp_sim.stats()["calls"][path] == before + 2

    # WeChat keeps refusing: one new token, one retry, then the error — wechatpy recursed here.
    weapp_sim.fault(path, errcode=40001, count=50)
    before = weapp_sim.stats()["calls"][path]
    with pytest.raises(WeChatClientException) as err:
        client.wxa.get_wxa_code_unlimited("a=1")
    assert err.value.errcode == 40001 and isinstance(err.value.__cause__, weapp.TokenInvalidError)
    assert weapp_sim.stats()["calls"][path] == before + 2
    assert weapp_sim.tokens_issued(app) == 3

    # The escape hatch goes through the same bounded pipeline.
    weapp_sim.clear_faults()
    weapp_sim.fault("/cgi-bin/openapi/quota/get", errcode=40001, count=50)
    with pytest.raises(WeChatClientException):
        client.post("openapi/quota/get", data={"cgi_path": path})
    assert weapp_sim.stats()["calls"]["/cgi-bin/openapi/quota/get"] == 2
    assert weapp_sim.tokens_issued(app) == 4


def test_quota_and_transport_errors_translate(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = compat_client(weapp_sim, app, timeout=1.0)
    token = client.access_token
    assert client.fetch_access_token() == {"access_token": token}
    weapp_sim.fault("/wxa/getwxacodeunlimit", errcode=45009, count=1)
    with pytest.raises(APILimitedException) as daily:
        client.wxa.get_wxa_code_unlimited("a=1")
    assert daily.value.errcode == 45009 and isinstance(daily.value.__cause__, weapp.QuotaError)
    weapp_sim.fault("/wxa/getwxacodeunlimit", errcode=45011, count=1)
    with pytest.raises(WeChatClientException) as minute:
        client.wxa.get_wxa_code_unlimited("a=1")
    assert type(minute.value) is WeChatClientException and minute.value.errcode == 45011
    weapp_sim.fault("/cgi-bin/openapi/quota/get", latency_ms=3000, count=1)
    with pytest.raises(WeChatClientException) as slow:
        client.post("openapi/quota/get", data={"cgi_path": "/wxa/getwxacodeunlimit"})
    # A raw POST timed out after it was sent: weapp does not resend it (it may have happened).
    assert slow.value.errcode is None and isinstance(slow.value.__cause__, weapp.OutcomeUnknownError)
    assert slow.value.endpoint == "/cgi-bin/openapi/quota/get"


def test_customer_service_media_and_security(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = compat_client(weapp_sim, app)
    _, openid = weapp_sim.login(app)
    with pytest.raises(WeChatClientException) as closed:
        client.message.send_text(openid, "hi")  # no customer-service window open
    assert closed.value.errcode == 45015
    weapp_sim.control("POST", "/_sim/user-message", {"appid": app.appid, "openid": openid, "kind": "text", "content": "hello"})
    media = client.media.upload("image", io.BytesIO(png_bytes()))
    assert media["media_id"] and media["type"] == "image"
    assert client.media.download(media["media_id"]).content == png_bytes()
    assert client.message.send_text(openid, "hi") == {"errcode": 0, "errmsg": "ok"}
    page = {"title": "t", "pagepath": "pages/index/index", "thumb_media_id": media["media_id"]}
    assert client.message.send_mini_program_page(openid, page)["errcode"] == 0
    received = weapp_sim.control("GET", f"/_sim/messages?appid={app.appid}&openid={openid}")["messages"]
    assert len(received) == 2
    with pytest.raises(NotImplementedError):
        client.media.upload("voice", io.BytesIO(b"x"))

    assert client.wxa.check_image_security(io.BytesIO(png_bytes())) == {"errcode": 0, "errmsg": "ok"}
    assert client.wxa.check_text_security("hello") == {"errcode": 0, "errmsg": "ok"}  # wechatpy 1.8.18's v1
    v2 = client.wxa.check_text_security("hello", open_id=openid, scene=2)
    assert v2["errcode"] == 0 and v2["result"]["suggest"] == "pass"


def test_constructor_arguments_of_wechatpy(weapp_sim: Sim, redis_server, prefix: str) -> None:  # type: ignore[no-untyped-def]
    app = weapp_sim.create_app()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = compat_client(weapp_sim, app, access_token="GIVEN", session=object(), timeout=None, auto_retry=False)
    assert len(caught) == 2
    assert client.access_token != "GIVEN"
    assert app.secret not in repr(client) and client.access_token not in repr(client)
    # A redis:// URL given as wechatpy's `session` becomes weapp's token store.
    shared = compat_client(weapp_sim, app, session=redis_server.url, token_mode="classic", redis_prefix=prefix)
    assert shared.weapp_client.token_mode == "classic"
    assert "redis" in repr(shared.weapp_client)


def _worker(client: WeChatClient, out: "multiprocessing.Queue[List[str]]") -> None:
    tokens: List[str] = []
    lock = threading.Lock()

    def read() -> None:
        token = client.access_token
        with lock:
            tokens.append(token)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(tokens)


def test_two_forked_processes_share_one_token_through_redis(weapp_sim: Sim, redis_server, prefix: str) -> None:  # type: ignore[no-untyped-def]
    app = weapp_sim.create_app()
    weapp_sim.fault("/cgi-bin/token", latency_ms=300, count=1)  # both cold at once
    ctx = multiprocessing.get_context("fork")
    out: "multiprocessing.Queue[List[str]]" = ctx.Queue()
    clients = [
        compat_client(weapp_sim, app, token_store=redis_server.url, token_mode="classic", redis_prefix=prefix)
        for _ in range(2)
    ]
    workers = [ctx.Process(target=_worker, args=(c, out)) for c in clients]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    tokens = {t for r in results for t in r}
    assert sum(len(r) for r in results) == 4 and len(tokens) == 1
    assert weapp_sim.tokens_issued(app) == 1
    # A weapp.Client on the same Redis and prefix reads the same token.
    same = weapp.Client(
        app.appid, app.secret, base_url=weapp_sim.url, token_store=redis_server.url, token_mode="classic", redis_prefix=prefix
    )
    assert same.access_token() in tokens


# ------------------------------------------------------------------------------------------
# Exceptions
# ------------------------------------------------------------------------------------------


def test_compat_exceptions_pickle_with_their_attributes(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = compat_client(weapp_sim, app)
    code, _ = weapp_sim.login(app)
    client.wxa.code_to_session(code)
    with pytest.raises(WeChatClientException) as used:
        client.wxa.code_to_session(code)
    raised = used.value
    assert raised.errcode == 40163 and raised.rid
    detached = WeChatClientException(None, None, client=client, request=object(), response=object())
    made: List[WeChatException] = [
        raised,
        WeChatException(40029, "invalid code"),
        detached,
        APILimitedException(45009, "reach max api daily quota limit", rid="r-1", endpoint="/wxa/x"),
        InvalidSignatureException(),
        InvalidAppIdException(),
    ]
    for e in made:
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is type(e)
        assert vars(again) == vars(e) and again.args == e.args
        assert str(again) == str(e) and repr(again) == repr(e)
    assert detached.client is None and detached.request is None  # never holds the client (wechatpy's did, and could not pickle)
    assert repr(InvalidSignatureException()) == "InvalidSignatureException(-40001, Invalid signature)"
    assert issubclass(APILimitedException, WeChatClientException) and issubclass(WeChatClientException, WeChatException)
    key = pickle.loads(pickle.dumps(SessionKeyText("abc")))
    assert type(key) is SessionKeyText and key == "abc" and repr(key) == "SessionKey(***)"


# ------------------------------------------------------------------------------------------
# wechatpy's test vectors
# ------------------------------------------------------------------------------------------


def test_wechatpy_vector_wxa_decrypt() -> None:
    decrypted = WeChatWxaCrypto(WXA_SESSION_KEY, WXA_IV, WXA_APPID).decrypt_message(WXA_ENCRYPTED_DATA)
    assert decrypted["watermark"]["appid"] == WXA_APPID
    assert decrypted["nickName"] == "Band" and decrypted["watermark"]["timestamp"] == 1477314187
    with pytest.raises(InvalidAppIdException):
        WeChatWxaCrypto(WXA_SESSION_KEY, WXA_IV, "wx0000000000000000").decrypt_message(WXA_ENCRYPTED_DATA)
    # A wrong key is one DecryptError (wechatpy: JSONDecodeError, UnicodeDecodeError or KeyError).
    with pytest.raises(weapp.DecryptError):
        WeChatWxaCrypto(RAW_KEY_1, WXA_IV, WXA_APPID).decrypt_message(WXA_ENCRYPTED_DATA)


def test_wechatpy_vector_check_signature() -> None:
    check_signature(SIG_TOKEN, SIG_GOOD, SIG_TIMESTAMP, SIG_NONCE)
    check_signature(SIG_TOKEN, SIG_GOOD, int(SIG_TIMESTAMP), SIG_NONCE)
    with pytest.raises(InvalidSignatureException):
        check_signature(SIG_TOKEN, SIG_BAD, SIG_TIMESTAMP, SIG_NONCE)
    # The same handshake through WeChatCrypto (the push URL's GET), any AES key.
    crypto = WeChatCrypto(SIG_TOKEN, PUSH_AES_KEY, PUSH_APPID)
    assert crypto.check_signature(SIG_GOOD, SIG_TIMESTAMP, SIG_NONCE, "echo") == "echo"
    with pytest.raises(InvalidSignatureException):
        crypto.check_signature(SIG_BAD, SIG_TIMESTAMP, SIG_NONCE, "echo")


def test_wechatpy_vector_check_wxa_signature() -> None:
    check_wxa_signature(RAW_KEY_1, RAW_DATA_1, RAW_SIG_1)
    check_wxa_signature(RAW_KEY_2, RAW_DATA_2, RAW_SIG_2)
    with pytest.raises(InvalidSignatureException):
        check_wxa_signature(RAW_KEY_1, RAW_DATA_1, "fake_sign")


def test_wechatpy_vector_push_decrypt() -> None:
    crypto = WeChatCrypto(PUSH_TOKEN, PUSH_AES_KEY, PUSH_APPID)
    for body in (PUSH_XML, PUSH_XML.encode()):
        xml = crypto.decrypt_message(body, PUSH_SIGNATURE, PUSH_TIMESTAMP, PUSH_NONCE)
        assert "<Content><![CDATA[test]]></Content>" in xml
        assert "<FromUserName><![CDATA[messense]]></FromUserName>" in xml
    # wechatpy also took the envelope as a dict holding Encrypt.
    encrypt = PUSH_XML.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    as_json = json.loads(crypto.decrypt_message({"Encrypt": encrypt}, PUSH_SIGNATURE, PUSH_TIMESTAMP, PUSH_NONCE))
    assert as_json["Content"] == "test" and as_json["FromUserName"] == "messense"
    with pytest.raises(InvalidSignatureException):
        crypto.decrypt_message(PUSH_XML, PUSH_SIGNATURE, PUSH_TIMESTAMP, "437374424")
    with pytest.raises(InvalidAppIdException):
        WeChatCrypto(PUSH_TOKEN, PUSH_AES_KEY, "wx0000000000000000").decrypt_message(
            PUSH_XML, PUSH_SIGNATURE, PUSH_TIMESTAMP, PUSH_NONCE
        )
