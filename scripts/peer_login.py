"""The Python peer of weapp-server's `POST /v1/login`, for scripts/bench-login: the seed's
Flask login rebuilt with wechatpy 1.8.18 (unchanged), served by gunicorn.

A login: `code_to_session` through wechatpy (its requests session, sent to the simulator by a
transport adapter, the one of scripts/wechatpy_compat.py), then the user upserted and a session
inserted in SQLite (WAL, `synchronous=FULL`, one transaction — the durability weapp-server
gives), then `{token, expires_at, openid}`. It does less than weapp-server: the session_key is
stored as it came (not sealed) and no access token is signed.

Configuration (environment): PEER_APPID, PEER_SECRET, PEER_SIM (the simulator's URL), PEER_DB
(the SQLite file); PEER_READY_DIR, optional: each worker, once it has loaded the app, creates an
empty file named by its pid there (how scripts/bench-login knows both workers are up, and which).
"""

import fcntl
import hashlib
import os
import secrets
import sqlite3
import time

from flask import Flask, jsonify, request
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException

# The same transport adapter as the compatibility check (this directory is on the path).
from wechatpy_compat import WECHAT, ToSimulator

SESSION_TTL_MS = 30 * 24 * 3600 * 1000

APPID = os.environ["PEER_APPID"]
client = WeChatClient(APPID, os.environ["PEER_SECRET"])
client._http.mount(WECHAT + "/", ToSimulator(os.environ["PEER_SIM"]))
app = Flask(__name__)
_conn = None


def db():
    """One connection per worker process (gunicorn's sync workers run one request at a time).

    Set up under an exclusive lock on a file beside the database: the two workers' first logins
    come together, and `PRAGMA journal_mode=WAL` on a new file does not wait for the other
    connection's lock (SQLite answers "database is locked" at once, whatever the busy timeout), so
    one worker's first login could fail. Kept only once set up: a failure is not left half done.
    """
    global _conn
    if _conn is None:
        path = os.environ["PEER_DB"]
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _set_up(conn)
        _conn = conn
    return _conn


def _set_up(conn):
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS users (
            id INTEGER PRIMARY KEY, appid TEXT NOT NULL, openid TEXT NOT NULL,
            unionid TEXT, session_key TEXT NOT NULL, updated_at INTEGER NOT NULL,
            UNIQUE (appid, openid));
        CREATE TABLE IF NOT EXISTS sessions (
            token_hash BLOB PRIMARY KEY, user_id INTEGER NOT NULL,
            created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
        """
    )


@app.get("/healthz")
def healthz():
    return "ok"


@app.get("/v1/apps/<appid>/access_token")
def access_token(appid):
    if appid != APPID:
        return jsonify(error="not_found"), 404
    return jsonify(access_token=client.access_token, expires_at=client.expires_at)


@app.post("/v1/login")
def login():
    body = request.get_json(force=True, silent=True) or {}
    code = body.get("code")
    if not isinstance(code, str) or not code or body.get("appid") != APPID:
        return jsonify(error="invalid_request"), 400
    try:
        s = client.wxa.code_to_session(code)
    except WeChatClientException as e:
        return jsonify(error="upstream_error", errcode=e.errcode), 502
    token = secrets.token_urlsafe(32)
    now = int(time.time() * 1000)
    c = db()
    c.execute("BEGIN IMMEDIATE")
    try:
        c.execute(
            "INSERT INTO users (appid, openid, unionid, session_key, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (appid, openid) DO UPDATE SET session_key = excluded.session_key, "
            "unionid = COALESCE(excluded.unionid, users.unionid), updated_at = excluded.updated_at",
            (APPID, s["openid"], s.get("unionid"), s["session_key"], now),
        )
        (user_id,) = c.execute(
            "SELECT id FROM users WHERE appid = ? AND openid = ?", (APPID, s["openid"])
        ).fetchone()
        c.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (hashlib.sha256(token.encode()).digest(), user_id, now, now + SESSION_TTL_MS),
        )
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    return jsonify(token=token, expires_at=(now + SESSION_TTL_MS) // 1000, openid=s["openid"])


# Ready: this worker has loaded the app (gunicorn loads it in each worker, after the fork).
if os.environ.get("PEER_READY_DIR"):
    open(os.path.join(os.environ["PEER_READY_DIR"], str(os.getpid())), "w").close()
