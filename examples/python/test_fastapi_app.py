"""The FastAPI variant on weapp.AsyncClient, against the in-extension simulator."""

from __future__ import annotations

from fastapi.testclient import TestClient

from weapp.testing import Sim

from fastapi_app import create_app


def test_login_and_phone(weapp_sim: Sim) -> None:
    app = weapp_sim.create_app()
    with TestClient(create_app(weapp_sim.async_client(app))) as http:
        code, openid = weapp_sim.login(app)
        r = http.post("/v1/verify", json={"jsCode": code})
        assert r.status_code == 200 and r.json()["openid"] == openid
        token = r.json()["token"]
        assert http.post("/v1/verify", json={"jsCode": code}).status_code == 400
        r = http.post(
            "/v1/phone",
            json={"code": weapp_sim.phone_code(app, openid, "13900139000")},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200 and r.json()["phone"] == "13900139000"
        assert http.post("/v1/phone", json={"code": "x"}).status_code == 401
