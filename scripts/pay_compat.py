"""Runs wechatpayv3 (minibear2021/wechatpayv3 on PyPI), unchanged, against a running weapp-sim:
a full mini-program payment and a refund, with the library's own checks on.

wechatpayv3 hard-codes https://api.mch.weixin.qq.com and calls requests.get/post directly, so the
only change is the host: a wrapper around requests' single entry point rewrites that prefix to
the simulator's base URL. Everything else — request signing, response verification, the platform
certificate download and its decryption, paySign, notification verification and decryption — is
wechatpayv3's own code.

For each verification mode the simulator offers a merchant (public key; platform certificates):
  prepay → wx.requestPayment with the library's paySign (through /_sim/pay/request_payment) →
  the notification, verified and decrypted by wechatpayv3.callback in a local receiver →
  query by out_trade_no and by transaction_id → refund → the refund ends →
  REFUND.SUCCESS notification → query_refund; then a probe notification (WECHATPAY/SIGNTEST/…)
  that wechatpayv3 must refuse, a closed order (204), and a tampered answer that must not verify.

Usage: python pay_compat.py http://127.0.0.1:PORT
"""

import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests
import requests.api
from wechatpayv3 import WeChatPay, WeChatPayType

PRODUCTION = "https://api.mch.weixin.qq.com"
APPID = "wx1111111111111111"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
BASE = sys.argv[1].rstrip("/")
FAILURES = []


def to_simulator(real_request):
    def request(method, url, **kwargs):
        if url.startswith(PRODUCTION):
            url = BASE + url[len(PRODUCTION):]
        return real_request(method, url, **kwargs)

    return request


requests.api.request = to_simulator(requests.api.request)


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def header(headers, name):
    """A header by name, whatever its case (HTTP names are case-insensitive)."""
    return next((v for k, v in headers.items() if k.lower() == name.lower()), "")


