CREATE TABLE push_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    appid TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    last_error TEXT,
    UNIQUE (appid, dedup_key)
);
CREATE INDEX push_events_due ON push_events (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX push_events_app ON push_events (appid, id);
