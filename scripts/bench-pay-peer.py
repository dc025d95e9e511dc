#!/usr/bin/env python3
"""The Python peer of `cargo bench -p weapp --bench pay`: the same two operations with
wechatpayv3 (minibear2021/wechatpayv3 on PyPI), timed with timeit, medians per operation.

    python3 -m venv /tmp/pay-peer-venv
    /tmp/pay-peer-venv/bin/pip install wechatpayv3==2.0.4 cryptography==51.0.1
    /tmp/pay-peer-venv/bin/python scripts/bench-pay-peer.py

- sign_prepay_authorization: `wechatpayv3.utils.build_authorization` for a JSAPI prepay body
  (nonce, timestamp, five-line message, RSA-2048 SHA256 PKCS#1 v1.5, header) — what the SDK
  does for every request.
- callback: `WeChatPay.callback(headers, body)` on a TRANSACTION.SUCCESS notification signed
  with the TEST "WeChat Pay public key" (public-key mode: no certificate download): verify the
  signature, decrypt the AES-256-GCM resource, parse both JSON documents. (wechatpayv3 does not
  check the timestamp window, so the notification's age does not matter here.)

Same TEST keys as the Rust bench (crates/weapp/tests/data/pay). No network.
"""

import json
import os
import statistics
import sys
import time
import timeit
import uuid
from base64 import b64encode

PINNED = {"wechatpayv3": "2.0.4", "cryptography": "51.0.1"}

from importlib.metadata import version  # noqa: E402

for name, want in PINNED.items():
    got = version(name)
    if got != want:
        sys.exit(f"{name} {got} installed, the bench is pinned to {want}")

from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.hashes import SHA256  # noqa: E402
from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: E402
from wechatpayv3 import WeChatPay, WeChatPayType  # noqa: E402
from wechatpayv3.utils import build_authorization  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "crates", "weapp", "tests", "data", "pay")
MCHID = "1900000109"
SERIAL = "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293"
PUB_ID = "PUB_KEY_ID_0119000001092026120600000000000001"
APIV3 = "TESTapiv3key-not-real-0123456789"


def read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def per_op(fn, number, repeat=15):
    """Median seconds per call over `repeat` runs of `number` calls."""
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(r / number for r in runs)


def fmt(secs):
    return f"{secs * 1e6:.1f} µs"


def main():
    merchant_pem = read("TEST-merchant-key.pkcs8.pem")
    private_key = load_pem_private_key(merchant_pem.encode(), password=None)
    body = json.dumps(
        {
            "appid": "wxd678efh567hg6787",
            "mchid": MCHID,
            "description": "Image形象店-深圳腾大-QQ公仔",
            "out_trade_no": "1217752501201407033233368018",
            "time_expire": "2026-12-06T13:33:20+08:00",
            "attach": "自定义数据说明",
            "notify_url": "https://www.weixin.qq.com/wxpay/pay.php",
            "amount": {"total": 100, "currency": "CNY"},
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )

    def sign():
        build_authorization(
            "/v3/pay/transactions/jsapi", "POST", MCHID, SERIAL, private_key, data=body
        )

    wxpay = WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=MCHID,
        private_key=merchant_pem,
        cert_serial_no=SERIAL,
        appid="wxd678efh567hg6787",
        apiv3_key=APIV3,
        public_key=read("TEST-wechatpay-pubkey.pem"),
        public_key_id=PUB_ID,
    )
    resource = json.dumps(
        {
            "transaction_id": "4200001234202612061234567890",
            "amount": {"payer_total": 100, "total": 100, "currency": "CNY", "payer_currency": "CNY"},
            "mchid": MCHID, "trade_state": "SUCCESS", "bank_type": "CMC", "promotion_detail": [],
            "success_time": "2026-12-06T10:34:56+08:00",
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "out_trade_no": "1217752501201407033233368018", "appid": "wxd678efh567hg6787",
            "trade_state_desc": "支付成功", "trade_type": "JSAPI", "attach": "自定义数据",
            "scene_info": {"device_id": "013467007045764"},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    nonce = "fdasflkja484"
    ct = b64encode(
        AESGCM(APIV3.encode()).encrypt(nonce.encode(), resource.encode(), b"transaction")
    ).decode()
    notification = (
        '{"id":"d4785163-ff81-5ed4-b828-e124183b37b3","create_time":"2026-12-06T10:34:57+08:00",'
        '"resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功",'
        '"resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM",'
        f'"ciphertext":"{ct}","associated_data":"transaction","nonce":"{nonce}"}}}}'
    ).encode()
    wechat_key = load_pem_private_key(read("TEST-wechatpay-pubkey-private.pem").encode(), None)
    ts, wnonce = str(int(time.time())), uuid.uuid4().hex
    message = f"{ts}\n{wnonce}\n".encode() + notification + b"\n"
    signature = b64encode(wechat_key.sign(message, PKCS1v15(), SHA256())).decode()
    headers = {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": wnonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": PUB_ID,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    parsed = wxpay.callback(headers, notification)
    assert parsed and parsed["resource"]["trade_state"] == "SUCCESS", parsed

    def callback():
        wxpay.callback(headers, notification)

    print(f"python {sys.version.split()[0]}, wechatpayv3 {version('wechatpayv3')}, "
          f"cryptography {version('cryptography')}")
    print(f"sign_prepay_authorization  median {fmt(per_op(sign, 200))}")
    print(f"callback (verify+decrypt)  median {fmt(per_op(callback, 300))}")


if __name__ == "__main__":
    main()
