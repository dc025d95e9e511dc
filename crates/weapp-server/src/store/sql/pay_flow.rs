//! The query fallback's schedule and refunds. The statements are the same for SQLite and
//! PostgreSQL; the macro is expanded once per backend in `super`.
//!
//! Two guards carry the promises: a query is claimed by moving `next_query_at` from the value
//! read (`… WHERE next_query_at = $seen`: one instance wins), and a refund's amount is
//! reserved by one conditional update of its order (`refund_reserved + amount <= amount`).

/// The columns of `pay_refunds`, in [`refund_from`]'s order.
pub(super) const REFUND_COLUMNS: &str =
    "mchid, out_refund_no, out_trade_no, appid, amount, reason, status, refund_id, success_time, \
     next_query_at, created_at, updated_at";

/// `impl PayFlowStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_pay_flow {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl PayFlowStore for $name {
            async fn due_pay_orders(&self, now: i64, limit: i64) -> Result<Vec<PayOrderRecord>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_orders WHERE next_query_at IS NOT NULL AND next_query_at <= $1 \
                     ORDER BY next_query_at LIMIT $2",
                    payments::ORDER_COLUMNS
                );
                let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(|r| payments::order_from(r)).collect::<Result<_, _>>()?)
            }

            async fn claim_pay_order_query(&self, mchid: &str, out_trade_no: &str, seen: i64, next: i64) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "UPDATE pay_orders SET next_query_at = $1, query_attempts = query_attempts + 1 \
                     WHERE mchid = $2 AND out_trade_no = $3 AND next_query_at = $4",
                )
                .bind(next)
                .bind(mchid)
                .bind(out_trade_no)
                .bind(seen)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn insert_pay_refund(&self, f: &PayRefundRecord) -> Result<PayRefundInsert, StoreError> {
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO pay_refunds (mchid, out_refund_no, out_trade_no, appid, amount, reason, status, next_query_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (mchid, out_refund_no) DO NOTHING",
                )
                .bind(&f.mchid)
                .bind(&f.out_refund_no)
                .bind(&f.out_trade_no)
                .bind(&f.appid)
                .bind(f.amount)
                .bind(&f.reason)
                .bind(&f.status)
                .bind(f.next_query_at)
                .bind(f.created_at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !inserted {
                    drop(tx);
                    return Ok(match self.pay_refund(&f.mchid, &f.out_refund_no).await? {
                        Some(r) => PayRefundInsert::Exists(r),
                        None => PayRefundInsert::NoOrder,
                    });
                }
                let reserved = sqlx::query(
                    "UPDATE pay_orders SET refund_reserved = refund_reserved + $1, updated_at = $2 \
                     WHERE mchid = $3 AND out_trade_no = $4 AND state IN ('SUCCESS', 'REFUND') \
                     AND refund_reserved + $1 <= amount",
                )
                .bind(f.amount)
                .bind(f.created_at)
                .bind(&f.mchid)
                .bind(&f.out_trade_no)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !reserved {
                    tx.rollback().await?;
                    return Ok(match self.pay_order(&f.mchid, &f.out_trade_no).await? {
                        None => PayRefundInsert::NoOrder,
                        Some(o) if matches!(o.state.as_str(), "SUCCESS" | "REFUND") => {
                            PayRefundInsert::Exceeds { left: o.amount - o.refund_reserved }
                        }
                        Some(o) => PayRefundInsert::NotPaid(o.state),
                    });
                }
                tx.commit().await?;
                Ok(PayRefundInsert::Stored(
                    self.pay_refund(&f.mchid, &f.out_refund_no)
                        .await?
                        .ok_or_else(|| StoreError(sqlx::Error::RowNotFound))?,
                ))
            }

            async fn pay_refund(&self, mchid: &str, out_refund_no: &str) -> Result<Option<PayRefundRecord>, StoreError> {
                let sql = format!("SELECT {} FROM pay_refunds WHERE mchid = $1 AND out_refund_no = $2", pay_flow::REFUND_COLUMNS);
                let row = sqlx::query(&sql).bind(mchid).bind(out_refund_no).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| pay_flow::refund_from(&r)).transpose()?)
            }

            async fn forget_refused_pay_refund(&self, mchid: &str, out_refund_no: &str) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(
                    "DELETE FROM pay_refunds WHERE mchid = $1 AND out_refund_no = $2 AND status = 'PENDING' \
                     RETURNING out_trade_no, amount",
                )
                .bind(mchid)
                .bind(out_refund_no)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(false);
                };
                let out_trade_no: String = row.try_get("out_trade_no")?;
                let amount: i64 = row.try_get("amount")?;
                sqlx::query("UPDATE pay_orders SET refund_reserved = refund_reserved - $1 WHERE mchid = $2 AND out_trade_no = $3")
                    .bind(amount)
                    .bind(mchid)
                    .bind(&out_trade_no)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn set_pay_refund_processing(&self, mchid: &str, out_refund_no: &str, refund_id: &str, next_query_at: i64, now: i64) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "UPDATE pay_refunds SET status = 'PROCESSING', refund_id = $1, next_query_at = $2, updated_at = $3 \
                     WHERE mchid = $4 AND out_refund_no = $5 AND status = 'PENDING'",
                )
                .bind(refund_id)
                .bind(next_query_at)
                .bind(now)
                .bind(mchid)
                .bind(out_refund_no)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn apply_pay_refund(&self, c: &PayRefundChange<'_>, now: i64) -> Result<PayApplied, StoreError> {
                let mut tx = self.pool.begin().await?;
                let guard: Vec<String> = (0..c.unless.len()).map(|i| format!("${}", i + 7)).collect();
                let sql = format!(
                    "UPDATE pay_refunds SET status = $1, refund_id = COALESCE($2, refund_id), \
                     success_time = COALESCE($3, success_time), next_query_at = NULL, updated_at = $4 \
                     WHERE mchid = $5 AND out_refund_no = $6{} RETURNING out_trade_no",
                    if guard.is_empty() { String::new() } else { format!(" AND status NOT IN ({})", guard.join(", ")) }
                );
                let mut q = sqlx::query(&sql)
                    .bind(c.to)
                    .bind(c.refund_id)
                    .bind(c.success_time)
                    .bind(now)
                    .bind(c.mchid)
                    .bind(c.out_refund_no);
                for s in c.unless {
                    q = q.bind(*s);
                }
                let row = q.fetch_optional(&mut *tx).await?;
                let changed = row.is_some();
                let mut appended = None;
                if let Some(row) = row {
                    let out_trade_no: String = row.try_get("out_trade_no")?;
                    sqlx::query(
                        "UPDATE pay_orders SET refunded = refunded + $1, refund_reserved = refund_reserved - $2, \
                         state = CASE WHEN $1 > 0 THEN 'REFUND' ELSE state END, updated_at = $3 \
                         WHERE mchid = $4 AND out_trade_no = $5",
                    )
                    .bind(c.refunded)
                    .bind(c.release)
                    .bind(now)
                    .bind(c.mchid)
                    .bind(&out_trade_no)
                    .execute(&mut *tx)
                    .await?;
                    if let Some(e) = &c.event {
                        let row = sqlx::query(
                            "INSERT INTO push_events (appid, dedup_key, kind, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (appid, dedup_key) DO NOTHING RETURNING id",
                        )
                        .bind(e.appid)
                        .bind(e.dedup_key)
                        .bind(e.kind)
                        .bind(e.payload)
                        .bind(now)
                        .bind(e.next_attempt_at)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(r) = row {
                            appended = Some(r.try_get("id")?);
                        }
                    }
                }
                if let Some((inbox_id, outcome)) = c.inbox {
                    sqlx::query(
                        "UPDATE pay_notifications SET outcome = $1, applied_at = $2 \
                         WHERE id = $3 AND (outcome IS NULL OR outcome = 'deferred')",
                    )
                    .bind(if changed { outcome } else { "no_change" })
                    .bind(now)
                    .bind(inbox_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(PayApplied { changed, event: appended, alert: None })
            }

            async fn due_pay_refunds(&self, now: i64, limit: i64) -> Result<Vec<PayRefundRecord>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_refunds WHERE next_query_at IS NOT NULL AND next_query_at <= $1 \
                     ORDER BY next_query_at LIMIT $2",
                    pay_flow::REFUND_COLUMNS
                );
                let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(|r| pay_flow::refund_from(r)).collect::<Result<_, _>>()?)
            }

            async fn claim_pay_refund_query(&self, mchid: &str, out_refund_no: &str, seen: i64, next: i64) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "UPDATE pay_refunds SET next_query_at = $1, query_attempts = query_attempts + 1 \
                     WHERE mchid = $2 AND out_refund_no = $3 AND next_query_at = $4",
                )
                .bind(next)
                .bind(mchid)
                .bind(out_refund_no)
                .bind(seen)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(super) use impl_pay_flow;

/// A refund from a row of [`REFUND_COLUMNS`].
pub(super) fn refund_from<R: sqlx::Row>(row: &R) -> Result<super::PayRefundRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::PayRefundRecord {
        mchid: row.try_get("mchid")?,
        out_refund_no: row.try_get("out_refund_no")?,
        out_trade_no: row.try_get("out_trade_no")?,
        appid: row.try_get("appid")?,
        amount: row.try_get("amount")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        refund_id: row.try_get("refund_id")?,
        success_time: row.try_get("success_time")?,
        next_query_at: row.try_get("next_query_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
