"""``weapp.Client`` and ``weapp.AsyncClient``: one surface, sync and asyncio."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Mapping, Optional, Union

if TYPE_CHECKING:
    import asyncio

from . import _native
from ._secret import SessionKey, text
from .exceptions import InvalidArgumentError

__all__ = ["Client", "AsyncClient"]

TokenMode = Literal["stable", "classic"]
EnvVersion = Literal["release", "trial", "develop"]

_Post = Optional[Callable[[Any], Any]]


def _args(**kwargs: Any) -> Dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _color(value: Optional[Mapping[str, int]]) -> Any:
    # A mapping is sent as given; anything else goes through to be refused by the core.
    return dict(value) if isinstance(value, Mapping) else value


def _key(value: Union[str, SessionKey]) -> str:
    return value.reveal() if isinstance(value, SessionKey) else value


def _with_session_key(result: Any) -> Any:
    result["session_key"] = SessionKey(result["session_key"])
    return result


class _Domain:
    """A group of calls; ``_invoke`` is the client's (sync: the result; async: an awaitable)."""

    def __init__(self, invoke: Callable[..., Any]) -> None:
        self._invoke = invoke


class AuthApi(_Domain):
    """Login, phone numbers, session keys (``client.auth``)."""

    def code2session(self, js_code: str) -> Any:
        """``jscode2session``: ``{"openid", "session_key": SessionKey, "unionid"}``."""
        return self._invoke("auth.code2session", _args(js_code=js_code), _with_session_key)

    def get_phone_number(self, code: str) -> Any:
        """``getuserphonenumber``: ``{"phoneNumber", "purePhoneNumber", "countryCode", "watermark"}``."""
        return self._invoke("auth.get_phone_number", _args(code=code))

    def check_session_key(self, openid: str, session_key: Union[str, SessionKey]) -> Any:
        """``checksessionkey``: returns ``None``, raises ``ApiError`` (87009) for a dead key."""
        return self._invoke("auth.check_session_key", _args(openid=openid, session_key=_key(session_key)))

    def reset_session_key(self, openid: str, session_key: Union[str, SessionKey]) -> Any:
        """``resetusersessionkey``: ``{"openid", "session_key": SessionKey}``."""
        return self._invoke(
            "auth.reset_session_key", _args(openid=openid, session_key=_key(session_key)), _with_session_key
        )

    def user_encrypt_key(self, openid: str, session_key: Union[str, SessionKey]) -> Any:
        """``getuserencryptkey``: the list of keys."""
        return self._invoke("auth.user_encrypt_key", _args(openid=openid, session_key=_key(session_key)))

    def paid_unionid(
        self,
        openid: str,
        transaction_id: Optional[str] = None,
        mch_id: Optional[str] = None,
        out_trade_no: Optional[str] = None,
    ) -> Any:
        """``getpaidunionid``: ``{"unionid"}``."""
        return self._invoke(
            "auth.paid_unionid",
            _args(openid=openid, transaction_id=transaction_id, mch_id=mch_id, out_trade_no=out_trade_no),
        )

    def plugin_openpid(self, code: str) -> Any:
        """``getpluginopenpid``: ``{"openpid"}``."""
        return self._invoke("auth.plugin_openpid", _args(code=code))


