"""The same login on FastAPI with ``weapp.AsyncClient`` (nothing blocks the event loop)."""

from __future__ import annotations

import os
import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional, Tuple

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

import weapp


class Verify(BaseModel):
    jsCode: str


class Phone(BaseModel):
    code: str


def create_app(client: Optional[weapp.AsyncClient] = None) -> FastAPI:
    sessions: Dict[str, Tuple[str, weapp.SessionKey]] = {}
    state: Dict[str, weapp.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        wx = client or weapp.AsyncClient(
            os.environ["WEAPP_APPID"],
            os.environ["WEAPP_SECRET"],
            token_store=os.environ.get("WEAPP_TOKEN_STORE") or None,
            base_url=os.environ.get("WEAPP_BASE_URL") or None,
        )
        async with wx:
            state["wx"] = wx
            yield

    app = FastAPI(lifespan=lifespan)

    def who(authorization: Optional[str]) -> Tuple[str, weapp.SessionKey]:
        found = sessions.get((authorization or "")[7:]) if (authorization or "").startswith("Bearer ") else None
        if found is None:
            raise HTTPException(401, "log in first")
        return found

    @app.post("/v1/verify")
    async def verify(body: Verify) -> Dict[str, Any]:
        try:
            session = await state["wx"].auth.code2session(body.jsCode)
        except weapp.InvalidCodeError:
            raise HTTPException(400, "the login code is wrong, used or expired") from None
        token = secrets.token_urlsafe(32)
        sessions[token] = (session["openid"], session["session_key"])
        return {"token": token, "openid": session["openid"]}

    @app.post("/v1/phone")
    async def phone(body: Phone, authorization: Optional[str] = Header(None)) -> Dict[str, Any]:
        who(authorization)
        try:
            info = await state["wx"].auth.get_phone_number(body.code)
        except weapp.InvalidCodeError:
            raise HTTPException(400, "the phone code is wrong, used or expired") from None
        return {"phone": info["phoneNumber"]}

    return app
