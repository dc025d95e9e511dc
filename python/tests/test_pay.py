"""weapp.pay against the simulator's WeChat Pay v3: prepay → wx.requestPayment → notification →
query → refund; notifications verified from the raw body and headers."""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid

import pytest

import weapp
from weapp.pay import AsyncPayClient, PayClient
from weapp.testing import Sim

from helpers import Recorder


def merchant_client(sim: Sim, appid: str) -> PayClient:
    m = sim.pay_merchant([appid])
    return PayClient(
        m["mchid"],
        m["merchant_serial_no"],
        m["merchant_private_key"],
        m["apiv3_key"],
        public_key_id=m["wechatpay_public_key_id"],
        public_key=m["wechatpay_public_key"],
        base_url=sim.url,
    )


def test_payment_and_refund_end_to_end(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    pay = merchant_client(weapp_sim, app.appid)
    assert "PRIVATE" not in repr(pay)
    recorder = Recorder(status=204, reply=b"")
    url, server = recorder.start()
    try:
        _, openid = weapp_sim.login(app)
        no = "T" + uuid.uuid4().hex[:20]
        prepay = pay.jsapi_prepay(
            {
                "appid": app.appid,
                "mchid": pay.mchid,
                "description": "一杯咖啡",
                "out_trade_no": no,
                "notify_url": url + "/pay/notify",
                "amount": {"total": 1, "currency": "CNY"},
                "payer": {"openid": openid},
            }
        )
        params = pay.request_payment(app.appid, prepay["prepay_id"])
        assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
        answer = weapp_sim.control("POST", "/_sim/pay/request_payment", {"appid": app.appid, "openid": openid, **params})
        assert answer["errMsg"] == "requestPayment:ok"
        got = recorder.wait(1)[0]
        note = pay.parse_notification(got.headers, got.body)
        assert note["event_type"] == "TRANSACTION.SUCCESS" and note["kind"] == "transaction"
        assert note["resource"]["out_trade_no"] == no and note["resource"]["amount"]["total"] == 1
        with pytest.raises(weapp.NotificationError):
            pay.parse_notification(got.headers, got.body.replace(b'"id"', b'"Id"'))
        lower = {k.lower(): v for k, v in got.headers.items()}
        assert pay.parse_notification(lower, got.body)["id"] == note["id"]
        assert pay.query_by_out_trade_no(no)["trade_state"] == "SUCCESS"
        refund = pay.refund({"out_trade_no": no, "out_refund_no": "R" + no, "amount": {"refund": 1, "total": 1, "currency": "CNY"}})
        assert refund["status"] in ("PROCESSING", "SUCCESS")
        assert pay.query_refund("R" + no)["out_refund_no"] == "R" + no
        with pytest.raises(weapp.PayApiError) as err:
            pay.query_by_out_trade_no("NOPE" + no)
        assert err.value.code == "ORDER_NOT_EXIST" and err.value.status == 404
        again = pickle.loads(pickle.dumps(err.value))
        assert (again.code, again.status, again.request_id) == (err.value.code, err.value.status, err.value.request_id)
        # A past day's trade bill (WeChat makes a day's bill the next morning; the merchant's
        # signatures carry the real time, so the simulator's clock stays where it is).
        day = time.strftime("%Y-%m-%d", time.gmtime(weapp_sim.advance(0) + 8 * 3600 - 3 * 86400))
        info = pay.trade_bill(day)
        assert info["hash_type"] == "SHA1"
        bill = pay.download_bill(info)
        assert isinstance(bill, bytes) and "交易时间".encode() in bill
        tampered = dict(info, hash_value="0" * 40)
        with pytest.raises(weapp.PayError):
            pay.download_bill(tampered)
    finally:
        server.shutdown()


def test_async_pay_client_and_close(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    m = weapp_sim.pay_merchant([app.appid])
    _, openid = weapp_sim.login(app)

    async def main() -> None:
        pay = AsyncPayClient(
            m["mchid"], m["merchant_serial_no"], m["merchant_private_key"], m["apiv3_key"],
            public_key_id=m["wechatpay_public_key_id"], public_key=m["wechatpay_public_key"], base_url=weapp_sim.url,
        )
        no = "A" + uuid.uuid4().hex[:20]
        await pay.jsapi_prepay({
            "appid": app.appid, "mchid": pay.mchid, "description": "d", "out_trade_no": no,
            "notify_url": "https://example.com/notify", "amount": {"total": 5}, "payer": {"openid": openid},
        })
        await pay.close(no)
        assert (await pay.query_by_out_trade_no(no))["trade_state"] == "CLOSED"

    asyncio.run(main())


def test_bad_merchant_settings_are_refused() -> None:
    with pytest.raises(weapp.PayError):
        PayClient("1900000001", "SERIAL", "not a key", "0" * 32, public_key_id="PUB_KEY_ID_1", public_key="x")
    with pytest.raises(ValueError):
        PayClient("1900000001", "SERIAL", "k", "0" * 32)


def test_an_answer_signed_by_another_key_is_a_signature_error(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    mine = weapp_sim.pay_merchant([app.appid])
    other = weapp_sim.pay_merchant([app.appid])

    def client(public_key: str) -> PayClient:
        return PayClient(
            mine["mchid"], mine["merchant_serial_no"], mine["merchant_private_key"], mine["apiv3_key"],
            public_key_id=mine["wechatpay_public_key_id"], public_key=public_key, base_url=weapp_sim.url,
        )

    _, openid = weapp_sim.login(app)
    no = "S" + uuid.uuid4().hex[:20]
    client(mine["wechatpay_public_key"]).jsapi_prepay(
        {"appid": app.appid, "mchid": mine["mchid"], "description": "d", "out_trade_no": no,
         "notify_url": "https://example.com/n", "amount": {"total": 1}, "payer": {"openid": openid}}
    )
    # The same merchant verifying WeChat's answers with another merchant's WeChat Pay key: the
    # signed 200 answer does not verify.
    with pytest.raises(weapp.SignatureError) as err:
        client(other["wechatpay_public_key"]).query_by_out_trade_no(no)
    assert mine["merchant_private_key"] not in str(err.value) and mine["apiv3_key"] not in str(err.value)
