-- Merchants added at runtime through the admin API (issue 27): their settings in the clear,
-- their private key and APIv3 key sealed with the data key (never shown again).
CREATE TABLE pay_merchants (
    mchid TEXT PRIMARY KEY,
    appids TEXT NOT NULL,
    settings TEXT NOT NULL,
    sealed_secrets TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Daily reconciliation: one report per merchant and Beijing day, written once for the fleet.
CREATE TABLE pay_reconciliations (
    mchid TEXT NOT NULL,
    bill_date TEXT NOT NULL,
    status TEXT NOT NULL,
    bill_rows BIGINT NOT NULL DEFAULT 0,
    discrepancies BIGINT NOT NULL DEFAULT 0,
    report TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (mchid, bill_date)
);