class WxacodeApi(_Domain):
    """Mini program codes as PNG ``bytes`` (``client.wxacode``)."""

    def get(
        self,
        path: str,
        *,
        width: Optional[int] = None,
        auto_color: Optional[bool] = None,
        line_color: Optional[Mapping[str, int]] = None,
        is_hyaline: Optional[bool] = None,
        env_version: Optional[EnvVersion] = None,
    ) -> Any:
        """``getwxacode`` (limited count)."""
        return self._invoke(
            "wxacode.get",
            _args(
                path=path,
                width=width,
                auto_color=auto_color,
                line_color=_color(line_color),
                is_hyaline=is_hyaline,
                env_version=env_version,
            ),
        )

    def get_unlimited(
        self,
        scene: str,
        *,
        page: Optional[str] = None,
        check_path: Optional[bool] = None,
        width: Optional[int] = None,
        auto_color: Optional[bool] = None,
        line_color: Optional[Mapping[str, int]] = None,
        is_hyaline: Optional[bool] = None,
        env_version: Optional[EnvVersion] = None,
    ) -> Any:
        """``getwxacodeunlimit`` (scene of at most 32 visible characters, checked locally)."""
        return self._invoke(
            "wxacode.get_unlimited",
            _args(
                scene=scene,
                page=page,
                check_path=check_path,
                width=width,
                auto_color=auto_color,
                line_color=_color(line_color),
                is_hyaline=is_hyaline,
                env_version=env_version,
            ),
        )

    def create_qrcode(self, path: str, width: Optional[int] = None) -> Any:
        """``createwxaqrcode``."""
        return self._invoke("wxacode.create_qrcode", _args(path=path, width=width))


class UrlLinkApi(_Domain):
    """URL schemes, URL links and short links (``client.url_link``)."""

    def generate_scheme(
        self,
        *,
        path: Optional[str] = None,
        query: Optional[str] = None,
        env_version: Optional[EnvVersion] = None,
        expire_time: Optional[int] = None,
        expire_interval: Optional[int] = None,
    ) -> Any:
        """``generatescheme``: ``{"openlink"}``."""
        return self._invoke(
            "url_link.generate_scheme",
            _args(
                path=path,
                query=query,
                env_version=env_version,
                expire_time=expire_time,
                expire_interval=expire_interval,
            ),
        )

    def generate_nfc_scheme(
        self,
        model_id: str,
        *,
        sn: Optional[str] = None,
        path: Optional[str] = None,
        query: Optional[str] = None,
        env_version: Optional[EnvVersion] = None,
    ) -> Any:
        """``generatenfcscheme``: ``{"openlink"}``."""
        return self._invoke(
            "url_link.generate_nfc_scheme",
            _args(model_id=model_id, sn=sn, path=path, query=query, env_version=env_version),
        )

    def generate_url_link(
        self,
        *,
        path: Optional[str] = None,
        query: Optional[str] = None,
        env_version: Optional[EnvVersion] = None,
        expire_time: Optional[int] = None,
        expire_interval: Optional[int] = None,
    ) -> Any:
        """``generate_urllink``: ``{"url_link"}``."""
        return self._invoke(
            "url_link.generate_url_link",
            _args(
                path=path,
                query=query,
                env_version=env_version,
                expire_time=expire_time,
                expire_interval=expire_interval,
            ),
        )

    def generate_short_link(
        self, page_url: str, *, page_title: Optional[str] = None, is_permanent: Optional[bool] = None
    ) -> Any:
        """``genwxashortlink``: ``{"link"}``."""
        return self._invoke(
            "url_link.generate_short_link",
            _args(page_url=page_url, page_title=page_title, is_permanent=is_permanent),
        )

    def query_scheme(self, scheme: str) -> Any:
        """``queryscheme``."""
        return self._invoke("url_link.query_scheme", _args(scheme=scheme))

    def query_url_link(self, url_link: str) -> Any:
        """``query_urllink``."""
        return self._invoke("url_link.query_url_link", _args(url_link=url_link))


