"""The exceptions of :mod:`weapp`.

Every exception carries plain values only (numbers, strings, ``None``): it pickles with its
attributes (Celery sends exceptions between processes), and it holds no client, request,
token, secret or session_key.

Hierarchy::

    WeappError
    ├── ApiError                      WeChat answered a non-zero errcode
    │   ├── InvalidCodeError          40029, 40163 (a wx.login / phone code)
    │   ├── TokenInvalidError         40001, 40014, 42001
    │   ├── QuotaError                45009, 45011, 45013
    │   └── IpNotAllowedError         40164, 61004
    ├── TransportError                the request did not complete
    ├── WeappTimeoutError             also a builtin TimeoutError
    ├── HttpStatusError               an HTTP status without a WeChat body
    ├── DecodeError                   an answer of an unexpected shape
    ├── OutcomeUnknownError           a send that may or may not have happened
    ├── StoreError                    the token store (Redis) failed
    ├── CryptoError
    │   ├── DecryptError              every bad input of decrypt_user_data
    │   └── SignatureError            a WeChat Pay answer that does not verify
    ├── PushError                     a push refused (signature, time, replay, format)
    ├── PayError                      WeChat Pay
    │   ├── PayApiError               status, code, message, detail, request_id
    │   └── NotificationError         a payment notification refused
    ├── BrokerError                   weapp-server's broker refused
    └── InvalidArgumentError          also a builtin ValueError; nothing was sent
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type

__all__ = [
    "WeappError",
    "ApiError",
    "InvalidCodeError",
    "TokenInvalidError",
    "QuotaError",
    "IpNotAllowedError",
    "TransportError",
    "WeappTimeoutError",
    "HttpStatusError",
    "DecodeError",
    "OutcomeUnknownError",
    "StoreError",
    "CryptoError",
    "DecryptError",
    "SignatureError",
    "PushError",
    "PayError",
    "PayApiError",
    "NotificationError",
    "BrokerError",
    "InvalidArgumentError",
]


class WeappError(Exception):
    """Base class of every error raised by :mod:`weapp`."""

    def __reduce__(self) -> Tuple[Any, ...]:
        # The message rebuilds it; ``__dict__`` keeps anything added later (notes, tags).
        return (type(self), (self.message,), self.__dict__)

    def __init__(self, message: str = "", *fields: Any) -> None:
        # Only the message goes to Exception (and so to ``args``); classes with more fields
        # define ``__reduce__`` so that pickling rebuilds them with every attribute.
        del fields
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ApiError(WeappError):
    """WeChat answered with a non-zero ``errcode``.

    ``errmsg`` is WeChat's text without its ``rid`` suffix; ``rid`` is the request id WeChat's
    support asks for; ``endpoint`` the API path (``/sns/jscode2session``).
    """

    def __init__(self, errcode: int, errmsg: str, rid: Optional[str] = None, endpoint: str = "") -> None:
        rid_text = f" (rid {rid})" if rid else ""
        super().__init__(f"{endpoint}: WeChat error {errcode}: {errmsg}{rid_text}", errcode, errmsg, rid, endpoint)
        self.errcode = errcode
        self.errmsg = errmsg
        self.rid = rid
        self.endpoint = endpoint

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.errcode, self.errmsg, self.rid, self.endpoint), self.__dict__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errcode={self.errcode!r}, errmsg={self.errmsg!r}, rid={self.rid!r}, endpoint={self.endpoint!r})"


class InvalidCodeError(ApiError):
    """A ``wx.login`` or phone code that is wrong, used or expired (40029, 40163)."""


class TokenInvalidError(ApiError):
    """An access token WeChat refused (40001, 40014, 42001) after the SDK's one retry."""


class QuotaError(ApiError):
    """A frequency or daily quota was reached (45009, 45011, 45013)."""


class IpNotAllowedError(ApiError):
    """The calling IP is not in the app's (or the platform's) whitelist (40164, 61004)."""


class _EndpointError(WeappError):
    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(message, endpoint)
        self.endpoint = endpoint

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.endpoint, self.message), self.__dict__)


class TransportError(_EndpointError):
    """The request did not complete (connection, TLS, body). Never carries the URL."""


class DecodeError(_EndpointError):
    """The answer could not be read as the expected shape."""


class OutcomeUnknownError(_EndpointError):
    """A call that changes something (a send, a prepay) failed so that it may or may not have
    happened; it was not retried, because a retry could do it twice."""


