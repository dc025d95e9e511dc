"""WeChat's message push (消息推送) for one app, in any framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional, Union

from . import _native
from ._secret import text

__all__ = ["PushReceiver", "PushEvent"]


@dataclass(frozen=True)
class PushEvent:
    """A verified, decrypted push.

    ``type`` is the event (``subscribe_msg_popup_event``, ``wxa_media_check``,
    ``user_enter_tempsession``) or the message type (``text``, ``image``, ``miniprogrampage``);
    ``fields`` holds the typed fields of the known kinds; ``raw`` every field as received.
    """

    type: str
    to_user_name: str
    from_user_name: str
    create_time: int
    msg_type: str
    event: Optional[str]
    format: Literal["xml", "json"]
    encrypted: bool
    fields: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)


def _query(query: Mapping[str, Any]) -> Dict[str, str]:
    # `query[k]` is the (last) value in every framework's mapping: a dict, Werkzeug's
    # MultiDict, Django's QueryDict (whose dict() would give lists), Starlette's QueryParams.
    return {str(k): str(query[k]) for k in query}


class PushReceiver:
    """Verifies and opens the pushes WeChat sends to one app's URL.

    With an ``encoding_aes_key`` the mode is ``safe``: only encrypted pushes whose
    ``msg_signature`` covers the ciphertext are accepted, whatever the request claims — a
    plaintext body is refused, never read. Each push is accepted once within
    ``replay_window_secs`` (its timestamp must also be that fresh).

    ``verify_url(query)`` answers the GET handshake; ``parse(query, body)`` the POST, with the
    request's query parameters (a mapping) and its raw body (``bytes``).
    """

    def __init__(
        self,
        appid: str,
        token: str,
        encoding_aes_key: Optional[str] = None,
        *,
        mode: Optional[Literal["plain", "compatible", "safe"]] = None,
        replay_window_secs: int = 300,
    ) -> None:
        self._native = _native.NativePushReceiver(
            text("appid", appid),
            text("token", token),
            text("encoding_aes_key", encoding_aes_key, optional=True),
            text("mode", mode, optional=True),
            int(replay_window_secs),
        )

    @property
    def mode(self) -> str:
        """``plain``, ``compatible`` or ``safe``."""
        return str(self._native.mode)

    def verify_url(self, query: Mapping[str, Any]) -> str:
        """The ``echostr`` to answer the GET handshake with (raises ``PushError``)."""
        return str(self._native.verify_url(_query(query)))

    def parse(self, query: Mapping[str, Any], body: Union[bytes, str]) -> PushEvent:
        """The push, verified and decrypted (raises ``PushError``)."""
        raw = body.encode() if isinstance(body, str) else bytes(body)
        fields = self._native.parse(_query(query), raw)
        return PushEvent(**fields)

    def __repr__(self) -> str:
        return str(self._native.__repr__())