def control(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


class Receiver:
    """The merchant's notify URL: hands every notification to wechatpayv3.callback."""

    def __init__(self):
        self.wxpay = None
        self.received = []  # (raw headers, result or None or the exception)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    result = receiver.wxpay.callback(headers, body)
                except Exception as e:  # a probe's signature is not even Base64
                    result = e
                receiver.received.append((headers, result))
                ok = isinstance(result, dict)
                self.send_response(204 if ok else 401)
                self.end_headers()
                if not ok:
                    self.wfile.write(b'{"code":"FAIL","message":"verification failed"}')

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/pay/notify" % self.server.server_port

    def wait(self, n, timeout=10):
        end = time.time() + timeout
        while len(self.received) < n and time.time() < end:
            time.sleep(0.05)
        return len(self.received) >= n


def run(verification):
    print(f"--- merchant with verification={verification}")
    m = control("POST", "/_sim/pay/merchants", {"appids": [APPID], "verification": verification})
    receiver = Receiver()
    extra = {}
    if verification == "public_key":
        extra = {"public_key": m["wechatpay_public_key"], "public_key_id": m["wechatpay_public_key_id"]}
    # In certificate mode the constructor downloads /v3/certificates, decrypts them with the APIv3
    # key and loads them with cryptography: the library's own bootstrap.
    wxpay = WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=m["mchid"],
        private_key=m["merchant_private_key"],
        cert_serial_no=m["merchant_serial_no"],
        appid=APPID,
        apiv3_key=m["apiv3_key"],
        notify_url=receiver.url,
        timeout=(5, 10),
        **extra,
    )
    receiver.wxpay = wxpay
    if verification == "certificate":
        serials = [hex(c.serial_number)[2:].upper() for c in wxpay._core._certificates]
        check(serials == [m["platform_certificates"][0]["serial_no"]], "certificates downloaded and decrypted by wechatpayv3")

    out_trade_no = "compat_%s_%d" % (verification[0], int(time.time() * 1000))
    code, message = wxpay.pay(
        description="weapp-sim compat",
        out_trade_no=out_trade_no,
        amount={"total": 101},
        payer={"openid": OPENID},
        attach="compat",
    )
    check(code == 200, f"prepay answered 200 and verified ({code} {message})")
    prepay_id = json.loads(message)["prepay_id"]

    # The mini program's five parameters, signed by the library (what its users send to wx).
    ts = str(int(time.time()))
    nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    package = "prepay_id=" + prepay_id
    pay_sign = wxpay.sign([APPID, ts, nonce, package])
    paid = control("POST", "/_sim/pay/request_payment", {
        "appid": APPID, "openid": OPENID, "timeStamp": ts, "nonceStr": nonce,
        "package": package, "signType": "RSA", "paySign": pay_sign,
    })
    check(paid == {"errMsg": "requestPayment:ok"}, f"wx.requestPayment with the library's paySign: {paid}")

    check(receiver.wait(1), "the payment notification arrived")
    headers, result = receiver.received[0]
    check(isinstance(result, dict), "wechatpayv3.callback verified and decrypted it")
    if isinstance(result, dict):
        tx = result["resource"]
        check(result["event_type"] == "TRANSACTION.SUCCESS", "event_type TRANSACTION.SUCCESS")
        check(tx["trade_state"] == "SUCCESS" and tx["out_trade_no"] == out_trade_no, "resource: SUCCESS, our order")
        check(tx["amount"]["total"] == 101 and tx["payer"]["openid"] == OPENID, "resource: amount and payer")
        expected_serial = m["wechatpay_public_key_id"] if verification == "public_key" else m["platform_certificates"][0]["serial_no"]
        check(header(headers, "Wechatpay-Serial") == expected_serial, "signed under the mode's key")

    code, message = wxpay.query(out_trade_no=out_trade_no)
    q = json.loads(message)
    check(code == 200 and q["trade_state"] == "SUCCESS", "query by out_trade_no: SUCCESS")
    code, message = wxpay.query(transaction_id=q["transaction_id"])
    check(code == 200 and json.loads(message)["out_trade_no"] == out_trade_no, "query by transaction_id")

    out_refund_no = "rf_" + out_trade_no
    code, message = wxpay.refund(
        out_refund_no=out_refund_no,
        amount={"refund": 100, "total": 101, "currency": "CNY"},
        out_trade_no=out_trade_no,
        notify_url=receiver.url,
    )
    check(code == 200 and json.loads(message)["status"] == "PROCESSING", f"refund accepted: {code} {message}")
    ended = control("POST", "/_sim/pay/refunds/" + out_refund_no, {"status": "SUCCESS", "mchid": m["mchid"]})
    check(ended["status"] == "SUCCESS", "the refund ends (control API)")
    check(receiver.wait(2), "the refund notification arrived")
    _, result = receiver.received[1]
    check(isinstance(result, dict) and result["event_type"] == "REFUND.SUCCESS"
          and result["resource"]["refund_status"] == "SUCCESS", "REFUND.SUCCESS verified and decrypted")
    code, message = wxpay.query_refund(out_refund_no=out_refund_no)
    check(code == 200 and json.loads(message)["status"] == "SUCCESS", "query_refund: SUCCESS")

    # A probe (签名探测): wechatpayv3 must refuse it.
    control("POST", "/_sim/pay/merchants/%s/orders/%s/probe" % (m["mchid"], out_trade_no))
    check(receiver.wait(3), "the probe arrived")
    headers, result = receiver.received[2]
    check(header(headers, "Wechatpay-Signature").startswith("WECHATPAY/SIGNTEST/") and not isinstance(result, dict),
          f"the probe was refused ({type(result).__name__})")

    # Close answers 204 (signed over an empty body, verified by the library).
    unpaid = out_trade_no + "_u"
    code, message = wxpay.pay(description="weapp-sim compat", out_trade_no=unpaid, amount={"total": 1}, payer={"openid": OPENID})
    check(code == 200, f"a second order ({code} {message})")
    code, _ = wxpay.close(out_trade_no=unpaid)
    check(code == 204, "close: 204")
    code, message = wxpay.query(out_trade_no=unpaid)
    check(code == 200 and json.loads(message).get("trade_state") == "CLOSED", f"the closed order is CLOSED ({code} {message})")

    # The library's verification can fail: a body changed in transit is refused.
    real_request = requests.api.request

    def tampering(method, url, **kwargs):
        r = real_request(method, url, **kwargs)
        r._content = r.content.replace(b"CLOSED", b"NOTPAY")
        return r

    requests.api.request = tampering
    try:
        wxpay.query(out_trade_no=unpaid)
        check(False, "a tampered answer is refused")
    except Exception as e:
        check("verify" in str(e), f"a tampered answer is refused ({e})")
    finally:
        requests.api.request = real_request


for mode in ["public_key", "certificate"]:
    run(mode)
if FAILURES:
    print(f"{len(FAILURES)} check(s) failed")
    sys.exit(1)
print("all checks passed")
