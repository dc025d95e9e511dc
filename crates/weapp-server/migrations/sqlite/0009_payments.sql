-- WeChat Pay orders placed through the service (issue 27). Stored before WeChat is asked; the
-- state changes only by conditional updates, so a notification applied twice changes nothing.
CREATE TABLE pay_orders (
    mchid TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    appid TEXT NOT NULL,
    description TEXT NOT NULL,
    amount BIGINT NOT NULL,
    openid TEXT NOT NULL,
    attach TEXT,
    time_expire TEXT,
    state TEXT NOT NULL,
    prepay_id TEXT,
    transaction_id TEXT,
    success_time TEXT,
    paid_at BIGINT,
    refunded BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (mchid, out_trade_no)
);
CREATE INDEX pay_orders_app ON pay_orders (appid, out_trade_no);
-- The notification inbox: every verified notification (envelope and decrypted resource),
-- written before WeChat is answered; applied once (outcome set then).
CREATE TABLE pay_notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mchid TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    business_no TEXT,
    serial TEXT NOT NULL,
    envelope TEXT NOT NULL,
    resource TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    outcome TEXT,
    applied_at BIGINT,
    UNIQUE (mchid, notification_id)
);
CREATE INDEX pay_notifications_pending ON pay_notifications (received_at) WHERE outcome IS NULL;
