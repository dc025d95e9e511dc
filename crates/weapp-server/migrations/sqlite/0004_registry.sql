-- Apps and broker clients managed at runtime through the admin API. Every change takes the
-- next registry revision, so an instance catches up by reading the rows with rev > the last it
-- saw; a deleted row stays as a tombstone (deleted = 1, secrets gone) so that every instance
-- learns of the deletion.
CREATE TABLE registry (
    id INTEGER PRIMARY KEY,
    rev BIGINT NOT NULL
);
INSERT INTO registry (id, rev) VALUES (1, 0);

CREATE TABLE managed_apps (
    appid TEXT PRIMARY KEY,
    -- JSON without secrets: api_base, token_mode, warm, push {mode, webhook_url, replay_window_secs}
    settings TEXT NOT NULL,
    -- The secrets (AppSecret, push token, EncodingAESKey, webhook secret) as JSON, sealed with
    -- the data key and bound to the appid.
    sealed BLOB,
    key_id TEXT,
    enabled BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    rev BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX managed_apps_rev ON managed_apps (rev);

CREATE TABLE managed_clients (
    name TEXT PRIMARY KEY,
    key_sha256 BLOB,
    apps TEXT NOT NULL,
    scopes TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    rev BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX managed_clients_rev ON managed_clients (rev);

-- What administrators did (never a secret).
CREATE TABLE admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    admin TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL
);
