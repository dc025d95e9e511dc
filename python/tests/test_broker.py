"""Tokens from weapp-server's broker (中控): `Client(broker_url=…, broker_key=…)` against a real
`weapp serve --sandbox`, and the broker's refusals as `BrokerError`."""

from __future__ import annotations

import os
import pickle
import re
import socket
import subprocess
import tempfile
import time
from typing import Dict, Iterator

import pytest

import weapp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sandbox(weapp_bin: str) -> Iterator[Dict[str, str]]:
    work = tempfile.mkdtemp(prefix="weapp-py-broker-")
    port = _free_port()
    config = os.path.join(work, "weapp.toml")
    open(config, "w").close()
    out_path = os.path.join(work, "out")
    with open(out_path, "w+") as out:
        process = subprocess.Popen(
            [weapp_bin, "serve", "--sandbox", "--config", config, "--listen", f"127.0.0.1:{port}",
             "--database-url", f"sqlite://{work}/weapp.db"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "WEAPP_LOG": "warn"},
        )
        try:
            text = ""
            deadline = time.monotonic() + 60
            while "listening" not in text and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                out.seek(0)
                text = out.read()
            assert "listening" in text, text

            def printed(pattern: str) -> str:
                found = re.search(pattern, text, re.M)
                assert found, (pattern, text)
                return found.group(1)

            yield {
                "url": f"http://127.0.0.1:{port}",
                "sim": printed(r"^sandbox WeChat simulator: (\S+)"),
                "key": printed(r"^  broker client key: (\S+)"),
                "appid": printed(r"WEAPP_APPID=(\S+)"),
            }
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_tokens_come_from_the_broker(sandbox: Dict[str, str]) -> None:
    client = weapp.Client(sandbox["appid"], broker_url=sandbox["url"], broker_key=sandbox["key"], base_url=sandbox["sim"])
    assert sandbox["key"] not in repr(client)
    token = client.access_token()
    other = weapp.Client(sandbox["appid"], broker_url=sandbox["url"], broker_key=sandbox["key"], base_url=sandbox["sim"])
    assert other.access_token() == token
    # A call made with the broker's token.
    assert client.wxacode.get_unlimited("a=1").startswith(b"\x89PNG")


def test_a_wrong_key_is_a_broker_error_without_the_key(sandbox: Dict[str, str]) -> None:
    wrong = "wk_" + "x" * 40
    client = weapp.Client(sandbox["appid"], broker_url=sandbox["url"], broker_key=wrong, base_url=sandbox["sim"])
    with pytest.raises(weapp.BrokerError) as err:
        client.access_token()
    assert err.value.status == 401
    for text in (str(err.value), repr(err.value), repr(err.value.args)):
        assert wrong not in text
    again = pickle.loads(pickle.dumps(err.value))
    assert (again.status, again.code, again.endpoint) == (err.value.status, err.value.code, err.value.endpoint)


def test_broker_settings_go_together() -> None:
    with pytest.raises(ValueError):
        weapp.Client("wx1", broker_url="http://127.0.0.1:9")
    with pytest.raises(ValueError):
        weapp.Client("wx1", "s", token_store="memory", broker_url="http://127.0.0.1:9", broker_key="k")
