-- When WeChat pushed the kept ticket (its CreateTime, Unix seconds; 0 when unknown): a late
-- retry of an older push must not replace a newer ticket.
ALTER TABLE platform_tickets ADD COLUMN pushed_at BIGINT NOT NULL DEFAULT 0;