class SubscribeApi(_Domain):
    """Subscribe messages and templates (``client.subscribe``)."""

    def send(
        self,
        touser: str,
        template_id: str,
        data: Mapping[str, Any],
        *,
        page: Optional[str] = None,
        miniprogram_state: Optional[Literal["developer", "trial", "formal"]] = None,
        lang: Optional[Literal["zh_CN", "en_US", "zh_HK", "zh_TW"]] = None,
    ) -> Any:
        """``subscribe/send``. ``data`` maps keys to text (``{"thing1": "…"}``) or to WeChat's
        ``{"value": "…"}``; each value is checked against its key's rules (``thing`` ≤ 20
        characters, ``number`` digits, ``time`` a time, …) before anything is sent."""
        return self._invoke(
            "subscribe.send",
            _args(
                touser=touser,
                template_id=template_id,
                data=dict(data),
                page=page,
                miniprogram_state=miniprogram_state,
                lang=lang,
            ),
        )

    def categories(self) -> Any:
        """``getcategory``."""
        return self._invoke("subscribe.categories", {})

    def public_templates(self, ids: List[int], start: int = 0, limit: int = 30) -> Any:
        """``getpubtemplatetitles``."""
        return self._invoke("subscribe.public_templates", _args(ids=list(ids), start=start, limit=limit))

    def public_keywords(self, tid: int) -> Any:
        """``getpubtemplatekeywords``."""
        return self._invoke("subscribe.public_keywords", _args(tid=tid))

    def add_template(self, tid: int, kid_list: List[int], scene_desc: str = "") -> Any:
        """``addtemplate``: ``{"priTmplId"}``."""
        return self._invoke(
            "subscribe.add_template", _args(tid=tid, kid_list=list(kid_list), scene_desc=scene_desc)
        )

    def delete_template(self, pri_tmpl_id: str) -> Any:
        """``deltemplate``."""
        return self._invoke("subscribe.delete_template", _args(pri_tmpl_id=pri_tmpl_id))

    def templates(self) -> Any:
        """``gettemplate``: the app's templates."""
        return self._invoke("subscribe.templates", {})


class CustomerServiceApi(_Domain):
    """Customer-service messages (``client.customer_service``)."""

    def send(self, touser: str, message: Mapping[str, Any]) -> Any:
        """``custom/send`` with WeChat's message object, e.g. ``{"msgtype": "text", "text":
        {"content": "hi"}}`` (also ``image``, ``link``, ``miniprogrampage``)."""
        args = dict(message)
        args["touser"] = touser
        return self._invoke("customer_service.send", args)

    def send_text(self, touser: str, content: str) -> Any:
        """A text message."""
        return self.send(touser, {"msgtype": "text", "text": {"content": content}})

    def typing(self, touser: str, typing: bool = True) -> Any:
        """``custom/typing``."""
        return self._invoke("customer_service.typing", _args(touser=touser, typing=typing))


class MediaApi(_Domain):
    """Temporary media (``client.media``)."""

    def upload_image(self, data: bytes, filename: str = "image.png", content_type: str = "image/png") -> Any:
        """``media/upload``: ``{"type", "media_id", "created_at"}``."""
        return self._invoke(
            "media.upload_image", _args(filename=filename, content_type=content_type), None, bytes(data)
        )

    def get(self, media_id: str) -> Any:
        """``media/get``: the file's bytes."""
        return self._invoke("media.get", _args(media_id=media_id))


class SecurityApi(_Domain):
    """Content security (``client.security``)."""

    def msg_sec_check(
        self,
        content: str,
        *,
        openid: str,
        scene: int,
        title: Optional[str] = None,
        nickname: Optional[str] = None,
        signature: Optional[str] = None,
    ) -> Any:
        """``msg_sec_check`` v2 (scene 1 profile, 2 comment, 3 forum, 4 social log)."""
        return self._invoke(
            "security.msg_sec_check",
            _args(content=content, openid=openid, scene=scene, title=title, nickname=nickname, signature=signature),
        )

    def img_sec_check(self, data: bytes, filename: str = "image.png", content_type: str = "image/png") -> Any:
        """``img_sec_check``: ``None``, or ``ApiError`` 87014 for risky content."""
        return self._invoke(
            "security.img_sec_check", _args(filename=filename, content_type=content_type), None, bytes(data)
        )

    def media_check_async(self, media_url: str, *, media_type: int, openid: str, scene: int) -> Any:
        """``media_check_async`` v2: ``{"trace_id"}``; the verdict arrives as a push."""
        return self._invoke(
            "security.media_check_async",
            _args(media_url=media_url, media_type=media_type, openid=openid, scene=scene),
        )

    def user_risk_rank(
        self,
        openid: str,
        *,
        scene: int,
        client_ip: str,
        mobile_no: Optional[str] = None,
        email_address: Optional[str] = None,
        extended_info: Optional[str] = None,
        is_test: Optional[bool] = None,
    ) -> Any:
        """``getuserriskrank``."""
        return self._invoke(
            "security.user_risk_rank",
            _args(
                openid=openid,
                scene=scene,
                client_ip=client_ip,
                mobile_no=mobile_no,
                email_address=email_address,
                extended_info=extended_info,
                is_test=is_test,
            ),
        )


