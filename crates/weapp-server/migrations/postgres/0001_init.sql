CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    appid TEXT NOT NULL,
    openid TEXT NOT NULL,
    unionid TEXT,
    session_key_enc BYTEA NOT NULL,
    phone_number TEXT,
    pure_phone_number TEXT,
    country_code TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (appid, openid)
);
CREATE INDEX users_unionid ON users (unionid);

CREATE TABLE sessions (
    token_hash BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
