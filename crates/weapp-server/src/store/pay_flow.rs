//! The payments domain's second set of queries: the query fallback's schedule (orders and
//! refunds due, claimed by a conditional update so two instances never query the same one at
//! once) and refunds (stored with their reservation on the order, changed once).

use async_trait::async_trait;

use super::{NewEvent, PayApplied, PayOrderRecord, StoreError};

/// A refund asked through the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayRefundRecord {
    /// The merchant.
    pub mchid: String,
    /// The merchant's refund number (unique per merchant).
    pub out_refund_no: String,
    /// The order refunded.
    pub out_trade_no: String,
    /// The order's app.
    pub appid: String,
    /// Fen refunded.
    pub amount: i64,
    /// Shown to the user.
    pub reason: Option<String>,
    /// `PENDING` (stored, WeChat's answer not known yet), `PROCESSING`, `SUCCESS`, `CLOSED`,
    /// `ABNORMAL`.
    pub status: String,
    /// WeChat's refund id, once known.
    pub refund_id: Option<String>,
    /// WeChat's `success_time` (RFC 3339).
    pub success_time: Option<String>,
    /// When the refund query fallback next asks WeChat (none once final).
    pub next_query_at: Option<i64>,
    /// Unix ms (the payments clock).
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// What storing a refund came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayRefundInsert {
    /// Stored, its amount reserved on the order.
    Stored(PayRefundRecord),
    /// A refund with this number exists (nothing changed): it.
    Exists(PayRefundRecord),
    /// The order has less left than asked (nothing stored): what is left.
    Exceeds {
        /// Fen not yet promised to a refund.
        left: i64,
    },
    /// The order is not paid here (nothing stored): its state.
    NotPaid(String),
    /// No such order.
    NoOrder,
}

/// A refund's status change, guarded, with what it does to its order, its event and the inbox
/// row that brought it.
#[derive(Debug, Clone)]
pub struct PayRefundChange<'a> {
    /// The merchant.
    pub mchid: &'a str,
    /// The refund.
    pub out_refund_no: &'a str,
    /// Statuses the refund must not be in.
    pub unless: &'a [&'a str],
    /// The new status.
    pub to: &'a str,
    /// WeChat's refund id.
    pub refund_id: Option<&'a str>,
    /// WeChat's `success_time`.
    pub success_time: Option<&'a str>,
    /// Fen added to the order's `refunded` (its state becomes `REFUND`) when the refund changed.
    pub refunded: i64,
    /// Fen released from the order's reservation when the refund changed.
    pub release: i64,
    /// The event appended when the refund changed.
    pub event: Option<NewEvent<'a>>,
    /// The inbox row and the outcome written to it (`no_change` when the guard failed).
    pub inbox: Option<(i64, &'a str)>,
}

/// The query fallback's schedule and refunds (the payments domain).
#[async_trait]
pub trait PayFlowStore: Send + Sync {
    /// Orders whose next query is due at `now`, earliest first.
    async fn due_pay_orders(&self, now: i64, limit: i64)
        -> Result<Vec<PayOrderRecord>, StoreError>;

    /// Claims an order's query: moves its `next_query_at` from `seen` to `next` (and counts the
    /// attempt) only if it is still `seen`; whether this caller won.
    async fn claim_pay_order_query(
        &self,
        mchid: &str,
        out_trade_no: &str,
        seen: i64,
        next: i64,
    ) -> Result<bool, StoreError>;

    /// Stores a refund (`PENDING`) and reserves its amount on its paid order, in one
    /// transaction: the reservation is one conditional update (`refund_reserved + amount <=
    /// amount`), so refunds racing on any number of instances never promise more than paid.
    async fn insert_pay_refund(
        &self,
        refund: &PayRefundRecord,
    ) -> Result<PayRefundInsert, StoreError>;

    /// The refund (mchid, out_refund_no), if stored.
    async fn pay_refund(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> Result<Option<PayRefundRecord>, StoreError>;

    /// Forgets a refund WeChat definitely refused (still `PENDING`) and releases its
    /// reservation; whether it went.
    async fn forget_refused_pay_refund(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> Result<bool, StoreError>;

    /// `PENDING` → `PROCESSING` with WeChat's refund id, next queried at `next_query_at`;
    /// whether it changed.
    async fn set_pay_refund_processing(
        &self,
        mchid: &str,
        out_refund_no: &str,
        refund_id: &str,
        next_query_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// In one transaction: the refund's guarded change (no further queries), its order's
    /// `refunded`/reservation and its event when it changed, and the inbox row's outcome.
    async fn apply_pay_refund(
        &self,
        change: &PayRefundChange<'_>,
        now: i64,
    ) -> Result<PayApplied, StoreError>;

    /// Refunds whose next query is due at `now`, earliest first.
    async fn due_pay_refunds(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PayRefundRecord>, StoreError>;

    /// Claims a refund's query as [`PayFlowStore::claim_pay_order_query`] does an order's.
    async fn claim_pay_refund_query(
        &self,
        mchid: &str,
        out_refund_no: &str,
        seen: i64,
        next: i64,
    ) -> Result<bool, StoreError>;
}