class AnalyticsApi(_Domain):
    """Data analysis (``client.analytics``); days are ``yyyymmdd``."""

    def daily_summary(self, day: str) -> Any:
        return self._invoke("analytics.daily_summary", _args(day=day))

    def daily_visit_trend(self, day: str) -> Any:
        return self._invoke("analytics.daily_visit_trend", _args(day=day))

    def weekly_visit_trend(self, monday: str) -> Any:
        return self._invoke("analytics.weekly_visit_trend", _args(monday=monday))

    def monthly_visit_trend(self, first_day: str) -> Any:
        return self._invoke("analytics.monthly_visit_trend", _args(first_day=first_day))

    def daily_retain(self, day: str) -> Any:
        return self._invoke("analytics.daily_retain", _args(day=day))

    def weekly_retain(self, monday: str) -> Any:
        return self._invoke("analytics.weekly_retain", _args(monday=monday))

    def monthly_retain(self, first_day: str) -> Any:
        return self._invoke("analytics.monthly_retain", _args(first_day=first_day))

    def visit_page(self, day: str) -> Any:
        return self._invoke("analytics.visit_page", _args(day=day))

    def visit_distribution(self, day: str) -> Any:
        return self._invoke("analytics.visit_distribution", _args(day=day))

    def user_portrait(self, end_day: str, days: int = 7) -> Any:
        return self._invoke("analytics.user_portrait", _args(end_day=end_day, days=days))


class OpenApiApi(_Domain):
    """Quotas and request ids (``client.openapi``)."""

    def quota(self, cgi_path: str) -> Any:
        """``openapi/quota/get``."""
        return self._invoke("openapi.quota", _args(cgi_path=cgi_path))

    def clear_quota(self) -> Any:
        """``clear_quota`` (10 a month)."""
        return self._invoke("openapi.clear_quota", {})

    def clear_quota_v2(self) -> Any:
        """``clear_quota/v2`` (with the AppSecret; no token needed)."""
        return self._invoke("openapi.clear_quota_v2", {})

    def rid(self, rid: str) -> Any:
        """``openapi/rid/get``: what a request id was."""
        return self._invoke("openapi.rid", _args(rid=rid))


def _native_client(
    appid: str,
    secret: str,
    token_store: Optional[str],
    token_mode: str,
    base_url: Optional[str],
    timeout: float,
    redis_prefix: str,
    broker_url: Optional[str],
    broker_key: Optional[str],
) -> Any:
    return _native.NativeClient(
        text("appid", appid),
        text("secret", secret),
        text("token_store", token_store, optional=True),
        text("token_mode", token_mode),
        text("base_url", base_url, optional=True),
        _seconds(timeout),
        text("redis_prefix", redis_prefix),
        text("broker_url", broker_url, optional=True),
        text("broker_key", broker_key, optional=True),
    )


