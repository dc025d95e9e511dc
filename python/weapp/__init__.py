"""weapp: the server side of WeChat Mini Programs, on a Rust core.

    import weapp
    client = weapp.Client("wx…", secret, token_store="redis://127.0.0.1:6379/0")
    session = client.auth.code2session(js_code)

See https://github.com/weapp-rs/weapp (python/README.md).
"""

from __future__ import annotations

import atexit
import logging
from typing import Any, Dict, Optional

from . import _native, exceptions
from ._client import AsyncClient, Client
from ._secret import SessionKey
from .exceptions import *  # noqa: F403 (the exceptions are the package's too)
from .exceptions import DecryptError
from .push import PushEvent, PushReceiver

__version__: str = _native.__version__

__all__ = [
    "Client",
    "AsyncClient",
    "SessionKey",
    "PushReceiver",
    "PushEvent",
    "decrypt_user_data",
    "verify_raw_signature",
]
__all__ += exceptions.__all__

# A library configures no handler: the application decides (logging HOWTO).
logging.getLogger("weapp").addHandler(logging.NullHandler())
atexit.register(_native.stop_logging)


def decrypt_user_data(
    session_key: Any,
    encrypted_data: str,
    iv: str,
    appid: Optional[str] = None,
    *,
    max_age_secs: Optional[int] = None,
) -> Dict[str, Any]:
    """Decrypts ``encryptedData`` from the mini program (AES-128-CBC, strict padding) with the
    user's session_key (``str`` or :class:`SessionKey`). The watermark must be present; its
    appid is checked when ``appid`` is given, its age when ``max_age_secs`` is. Every bad input
    raises :class:`DecryptError`."""
    key = session_key.reveal() if isinstance(session_key, SessionKey) else session_key
    if not all(_utf8(v) for v in (key, encrypted_data, iv)) or not (appid is None or _utf8(appid)):
        raise DecryptError("session_key, encrypted_data, iv and appid must be text")
    if max_age_secs is not None and (
        isinstance(max_age_secs, bool) or not isinstance(max_age_secs, int) or not 0 <= max_age_secs < 2**63
    ):
        raise DecryptError("max_age_secs must be a non-negative int")
    return dict(_native.decrypt_user_data(key, encrypted_data, iv, appid, max_age_secs))


def _utf8(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def verify_raw_signature(session_key: Any, raw_data: str, signature: str) -> bool:
    """Checks the legacy ``signature`` of ``rawData`` (``sha1(rawData + session_key)``) in
    constant time."""
    key = session_key.reveal() if isinstance(session_key, SessionKey) else session_key
    if not (_utf8(key) and _utf8(raw_data) and _utf8(signature)):
        return False  # what is not text cannot be the signature
    return bool(_native.verify_raw_signature(key, raw_data, signature))