class WeappTimeoutError(WeappError, TimeoutError):
    """The call (all its attempts) did not finish within its deadline; ``after`` is that
    deadline in seconds when the SDK's overall deadline passed, ``None`` when one request was
    cut off by the client's ``timeout``."""

    def __init__(self, endpoint: str, after: Optional[float], message: str) -> None:
        super().__init__(message, endpoint, after)
        self.endpoint = endpoint
        self.after = after

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.endpoint, self.after, self.message), self.__dict__)


class HttpStatusError(WeappError):
    """WeChat answered an HTTP status other than 200 and no errcode body."""

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(message, endpoint, status)
        self.endpoint = endpoint
        self.status = status

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.endpoint, self.status, self.message), self.__dict__)


class StoreError(WeappError):
    """The token store (Redis) failed and no usable copy of the token was at hand."""


class CryptoError(WeappError):
    """Decryption or a signature check failed."""


class DecryptError(CryptoError):
    """``decrypt_user_data`` refused its input: bad base64, a key or iv of the wrong length,
    bad padding, not JSON, no watermark, another app's watermark, a stale watermark."""


class SignatureError(CryptoError):
    """A signed answer (WeChat Pay) did not verify."""


class PushError(WeappError):
    """A push was refused: bad signature, outside the time window, replayed, not encrypted in
    safe mode, malformed."""


class PayError(WeappError):
    """A WeChat Pay failure."""


class PayApiError(PayError):
    """WeChat Pay answered an error: HTTP ``status``, ``code`` (``ORDER_NOT_EXIST``, …),
    ``message``, ``detail`` (JSON text or ``None``) and its ``Request-ID``."""

    def __init__(
        self,
        endpoint: str,
        status: int,
        code: str,
        pay_message: str,
        detail: Optional[str],
        request_id: Optional[str],
        message: str,
    ) -> None:
        super().__init__(message, endpoint, status, code, pay_message, detail, request_id)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.pay_message = pay_message
        self.detail = detail
        self.request_id = request_id

    def __reduce__(self) -> Tuple[Any, ...]:
        return (
            type(self),
            (self.endpoint, self.status, self.code, self.pay_message, self.detail, self.request_id, self.message),
            self.__dict__,
        )


class NotificationError(PayError):
    """A payment notification was refused: signature, time window, probe, decryption."""


class BrokerError(WeappError):
    """weapp-server's token broker refused (a wrong client key, a missing scope, …)."""

    def __init__(self, endpoint: str, status: int, code: str, broker_message: str, message: str) -> None:
        super().__init__(message, endpoint, status, code, broker_message)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.broker_message = broker_message

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.endpoint, self.status, self.code, self.broker_message, self.message), self.__dict__)


class InvalidArgumentError(WeappError, ValueError):
    """An argument was refused before anything was sent."""


_API_FAMILIES: Dict[int, Type[ApiError]] = {
    40029: InvalidCodeError,
    40163: InvalidCodeError,
    40001: TokenInvalidError,
    40014: TokenInvalidError,
    42001: TokenInvalidError,
    45009: QuotaError,
    45011: QuotaError,
    45013: QuotaError,
    40164: IpNotAllowedError,
    61004: IpNotAllowedError,
}

_SIMPLE: Dict[str, Type[WeappError]] = {
    "store": StoreError,
    "decrypt": DecryptError,
    "signature": SignatureError,
    "push": PushError,
    "pay": PayError,
    "notify": NotificationError,
    "invalid_argument": InvalidArgumentError,
    "weapp": WeappError,
}


def _make(kind: str, fields: Any) -> WeappError:
    """Builds the exception the extension raises (called from Rust)."""
    if not isinstance(fields, tuple):
        fields = (fields,)
    if kind == "api":
        errcode = int(fields[0])
        return _API_FAMILIES.get(errcode, ApiError)(*fields)
    if kind == "transport":
        return TransportError(*fields)
    if kind == "decode":
        return DecodeError(*fields)
    if kind == "outcome_unknown":
        return OutcomeUnknownError(*fields)
    if kind == "timeout":
        return WeappTimeoutError(*fields)
    if kind == "http_status":
        endpoint, status, message = fields
        return HttpStatusError(endpoint, status, message)
    if kind == "pay_api":
        return PayApiError(*fields)
    if kind == "broker":
        return BrokerError(*fields)
    return _SIMPLE.get(kind, WeappError)(*fields)
