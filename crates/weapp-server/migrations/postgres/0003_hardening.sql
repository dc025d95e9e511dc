-- The id (key check value) of the data key that sealed each session_key; NULL for values of
-- the first format, re-sealed at start-up.
ALTER TABLE users ADD COLUMN key_id TEXT;
CREATE INDEX users_key_id ON users (key_id);
-- Idle timeout: when a session was last used (ms; 0 = never recorded).
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX sessions_user ON sessions (user_id);
-- Dead-lettered deliveries: attempts exhausted; kept and redeliverable.
ALTER TABLE push_events ADD COLUMN dead_at BIGINT;
