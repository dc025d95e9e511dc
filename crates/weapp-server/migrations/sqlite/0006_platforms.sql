-- Third-party platforms' durable state: the latest component_verify_ticket and every
-- merchant's authorizer refresh token — the database is their home (Redis may cache, never be
-- the only copy). Both are sealed with the data key, bound to their row.
CREATE TABLE platform_tickets (
    component_appid TEXT PRIMARY KEY,
    ticket_sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE platform_authorizers (
    component_appid TEXT NOT NULL,
    authorizer_appid TEXT NOT NULL,
    -- NULL once the merchant de-authorized (or before a refresh token was known).
    refresh_sealed BLOB,
    key_id TEXT,
    authorized BIGINT NOT NULL,
    func_ids TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (component_appid, authorizer_appid)
);
