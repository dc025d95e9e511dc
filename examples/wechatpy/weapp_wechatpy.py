"""wechatpy 1.8.18 with its access token from weapp-server's broker (中控).

Copy this file into a backend that keeps wechatpy. Every API call still goes to WeChat through
wechatpy; only the token comes from weapp-server, so no process of yours ever fetches a token
from WeChat itself (the cause of 40001 the day a second instance starts).

    from weapp_wechatpy import WeappWeChatClient

    client = WeappWeChatClient(
        "wx1234567890abcdef",
        broker_url="http://127.0.0.1:8080",   # weapp-server
        client_key=os.environ["WEAPP_CLIENT_KEY"],  # a broker client key with token:read
    )
    client.wxa.send_subscribe_message(openid, template_id, data)

What it changes in wechatpy, and why:

- **The token fetch** goes to the broker's WeChat-compatible mirror, `POST /cgi-bin/stable_token`,
  authenticated by a broker client key (the AppSecret stays on weapp-server). The key travels in
  the JSON body, never in a URL, so it cannot end up in an access log or in urllib3's debug log.
  The fetch has a timeout (wechatpy's own has none).
- **40001 / 40014 / 42001 are retried a bounded number of times** (``max_refetches``, 2): one
  refetch is enough, because the broker checks a token a client fetches again with WeChat and
  replaces it if it is dead. wechatpy's own retry is unbounded recursion, which ends in
  ``RecursionError`` if a token never comes good. A refetch after 40001 asks the broker with
  ``force_refresh: true``; the broker never refreshes on that word alone (it proves the token
  dead first), so no client can burn the app's quota with it.
- ``code_to_session`` needs the real AppSecret (pass ``secret=``) — better, leave logins to
  weapp-server's ``POST /v1/login``, which keeps ``session_key`` out of your backend.
"""

import time

from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException

#: The errcodes that mean "this access_token is no longer good".
TOKEN_INVALID = (40001, 40014, 42001)


class BrokerError(WeChatClientException):
    """The broker refused or could not give a token (its errcode, never the key or a token)."""


class WeappWeChatClient(WeChatClient):
    """A ``wechatpy.client.WeChatClient`` whose token comes from weapp-server."""

    def __init__(self, appid, broker_url, client_key, secret=None, timeout=10,
                 max_refetches=2, session=None):
        # wechatpy's own retry is switched off: ``_request`` below retries, boundedly.
        super().__init__(appid, secret, session=session, timeout=timeout, auto_retry=False)
        self.broker_url = broker_url.rstrip("/")
        self._client_key = client_key
        self.max_refetches = max_refetches

    def __repr__(self):
        return f"WeappWeChatClient(appid={self.appid!r}, broker_url={self.broker_url!r})"

    def fetch_access_token(self, force_refresh=False):
        """Takes the broker's current token (``force_refresh``: ask it to check the token)."""
        body = {
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self._client_key,
            "force_refresh": bool(force_refresh),
        }
        try:
            res = self._http.post(self.broker_url + "/cgi-bin/stable_token", json=body,
                                  timeout=self.timeout or 10)
            res.raise_for_status()
            result = res.json()
        except Exception as e:  # transport, HTTP status, not JSON: no request details kept
            raise BrokerError(errcode=-1, errmsg=f"broker unreachable: {type(e).__name__}") from None
        if result.get("errcode"):
            raise BrokerError(errcode=result["errcode"], errmsg=result.get("errmsg"))
        expires_in = int(result.get("expires_in", 7200))
        self.session.set(self.access_token_key, result["access_token"], expires_in)
        self.expires_at = int(time.time()) + expires_in
        return {"expires_in": expires_in}

    def _request(self, method, url_or_endpoint, **kwargs):
        refetches = 0
        while True:
            attempt = dict(kwargs)
            params = attempt.get("params")
            if isinstance(params, dict):
                # A retry takes the new token, not the one that failed.
                attempt["params"] = {k: v for k, v in params.items() if k != "access_token"}
            try:
                return super()._request(method, url_or_endpoint, **attempt)
            except WeChatClientException as e:
                if e.errcode not in TOKEN_INVALID or refetches >= self.max_refetches:
                    raise
                refetches += 1
                self.fetch_access_token(force_refresh=True)
