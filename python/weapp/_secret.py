"""Secrets that do not print themselves."""

from __future__ import annotations

import hmac
from typing import Any

__all__ = ["SessionKey", "text"]


class SessionKey:
    """A user's ``session_key``: ``repr``/``str`` show ``***``; ``reveal()`` gives the text.

    Keep it on the server; pass it to :func:`weapp.decrypt_user_data` or to
    ``client.auth.check_session_key``. Comparisons are constant-time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        """The key's base64 text."""
        return self._value

    def __repr__(self) -> str:
        return "SessionKey(***)"

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, SessionKey):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("SessionKey", self._value))

    def __reduce__(self) -> Any:
        return (SessionKey, (self._value,))


def text(name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is text that encodes as UTF-8 (or ``None`` when ``optional``); otherwise
    ``InvalidArgumentError`` naming the argument — never an error that quotes the value (a
    secret read from the environment may hold a lone surrogate)."""
    from .exceptions import InvalidArgumentError

    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{name} is not valid UTF-8 text") from None
    return value
