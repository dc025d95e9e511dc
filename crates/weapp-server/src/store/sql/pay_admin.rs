//! Runtime merchants and reconciliation reports ([`super::super::PayLedgerStore`]). The
//! statements are the same for SQLite and PostgreSQL; the macro is expanded once per backend
//! in `super`.
//!
//! "An appid is served by one merchant" is the primary key of `pay_merchant_apps`, so two
//! instances creating merchants for one app at once cannot both win. A reconciliation's row
//! is its claim: `claimed_at > created_at` means a run is in progress (until it is stale);
//! `claimed_at` names the run, and only that run may write the report.

use super::super::pay_ledger::{LedgerRefund, PayMerchantRecord, ReconciliationRecord};

pub(super) const MERCHANT_COLUMNS: &str =
    "mchid, appids, settings, sealed_secrets, key_id, created_at, updated_at";
pub(super) const RECONCILIATION_COLUMNS: &str =
    "mchid, bill_date, status, bill_rows, discrepancies, report, claimed_at, created_at";
pub(super) const REFUND_COLUMNS: &str =
    "out_refund_no, out_trade_no, appid, amount, status, refund_id, success_time";

pub(super) fn merchant_from<R: sqlx::Row>(row: &R) -> Result<PayMerchantRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let appids: String = row.try_get("appids")?;
    Ok(PayMerchantRecord {
        mchid: row.try_get("mchid")?,
        appids: serde_json::from_str(&appids).unwrap_or_default(),
        settings: row.try_get("settings")?,
        sealed_secrets: row.try_get("sealed_secrets")?,
        key_id: row.try_get("key_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn reconciliation_from<R: sqlx::Row>(
    row: &R,
) -> Result<ReconciliationRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ReconciliationRecord {
        mchid: row.try_get("mchid")?,
        bill_date: row.try_get("bill_date")?,
        status: row.try_get("status")?,
        bill_rows: row.try_get("bill_rows")?,
        discrepancies: row.try_get("discrepancies")?,
        report: row.try_get("report")?,
        claimed_at: row.try_get("claimed_at")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn refund_from<R: sqlx::Row>(row: &R) -> Result<LedgerRefund, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(LedgerRefund {
        out_refund_no: row.try_get("out_refund_no")?,
        out_trade_no: row.try_get("out_trade_no")?,
        appid: row.try_get("appid")?,
        amount: row.try_get("amount")?,
        status: row.try_get("status")?,
        refund_id: row.try_get("refund_id")?,
        success_time: row.try_get("success_time")?,
    })
}

/// `impl PayLedgerStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_pay_admin {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl PayLedgerStore for $name {
            async fn pay_merchants(&self) -> Result<Vec<PayMerchantRecord>, StoreError> {
                let sql = format!("SELECT {} FROM pay_merchants ORDER BY mchid", pay_admin::MERCHANT_COLUMNS);
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(pay_admin::merchant_from).collect::<Result<_, _>>()?)
            }

            async fn pay_merchant(&self, mchid: &str) -> Result<Option<PayMerchantRecord>, StoreError> {
                let sql = format!("SELECT {} FROM pay_merchants WHERE mchid = $1", pay_admin::MERCHANT_COLUMNS);
                let row = sqlx::query(&sql).bind(mchid).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| pay_admin::merchant_from(&r)).transpose()?)
            }

            async fn put_pay_merchant(&self, m: &PayMerchantRecord, create: bool, audit: &AuditRecord) -> Result<MerchantWrite, StoreError> {
                let appids = serde_json::to_string(&m.appids).expect("strings");
                let mut tx = self.pool.begin().await?;
                let written = if create {
                    sqlx::query(
                        "INSERT INTO pay_merchants (mchid, appids, settings, sealed_secrets, key_id, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (mchid) DO NOTHING",
                    )
                    .bind(&m.mchid)
                    .bind(&appids)
                    .bind(&m.settings)
                    .bind(&m.sealed_secrets)
                    .bind(&m.key_id)
                    .bind(m.created_at)
                    .bind(m.updated_at)
                    .execute(&mut *tx)
                    .await?
                } else {
                    sqlx::query(
                        "UPDATE pay_merchants SET appids = $2, settings = $3, sealed_secrets = $4, key_id = $5, updated_at = $6 WHERE mchid = $1",
                    )
                    .bind(&m.mchid)
                    .bind(&appids)
                    .bind(&m.settings)
                    .bind(&m.sealed_secrets)
                    .bind(&m.key_id)
                    .bind(m.updated_at)
                    .execute(&mut *tx)
                    .await?
                };
                if written.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(MerchantWrite::MchidConflict);
                }
                sqlx::query("DELETE FROM pay_merchant_apps WHERE mchid = $1").bind(&m.mchid).execute(&mut *tx).await?;
                for appid in &m.appids {
                    let r = sqlx::query("INSERT INTO pay_merchant_apps (appid, mchid) VALUES ($1, $2) ON CONFLICT (appid) DO NOTHING")
                        .bind(appid)
                        .bind(&m.mchid)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() != 1 {
                        let owner: Option<String> = sqlx::query("SELECT mchid FROM pay_merchant_apps WHERE appid = $1")
                            .bind(appid)
                            .fetch_optional(&mut *tx)
                            .await?
                            .map(|r| r.try_get("mchid"))
                            .transpose()?;
                        tx.rollback().await?;
                        return Ok(MerchantWrite::AppTaken { appid: appid.clone(), mchid: owner.unwrap_or_default() });
                    }
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(MerchantWrite::Done)
            }

            async fn delete_pay_merchant(&self, mchid: &str, audit: &AuditRecord) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM pay_merchant_apps WHERE mchid = $1").bind(mchid).execute(&mut *tx).await?;
                let r = sqlx::query("DELETE FROM pay_merchants WHERE mchid = $1").bind(mchid).execute(&mut *tx).await?;
                if r.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(true)
            }

            async fn claim_pay_reconciliation(&self, mchid: &str, bill_date: &str, now: i64, stale_before: i64, force: bool) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "INSERT INTO pay_reconciliations (mchid, bill_date, status, bill_rows, discrepancies, report, claimed_at, created_at) \
                     VALUES ($1, $2, 'running', 0, 0, '[]', $3, 0) ON CONFLICT (mchid, bill_date) DO NOTHING",
                )
                .bind(mchid)
                .bind(bill_date)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if r.rows_affected() == 1 {
                    return Ok(true);
                }
                // Taken over: a run whose instance died (stale), or — forced — a finished one.
                let sql = if force {
                    "UPDATE pay_reconciliations SET claimed_at = $3 WHERE mchid = $1 AND bill_date = $2 \
                     AND (claimed_at <= created_at OR claimed_at < $4)"
                } else {
                    "UPDATE pay_reconciliations SET claimed_at = $3 WHERE mchid = $1 AND bill_date = $2 \
                     AND status = 'running' AND claimed_at < $4"
                };
                let r = sqlx::query(sql).bind(mchid).bind(bill_date).bind(now).bind(stale_before).execute(&self.pool).await?;
                Ok(r.rows_affected() == 1)
            }

            async fn finish_pay_reconciliation(&self, r: &ReconciliationRecord) -> Result<bool, StoreError> {
                // Only over this run's own claim: a run taken over (thought dead) or released
                // writes nothing.
                let done = sqlx::query(
                    "UPDATE pay_reconciliations SET status = $3, bill_rows = $4, discrepancies = $5, report = $6, created_at = $7 \
                     WHERE mchid = $1 AND bill_date = $2 AND claimed_at = $8",
                )
                .bind(&r.mchid)
                .bind(&r.bill_date)
                .bind(&r.status)
                .bind(r.bill_rows)
                .bind(r.discrepancies)
                .bind(&r.report)
                .bind(r.created_at.max(r.claimed_at + 1))
                .bind(r.claimed_at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_pay_reconciliation(&self, mchid: &str, bill_date: &str, claimed_at: i64) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM pay_reconciliations WHERE mchid = $1 AND bill_date = $2 AND claimed_at = $3 AND status = 'running'")
                    .bind(mchid)
                    .bind(bill_date)
                    .bind(claimed_at)
                    .execute(&self.pool)
                    .await?;
                // A forced run of a finished report that failed: the report stays.
                sqlx::query("UPDATE pay_reconciliations SET claimed_at = created_at WHERE mchid = $1 AND bill_date = $2 AND claimed_at = $3")
                    .bind(mchid)
                    .bind(bill_date)
                    .bind(claimed_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn pay_reconciliations(&self, mchid: &str, limit: i64) -> Result<Vec<ReconciliationRecord>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_reconciliations WHERE mchid = $1 AND status <> 'running' ORDER BY bill_date DESC LIMIT $2",
                    pay_admin::RECONCILIATION_COLUMNS
                );
                let rows = sqlx::query(&sql).bind(mchid).bind(limit).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(pay_admin::reconciliation_from).collect::<Result<_, _>>()?)
            }

            async fn pay_reconciliation(&self, mchid: &str, bill_date: &str) -> Result<Option<ReconciliationRecord>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_reconciliations WHERE mchid = $1 AND bill_date = $2 AND status <> 'running'",
                    pay_admin::RECONCILIATION_COLUMNS
                );
                let row = sqlx::query(&sql).bind(mchid).bind(bill_date).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| pay_admin::reconciliation_from(&r)).transpose()?)
            }

            async fn pay_orders_paid_on(&self, mchid: &str, day_prefix: &str) -> Result<Vec<PayOrderRecord>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_orders WHERE mchid = $1 AND success_time LIKE $2 ORDER BY out_trade_no",
                    payments::ORDER_COLUMNS
                );
                let rows = sqlx::query(&sql).bind(mchid).bind(format!("{day_prefix}%")).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(payments::order_from).collect::<Result<_, _>>()?)
            }

            async fn pay_refunds_done_on(&self, mchid: &str, day_prefix: &str) -> Result<Vec<LedgerRefund>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_refunds WHERE mchid = $1 AND success_time LIKE $2 ORDER BY out_refund_no",
                    pay_admin::REFUND_COLUMNS
                );
                let rows = sqlx::query(&sql).bind(mchid).bind(format!("{day_prefix}%")).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(pay_admin::refund_from).collect::<Result<_, _>>()?)
            }

            async fn ledger_refund(&self, mchid: &str, out_refund_no: &str) -> Result<Option<LedgerRefund>, StoreError> {
                let sql = format!("SELECT {} FROM pay_refunds WHERE mchid = $1 AND out_refund_no = $2", pay_admin::REFUND_COLUMNS);
                let row = sqlx::query(&sql).bind(mchid).bind(out_refund_no).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| pay_admin::refund_from(&r)).transpose()?)
            }
        }
    };
}

pub(super) use impl_pay_admin;
