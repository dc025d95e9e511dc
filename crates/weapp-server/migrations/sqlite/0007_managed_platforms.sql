-- Third-party platforms registered at runtime through the admin API, like managed apps: every
-- change takes the next registry revision; a deleted one stays as a tombstone.
CREATE TABLE managed_platforms (
    component_appid TEXT PRIMARY KEY,
    -- JSON without secrets: api_base, webhook_url
    settings TEXT NOT NULL,
    -- The secrets (component secret, Token, EncodingAESKey, webhook secret) as JSON, sealed
    -- with the data key and bound to the component appid and its API host.
    sealed BLOB,
    key_id TEXT,
    enabled BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    rev BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX managed_platforms_rev ON managed_platforms (rev);

-- The registry revision of a merchant's last authorization change, so that an instance reads
-- only the merchants that changed since its last poll (bulk onboarding of thousands of
-- merchants costs each instance the changed rows, not the whole table per change).
ALTER TABLE platform_authorizers ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
CREATE INDEX platform_authorizers_rev ON platform_authorizers (rev);
CREATE INDEX platform_authorizers_appid ON platform_authorizers (authorizer_appid);