def _seconds(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidArgumentError("timeout must be a number of seconds")
    return float(timeout)


async def awaited(start: Callable[[Callable[[bool, Any], None]], Any]) -> Any:
    """Awaits a native operation: ``start(done)`` begins it on the extension's runtime and
    returns its handle; ``done(ok, value)`` is called from a runtime thread with the result or
    the exception. Cancelling the awaiting task cancels the handle (the Rust future is dropped).
    """
    import asyncio  # here, not at import: `import weapp` stays fast for sync users

    loop = asyncio.get_running_loop()
    future: "asyncio.Future[Any]" = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def done(ok: bool, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    handle = start(done)
    try:
        return await future
    except asyncio.CancelledError:
        handle.cancel()
        raise


def _json(args: Dict[str, Any]) -> str:
    """The arguments as JSON; a value JSON cannot carry is refused before anything is sent."""
    try:
        return json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"an argument cannot be sent: {e}") from None


class _Base:
    def __init__(
        self,
        appid: str,
        secret: str = "",
        *,
        token_store: Optional[str] = None,
        token_mode: TokenMode = "stable",
        base_url: Optional[str] = None,
        timeout: float = 10.0,
        redis_prefix: str = "weapp",
        broker_url: Optional[str] = None,
        broker_key: Optional[str] = None,
    ) -> None:
        self._native = _native_client(
            appid, secret, token_store, token_mode, base_url, timeout, redis_prefix, broker_url, broker_key
        )
        self.auth = AuthApi(self._invoke)
        self.wxacode = WxacodeApi(self._invoke)
        self.url_link = UrlLinkApi(self._invoke)
        self.subscribe = SubscribeApi(self._invoke)
        self.customer_service = CustomerServiceApi(self._invoke)
        self.media = MediaApi(self._invoke)
        self.security = SecurityApi(self._invoke)
        self.analytics = AnalyticsApi(self._invoke)
        self.openapi = OpenApiApi(self._invoke)

    @property
    def appid(self) -> str:
        """The appid."""
        return str(self._native.appid)

    @property
    def token_mode(self) -> str:
        """``stable`` or ``classic``."""
        return str(self._native.token_mode)

    def _invoke(self, op: str, args: Dict[str, Any], post: _Post = None, blob: Optional[bytes] = None) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(appid={self.appid!r}, token_mode={self.token_mode!r}, token_store={self._native.token_store!r})"


class Client(_Base):
    """The mini program server API, synchronous (Flask, Django, Celery).

    Thread-safe: all threads of a process share one token and one refresh; the GIL is released
    while Rust waits. Nothing is connected until the first call, in each process, so a client
    made before a fork (gunicorn ``--preload``, Celery, ``multiprocessing``) works in the
    children. ``token_store="redis://…"`` shares tokens (and their one refresh) with every
    process — Python or Rust — using the same Redis and prefix (``rediss://``,
    ``redis+sentinel://h:p,h:p/<master>`` and ``redis+cluster://h:p,h:p`` too).
    """

    def _invoke(self, op: str, args: Dict[str, Any], post: _Post = None, blob: Optional[bytes] = None) -> Any:
        result = self._native.invoke(op, _json(args), blob)
        return post(result) if post is not None else result

    def access_token(self) -> str:
        """The access token (from this process, Redis, the broker or WeChat)."""
        return str(self._native.access_token())

    def call(self, method: str, path: str, json: Optional[Any] = None) -> Any:
        """Any other API through the same pipeline (token, retry after 40001, errors): the
        decoded JSON, or ``bytes`` for a binary answer."""
        return self._invoke("call", _args(method=method, path=path, json=json))

    def close(self) -> None:
        """Nothing to release eagerly; present for symmetry with ``with``."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient(_Base):
    """The same surface as :class:`Client`, for asyncio (FastAPI, Starlette): every call is
    awaited. Cancelling the awaiting task drops the Rust future (its request is abandoned)."""

    async def _run(self, op: str, args: Dict[str, Any], post: _Post, blob: Optional[bytes]) -> Any:
        text = _json(args)
        result = await awaited(lambda done: self._native.spawn(op, text, done, blob))
        return post(result) if post is not None else result

    def _invoke(self, op: str, args: Dict[str, Any], post: _Post = None, blob: Optional[bytes] = None) -> Any:
        return self._run(op, args, post, blob)

    async def access_token(self) -> str:
        """The access token."""
        return str(await self._run("access_token", {}, None, None))

    async def call(self, method: str, path: str, json: Optional[Any] = None) -> Any:
        """Any other API through the same pipeline."""
        return await self._run("call", _args(method=method, path=path, json=json), None, None)

    async def aclose(self) -> None:
        """Nothing to release eagerly; present for ``async with``."""

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
