//! Daily reconciliation (对账): a merchant's trade bill of one Beijing day (`ALL`), applied for
//! and downloaded through `weapp::pay` (its SHA1 checked by the SDK), parsed ([`super::bill`])
//! and compared with the orders and refunds stored here:
//!
//! - `missing_here`: in the bill, but unknown here or not paid (refunds: not stored here);
//! - `missing_there`: paid (refunded) that day here, absent from the bill;
//! - `amount_differs`: the bill's amount is not the stored one;
//! - `state_differs`: orders: the bill names another transaction id; refunds: the bill says
//!   the refund succeeded, here it has another status.
//!
//! Once per day for the fleet: a run claims its `(mchid, bill_date)` row first (a dead
//! instance's claim is taken over after [`STALE_CLAIM_MS`]). The report is stored, counted in
//! `/metrics`, and — only when something differs; a clean day is quiet — sent as one
//! `PAYMENT.RECONCILIATION` event per app of the merchant (the summary and that app's items;
//! an item of an app the merchant does not serve is in the administrator's report only; the
//! same findings for the same day are not sent twice). A run whose claim was taken over
//! while it ran (it looked dead) writes, counts and sends nothing: the report is the other
//! run's. A bill WeChat does not have (`NO_STATEMENT_EXIST`: a day without transactions) is
//! an empty bill.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use weapp::pay::{PayError, PayTime, TradeBillRequest, TradeBillType};

use super::bill::{parse_trade_bill, BillError, BillRow};
use super::service::{MerchantRuntime, Payments};
use crate::shared::now_ms;
use crate::store::{PayOrderRecord, ReconciliationRecord, StoreError, NEVER};

/// The event type of a report with discrepancies.
pub const RECONCILIATION_EVENT: &str = "PAYMENT.RECONCILIATION";

/// A claim older than this is a dead instance's: another may take the run over.
pub const STALE_CLAIM_MS: i64 = 10 * 60 * 1000;

/// The largest bill read (a day's bill of a large merchant is a few MB).
const MAX_BILL_BYTES: usize = 256 * 1024 * 1024;

/// Why a reconciliation did not produce a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Another instance (or request) is running it now.
    #[error("the reconciliation of {mchid} for {bill_date} is running elsewhere")]
    InProgress {
        /// The merchant.
        mchid: String,
        /// The day.
        bill_date: String,
    },
    /// WeChat Pay refused or failed (e.g. `STATEMENT_CREATING` before 10:00).
    #[error("WeChat Pay: {0}")]
    WeChatPay(#[source] Box<PayError>),
    /// The bill did not parse.
    #[error(transparent)]
    Bill(#[from] BillError),
    /// The bill is larger than this service reads.
    #[error("the bill is larger than {MAX_BILL_BYTES} bytes")]
    TooLarge,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One discrepancy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    /// `missing_here`, `missing_there`, `amount_differs`, `state_differs`.
    pub kind: &'static str,
    /// The order.
    pub out_trade_no: String,
    /// The refund, for a refund's item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
    /// The app (from the bill, else the stored order).
    pub appid: String,
    /// What is stored here (`null`: nothing).
    pub here: Value,
    /// What the bill says (`null`: nothing).
    pub there: Value,
}

/// A finished report.
#[derive(Debug, Clone)]
pub struct Report {
    /// As stored.
    pub record: ReconciliationRecord,
    /// Its items.
    pub items: Vec<Item>,
}

impl Report {
    /// `{mchid, bill_date, status, bill_rows, discrepancies, created_at}` (Unix ms).
    pub fn summary(&self) -> Value {
        summary_of(&self.record)
    }
}

/// The summary of a stored report.
pub fn summary_of(r: &ReconciliationRecord) -> Value {
    json!({
        "mchid": r.mchid,
        "bill_date": r.bill_date,
        "status": r.status,
        "bill_rows": r.bill_rows,
        "discrepancies": r.discrepancies,
        "created_at": r.created_at,
    })
}

/// `hh:mm` as minutes after Beijing midnight.
pub fn beijing_minute(now_ms: i64) -> i64 {
    (now_ms.div_euclid(1000) + 8 * 3600).rem_euclid(86_400) / 60
}

/// The Beijing day before the one `now_ms` is in (`yyyy-MM-dd`).
pub fn previous_beijing_day(now_ms: i64) -> String {
    PayTime::from_unix(now_ms.div_euclid(1000) - 86_400).china_date()
}

/// Whether `s` is a `yyyy-MM-dd` date.
pub fn is_bill_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&s[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u32>().unwrap_or(0))
}

