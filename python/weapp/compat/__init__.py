"""Compatibility layers for code written against other WeChat SDKs.

:mod:`weapp.compat.wechatpy` — drop-in shims of what mini-program backends use from
wechatpy 1.8.18 (``WeChatClient``, ``WeChatWxaCrypto``, ``WeChatCrypto``,
``check_signature``, ``check_wxa_signature`` and its exceptions), running on weapp's core.
"""

from __future__ import annotations

__all__ = ["wechatpy"]
