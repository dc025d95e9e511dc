"""Offline helpers: decrypt_user_data, the rawData signature, PushReceiver."""

from __future__ import annotations

import base64
import hashlib
import pickle
import time

import pytest

import weapp
from weapp.testing import Sim

from helpers import Recorder

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_decrypt_user_data_checks_the_watermark(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    client = weapp_sim.client(app)
    code, openid = weapp_sim.login(app)
    key = client.auth.code2session(code)["session_key"]
    data, iv = weapp_sim.open_data(app, openid, {"nickName": "小程序"})
    plain = weapp.decrypt_user_data(key, data, iv, appid=app.appid)
    assert plain["nickName"] == "小程序" and plain["watermark"]["appid"] == app.appid
    assert weapp.decrypt_user_data(key.reveal(), data, iv)["nickName"] == "小程序"
    with pytest.raises(weapp.DecryptError):
        weapp.decrypt_user_data(key, data, iv, appid="wx_another_app")
    # The age is checked only when asked: one second later a 0-second limit refuses it.
    time.sleep(1.1)
    assert weapp.decrypt_user_data(key, data, iv, appid=app.appid)["nickName"] == "小程序"
    with pytest.raises(weapp.DecryptError):
        weapp.decrypt_user_data(key, data, iv, appid=app.appid, max_age_secs=0)


@pytest.mark.parametrize(
    "session_key, data, iv",
    [
        ("not base64!", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("AAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA=="),  # 15-byte key
        ("AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAA"),  # short iv
        ("AAAAAAAAAAAAAAAAAAAAAA==", "AAAA", "AAAAAAAAAAAAAAAAAAAAAA=="),  # not whole blocks
        ("AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA=="),  # bad padding
        ("AAAAAAAAAAAAAAAAAAAAAA==", "", "AAAAAAAAAAAAAAAAAAAAAA=="),
    ],
)
def test_every_bad_input_is_one_decrypt_error(session_key: str, data: str, iv: str) -> None:
    with pytest.raises(weapp.DecryptError) as err:
        weapp.decrypt_user_data(session_key, data, iv, appid="wx1")
    assert session_key not in str(err.value) or session_key.startswith("not")
    assert type(pickle.loads(pickle.dumps(err.value))) is weapp.DecryptError
    with pytest.raises(weapp.DecryptError):
        weapp.decrypt_user_data(None, data, iv)


def test_raw_signature() -> None:
    key = "HyVFkGl5F5OQWJZZaNzBBg=="
    raw = '{"nickName":"Band","gender":1}'
    good = hashlib.sha1((raw + key).encode()).hexdigest()
    assert weapp.verify_raw_signature(key, raw, good)
    assert weapp.verify_raw_signature(key, raw, good.upper())
    assert not weapp.verify_raw_signature(key, raw + " ", good)
    assert not weapp.verify_raw_signature(key, raw, "")


def test_push_receiver_safe_mode_end_to_end(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    recorder = Recorder()
    url, server = recorder.start()
    try:
        weapp_sim.control(
            "POST",
            f"/_sim/apps/{app.appid}/push-config",
            {"url": url + "/push", "token": "pushtoken", "encoding_aes_key": AES_KEY, "mode": "safe", "format": "xml"},
        )
        _, openid = weapp_sim.login(app)
        weapp_sim.control(
            "POST",
            "/_sim/push",
            {"appid": app.appid, "message": {"MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "card", "FromUserName": openid}},
        )
        got = recorder.wait(1)[0]
        receiver = weapp.PushReceiver(app.appid, "pushtoken", AES_KEY)
        assert receiver.mode == "safe" and "pushtoken" not in repr(receiver)
        event = receiver.parse(got.query, got.body)
        assert event.type == "user_enter_tempsession" and event.fields["session_from"] == "card"
        assert event.encrypted and event.format == "xml" and event.from_user_name == openid
        with pytest.raises(weapp.PushError):
            receiver.parse(got.query, got.body)  # a replay
        fresh = weapp.PushReceiver(app.appid, "pushtoken", AES_KEY)
        tampered = got.body.replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[A")
        with pytest.raises(weapp.PushError):
            fresh.parse(got.query, tampered)
        plain_query = {k: v for k, v in got.query.items() if k not in ("encrypt_type", "msg_signature")}
        with pytest.raises(weapp.PushError):
            fresh.parse(plain_query, b"<xml><MsgType><![CDATA[text]]></MsgType><Content>forged</Content></xml>")
        with pytest.raises(weapp.PushError):
            fresh.verify_url({**got.query, "signature": "0" * 40, "echostr": "x"})
        assert fresh.verify_url({**{k: got.query[k] for k in ("timestamp", "nonce", "signature")}, "echostr": "hello"}) == "hello"
    finally:
        server.shutdown()


def test_push_receiver_refuses_a_bad_key() -> None:
    with pytest.raises(weapp.PushError):
        weapp.PushReceiver("wx1", "t", base64.b64encode(b"short").decode())
    with pytest.raises(ValueError):
        weapp.PushReceiver("wx1", "t", AES_KEY, mode="loose")  # type: ignore[arg-type]
