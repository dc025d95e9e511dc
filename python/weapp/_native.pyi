# The extension module (crates/weapp-py). Its public, typed surface is the Python package.
from typing import Any, Callable, Dict, List, Optional, Tuple, final

__version__: str
__debug_build__: bool

@final
class TaskHandle:
    def cancel(self) -> None: ...
    def done(self) -> bool: ...

@final
class NativeClient:
    def __new__(
        cls,
        appid: str,
        secret: str,
        token_store: Optional[str],
        token_mode: str,
        base_url: Optional[str],
        timeout: float,
        redis_prefix: str,
        broker_url: Optional[str],
        broker_key: Optional[str],
    ) -> NativeClient: ...
    @property
    def appid(self) -> str: ...
    @property
    def token_mode(self) -> str: ...
    @property
    def token_store(self) -> str: ...
    def access_token(self) -> str: ...
    def invoke(self, op: str, args: str, blob: Optional[bytes] = None) -> Any: ...
    def spawn(
        self, op: str, args: str, done: Callable[[bool, Any], None], blob: Optional[bytes] = None
    ) -> TaskHandle: ...

@final
class NativePayClient:
    def __new__(
        cls,
        mchid: str,
        serial_no: str,
        private_key: str,
        apiv3_key: str,
        public_key_id: Optional[str] = None,
        public_key: Optional[str] = None,
        platform_certificates: bool = False,
        base_url: Optional[str] = None,
        timeout: float = 10.0,
    ) -> NativePayClient: ...
    @property
    def mchid(self) -> str: ...
    def invoke(self, op: str, args: str) -> Any: ...
    def spawn(self, op: str, args: str, done: Callable[[bool, Any], None]) -> TaskHandle: ...
    def request_payment(self, appid: str, prepay_id: str) -> Dict[str, str]: ...
    def parse_notification(self, headers: Dict[str, str], body: bytes) -> Dict[str, Any]: ...

@final
class NativePushReceiver:
    def __new__(
        cls,
        appid: str,
        token: str,
        encoding_aes_key: Optional[str] = None,
        mode: Optional[str] = None,
        replay_window_secs: int = 300,
    ) -> NativePushReceiver: ...
    @property
    def mode(self) -> str: ...
    def verify_url(self, query_params: Dict[str, str]) -> str: ...
    def parse(self, query_params: Dict[str, str], body: bytes) -> Dict[str, Any]: ...

@final
class NativeSim:
    def __new__(cls, apps: List[Tuple[str, str]] = ..., port: int = 0, real_clock: bool = False) -> NativeSim: ...
    @property
    def url(self) -> str: ...
    def stop(self) -> None: ...

def decrypt_user_data(
    session_key: str,
    encrypted_data: str,
    iv: str,
    appid: Optional[str] = None,
    max_age_secs: Optional[int] = None,
) -> Dict[str, Any]: ...
def verify_raw_signature(session_key: str, raw_data: str, signature: str) -> bool: ...
def in_flight() -> int: ...
def runtime_started() -> bool: ...
def stop_logging() -> None: ...
