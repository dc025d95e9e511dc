//! The admin console's reads of the payments tables (orders, refunds, the notification
//! inbox): filtered, newest first, paged by keyset. The statements are the same for SQLite and
//! PostgreSQL; the macro is expanded once per backend in `super`.
//!
//! Every filter is bound, absent or not (`$n IS NULL OR column = $n`), so there is one
//! statement per list whatever the filters; the keyset is a row comparison, which both
//! databases order as `ORDER BY` does.

/// The columns of `pay_refunds` shown to administrators, in [`refund_from`]'s order.
pub(super) const REFUND_COLUMNS: &str =
    "mchid, out_refund_no, out_trade_no, appid, amount, reason, status, refund_id, success_time, \
     created_at, updated_at";

/// The columns of `pay_notifications` shown in a list (never the envelope; the resource only
/// in the detail). `deliveries` is INTEGER: read as BIGINT on both databases.
pub(super) const NOTIFICATION_COLUMNS: &str =
    "id, mchid, notification_id, event_type, business_no, serial, \
     CAST(deliveries AS BIGINT) AS deliveries, outcome, received_at, applied_at";

/// `impl PayViewStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_pay_views {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl PayViewStore for $name {
            async fn pay_orders_page(
                &self,
                filter: &PayOrderFilter,
                after: Option<&PayCursor>,
                limit: i64,
            ) -> Result<Vec<PayOrderRecord>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_orders \
                     WHERE ($1 IS NULL OR mchid = $1) AND ($2 IS NULL OR appid = $2) AND ($3 IS NULL OR state = $3) \
                     AND ($4 IS NULL OR (created_at, mchid, out_trade_no) < ($4, $5, $6)) \
                     ORDER BY created_at DESC, mchid DESC, out_trade_no DESC LIMIT $7",
                    payments::ORDER_COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(filter.mchid.as_deref())
                    .bind(filter.appid.as_deref())
                    .bind(filter.state.as_deref())
                    .bind(after.map(|c| c.created_at))
                    .bind(after.map(|c| c.mchid.as_str()))
                    .bind(after.map(|c| c.no.as_str()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(payments::order_from).collect::<Result<_, _>>()?)
            }

            async fn pay_refunds_page(
                &self,
                filter: &PayRefundFilter,
                after: Option<&PayCursor>,
                limit: i64,
            ) -> Result<Vec<PayRefundView>, StoreError> {
                let sql = format!(
                    "SELECT {} FROM pay_refunds \
                     WHERE ($1 IS NULL OR mchid = $1) AND ($2 IS NULL OR out_trade_no = $2) AND ($3 IS NULL OR status = $3) \
                     AND ($4 IS NULL OR (created_at, mchid, out_refund_no) < ($4, $5, $6)) \
                     ORDER BY created_at DESC, mchid DESC, out_refund_no DESC LIMIT $7",
                    pay_views::REFUND_COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(filter.mchid.as_deref())
                    .bind(filter.out_trade_no.as_deref())
                    .bind(filter.status.as_deref())
                    .bind(after.map(|c| c.created_at))
                    .bind(after.map(|c| c.mchid.as_str()))
                    .bind(after.map(|c| c.no.as_str()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(pay_views::refund_from).collect::<Result<_, _>>()?)
            }

            async fn pay_notifications_page(
                &self,
                filter: &PayNotificationFilter,
                before: Option<i64>,
                limit: i64,
            ) -> Result<Vec<PayNotificationView>, StoreError> {
                // `pending`: stored, not applied (outcome null).
                let pending = filter.outcome.as_deref() == Some(PENDING_OUTCOME);
                let outcome = filter.outcome.as_deref().filter(|_| !pending);
                let sql = format!(
                    "SELECT {} FROM pay_notifications \
                     WHERE ($1 IS NULL OR mchid = $1) AND ($2 IS NULL OR outcome = $2) AND ($3 = 0 OR outcome IS NULL) \
                     AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5",
                    pay_views::NOTIFICATION_COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(filter.mchid.as_deref())
                    .bind(outcome)
                    .bind(i64::from(pending))
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(pay_views::notification_from).collect::<Result<_, _>>()?)
            }

            async fn pay_notification_detail(
                &self,
                id: i64,
            ) -> Result<Option<(PayNotificationView, String)>, StoreError> {
                let sql = format!(
                    "SELECT {}, resource FROM pay_notifications WHERE id = $1",
                    pay_views::NOTIFICATION_COLUMNS
                );
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                Ok(row
                    .map(|r| -> Result<_, sqlx::Error> {
                        Ok((pay_views::notification_from(&r)?, r.try_get("resource")?))
                    })
                    .transpose()?)
            }
        }
    };
}
pub(super) use impl_pay_views;

/// A refund from a row of [`REFUND_COLUMNS`].
pub(super) fn refund_from<R: sqlx::Row>(row: &R) -> Result<super::PayRefundView, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::PayRefundView {
        mchid: row.try_get("mchid")?,
        out_refund_no: row.try_get("out_refund_no")?,
        out_trade_no: row.try_get("out_trade_no")?,
        appid: row.try_get("appid")?,
        amount: row.try_get("amount")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        refund_id: row.try_get("refund_id")?,
        success_time: row.try_get("success_time")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// An inbox row from a row of [`NOTIFICATION_COLUMNS`].
pub(super) fn notification_from<R: sqlx::Row>(
    row: &R,
) -> Result<super::PayNotificationView, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::PayNotificationView {
        id: row.try_get("id")?,
        mchid: row.try_get("mchid")?,
        notification_id: row.try_get("notification_id")?,
        event_type: row.try_get("event_type")?,
        business_no: row.try_get("business_no")?,
        serial: row.try_get("serial")?,
        deliveries: row.try_get("deliveries")?,
        outcome: row.try_get("outcome")?,
        received_at: row.try_get("received_at")?,
        applied_at: row.try_get("applied_at")?,
    })
}
