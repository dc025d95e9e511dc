"""wechatpy 1.8.18, the parts mini-program backends use, on weapp's core.

Existing code keeps working with one changed import::

    # from wechatpy import WeChatClient
    # from wechatpy.crypto import WeChatWxaCrypto
    # from wechatpy.exceptions import WeChatClientException
    # from wechatpy.utils import check_signature, check_wxa_signature
    from weapp.compat.wechatpy import (
        WeChatClient, WeChatWxaCrypto, WeChatClientException, check_signature, check_wxa_signature,
    )

    client = WeChatClient(APPID, SECRET, token_store="redis://127.0.0.1:6379/0")
    session = client.wxa.code_to_session(js_code)

What is different from wechatpy, on purpose:

- **The token comes from weapp**: ``stable_token`` by default (``token_mode="classic"`` for
  ``/cgi-bin/token``), kept in this process, in Redis (``token_store="redis://…"``, the same
  keys as weapp's Rust processes, one refresh for the whole fleet under a lock) or in
  weapp-server's broker (``broker_url=``, ``broker_key=``). wechatpy's ``session`` storages
  are not used (a ``redis://`` URL given as ``session`` is taken as ``token_store``), and an
  ``access_token`` given to the constructor is ignored with a warning.
- **40001 is bounded**: after a 40001/40014/42001 weapp fetches one new token and retries
  once; a second refusal is raised (``WeChatClientException`` with ``errcode`` 40001).
  wechatpy recursed without a bound (wechatpy/wechatpy#629). ``auto_retry`` is accepted and
  has no effect: the one bounded retry always happens.
- **Every call has a deadline**: ``timeout=None`` means weapp's default (10 s), not "wait
  for ever".
- **Binary answers are bytes**: ``get_wxa_code``, ``get_wxa_code_unlimited``,
  ``create_qrcode`` and ``media.download`` returned a ``requests.Response`` in wechatpy; here
  they return :class:`BinaryResponse`, a ``bytes`` that also answers ``.content`` and
  ``.status_code`` so that ``res.content`` keeps working.
- **Exceptions hold plain values**: ``client``, ``request`` and ``response`` are always
  ``None`` (wechatpy's held the client, whose locks made them unpicklable); they gain
  ``rid`` and ``endpoint``, pickle with every attribute (Celery), and keep the weapp
  exception as ``__cause__``. Transport failures and timeouts are ``WeChatClientException``
  with ``errcode=None`` (wechatpy let ``requests`` exceptions escape).
- **No secret in a repr**: the ``session_key`` of ``code_to_session`` is a ``str`` whose
  ``repr`` is ``SessionKey(***)``, so logging the result does not log the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
import warnings
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, TypeVar, Union, cast
from xml.sax.saxutils import escape

from .. import decrypt_user_data, verify_raw_signature
from .._client import Client, TokenMode
from .._secret import SessionKey
from ..exceptions import ApiError, PushError, WeappError
from ..push import PushReceiver

__all__ = [
    "WeChatClient",
    "WeChatWxa",
    "WeChatMessage",
    "WeChatMedia",
    "WeChatWxaCrypto",
    "WeChatCrypto",
    "check_signature",
    "check_wxa_signature",
    "BinaryResponse",
    "SessionKeyText",
    "WeChatException",
    "WeChatClientException",
    "APILimitedException",
    "InvalidSignatureException",
    "InvalidAppIdException",
]

_T = TypeVar("_T")

_OK: Dict[str, Any] = {"errcode": 0, "errmsg": "ok"}


# --------------------------------------------------------------------------------------------
# Exceptions (wechatpy.exceptions)
# --------------------------------------------------------------------------------------------


class WeChatException(Exception):
    """``wechatpy.exceptions.WeChatException``: ``errcode`` and ``errmsg``.

    Same ``str`` (``Error code: …, message: …``) and ``repr`` as wechatpy. Unlike wechatpy's,
    ``args`` is ``(errcode, errmsg)`` and it pickles with every attribute.
    """

    def __init__(self, errcode: Optional[int] = None, errmsg: Optional[str] = None) -> None:
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg

    def __str__(self) -> str:
        return f"Error code: {self.errcode}, message: {self.errmsg}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.errcode}, {self.errmsg})"

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.errcode, self.errmsg), dict(self.__dict__))


class WeChatClientException(WeChatException):
    """``wechatpy.exceptions.WeChatClientException``: an API call failed.

    ``errcode``/``errmsg`` are WeChat's (``errmsg`` without its ``rid: …`` suffix, which is in
    ``rid``); ``endpoint`` is the API path. For a failure without a WeChat answer (transport,
    timeout, HTTP status, a value refused before sending) ``errcode`` is ``None`` and ``errmsg``
    says what happened. ``client``, ``request`` and ``response`` are accepted for
    compatibility and always ``None``: the exception holds no client or ``requests`` object.
    The weapp exception it was translated from is its ``__cause__``.
    """

    def __init__(
        self,
        errcode: Optional[int] = None,
        errmsg: Optional[str] = None,
        client: Any = None,
        request: Any = None,
        response: Any = None,
        *,
        rid: Optional[str] = None,
        endpoint: Optional[str] = None,
    ) -> None:
        del client, request, response
        super().__init__(errcode, errmsg)
        self.client: Any = None
        self.request: Any = None
        self.response: Any = None
        self.rid = rid
        self.endpoint = endpoint


class APILimitedException(WeChatClientException):
    """``wechatpy.exceptions.APILimitedException``: 45009, the daily quota (as in wechatpy;
    the other quota codes, 45011 and 45013, are ``WeChatClientException``)."""


class InvalidSignatureException(WeChatException):
    """``wechatpy.exceptions.InvalidSignatureException`` (-40001)."""

    def __init__(self, errcode: Optional[int] = -40001, errmsg: Optional[str] = "Invalid signature") -> None:
        super().__init__(errcode, errmsg)


class InvalidAppIdException(WeChatException):
    """``wechatpy.exceptions.InvalidAppIdException`` (-40005): decrypted data of another app."""

    def __init__(self, errcode: Optional[int] = -40005, errmsg: Optional[str] = "Invalid AppId") -> None:
        super().__init__(errcode, errmsg)


def _translate(error: WeappError) -> WeChatClientException:
    if isinstance(error, ApiError):
        cls = APILimitedException if error.errcode == 45009 else WeChatClientException
        return cls(error.errcode, error.errmsg, rid=error.rid, endpoint=error.endpoint or None)
    endpoint = getattr(error, "endpoint", None)
    return WeChatClientException(None, str(error), endpoint=endpoint if isinstance(endpoint, str) else None)


def _translated(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except WeappError as e:
        raise _translate(e) from e


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class BinaryResponse(bytes):
    """A binary answer (an image, a media file) as ``bytes``.

    wechatpy returned a ``requests.Response`` for these; ``.content`` (the bytes) and
    ``.status_code`` (200) are kept so that ``res.content`` keeps working.
    """

    status_code = 200

    @property
    def content(self) -> bytes:
        """The bytes (``requests.Response.content``)."""
        return bytes(self)


class SessionKeyText(str):
    """A ``session_key`` as the ``str`` wechatpy returned, whose ``repr`` hides it
    (``SessionKey(***)``): logging a ``code_to_session`` result does not log the key.
    ``str(key)``, concatenation and JSON encoding give the key itself, as in wechatpy."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SessionKey(***)"

    def reveal(self) -> str:
        """The key's base64 text (as :meth:`weapp.SessionKey.reveal`)."""
        return str.__str__(self)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (SessionKeyText, (str.__str__(self),))


