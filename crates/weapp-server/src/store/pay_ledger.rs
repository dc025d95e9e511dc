//! [`PayLedgerStore`]: merchants added at runtime through the admin API (table
//! `pay_merchants`, their apps in `pay_merchant_apps`) and the daily reconciliation reports
//! (`pay_reconciliations`), with the reads of orders and refunds a reconciliation compares.

use async_trait::async_trait;

use super::{AuditRecord, PayOrderRecord, StoreError};

/// A merchant added through the admin API, as stored. `Debug` leaves the sealed secrets out.
#[derive(Clone, PartialEq, Eq)]
pub struct PayMerchantRecord {
    /// The merchant id.
    pub mchid: String,
    /// The apps whose orders it takes (each in `pay_merchant_apps`, unique).
    pub appids: Vec<String>,
    /// Its settings in the clear (JSON: serial, public key, API host, notify URL…).
    pub settings: String,
    /// Its private key and APIv3 key (JSON) sealed with the data key, bound to the mchid, its
    /// apps and its settings as stored (SHA-256 in the associated data); base64.
    pub sealed_secrets: String,
    /// The data key that sealed them.
    pub key_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl std::fmt::Debug for PayMerchantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayMerchantRecord")
            .field("mchid", &self.mchid)
            .field("appids", &self.appids)
            .field("key_id", &self.key_id)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// What writing a merchant came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantWrite {
    /// Written (with its audit row).
    Done,
    /// Creating: the mchid exists. Updating or deleting: it does not.
    MchidConflict,
    /// This appid is taken by the other merchant named: nothing written.
    AppTaken {
        /// The app.
        appid: String,
        /// The merchant that has it.
        mchid: String,
    },
}

/// A stored reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationRecord {
    /// The merchant.
    pub mchid: String,
    /// The Beijing day of the bill (`yyyy-MM-dd`).
    pub bill_date: String,
    /// `running` (claimed), `clean` or `discrepancies`.
    pub status: String,
    /// Rows of the bill (payments and refunds).
    pub bill_rows: i64,
    /// How many items differ.
    pub discrepancies: i64,
    /// The items (JSON array).
    pub report: String,
    /// Unix ms when the run was claimed.
    pub claimed_at: i64,
    /// Unix ms when the report was written.
    pub created_at: i64,
}

/// A refund as the reconciliation reads it (table `pay_refunds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRefund {
    /// The refund.
    pub out_refund_no: String,
    /// Its order.
    pub out_trade_no: String,
    /// The app of the order.
    pub appid: String,
    /// Fen.
    pub amount: i64,
    /// `PENDING`, `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub status: String,
    /// WeChat's refund id.
    pub refund_id: Option<String>,
    /// WeChat's `success_time`.
    pub success_time: Option<String>,
}

/// Runtime merchants and reconciliation reports (the payments and admin domains).
#[async_trait]
pub trait PayLedgerStore: Send + Sync {
    /// Every runtime merchant, by mchid.
    async fn pay_merchants(&self) -> Result<Vec<PayMerchantRecord>, StoreError>;

    /// One runtime merchant.
    async fn pay_merchant(&self, mchid: &str) -> Result<Option<PayMerchantRecord>, StoreError>;

    /// In one transaction: the merchant (created when `create`, else replacing the stored one),
    /// its apps, and the audit row. Nothing is written unless it is [`MerchantWrite::Done`].
    async fn put_pay_merchant(
        &self,
        merchant: &PayMerchantRecord,
        create: bool,
        audit: &AuditRecord,
    ) -> Result<MerchantWrite, StoreError>;

    /// Deletes a runtime merchant (its apps with it) and writes the audit row; whether it was
    /// there.
    async fn delete_pay_merchant(
        &self,
        mchid: &str,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// Claims the run of (mchid, bill_date): a new `running` row, or, with `force`, any row
    /// not `running` since `stale_before` (a finished report is run again; a running one whose
    /// instance died is taken over). Whether this caller won.
    async fn claim_pay_reconciliation(
        &self,
        mchid: &str,
        bill_date: &str,
        now: i64,
        stale_before: i64,
        force: bool,
    ) -> Result<bool, StoreError>;

    /// Writes the finished report over the claim `r.claimed_at`; whether it did (not when the
    /// claim was taken over by another run, or released, meanwhile: nothing is written).
    async fn finish_pay_reconciliation(&self, r: &ReconciliationRecord)
        -> Result<bool, StoreError>;

    /// Gives up a claim (a failed run): the row goes, and the next tick tries again.
    async fn release_pay_reconciliation(
        &self,
        mchid: &str,
        bill_date: &str,
        claimed_at: i64,
    ) -> Result<(), StoreError>;

    /// A merchant's reports, newest day first.
    async fn pay_reconciliations(
        &self,
        mchid: &str,
        limit: i64,
    ) -> Result<Vec<ReconciliationRecord>, StoreError>;

    /// One report.
    async fn pay_reconciliation(
        &self,
        mchid: &str,
        bill_date: &str,
    ) -> Result<Option<ReconciliationRecord>, StoreError>;

    /// Orders of `mchid` whose WeChat `success_time` starts with `day_prefix` (`yyyy-MM-dd`:
    /// paid that Beijing day; WeChat writes times in +08:00).
    async fn pay_orders_paid_on(
        &self,
        mchid: &str,
        day_prefix: &str,
    ) -> Result<Vec<PayOrderRecord>, StoreError>;

    /// Refunds of `mchid` whose `success_time` starts with `day_prefix`.
    async fn pay_refunds_done_on(
        &self,
        mchid: &str,
        day_prefix: &str,
    ) -> Result<Vec<LedgerRefund>, StoreError>;

    /// One refund, if stored.
    async fn ledger_refund(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> Result<Option<LedgerRefund>, StoreError>;
}
