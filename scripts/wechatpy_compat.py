"""Runs wechatpy 1.8.18, unchanged, against a running weapp-sim.

wechatpy hard-codes https://api.weixin.qq.com (its token URL is not even derived from
API_BASE_URL), so the only change is at the HTTP layer: a requests transport adapter that sends
that host's requests to the simulator. Everything above it is wechatpy's own code.

Usage: python wechatpy_compat.py http://127.0.0.1:PORT
"""

import json
import sys
import urllib.request

from requests.adapters import HTTPAdapter
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException

WECHAT = "https://api.weixin.qq.com"


class ToSimulator(HTTPAdapter):
    def __init__(self, base):
        super().__init__()
        self.base = base.rstrip("/")

    def send(self, request, **kwargs):
        request.url = self.base + request.url[len(WECHAT):]
        return super().send(request, **kwargs)


def control(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def main(base):
    passed = 0
    failed = 0

    def check(name, cond, detail=""):
        nonlocal passed, failed
        if cond:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name} {detail}")

    app = control(base, "/_sim/apps", {})
    client = WeChatClient(app["appid"], app["secret"])
    client._http.mount(WECHAT + "/", ToSimulator(base))

    token = client.access_token
    stats = control(base, "/_sim/stats")
    check("classic token fetched once", stats["tokens_issued"][app["appid"]]["classic"] == 1, stats)
    check("token looks real", isinstance(token, str) and len(token) > 100)

    login = control(base, "/_sim/login", {"appid": app["appid"]})
    session = client.wxa.code_to_session(login["code"])
    user = control(base, f"/_sim/users?appid={app['appid']}&openid={login['openid']}")
    check("code_to_session returns the openid", session.get("openid") == login["openid"], session)
    check("code_to_session returns the current session_key", session.get("session_key") == user["session_key"])
    check("no unionid without open platform", "unionid" not in session, session)

    try:
        client.wxa.code_to_session(login["code"])
        check("second redemption fails", False)
    except WeChatClientException as e:
        check("second redemption is 40163", e.errcode == 40163, e)
        check("errmsg carries a rid", "rid:" in (e.errmsg or ""), e.errmsg)

    try:
        client.wxa.code_to_session("never-issued")
        check("unknown code fails", False)
    except WeChatClientException as e:
        check("unknown code is 40029", e.errcode == 40029, e)

    # Someone else fetches twice: wechatpy's cached token dies (older than "previous"). A
    # token-authenticated call must get 40001, and wechatpy's own auto-retry must refetch.
    for _ in range(2):
        urllib.request.urlopen(
            f"{base}/cgi-bin/token?grant_type=client_credential&appid={app['appid']}&secret={app['secret']}"
        ).read()
    old = client.access_token
    phone_code = control(base, "/_sim/phone-code", {"appid": app["appid"], "openid": login["openid"], "phone": "13800138000"})
    result = client.post(WECHAT + "/wxa/business/getuserphonenumber", data={"code": phone_code["code"]})
    check("phone number through a token-authenticated call", result["phone_info"]["purePhoneNumber"] == "13800138000", result)
    check("wechatpy replaced its superseded token after 40001", client.access_token != old)
    stats = control(base, "/_sim/stats")
    check("the 40001 cost exactly one refetch", stats["tokens_issued"][app["appid"]]["classic"] == 4, stats)

    # Mini program code (binary answer): wechatpy returns the raw response.
    res = client.wxa.get_wxa_code_unlimited("id=42", page="pages/index/index", width=430)
    check("get_wxa_code_unlimited returns a PNG", res.headers.get("Content-Type") == "image/png" and res.content.startswith(b"\x89PNG"), res)

    # Subscribe message: a template, a grant from the popup, one send, then 43101.
    tpl = client.post(WECHAT + "/wxaapi/newtmpl/addtemplate", data={"tid": "1003", "kidList": [1, 2], "sceneDesc": "login"})
    template_id = tpl["priTmplId"]
    control(base, "/_sim/subscribe-grant", {"appid": app["appid"], "openid": login["openid"], "template_id": template_id})
    data = {"time1": {"value": "12:30"}, "thing2": {"value": "广州"}}
    sent = client.wxa.send_subscribe_message(login["openid"], template_id, data, page="pages/index/index")
    check("send_subscribe_message succeeds with a grant", sent.get("errcode") == 0, sent)
    messages = control(base, f"/_sim/messages?appid={app['appid']}&openid={login['openid']}")["messages"]
    check("the message was delivered with its data", len(messages) == 1 and messages[0]["data"]["thing2"]["value"] == "广州", messages)
    try:
        client.wxa.send_subscribe_message(login["openid"], template_id, data)
        check("a second send without a grant fails", False)
    except WeChatClientException as e:
        check("a second send without a grant is 43101", e.errcode == 43101, e)
    control(base, "/_sim/subscribe-grant", {"appid": app["appid"], "openid": login["openid"], "template_id": template_id})
    try:
        client.wxa.send_subscribe_message(login["openid"], template_id, {"time1": {"value": "25:99"}, "thing2": {"value": "x"}})
        check("a bad value fails", False)
    except WeChatClientException as e:
        check("a bad value is 47003 naming the field", e.errcode == 47003 and "time1" in (e.errmsg or ""), e)

    # Text security (v1, as wechatpy calls it).
    check("check_text_security passes clean text", client.wxa.check_text_security("今天天气不错").get("errcode") == 0)
    try:
        client.wxa.check_text_security("一起来赌博吧")
        check("risky text fails", False)
    except WeChatClientException as e:
        check("risky text is 87014", e.errcode == 87014, e)

    print(f"wechatpy-compat: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