def _ok(result: Any = None) -> Dict[str, Any]:
    """WeChat's whole answer: ``errcode``/``errmsg`` first, then the fields (weapp returns the
    fields only)."""
    answer = dict(_OK)
    if isinstance(result, Mapping):
        answer.update(result)
    return answer


def _binary(result: Any) -> BinaryResponse:
    return BinaryResponse(bytes(result))


def _line_color(value: Optional[Mapping[str, Any]]) -> Optional[Dict[str, int]]:
    # wechatpy's default was {"r": "0", "g": "0", "b": "0"} (text); weapp wants numbers.
    if value is None:
        return None
    return {k: int(value[k]) for k in ("r", "g", "b")}


def _read(media: Any) -> Tuple[bytes, str]:
    """``(bytes, filename)`` of what wechatpy took as ``files={"media": …}``: bytes, a file
    object, or a ``(filename, fileobj[, content_type])`` tuple."""
    name = "media"
    if isinstance(media, tuple):
        name = str(media[0])
        media = media[1]
    if isinstance(media, (bytes, bytearray, memoryview)):
        return bytes(media), name
    data = media.read()
    if isinstance(data, str):
        data = data.encode()
    filename = getattr(media, "name", name)
    return bytes(data), str(filename).rsplit("/", 1)[-1]


