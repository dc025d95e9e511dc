-- Merchants added at runtime through the admin API (issue 27): their settings in the clear
-- (JSON), their private key and APIv3 key sealed with the data key, bound to the mchid, its
-- apps and its settings as stored (base64; never shown again): settings or apps changed here
-- rather than through the admin API make the merchant not load.
CREATE TABLE pay_merchants (
    mchid TEXT PRIMARY KEY,
    appids TEXT NOT NULL,
    settings TEXT NOT NULL,
    sealed_secrets TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Which runtime merchant takes each app's orders: the primary key makes "an appid is served
-- by one merchant" hold across instances creating merchants at once.
CREATE TABLE pay_merchant_apps (
    appid TEXT PRIMARY KEY,
    mchid TEXT NOT NULL REFERENCES pay_merchants (mchid) ON DELETE CASCADE
);
CREATE INDEX pay_merchant_apps_mchid ON pay_merchant_apps (mchid);
-- Daily reconciliation: one report per merchant and Beijing day, written once for the fleet.
-- The row is the claim: inserted as `running` by the instance that runs it (a `running` row
-- older than a few minutes is a dead instance's and may be taken over), then `clean` or
-- `discrepancies` with the report (`report`: JSON of the items).
CREATE TABLE pay_reconciliations (
    mchid TEXT NOT NULL,
    bill_date TEXT NOT NULL,
    status TEXT NOT NULL,
    bill_rows BIGINT NOT NULL DEFAULT 0,
    discrepancies BIGINT NOT NULL DEFAULT 0,
    report TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (mchid, bill_date)
);
