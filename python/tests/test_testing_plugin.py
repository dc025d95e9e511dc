"""The pytest plugin: the fixture is registered by the package's entry point."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from weapp.testing import Sim


def test_fixture_is_a_running_simulator(weapp_sim: Sim) -> None:
    assert weapp_sim.url.startswith("http://127.0.0.1:")
    app = weapp_sim.create_app()
    code, openid = weapp_sim.login(app)
    assert weapp_sim.client(app).auth.code2session(code)["openid"] == openid
    before = weapp_sim.advance(0)
    assert weapp_sim.advance(60) == before + 60


def test_import_starts_nothing_and_logs_through_logging() -> None:
    code = (
        "import logging, weapp, weapp._native as n\n"
        "c = weapp.Client('wx0000000000000001', 's')\n"
        "assert not n.runtime_started(), 'a runtime started before the first call'\n"
        "assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger('weapp').handlers)\n"
    )
    # Run outside the source tree, so the installed package is the one imported.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())