def _image_type(data: bytes, filename: str) -> Tuple[str, str]:
    if data.startswith(b"\x89PNG"):
        kind = ("png", "image/png")
    elif data.startswith(b"\xff\xd8"):
        kind = ("jpg", "image/jpeg")
    elif data.startswith(b"GIF8"):
        kind = ("gif", "image/gif")
    else:
        kind = ("png", "image/png")
    name = filename if "." in filename else f"{filename}.{kind[0]}"
    return name, kind[1]


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------

_API_HOSTS = ("api.weixin.qq.com", "api2.weixin.qq.com")


def _path(url: str, base: str) -> str:
    """The API path (with its query string) of a wechatpy URL: a full
    ``https://api.weixin.qq.com/…`` URL, or an endpoint relative to ``base``."""
    if not url.startswith(("http://", "https://")):
        if url.startswith("/"):
            return url
        url = base + url
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if host not in _API_HOSTS and not host.endswith(".api.weixin.qq.com"):
        raise ValueError(f"not a WeChat API URL (host {host!r}); give the path, e.g. /cgi-bin/…")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _with_params(path: str, params: Optional[Mapping[str, Any]]) -> str:
    if not params:
        return path
    # weapp puts its own access_token in; None values are dropped, as requests does.
    pairs = [(k, v) for k, v in params.items() if k != "access_token" and v is not None]
    if not pairs:
        return path
    query = urllib.parse.urlencode(pairs, doseq=True)
    return path + ("&" if "?" in path else "?") + query


def _body(data: Any) -> Any:
    if data is None or isinstance(data, (dict, list)):
        return data
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            raise ValueError("weapp sends JSON bodies only: data must be a dict, a list or JSON text") from None
    raise TypeError(f"data must be a dict, a list, or JSON text, not {type(data).__name__}")


