//! Payments: orders and the notification inbox. The statements are the same for SQLite and
//! PostgreSQL; the macro is expanded once per backend in `super`.
//!
//! Exactly-once rests on three guards the database enforces: the inbox is unique by
//! (mchid, notification id); an order's state changes only by an `UPDATE … WHERE state NOT IN
//! (…)` (two instances applying copies at once: one updates, the other finds nothing to do);
//! and the event is appended in the same transaction as the change, unique by its dedup key.

/// The columns of `pay_orders`, in [`order_from`]'s order.
pub(super) const ORDER_COLUMNS: &str =
    "mchid, out_trade_no, appid, description, amount, openid, attach, time_expire, state, \
     prepay_id, transaction_id, success_time, paid_at, refunded, created_at, updated_at, \
     prepay_at, next_query_at, refund_reserved, paid_from";

/// `impl PayStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_payments {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl PayStore for $name {
            async fn insert_pay_order(&self, o: &PayOrderRecord) -> Result<(PayOrderRecord, bool), StoreError> {
                let r = sqlx::query(
                    "INSERT INTO pay_orders (mchid, out_trade_no, appid, description, amount, openid, attach, time_expire, state, created_at, updated_at, next_query_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) ON CONFLICT (mchid, out_trade_no) DO NOTHING",
                )
                .bind(&o.mchid)
                .bind(&o.out_trade_no)
                .bind(&o.appid)
                .bind(&o.description)
                .bind(o.amount)
                .bind(&o.openid)
                .bind(&o.attach)
                .bind(&o.time_expire)
                .bind(&o.state)
                .bind(o.created_at)
                .bind(o.next_query_at)
                .execute(&self.pool)
                .await?;
                let stored = self
                    .pay_order(&o.mchid, &o.out_trade_no)
                    .await?
                    .ok_or_else(|| StoreError(sqlx::Error::RowNotFound))?;
                Ok((stored, r.rows_affected() == 1))
            }

            async fn pay_order(&self, mchid: &str, out_trade_no: &str) -> Result<Option<PayOrderRecord>, StoreError> {
                let sql = format!("SELECT {} FROM pay_orders WHERE mchid = $1 AND out_trade_no = $2", payments::ORDER_COLUMNS);
                let row = sqlx::query(&sql).bind(mchid).bind(out_trade_no).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| payments::order_from(&r)).transpose()?)
            }

            async fn set_pay_prepay(&self, mchid: &str, out_trade_no: &str, prepay_id: &str, now: i64, renew_before: i64) -> Result<Option<PayOrderRecord>, StoreError> {
                // Every SET expression reads the row as it was: the time moves only with a new id.
                sqlx::query(
                    "UPDATE pay_orders SET \
                     prepay_at = CASE WHEN prepay_id IS NULL OR (prepay_id <> $1 AND COALESCE(prepay_at, 0) < $5) THEN $2 ELSE prepay_at END, \
                     prepay_id = CASE WHEN prepay_id IS NULL OR COALESCE(prepay_at, 0) < $5 THEN $1 ELSE prepay_id END, \
                     state = CASE WHEN state = 'PENDING' THEN 'NOTPAY' ELSE state END, updated_at = $2 \
                     WHERE mchid = $3 AND out_trade_no = $4",
                )
                .bind(prepay_id)
                .bind(now)
                .bind(mchid)
                .bind(out_trade_no)
                .bind(renew_before)
                .execute(&self.pool)
                .await?;
                self.pay_order(mchid, out_trade_no).await
            }

            async fn forget_refused_pay_order(&self, mchid: &str, out_trade_no: &str) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "DELETE FROM pay_orders WHERE mchid = $1 AND out_trade_no = $2 \
                     AND state = 'PENDING' AND prepay_id IS NULL",
                )
                .bind(mchid)
                .bind(out_trade_no)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn close_pay_order(&self, mchid: &str, out_trade_no: &str, now: i64) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "UPDATE pay_orders SET state = 'CLOSED', next_query_at = NULL, updated_at = $1 \
                     WHERE mchid = $2 AND out_trade_no = $3 AND state IN ('PENDING', 'NOTPAY')",
                )
                .bind(now)
                .bind(mchid)
                .bind(out_trade_no)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn insert_pay_notification(&self, n: &PayNotificationRecord) -> Result<(i64, Option<String>, bool), StoreError> {
                let row = sqlx::query(
                    "INSERT INTO pay_notifications (mchid, notification_id, event_type, business_no, serial, envelope, resource, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (mchid, notification_id) DO NOTHING RETURNING id",
                )
                .bind(&n.mchid)
                .bind(&n.notification_id)
                .bind(&n.event_type)
                .bind(&n.business_no)
                .bind(&n.serial)
                .bind(&n.envelope)
                .bind(&n.resource)
                .bind(n.received_at)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(r) = row {
                    return Ok((r.try_get("id")?, None, true));
                }
                let r = sqlx::query(
                    "UPDATE pay_notifications SET deliveries = deliveries + 1 WHERE mchid = $1 AND notification_id = $2 RETURNING id, outcome",
                )
                .bind(&n.mchid)
                .bind(&n.notification_id)
                .fetch_one(&self.pool)
                .await?;
                Ok((r.try_get("id")?, r.try_get("outcome")?, false))
            }

            async fn apply_pay_notification(
                &self,
                inbox_id: Option<i64>,
                outcome: &str,
                transition: Option<&PayTransition<'_>>,
                event: Option<&NewEvent<'_>>,
                now: i64,
            ) -> Result<PayApplied, StoreError> {
                let mut tx = self.pool.begin().await?;
                // The write comes first: SQLite takes its write lock at once (no read-then-write
                // upgrade to fail), PostgreSQL locks the order's row.
                let (changed, from) = match transition {
                    Some(t) => {
                        let guard: Vec<String> = (0..t.unless.len()).map(|i| format!("${}", i + 8)).collect();
                        // `paid_from = state` reads the state before the change: RETURNING says
                        // whence the order came, atomically.
                        let sql = format!(
                            "UPDATE pay_orders SET state = $1, transaction_id = COALESCE($2, transaction_id), \
                             success_time = COALESCE($3, success_time), paid_at = COALESCE($4, paid_at), updated_at = $5, \
                             paid_from = state, next_query_at = NULL \
                             WHERE mchid = $6 AND out_trade_no = $7{} RETURNING paid_from",
                            if guard.is_empty() { String::new() } else { format!(" AND state NOT IN ({})", guard.join(", ")) }
                        );
                        let mut q = sqlx::query(&sql)
                            .bind(t.to)
                            .bind(t.transaction_id)
                            .bind(t.success_time)
                            .bind(t.paid_at)
                            .bind(now)
                            .bind(t.mchid)
                            .bind(t.out_trade_no);
                        for s in t.unless {
                            q = q.bind(*s);
                        }
                        match q.fetch_optional(&mut *tx).await? {
                            Some(r) => (true, r.try_get::<Option<String>, _>("paid_from")?),
                            None => (false, None),
                        }
                    }
                    None => (false, None),
                };
                let mut appended = None;
                if let Some(e) = event.filter(|_| changed || transition.is_none()) {
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
                let mut alert = None;
                if let Some((state, e)) = transition.and_then(|t| t.alert.as_ref()) {
                    if changed && from.as_deref() == Some(*state) {
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
                            alert = Some(r.try_get("id")?);
                        }
                    }
                }
                let outcome = if transition.is_some() && !changed { "no_change" } else { outcome };
                if let Some(inbox_id) = inbox_id {
                    sqlx::query(
                        "UPDATE pay_notifications SET outcome = $1, applied_at = $2 \
                         WHERE id = $3 AND (outcome IS NULL OR outcome = 'deferred')",
                    )
                    .bind(outcome)
                    .bind(now)
                    .bind(inbox_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(PayApplied { changed, event: appended, alert })
            }

            async fn unapplied_pay_notifications(&self, before: i64, deferred_before: i64, limit: i64) -> Result<Vec<(i64, PayNotificationRecord)>, StoreError> {
                let mut rows = sqlx::query(
                    "SELECT id, mchid, notification_id, event_type, business_no, serial, envelope, resource, received_at \
                     FROM pay_notifications WHERE outcome IS NULL AND received_at < $1 ORDER BY id LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                // Rows kept `deferred` (a refund before its payment, or by a version that did
                // not act on refunds) are tried again, each at most once per period.
                rows.extend(
                    sqlx::query(
                        "SELECT id, mchid, notification_id, event_type, business_no, serial, envelope, resource, received_at \
                         FROM pay_notifications WHERE outcome = 'deferred' AND COALESCE(applied_at, 0) < $1 ORDER BY id LIMIT $2",
                    )
                    .bind(deferred_before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                );
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get("id")?,
                            PayNotificationRecord {
                                mchid: r.try_get("mchid")?,
                                notification_id: r.try_get("notification_id")?,
                                event_type: r.try_get("event_type")?,
                                business_no: r.try_get("business_no")?,
                                serial: r.try_get("serial")?,
                                envelope: r.try_get("envelope")?,
                                resource: r.try_get("resource")?,
                                received_at: r.try_get("received_at")?,
                            },
                        ))
                    })
                    .collect()
            }

            async fn pay_notification_outcome(&self, mchid: &str, notification_id: &str) -> Result<Option<Option<String>>, StoreError> {
                let row = sqlx::query("SELECT outcome FROM pay_notifications WHERE mchid = $1 AND notification_id = $2")
                    .bind(mchid)
                    .bind(notification_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get("outcome")).transpose()?)
            }
        }
    };
}
pub(super) use impl_payments;

/// An order from a row of [`ORDER_COLUMNS`].
pub(super) fn order_from<R: sqlx::Row>(row: &R) -> Result<super::PayOrderRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::PayOrderRecord {
        mchid: row.try_get("mchid")?,
        out_trade_no: row.try_get("out_trade_no")?,
        appid: row.try_get("appid")?,
        description: row.try_get("description")?,
        amount: row.try_get("amount")?,
        openid: row.try_get("openid")?,
        attach: row.try_get("attach")?,
        time_expire: row.try_get("time_expire")?,
        state: row.try_get("state")?,
        prepay_id: row.try_get("prepay_id")?,
        transaction_id: row.try_get("transaction_id")?,
        success_time: row.try_get("success_time")?,
        paid_at: row.try_get("paid_at")?,
        refunded: row.try_get("refunded")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        prepay_at: row.try_get("prepay_at")?,
        next_query_at: row.try_get("next_query_at")?,
        refund_reserved: row.try_get("refund_reserved")?,
        paid_from: row.try_get("paid_from")?,
    })
}
