"""WeChat Pay API v3 for a direct merchant (mini program / JSAPI payments).

Amounts are integer fen. Requests are signed and every answer is verified in Rust
(``weapp::pay``); the merchant's private key and APIv3 key are read once and never leave it.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union


from . import _native
from ._client import _json, awaited
from ._secret import text

__all__ = ["PayClient", "AsyncPayClient"]


class _PayBase:
    def __init__(
        self,
        mchid: str,
        serial_no: str,
        private_key: str,
        apiv3_key: str,
        *,
        public_key_id: Optional[str] = None,
        public_key: Optional[str] = None,
        platform_certificates: bool = False,
        base_url: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        self._native = _native.NativePayClient(
            text("mchid", mchid),
            text("serial_no", serial_no),
            text("private_key", private_key),
            text("apiv3_key", apiv3_key),
            text("public_key_id", public_key_id, optional=True),
            text("public_key", public_key, optional=True),
            bool(platform_certificates),
            text("base_url", base_url, optional=True),
            float(timeout),
        )

    @property
    def mchid(self) -> str:
        """The merchant id."""
        return str(self._native.mchid)

    def request_payment(self, appid: str, prepay_id: str) -> Dict[str, str]:
        """The five ``wx.requestPayment`` parameters (``timeStamp``, ``nonceStr``, ``package``,
        ``signType``, ``paySign``) for the mini program."""
        return dict(self._native.request_payment(appid, prepay_id))

    def parse_notification(self, headers: Mapping[str, str], body: Union[bytes, str]) -> Dict[str, Any]:
        """A payment or refund notification, verified (signature, ±300 s, no probe) and
        decrypted, from the request's headers and its **raw** body (not re-serialized JSON).
        ``kind`` is ``transaction``, ``refund`` or ``other``; ``resource`` the decrypted object.
        Answer WeChat 204 when it is stored; raise → answer 4xx/5xx and WeChat retries."""
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return dict(self._native.parse_notification({str(k): str(headers[k]) for k in headers}, raw))

    def _ops(self, op: str, args: Dict[str, Any]) -> Any:
        raise NotImplementedError

    # The calls: sync on PayClient, awaitable on AsyncPayClient.
    def jsapi_prepay(self, request: Mapping[str, Any]) -> Any:
        """``POST /v3/pay/transactions/jsapi``: ``{"prepay_id"}``. ``request`` is WeChat's
        body (``appid``, ``mchid`` may be left out, ``description``, ``out_trade_no``,
        ``notify_url``, ``amount: {"total": fen}``, ``payer: {"openid"}``)."""
        return self._ops("jsapi_prepay", {"request": dict(request)})

    def query_by_out_trade_no(self, out_trade_no: str) -> Any:
        """The transaction, by your order number."""
        return self._ops("query_by_out_trade_no", {"out_trade_no": out_trade_no})

    def query_by_transaction_id(self, transaction_id: str) -> Any:
        """The transaction, by WeChat's number."""
        return self._ops("query_by_transaction_id", {"transaction_id": transaction_id})

    def close(self, out_trade_no: str) -> Any:
        """Closes an unpaid order."""
        return self._ops("close", {"out_trade_no": out_trade_no})

    def refund(self, request: Mapping[str, Any]) -> Any:
        """``POST /v3/refund/domestic/refunds`` (idempotent by ``out_refund_no``)."""
        return self._ops("refund", {"request": dict(request)})

    def query_refund(self, out_refund_no: str) -> Any:
        """A refund, by your refund number."""
        return self._ops("query_refund", {"out_refund_no": out_refund_no})

    def trade_bill(self, bill_date: str, bill_type: str = "ALL") -> Any:
        """Applies for a trade bill: ``{"hash_type", "hash_value", "download_url"}``."""
        return self._ops("trade_bill", {"bill_date": bill_date, "bill_type": bill_type})

    def fund_flow_bill(self, bill_date: str, account_type: str = "BASIC") -> Any:
        """Applies for a fund-flow bill."""
        return self._ops("fund_flow_bill", {"bill_date": bill_date, "account_type": account_type})

    def download_bill(self, info: Mapping[str, Any]) -> Any:
        """Downloads a bill (``bytes``), its SHA-1 checked against ``hash_value``."""
        return self._ops("download_bill", {"info": dict(info)})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mchid={self.mchid!r})"


class PayClient(_PayBase):
    """WeChat Pay, synchronous."""

    def _ops(self, op: str, args: Dict[str, Any]) -> Any:
        return self._native.invoke(op, _json(args))


class AsyncPayClient(_PayBase):
    """WeChat Pay for asyncio: the calls are awaited."""

    async def _run(self, op: str, args: Dict[str, Any]) -> Any:
        text = _json(args)
        return await awaited(lambda done: self._native.spawn(op, text, done))

    def _ops(self, op: str, args: Dict[str, Any]) -> Any:
        return self._run(op, args)
