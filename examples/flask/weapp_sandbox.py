"""Test support: the weapp binary, and `weapp serve --sandbox` on free ports, for the tests of this
directory (test_app.py, test_legacy_proxy.py).

The binary: ``WEAPP_BIN`` if set, else ``target/debug/weapp`` or ``target/release/weapp`` of this
repository (``$CARGO_TARGET_DIR`` if set), whichever exists — the newest when both do."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def weapp_bin():
    """The weapp binary to test against (see the module's doc)."""
    explicit = os.environ.get("WEAPP_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"WEAPP_BIN={explicit} is not an executable file")
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    built = [
        path
        for path in (os.path.join(target, p, "weapp") for p in ("debug", "release"))
        if os.access(path, os.X_OK)
    ]
    if not built:
        raise RuntimeError(
            f"no weapp binary under {target}/debug or {target}/release: run "
            "`cargo build -p weapp-cli --bin weapp` (or set WEAPP_BIN)"
        )
    return max(built, key=os.path.getmtime)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    """`weapp serve --sandbox --config <config>` on a free port, its database in a fresh
    directory; ``url``, ``sim``, ``client_key``, ``admin_key`` are what it printed."""

    def __init__(self, config="", env=None):
        self.work = tempfile.mkdtemp(prefix="weapp-flask-")
        self.port = free_port()
        path = os.path.join(self.work, "weapp.toml")
        with open(path, "w") as f:
            f.write(config)
        self.out = open(os.path.join(self.work, "out"), "w+")
        self.process = subprocess.Popen(
            [weapp_bin(), "serve", "--sandbox", "--config", path,
             "--listen", f"127.0.0.1:{self.port}",
             "--database-url", f"sqlite://{self.work}/weapp.db"],
            stdout=self.out, stderr=subprocess.STDOUT,
            env={**os.environ, "WEAPP_LOG": "warn", **(env or {})},
        )
        text = ""
        for _ in range(400):
            self.out.seek(0)
            text = self.out.read()
            if "listening" in text or self.process.poll() is not None:
                break
            time.sleep(0.05)
        if "listening" not in text:
            self.stop()
            raise RuntimeError(f"weapp serve --sandbox did not start:\n{text}")
        self.url = f"http://127.0.0.1:{self.port}"
        printed = lambda pattern: (re.search(pattern, text, re.M) or [None, None])[1]
        self.sim = printed(r"^sandbox WeChat simulator: (\S+)")
        # Printed only when the config names no [[clients]] / [[admins]] of its own.
        self.client_key = printed(r"^  broker client key: (\S+)")
        self.admin_key = printed(r"^  admin key: (\S+)")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.out.close()
        shutil.rmtree(self.work, ignore_errors=True)