fn order_here(o: &PayOrderRecord) -> Value {
    json!({"state": o.state, "amount": o.amount, "transaction_id": o.transaction_id, "success_time": o.success_time})
}

fn row_there(r: &BillRow) -> Value {
    json!({"state": r.trade_state, "amount": r.total, "transaction_id": r.transaction_id})
}

/// Downloads the trade bill of `bill_date` (an empty one when WeChat has none).
async fn download(m: &MerchantRuntime, bill_date: &str) -> Result<String, ReconcileError> {
    let info = match m
        .client
        .trade_bill(&TradeBillRequest {
            bill_date: bill_date.to_owned(),
            bill_type: TradeBillType::All,
        })
        .await
    {
        Ok(info) => info,
        Err(e) if e.code().is_some_and(|c| c.as_str() == "NO_STATEMENT_EXIST") => {
            return Ok(String::new())
        }
        Err(e) => return Err(ReconcileError::WeChatPay(Box::new(e))),
    };
    let mut dl = m
        .client
        .download_bill(&info)
        .await
        .map_err(|e| ReconcileError::WeChatPay(Box::new(e)))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = dl
        .chunk()
        .await
        .map_err(|e| ReconcileError::WeChatPay(Box::new(e)))?
    {
        if bytes.len() + chunk.len() > MAX_BILL_BYTES {
            return Err(ReconcileError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Compares the bill's rows with what is stored: the items, in a stable order.
async fn compare(
    p: &Payments,
    mchid: &str,
    bill_date: &str,
    rows: &[BillRow],
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let paid_here: BTreeMap<String, PayOrderRecord> = p
        .store
        .pay_orders_paid_on(mchid, bill_date)
        .await?
        .into_iter()
        .map(|o| (o.out_trade_no.clone(), o))
        .collect();
    let refunds_here: BTreeMap<String, _> = p
        .store
        .pay_refunds_done_on(mchid, bill_date)
        .await?
        .into_iter()
        .filter(|r| r.status == "SUCCESS")
        .map(|r| (r.out_refund_no.clone(), r))
        .collect();
    let mut seen_orders = std::collections::HashSet::new();
    let mut seen_refunds = std::collections::HashSet::new();
    for row in rows {
        if let Some(refund) = &row.refund {
            seen_refunds.insert(refund.out_refund_no.clone());
            let there = json!({"status": refund.status, "amount": refund.amount, "refund_id": refund.refund_id});
            let stored = match refunds_here.get(&refund.out_refund_no) {
                Some(r) => Some(r.clone()),
                None => p.store.ledger_refund(mchid, &refund.out_refund_no).await?,
            };
            let kind = match &stored {
                None => Some("missing_here"),
                Some(r) if r.status != refund.status => Some("state_differs"),
                Some(r) if r.amount != refund.amount => Some("amount_differs"),
                Some(_) => None,
            };
            if let Some(kind) = kind {
                items.push(Item {
                    kind,
                    out_trade_no: row.out_trade_no.clone(),
                    out_refund_no: Some(refund.out_refund_no.clone()),
                    appid: row.appid.clone(),
                    here: stored.map_or(Value::Null, |r| json!({"status": r.status, "amount": r.amount, "refund_id": r.refund_id, "success_time": r.success_time})),
                    there,
                });
            }
            continue;
        }
        seen_orders.insert(row.out_trade_no.clone());
        let stored = match paid_here.get(&row.out_trade_no) {
            Some(o) => Some(o.clone()),
            None => p.store.pay_order(mchid, &row.out_trade_no).await?,
        };
        let kind = match &stored {
            None => Some("missing_here"),
            Some(o) if !matches!(o.state.as_str(), "SUCCESS" | "REFUND") => Some("missing_here"),
            Some(o) if o.amount != row.total => Some("amount_differs"),
            Some(o)
                if o.transaction_id
                    .as_deref()
                    .is_some_and(|t| t != row.transaction_id) =>
            {
                Some("state_differs")
            }
            Some(_) => None,
        };
        if let Some(kind) = kind {
            items.push(Item {
                kind,
                out_trade_no: row.out_trade_no.clone(),
                out_refund_no: None,
                appid: row.appid.clone(),
                here: stored.as_ref().map_or(Value::Null, order_here),
                there: row_there(row),
            });
        }
    }
    for (no, o) in &paid_here {
        if !seen_orders.contains(no) && matches!(o.state.as_str(), "SUCCESS" | "REFUND") {
            items.push(Item {
                kind: "missing_there",
                out_trade_no: no.clone(),
                out_refund_no: None,
                appid: o.appid.clone(),
                here: order_here(o),
                there: Value::Null,
            });
        }
    }
    for (no, r) in &refunds_here {
        if !seen_refunds.contains(no) {
            items.push(Item {
                kind: "missing_there",
                out_trade_no: r.out_trade_no.clone(),
                out_refund_no: Some(no.clone()),
                appid: r.appid.clone(),
                here: json!({"status": r.status, "amount": r.amount, "refund_id": r.refund_id, "success_time": r.success_time}),
                there: Value::Null,
            });
        }
    }
    Ok(items)
}

/// Reconciles `m`'s bill of `bill_date` and stores the report. `force` (an administrator's
/// request) runs it again even when a report exists; otherwise a day already claimed is
/// `Ok(None)`.
///
/// # Errors
/// Another run holds the day, or took this run's claim over while it ran (forced only;
/// unforced, `Ok(None)`); WeChat Pay, the bill or the database failed (the claim is released:
/// the next tick tries again).
pub async fn reconcile(
    p: &Payments,
    m: &MerchantRuntime,
    bill_date: &str,
    force: bool,
) -> Result<Option<Report>, ReconcileError> {
    let claimed_at = now_ms();
    let won = p
        .store
        .claim_pay_reconciliation(
            &m.mchid,
            bill_date,
            claimed_at,
            claimed_at - STALE_CLAIM_MS,
            force,
        )
        .await?;
    if !won {
        if force {
            return Err(ReconcileError::InProgress {
                mchid: m.mchid.clone(),
                bill_date: bill_date.to_owned(),
            });
        }
        return Ok(None);
    }
    let run = async {
        let text = download(m, bill_date).await?;
        let rows = parse_trade_bill(&text)?;
        let items = compare(p, &m.mchid, bill_date, &rows).await?;
        Ok::<_, ReconcileError>((rows.len(), items))
    };
    let (bill_rows, items) = match run.await {
        Ok(r) => r,
        Err(e) => {
            p.metrics.pay_reconciliation(&m.mchid, "failed", 0);
            if let Err(db) = p
                .store
                .release_pay_reconciliation(&m.mchid, bill_date, claimed_at)
                .await
            {
                tracing::warn!(mchid = %m.mchid, bill_date, error = %db, "a failed reconciliation's claim was not released; it is taken over later");
            }
            return Err(e);
        }
    };
    let status = if items.is_empty() {
        "clean"
    } else {
        "discrepancies"
    };
    let record = ReconciliationRecord {
        mchid: m.mchid.clone(),
        bill_date: bill_date.to_owned(),
        status: status.to_owned(),
        bill_rows: i64::try_from(bill_rows).unwrap_or(i64::MAX),
        discrepancies: i64::try_from(items.len()).unwrap_or(i64::MAX),
        report: serde_json::to_string(&items).expect("plain data"),
        claimed_at,
        created_at: now_ms().max(claimed_at + 1),
    };
    if !p.store.finish_pay_reconciliation(&record).await? {
        // Taken over while running (it looked dead) or released: the other run's report is
        // the day's; this one is neither stored, counted nor sent.
        tracing::warn!(mchid = %m.mchid, bill_date, "reconciliation: the claim was taken over while running; this run's report is dropped");
        if force {
            return Err(ReconcileError::InProgress {
                mchid: m.mchid.clone(),
                bill_date: bill_date.to_owned(),
            });
        }
        return Ok(None);
    }
    p.metrics
        .pay_reconciliation(&m.mchid, status, u64::try_from(items.len()).unwrap_or(0));
    let report = Report { record, items };
    if report.items.is_empty() {
        tracing::info!(mchid = %m.mchid, bill_date, bill_rows, "reconciliation: clean");
    } else {
        tracing::warn!(mchid = %m.mchid, bill_date, bill_rows, discrepancies = report.items.len(), "reconciliation: discrepancies found");
        emit(p, m, &report).await?;
    }
    Ok(Some(report))
}

/// One `PAYMENT.RECONCILIATION` event per app of the merchant: the summary and that app's
/// items. An item naming none of its apps (another app's payment under this mchid) is in the
/// administrator's report only: no app is sent another's transactions. The same findings for
/// the same day are one event, however often the day is run.
async fn emit(p: &Payments, m: &MerchantRuntime, report: &Report) -> Result<(), StoreError> {
    let findings =
        hex::encode(&Sha256::digest(serde_json::to_vec(&report.items).expect("plain data"))[..8]);
    let mut by_app: HashMap<&str, Vec<&Item>> =
        m.appids.iter().map(|a| (a.as_str(), Vec::new())).collect();
    for item in &report.items {
        if let Some(list) = by_app.get_mut(item.appid.as_str()) {
            list.push(item);
        }
    }
    let now = now_ms();
    let mut any = false;
    for (appid, items) in by_app {
        let mut payload = report.summary();
        payload["items"] = serde_json::to_value(&items).expect("plain data");
        let dedup = format!(
            "pay:{}:{RECONCILIATION_EVENT}:{}:{findings}",
            m.mchid, report.record.bill_date
        );
        let next = if crate::push::handlers::has_webhook(&p.push, appid) {
            now
        } else {
            NEVER
        };
        let (_, new) = p
            .store
            .insert_event(
                appid,
                &dedup,
                RECONCILIATION_EVENT,
                &payload.to_string(),
                now,
                next,
            )
            .await?;
        any |= new;
    }
    if any {
        p.push.outbox.notify_one();
    }
    Ok(())
}

/// The scheduler's tick: after `at_minute` (minutes after Beijing midnight, on the server's
/// clock), the previous day of every merchant served not in `done` is claimed and run.
/// `done` remembers the days this instance saw finished (by anyone), so a finished day costs
/// no query; `retry` holds back a merchant whose run failed until the instant given.
pub async fn tick(
    p: &Payments,
    at_minute: i64,
    done: &mut std::collections::HashSet<(String, String)>,
    retry: &mut HashMap<String, std::time::Instant>,
) {
    let now = p.config.clock.as_ref().map_or_else(now_ms, |c| c.now_ms());
    if beijing_minute(now) < at_minute {
        return;
    }
    let day = previous_beijing_day(now);
    done.retain(|(_, d)| *d == day);
    let merchants: Vec<_> = p.merchants().by_mchid.values().cloned().collect();
    for m in merchants {
        let key = (m.mchid.clone(), day.clone());
        if done.contains(&key)
            || retry
                .get(&m.mchid)
                .is_some_and(|t| *t > std::time::Instant::now())
        {
            continue;
        }
        match reconcile(p, &m, &day, false).await {
            Ok(Some(_)) => {
                retry.remove(&m.mchid);
                done.insert(key);
            }
            // Claimed by another instance: done once its report is there (a claim left by
            // a dead instance is taken over at a later tick).
            Ok(None) => {
                if let Ok(Some(_)) = p.store.pay_reconciliation(&m.mchid, &day).await {
                    done.insert(key);
                }
            }
            Err(e) => {
                tracing::warn!(mchid = %m.mchid, bill_date = %day, error = %e, "reconciliation failed; retried in 5 minutes");
                retry.insert(
                    m.mchid.clone(),
                    std::time::Instant::now() + std::time::Duration::from_secs(300),
                );
            }
        }
    }
}