class _Api:
    def __init__(self, client: "WeChatClient") -> None:
        self._client = client

    @property
    def _weapp(self) -> Client:
        return self._client.weapp_client

    def _raw(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """A raw POST through the client's escape hatch (WeChat's whole JSON answer)."""
        answer = self._client.post(path, data=body)
        return dict(answer) if isinstance(answer, Mapping) else {"result": answer}


class WeChatWxa(_Api):
    """``client.wxa``: the mini program APIs of wechatpy's ``WeChatWxa``, on weapp's typed calls
    (local value checks, idempotency-aware retries, one bounded 40001 retry)."""

    def code_to_session(self, js_code: str) -> Dict[str, Any]:
        """``{"openid", "session_key"[, "unionid"]}`` — ``unionid`` only when WeChat gives one,
        as before; ``session_key`` is a :class:`SessionKeyText`. Unlike wechatpy, no access
        token is fetched or sent (``jscode2session`` does not take one)."""
        session = _translated(lambda: self._weapp.auth.code2session(js_code))
        result: Dict[str, Any] = {k: v for k, v in session.items() if v is not None}
        key = result.get("session_key")
        if isinstance(key, SessionKey):
            result["session_key"] = SessionKeyText(key.reveal())
        return result

    def get_phone_number(self, code: str) -> Dict[str, Any]:
        """``{"errcode": 0, "errmsg": "ok", "phone_info": {"phoneNumber", "purePhoneNumber",
        "countryCode", "watermark"}}`` — wechatpy 2.x's shape (1.8.18 had no such method)."""
        info = _translated(lambda: self._weapp.auth.get_phone_number(code))
        return _ok({"phone_info": info})

    def get_wxa_code(
        self,
        path: str,
        width: Optional[int] = 430,
        auto_color: Optional[bool] = False,
        line_color: Optional[Mapping[str, Any]] = None,
        is_hyaline: Optional[bool] = False,
        env_version: Optional[str] = None,
    ) -> BinaryResponse:
        """``getwxacode``: the PNG (wechatpy: a ``requests.Response``; ``.content`` works)."""
        png = _translated(
            lambda: self._weapp.wxacode.get(
                path,
                width=width,
                auto_color=auto_color,
                line_color=_line_color(line_color),
                is_hyaline=is_hyaline,
                env_version=cast(Any, env_version),
            )
        )
        return _binary(png)

    def get_wxa_code_unlimited(
        self,
        scene: str,
        width: Optional[int] = 430,
        auto_color: Optional[bool] = False,
        line_color: Optional[Mapping[str, Any]] = None,
        page: Optional[str] = None,
        is_hyaline: Optional[bool] = False,
        check_path: Optional[bool] = None,
        env_version: Optional[str] = None,
    ) -> BinaryResponse:
        """``getwxacodeunlimit``: the PNG (wechatpy: a ``requests.Response``). A scene over 32
        characters is refused before sending (``WeChatClientException`` 40169)."""
        png = _translated(
            lambda: self._weapp.wxacode.get_unlimited(
                scene,
                page=page,
                check_path=check_path,
                width=width,
                auto_color=auto_color,
                line_color=_line_color(line_color),
                is_hyaline=is_hyaline,
                env_version=cast(Any, env_version),
            )
        )
        return _binary(png)

    def create_qrcode(self, path: str, width: Optional[int] = 430) -> BinaryResponse:
        """``createwxaqrcode``: the PNG (wechatpy: a ``requests.Response``)."""
        return _binary(_translated(lambda: self._weapp.wxacode.create_qrcode(path, width=width)))

    def send_subscribe_message(
        self,
        user_id: str,
        template_id: str,
        data: Mapping[str, Any],
        page: Optional[str] = None,
        miniprogram_state: Optional[str] = None,
        lang: Optional[str] = None,
    ) -> Dict[str, Any]:
        """``subscribe/send``: ``{"errcode": 0, "errmsg": "ok"}``. ``data`` as in wechatpy
        (``{"thing1": {"value": "…"}}``; plain text values work too). Each value is checked
        against its key's rule before sending: a bad one is ``WeChatClientException`` 47003
        without a request. ``miniprogram_state`` and ``lang`` are new."""
        _translated(
            lambda: self._weapp.subscribe.send(
                user_id,
                template_id,
                data,
                page=page,
                miniprogram_state=cast(Any, miniprogram_state),
                lang=cast(Any, lang),
            )
        )
        return _ok()

    def check_text_security(
        self,
        content: str,
        open_id: Optional[str] = None,
        scene: Optional[int] = None,
        nickname: Optional[str] = None,
        title: Optional[str] = None,
        signature: Optional[str] = None,
        version: int = 2,
    ) -> Dict[str, Any]:
        """``msg_sec_check``. With ``open_id`` (and ``scene``), version 2 through weapp (the
        signature of wechatpy 2.x): ``{"errcode", "errmsg", "result", "detail", "trace_id"}``.
        Without, wechatpy 1.8.18's version-1 body ``{"content"}`` as a raw call (WeChat has
        retired version 1; migrate to version 2)."""
        del version
        if open_id is None:
            return self._raw("/wxa/msg_sec_check", {"content": content})
        verdict = _translated(
            lambda: self._weapp.security.msg_sec_check(
                content,
                openid=open_id,
                scene=int(scene if scene is not None else 0),
                title=title,
                nickname=nickname,
                signature=signature,
            )
        )
        return _ok(verdict)

    def check_image_security(self, media: Any) -> Dict[str, Any]:
        """``img_sec_check``: ``{"errcode": 0, "errmsg": "ok"}``; risky content is
        ``WeChatClientException`` 87014. ``media`` is a file object (as in wechatpy), bytes,
        or a ``(filename, fileobj)`` tuple."""
        data, name = _read(media)
        filename, content_type = _image_type(data, name)
        _translated(lambda: self._weapp.security.img_sec_check(data, filename=filename, content_type=content_type))
        return _ok()

    def check_media_async(
        self, media_url: str, media_type: int, open_id: Optional[str] = None, scene: Optional[int] = None
    ) -> Dict[str, Any]:
        """``media_check_async``: ``{"errcode", "errmsg", "trace_id"}``. With ``open_id`` and
        ``scene`` version 2 through weapp; without, wechatpy's version-1 body as a raw call."""
        if open_id is None or scene is None:
            return self._raw("/wxa/media_check_async", {"media_url": media_url, "media_type": media_type})
        answer = _translated(
            lambda: self._weapp.security.media_check_async(media_url, media_type=media_type, openid=open_id, scene=scene)
        )
        return _ok(answer)

    def get_paid_unionid(
        self,
        openid: str,
        transaction_id: Optional[str] = None,
        mch_id: Optional[str] = None,
        out_trade_no: Optional[str] = None,
    ) -> str:
        """``getpaidunionid``: the ``unionid`` (a ``str``, as in wechatpy). Give
        ``transaction_id``, or ``mch_id`` and ``out_trade_no``."""
        answer = _translated(
            lambda: self._weapp.auth.paid_unionid(
                openid, transaction_id=transaction_id, mch_id=mch_id, out_trade_no=out_trade_no
            )
        )
        return str(answer["unionid"])

    def get_url_scheme(
        self,
        is_expire: bool = False,
        expire_type: int = 0,
        expire_time: Optional[int] = None,
        expire_interval: Optional[int] = None,
        jump_wxa: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, Any]:
        """``generatescheme`` (wechatpy 2.x's signature): ``{"errcode", "errmsg", "openlink"}``.
        ``jump_wxa`` is ``{"path", "query", "env_version"}``; the expiry follows ``is_expire``
        and ``expire_type`` (0: ``expire_time``, 1: ``expire_interval``) as WeChat's v1 body
        did."""
        jump = dict(jump_wxa or {})
        expire = self._expiry(is_expire, expire_type, expire_time, expire_interval)
        answer = _translated(
            lambda: self._weapp.url_link.generate_scheme(
                path=jump.get("path"), query=jump.get("query"), env_version=jump.get("env_version"), **expire
            )
        )
        return _ok(answer)

    def get_url_link(
        self,
        path: Optional[str] = None,
        query: Optional[str] = None,
        is_expire: bool = False,
        expire_type: int = 0,
        expire_time: Optional[int] = None,
        expire_interval: Optional[int] = None,
        cloud_base: Optional[Mapping[str, Any]] = None,
        env_version: Optional[str] = None,
    ) -> Dict[str, Any]:
        """``generate_urllink`` (wechatpy 2.x's signature): ``{"errcode", "errmsg",
        "url_link"}``. With ``cloud_base`` the request is sent as a raw call with wechatpy's
        body (weapp's typed call has no cloud-base option)."""
        if cloud_base:
            body: Dict[str, Any] = {"path": path, "query": query, "is_expire": is_expire, "expire_type": expire_type}
            body.update({"expire_time": expire_time, "expire_interval": expire_interval, "cloud_base": dict(cloud_base)})
            return self._raw("/wxa/generate_urllink", {k: v for k, v in body.items() if v is not None})
        expire = self._expiry(is_expire, expire_type, expire_time, expire_interval)
        answer = _translated(
            lambda: self._weapp.url_link.generate_url_link(
                path=path, query=query, env_version=cast(Any, env_version), **expire
            )
        )
        return _ok(answer)

    @staticmethod
    def _expiry(
        is_expire: bool, expire_type: int, expire_time: Optional[int], expire_interval: Optional[int]
    ) -> Dict[str, Any]:
        if not is_expire:
            return {}
        if expire_type == 1:
            return {"expire_interval": expire_interval}
        return {"expire_time": expire_time}


class WeChatMessage(_Api):
    """``client.message``: customer-service messages (``message/custom/send``)."""

    def _send(self, user_id: str, message: Dict[str, Any], account: Optional[str]) -> Dict[str, Any]:
        if account:
            # Mini program customer service has no kf_account; sent as given, as wechatpy did.
            body = {"touser": user_id, **message, "customservice": {"kf_account": account}}
            return self._raw("/cgi-bin/message/custom/send", body)
        _translated(lambda: self._weapp.customer_service.send(user_id, message))
        return _ok()

    def send_text(self, user_id: str, content: str, account: Optional[str] = None) -> Dict[str, Any]:
        """A text message: ``{"errcode": 0, "errmsg": "ok"}``."""
        return self._send(user_id, {"msgtype": "text", "text": {"content": content}}, account)

    def send_image(self, user_id: str, media_id: str, account: Optional[str] = None) -> Dict[str, Any]:
        """An image message (a ``media_id`` from ``client.media.upload("image", …)``)."""
        return self._send(user_id, {"msgtype": "image", "image": {"media_id": media_id}}, account)

    def send_link(self, user_id: str, article: Mapping[str, Any], account: Optional[str] = None) -> Dict[str, Any]:
        """A link card: ``article`` has ``title``, ``description``, ``url``, ``thumb_url``."""
        return self._send(user_id, {"msgtype": "link", "link": dict(article)}, account)

    def send_mini_program_page(
        self, user_id: str, miniprogrampage: Mapping[str, Any], account: Optional[str] = None
    ) -> Dict[str, Any]:
        """A mini program card: ``{"title", "pagepath", "thumb_media_id"}``."""
        return self._send(user_id, {"msgtype": "miniprogrampage", "miniprogrampage": dict(miniprogrampage)}, account)


class WeChatMedia(_Api):
    """``client.media``: temporary media."""

    def upload(self, media_type: str, media_file: Any) -> Dict[str, Any]:
        """``media/upload``: ``{"type", "media_id", "created_at"}``. Only ``"image"`` (what
        mini program customer service sends); other types raise ``NotImplementedError``."""
        if media_type != "image":
            raise NotImplementedError("weapp uploads temporary images only (media_type='image')")
        data, name = _read(media_file)
        filename, content_type = _image_type(data, name)
        answer = _translated(lambda: self._weapp.media.upload_image(data, filename=filename, content_type=content_type))
        return dict(answer)

    def download(self, media_id: str) -> BinaryResponse:
        """``media/get``: the file (wechatpy: a ``requests.Response``; ``.content`` works)."""
        return _binary(_translated(lambda: self._weapp.media.get(media_id)))


class WeChatClient:
    """``wechatpy.WeChatClient`` on a :class:`weapp.Client`.

    ``appid, secret, access_token=None, session=None, timeout=None, auto_retry=True`` as in
    wechatpy, then weapp's keywords: ``token_store`` (``None``/``"memory"`` or
    ``"redis://…"``), ``token_mode`` (``"stable"``, default, or ``"classic"``),
    ``redis_prefix`` (the Redis key prefix, ``"weapp"`` as the Rust SDK), ``base_url`` (the
    simulator in tests), ``broker_url``/``broker_key`` (weapp-server's token broker).

    Differences: the token is weapp's (``session`` storages are not used — a ``redis://`` URL
    given as ``session`` becomes ``token_store``; ``access_token`` is ignored with a warning);
    ``timeout=None`` is weapp's 10 s; one bounded retry after a 40001 whatever ``auto_retry``
    says. The secret is kept in the extension, not on this object (no ``.secret``). The
    underlying client is :attr:`weapp_client`, for moving calls over one at a time.
    """

    API_BASE_URL = "https://api.weixin.qq.com/cgi-bin/"

    def __init__(
        self,
        appid: str,
        secret: str,
        access_token: Optional[str] = None,
        session: Any = None,
        timeout: Optional[float] = None,
        auto_retry: bool = True,
        *,
        token_store: Optional[str] = None,
        token_mode: TokenMode = "stable",
        base_url: Optional[str] = None,
        broker_url: Optional[str] = None,
        broker_key: Optional[str] = None,
        redis_prefix: str = "weapp",
    ) -> None:
        if access_token is not None:
            warnings.warn(
                "WeChatClient(access_token=…) is ignored: weapp fetches and shares the token itself",
                UserWarning,
                stacklevel=2,
            )
        if isinstance(session, str) and session.startswith(("redis://", "rediss://")) and token_store is None:
            token_store = session
        elif session is not None:
            warnings.warn(
                "WeChatClient(session=…) is ignored: pass token_store='redis://…' to share tokens across processes",
                UserWarning,
                stacklevel=2,
            )
        self.appid = appid
        self.timeout = timeout
        self.auto_retry = auto_retry
        self._weapp = Client(
            appid,
            secret,
            token_store=token_store,
            token_mode=token_mode,
            base_url=base_url,
            timeout=10.0 if timeout is None else float(timeout),
            redis_prefix=redis_prefix,
            broker_url=broker_url,
            broker_key=broker_key,
        )
        self.wxa = WeChatWxa(self)
        self.message = WeChatMessage(self)
        self.media = WeChatMedia(self)

    @property
    def weapp_client(self) -> Client:
        """The :class:`weapp.Client` doing the work."""
        return self._weapp

    @property
    def access_token(self) -> str:
        """The access token, from this process, Redis, the broker or WeChat (weapp refreshes it
        before it expires, once for every process sharing the store)."""
        return _translated(self._weapp.access_token)

    def fetch_access_token(self) -> Dict[str, Any]:
        """``{"access_token": …}``. Unlike wechatpy this does not force a new token (weapp
        renews it before expiry and after WeChat refuses it, once for the fleet); the answer
        has no ``expires_in``."""
        return {"access_token": self.access_token}

    def get(self, url: str, params: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Any:
        """GET any API through weapp's pipeline (token injected, one bounded 40001 retry,
        errors as ``WeChatClientException``). ``url`` is a full ``https://api.weixin.qq.com/…``
        URL, a path (``/wxa/…``) or, as in wechatpy, an endpoint under ``/cgi-bin/``. Returns
        the decoded JSON, or :class:`BinaryResponse` for a binary answer (wechatpy: a
        ``requests.Response``). ``result_processor`` and ``api_base_url`` work as in wechatpy;
        ``files`` is refused; ``timeout`` is ignored (the client's applies)."""
        return self._request("GET", url, params, None, kwargs)

    def post(self, url: str, data: Any = None, params: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Any:
        """POST any API; ``data`` is a dict, a list or JSON text (weapp sends JSON bodies only).
        Otherwise as :meth:`get`."""
        return self._request("POST", url, params, data, kwargs)

    def _request(
        self, method: str, url: str, params: Optional[Mapping[str, Any]], data: Any, kwargs: Dict[str, Any]
    ) -> Any:
        if kwargs.get("files"):
            raise NotImplementedError("multipart uploads: use client.media.upload or client.wxa.check_image_security")
        processor: Optional[Callable[[Any], Any]] = kwargs.get("result_processor")
        base = str(kwargs.get("api_base_url") or self.API_BASE_URL)
        path = _with_params(_path(url, base), params)
        body = _body(data)
        result = _translated(lambda: self._weapp.call(method, path, body))
        if isinstance(result, (bytes, bytearray)):
            result = _binary(result)
        return processor(result) if processor is not None else result

    def __repr__(self) -> str:
        return f"WeChatClient(appid={self.appid!r}, token_mode={self._weapp.token_mode!r})"


# --------------------------------------------------------------------------------------------
# Crypto and signatures (wechatpy.crypto, wechatpy.utils)
# --------------------------------------------------------------------------------------------


class WeChatWxaCrypto:
    """``wechatpy.crypto.WeChatWxaCrypto(key, iv, app_id)``: the mini program's
    ``encryptedData``, on :func:`weapp.decrypt_user_data` (AES in Rust, strict padding).

    ``decrypt_message(encrypted_data)`` returns the dict, as wechatpy; another app's watermark
    is :class:`InvalidAppIdException`, as wechatpy. Every other bad input (wrong key, bad
    base64, bad padding, no watermark) is one :class:`weapp.DecryptError` — wechatpy let
    ``JSONDecodeError``, ``UnicodeDecodeError`` or ``KeyError`` escape. The key may also be a
    :class:`weapp.SessionKey`. ``repr`` does not show the key.
    """

    def __init__(self, key: Union[str, SessionKey], iv: str, app_id: str) -> None:
        self._key = key
        self.iv = iv
        self.app_id = app_id

    def decrypt_message(self, msg: str) -> Dict[str, Any]:
        data = decrypt_user_data(self._key, msg, self.iv)
        watermark = data.get("watermark")
        appid = watermark.get("appid") if isinstance(watermark, dict) else None
        if not isinstance(appid, str) or not hmac.compare_digest(appid.encode(), self.app_id.encode()):
            raise InvalidAppIdException()
        return data

    def __repr__(self) -> str:
        return f"WeChatWxaCrypto(app_id={self.app_id!r})"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def check_signature(token: str, signature: str, timestamp: Any, nonce: Any) -> None:
    """``wechatpy.utils.check_signature``: ``sha1(sort(token, timestamp, nonce))`` compared in
    constant time (wechatpy: ``!=``); raises :class:`InvalidSignatureException`."""
    parts = sorted(_text(p) for p in (token, timestamp, nonce))
    expected = hashlib.sha1("".join(parts).encode("utf-8")).hexdigest()
    if not hmac.compare_digest(expected.encode(), _text(signature).encode()):
        raise InvalidSignatureException()


def check_wxa_signature(session_key: Union[str, SessionKey], raw_data: str, client_signature: str) -> None:
    """``wechatpy.utils.check_wxa_signature``: ``sha1(rawData + session_key)`` through
    :func:`weapp.verify_raw_signature` (constant time); raises
    :class:`InvalidSignatureException`."""
    if not verify_raw_signature(session_key, raw_data, client_signature):
        raise InvalidSignatureException()


def _xml(fields: Mapping[str, Any]) -> str:
    def element(tag: str, value: Any) -> Iterator[str]:
        if isinstance(value, list):
            for item in value:
                yield from element(tag, item)
        elif isinstance(value, Mapping):
            yield f"<{tag}>" + "".join(s for k, v in value.items() for s in element(str(k), v)) + f"</{tag}>"
        elif isinstance(value, str) and "]]>" not in value:
            yield f"<{tag}><![CDATA[{value}]]></{tag}>"
        else:
            yield f"<{tag}>{escape(str(value))}</{tag}>"

    return "<xml>" + "".join(s for k, v in fields.items() for s in element(str(k), v)) + "</xml>"


class WeChatCrypto:
    """``wechatpy.crypto.WeChatCrypto(token, encoding_aes_key, app_id)`` for safe-mode pushes,
    on :class:`weapp.PushReceiver` (safe mode; no timestamp window or replay memory, as in
    wechatpy — use ``weapp.PushReceiver`` directly to get both).

    - ``check_signature(signature, timestamp, nonce, echo_str)`` answers the GET handshake of a
      mini program's push URL: checks ``signature`` over (token, timestamp, nonce) and returns
      ``echo_str`` (WeCom's flavour, whose echostr is encrypted, is not supported).
    - ``decrypt_message(msg, signature, timestamp, nonce)``: ``msg`` is the XML body (``str``
      or ``bytes``) or a dict holding ``Encrypt`` (a JSON push, decoded); ``signature`` is the
      query's ``msg_signature``. Returns the decrypted message as text: XML rebuilt from its
      fields (same elements, alphabetical order; ``wechatpy.parse_message`` reads it) or, for
      a JSON push, JSON text. A bad signature is :class:`InvalidSignatureException`, another
      app's message :class:`InvalidAppIdException`; other failures are
      :class:`weapp.PushError` (wechatpy raised assorted exceptions).
    - ``encrypt_message`` (encrypted passive replies) is not provided.
    """

    def __init__(self, token: str, encoding_aes_key: str, app_id: str) -> None:
        self.app_id = app_id
        self._receiver = PushReceiver(app_id, token, encoding_aes_key, mode="safe", replay_window_secs=0)

    def check_signature(self, signature: str, timestamp: Any, nonce: Any, echo_str: str) -> str:
        query = {"signature": _text(signature), "timestamp": _text(timestamp), "nonce": _text(nonce), "echostr": echo_str}
        return self._push(lambda: self._receiver.verify_url(query))

    def decrypt_message(self, msg: Any, signature: str, timestamp: Any, nonce: Any) -> str:
        if isinstance(msg, Mapping):
            body: Union[str, bytes] = json.dumps(dict(msg), ensure_ascii=False)
        else:
            body = msg if isinstance(msg, (bytes, str)) else str(msg)
        query = {
            "encrypt_type": "aes",
            "msg_signature": _text(signature),
            "timestamp": _text(timestamp),
            "nonce": _text(nonce),
        }
        event = self._push(lambda: self._receiver.parse(query, body))
        if event.format == "json":
            return json.dumps(event.raw, ensure_ascii=False)
        return _xml(event.raw)

    @staticmethod
    def _push(call: Callable[[], _T]) -> _T:
        try:
            return call()
        except PushError as e:
            if str(e) == "signature does not match":
                raise InvalidSignatureException() from e
            if str(e) == "the message is for another app":
                raise InvalidAppIdException() from e
            raise

    def __repr__(self) -> str:
        return f"WeChatCrypto(app_id={self.app_id!r})"
