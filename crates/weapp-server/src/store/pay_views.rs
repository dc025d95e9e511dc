//! What the admin console reads of the payments tables: orders, refunds and the notification
//! inbox, filtered and paged newest first. Read-only: nothing here changes a row, and nothing
//! here reads a merchant's keys (the tables hold none).
//!
//! Paging is by keyset (the last row's sort key), not by offset: a page stays right while
//! notifications and orders keep arriving, and a deep page costs what the first one does.

use async_trait::async_trait;

use super::{PayOrderRecord, StoreError};

/// Which orders: every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct PayOrderFilter {
    /// The merchant.
    pub mchid: Option<String>,
    /// The app the order was placed for.
    pub appid: Option<String>,
    /// The order's state (`NOTPAY`, `SUCCESS`, `CLOSED`, …).
    pub state: Option<String>,
}

/// Which refunds: every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct PayRefundFilter {
    /// The merchant.
    pub mchid: Option<String>,
    /// The refunded order.
    pub out_trade_no: Option<String>,
    /// The refund's status (`PENDING`, `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`).
    pub status: Option<String>,
}

/// Which inbox rows: every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct PayNotificationFilter {
    /// The merchant.
    pub mchid: Option<String>,
    /// The outcome (`applied`, `mismatch`, …); [`PENDING_OUTCOME`] for rows not applied yet.
    pub outcome: Option<String>,
}

/// The outcome filter naming inbox rows stored but not applied yet (their outcome is null).
pub const PENDING_OUTCOME: &str = "pending";

/// Where a page of orders or refunds starts: after the row with this sort key (newest first:
/// `created_at`, then the merchant, then the merchant's number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayCursor {
    /// Unix ms of the last row shown.
    pub created_at: i64,
    /// Its merchant.
    pub mchid: String,
    /// Its `out_trade_no` (orders) or `out_refund_no` (refunds).
    pub no: String,
}

/// A refund as `pay_refunds` keeps it (the refunds' own logic lives with the payments domain;
/// this is what an administrator sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayRefundView {
    /// The merchant.
    pub mchid: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The refunded order.
    pub out_trade_no: String,
    /// The app of the order.
    pub appid: String,
    /// Fen refunded.
    pub amount: i64,
    /// Why (shown to the payer).
    pub reason: Option<String>,
    /// `PENDING` (stored, WeChat not asked yet), `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub status: String,
    /// WeChat's refund id, once known.
    pub refund_id: Option<String>,
    /// WeChat's `success_time`, once refunded.
    pub success_time: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// An inbox row without its payload (the list's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayNotificationView {
    /// The inbox id (increasing).
    pub id: i64,
    /// The merchant it was sent for.
    pub mchid: String,
    /// WeChat's notification id.
    pub notification_id: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, …
    pub event_type: String,
    /// The `out_trade_no` or `out_refund_no` it is about.
    pub business_no: Option<String>,
    /// The `Wechatpay-Serial` that verified it.
    pub serial: String,
    /// Copies received (WeChat's retries and duplicates; 1 for the first).
    pub deliveries: i64,
    /// `applied`, `no_change`, `mismatch`, `unknown_order`, `deferred`, `ignored`; `None`
    /// while not applied.
    pub outcome: Option<String>,
    /// Unix ms of the first copy.
    pub received_at: i64,
    /// Unix ms it was applied.
    pub applied_at: Option<i64>,
}

/// Reads of the payments tables for the admin console (the admin domain).
#[async_trait]
pub trait PayViewStore: Send + Sync {
    /// Orders matching `filter`, newest first (`created_at`, mchid, out_trade_no descending),
    /// starting after `after`; at most `limit`.
    async fn pay_orders_page(
        &self,
        filter: &PayOrderFilter,
        after: Option<&PayCursor>,
        limit: i64,
    ) -> Result<Vec<PayOrderRecord>, StoreError>;

    /// Refunds matching `filter`, newest first, starting after `after`; at most `limit`.
    async fn pay_refunds_page(
        &self,
        filter: &PayRefundFilter,
        after: Option<&PayCursor>,
        limit: i64,
    ) -> Result<Vec<PayRefundView>, StoreError>;

    /// Inbox rows matching `filter`, newest first (by id), with ids below `before` (`None`:
    /// from the newest); at most `limit`.
    async fn pay_notifications_page(
        &self,
        filter: &PayNotificationFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PayNotificationView>, StoreError>;

    /// One inbox row and its decrypted resource (JSON text), if stored.
    async fn pay_notification_detail(
        &self,
        id: i64,
    ) -> Result<Option<(PayNotificationView, String)>, StoreError>;
}
