-- Refunds and the query fallback (补单) of issue 27.
-- An order's next query: set when it is placed (created + pay_query_after_secs), moved on by
-- each query (the move is the claim: a conditional update, so two instances never query the
-- same order at once), cleared when the order is paid or closed. refund_reserved: fen promised
-- to refunds not closed (the sum can never pass the amount: a conditional update reserves it).
-- prepay_at: when WeChat made the stored prepay (valid 2 h; an older one is renewed).
-- paid_from: the state the order was in when it was marked paid (CLOSED: paid after closing).
ALTER TABLE pay_orders ADD COLUMN next_query_at BIGINT;
ALTER TABLE pay_orders ADD COLUMN query_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pay_orders ADD COLUMN refund_reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pay_orders ADD COLUMN prepay_at BIGINT;
ALTER TABLE pay_orders ADD COLUMN paid_from TEXT;
CREATE INDEX pay_orders_due ON pay_orders (next_query_at) WHERE next_query_at IS NOT NULL;
-- Refunds asked through the service: stored (PENDING, its amount reserved on the order) before
-- WeChat is asked; status then follows WeChat's (PROCESSING, SUCCESS, CLOSED, ABNORMAL) by
-- notification or query (next_query_at: the refund query fallback's schedule).
CREATE TABLE pay_refunds (
    mchid TEXT NOT NULL,
    out_refund_no TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    appid TEXT NOT NULL,
    amount BIGINT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL,
    refund_id TEXT,
    success_time TEXT,
    next_query_at BIGINT,
    query_attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (mchid, out_refund_no)
);
CREATE INDEX pay_refunds_order ON pay_refunds (mchid, out_trade_no);
CREATE INDEX pay_refunds_due ON pay_refunds (next_query_at) WHERE next_query_at IS NOT NULL;
