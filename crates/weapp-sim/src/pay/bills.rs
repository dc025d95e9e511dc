//! Bills: the trade bill and the fund-flow bill of a Beijing day, generated from that day's
//! payments and refunds in WeChat's CSV layout (a header line, rows whose every value starts
//! with a backtick, a summary header and its line), answered as `{hash_type, hash_value,
//! download_url}`; the file behind the URL (plain or GZIP) is the one answer production does
//! not sign.

use std::collections::HashMap;
use std::io::Write;

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::time::{beijing_day, bill_time, day_string, parse_day, rfc3339};
use crate::error::{PayError, PayResult};
use crate::random::random_alnum;
use crate::state::pay::{BillFile, RefundStatus, TradeState};
use crate::world::{Sim, World};

/// How long a download URL works (simulator seconds; production says 30 s or 5 min).
pub const DOWNLOAD_TTL_SECS: i64 = 300;

/// A day's bill is ready from 10:00 Beijing time the next day.
pub const READY_AFTER_SECS: i64 = 10 * 3600;

/// How many days back bills can be asked for (production: three months).
pub const HISTORY_DAYS: i64 = 92;

const TRADE_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const TRADE_SUMMARY: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const FUND_HEADER: &str = "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,资金变更提交申请人,备注,业务凭证号";
const FUND_SUMMARY: &str = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额";

/// Fen as yuan with two decimals.
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// The 0.6% fee on `fen`, in yuan with five decimals (1 fen = 1000 units of 0.00001 yuan).
fn fee(fen: i64) -> String {
    let units = fen * 6;
    let sign = if units < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:05}",
        units.abs() / 100_000,
        units.abs() % 100_000
    )
}

fn row(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("`{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A bill before it is written out: its header, rows, summary header and summary line.
struct Bill {
    header: &'static str,
    rows: Vec<Vec<String>>,
    summary_header: &'static str,
    summary: Vec<String>,
}

impl Bill {
    /// WeChat's CSV: the header, every row's values prefixed with a backtick, the summary
    /// header and its line, CRLF.
    fn csv(&self) -> String {
        let mut lines = vec![self.header.to_owned()];
        lines.extend(self.rows.iter().map(|r| row(r)));
        lines.push(self.summary_header.to_owned());
        lines.push(row(&self.summary));
        lines.join("\r\n") + "\r\n"
    }

    /// The bill as JSON for the console: columns, rows and the summary as plain strings.
    fn view(&self) -> Value {
        json!({
            "columns": self.header.split(',').collect::<Vec<_>>(),
            "rows": self.rows,
            "summary_columns": self.summary_header.split(',').collect::<Vec<_>>(),
            "summary": self.summary,
        })
    }
}

/// One money movement of a day: (time ms, is a refund, fields).
struct Movement {
    at: i64,
    refund: Option<(String, String, i64)>,
    appid: String,
    transaction_id: String,
    out_trade_no: String,
    openid: String,
    description: String,
    attach: String,
    total: i64,
}

/// Every payment and successful refund of `mchid`, oldest first.
fn movements(w: &World, mchid: &str) -> Vec<Movement> {
    let mut out = Vec::new();
    for o in w.pay.orders.values().filter(|o| o.mchid == mchid) {
        let (Some(at), Some(tid)) = (o.success_ms, o.transaction_id.clone()) else {
            continue;
        };
        if !matches!(o.state, TradeState::Success | TradeState::Refund) {
            continue;
        }
        let base = Movement {
            at,
            refund: None,
            appid: o.appid.clone(),
            transaction_id: tid,
            out_trade_no: o.out_trade_no.clone(),
            openid: o.openid.clone(),
            description: o.description.clone(),
            attach: o.attach.clone().unwrap_or_default(),
            total: o.total,
        };
        for r in w
            .pay
            .refunds
            .values()
            .filter(|r| r.mchid == mchid && r.out_trade_no == o.out_trade_no)
        {
            if let (RefundStatus::Success, Some(rat)) = (r.status, r.success_ms) {
                out.push(Movement {
                    at: rat,
                    refund: Some((r.refund_id.clone(), r.out_refund_no.clone(), r.refund)),
                    ..clone_base(&base)
                });
            }
        }
        out.push(base);
    }
    out.sort_by_key(|m| (m.at, m.refund.is_some()));
    out
}

fn clone_base(m: &Movement) -> Movement {
    Movement {
        at: m.at,
        refund: m.refund.clone(),
        appid: m.appid.clone(),
        transaction_id: m.transaction_id.clone(),
        out_trade_no: m.out_trade_no.clone(),
        openid: m.openid.clone(),
        description: m.description.clone(),
        attach: m.attach.clone(),
        total: m.total,
    }
}

fn trade_bill(w: &World, mchid: &str, day: i64, bill_type: &str) -> Bill {
    let mut rows = Vec::new();
    let (mut count, mut settle, mut refunds, mut fees, mut orders) = (0, 0, 0, 0, 0);
    for m in movements(w, mchid)
        .into_iter()
        .filter(|m| beijing_day(m.at) == day)
    {
        let wanted = match bill_type {
            "SUCCESS" => m.refund.is_none(),
            "REFUND" => m.refund.is_some(),
            _ => true,
        };
        if !wanted {
            continue;
        }
        count += 1;
        let line = match &m.refund {
            None => {
                settle += m.total;
                orders += m.total;
                fees += m.total;
                vec![
                    bill_time(m.at),
                    m.appid,
                    mchid.to_owned(),
                    "0".into(),
                    String::new(),
                    m.transaction_id,
                    m.out_trade_no,
                    m.openid,
                    "JSAPI".into(),
                    "SUCCESS".into(),
                    "OTHERS".into(),
                    "CNY".into(),
                    yuan(m.total),
                    "0.00".into(),
                    "0".into(),
                    "0".into(),
                    "0.00".into(),
                    "0.00".into(),
                    String::new(),
                    String::new(),
                    m.description,
                    m.attach,
                    fee(m.total),
                    "0.60%".into(),
                    yuan(m.total),
                    "0.00".into(),
                    String::new(),
                ]
            }
            Some((refund_id, out_refund_no, amount)) => {
                refunds += amount;
                fees -= amount;
                vec![
                    bill_time(m.at),
                    m.appid,
                    mchid.to_owned(),
                    "0".into(),
                    String::new(),
                    m.transaction_id,
                    m.out_trade_no,
                    m.openid,
                    "JSAPI".into(),
                    "REFUND".into(),
                    "OTHERS".into(),
                    "CNY".into(),
                    "0.00".into(),
                    "0.00".into(),
                    refund_id.clone(),
                    out_refund_no.clone(),
                    yuan(*amount),
                    "0.00".into(),
                    "ORIGINAL".into(),
                    "SUCCESS".into(),
                    m.description,
                    m.attach,
                    fee(-amount),
                    "0.60%".into(),
                    "0.00".into(),
                    yuan(*amount),
                    String::new(),
                ]
            }
        };
        rows.push(line);
    }
    Bill {
        header: TRADE_HEADER,
        rows,
        summary_header: TRADE_SUMMARY,
        summary: vec![
            count.to_string(),
            yuan(settle),
            yuan(refunds),
            "0.00".into(),
            fee(fees),
            yuan(orders),
            yuan(refunds),
        ],
    }
}

fn fund_bill(w: &World, mchid: &str, day: i64, account_type: &str) -> Bill {
    let mut rows = Vec::new();
    let (mut income_n, mut income, mut spend_n, mut spend, mut balance) = (0, 0, 0, 0, 0i64);
    for (i, m) in movements(w, mchid).into_iter().enumerate() {
        if account_type != "BASIC" {
            break;
        }
        let (amount, kind) = match &m.refund {
            None => (m.total, "收入"),
            Some((_, _, a)) => (-a, "支出"),
        };
        balance += amount;
        if beijing_day(m.at) != day {
            continue;
        }
        if amount >= 0 {
            income_n += 1;
            income += amount;
        } else {
            spend_n += 1;
            spend -= amount;
        }
        let (business, voucher) = match &m.refund {
            None => ("交易", m.out_trade_no.clone()),
            Some((_, out_refund_no, _)) => ("退款", out_refund_no.clone()),
        };
        rows.push(vec![
            bill_time(m.at),
            m.transaction_id,
            format!("{:018}{i:010}", m.at / 1000),
            business.into(),
            business.into(),
            kind.into(),
            yuan(amount.abs()),
            yuan(balance),
            "system".into(),
            String::new(),
            voucher,
        ]);
    }
    Bill {
        header: FUND_HEADER,
        rows,
        summary_header: FUND_SUMMARY,
        summary: vec![
            (income_n + spend_n).to_string(),
            income_n.to_string(),
            yuan(income),
            spend_n.to_string(),
            yuan(spend),
        ],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The bill of `kind` for `mchid` on Beijing day `day`, of the `bill_type` (trade: `ALL`,
/// `SUCCESS`, `REFUND`) or `account_type` (fund flow: `BASIC`, `OPERATION`, `FEES`) `query`
/// asks for.
fn generate(
    w: &World,
    mchid: &str,
    kind: BillKind,
    day: i64,
    query: &HashMap<String, String>,
) -> PayResult<Bill> {
    match kind {
        BillKind::Trade => {
            let bill_type = query.get("bill_type").map_or("ALL", String::as_str);
            if !matches!(bill_type, "ALL" | "SUCCESS" | "REFUND") {
                return Err(PayError::param(
                    "bill_type",
                    "query",
                    "bill_type must be ALL, SUCCESS or REFUND",
                ));
            }
            Ok(trade_bill(w, mchid, day, bill_type))
        }
        BillKind::FundFlow => {
            let account = query.get("account_type").map_or("BASIC", String::as_str);
            if !matches!(account, "BASIC" | "OPERATION" | "FEES") {
                return Err(PayError::param(
                    "account_type",
                    "query",
                    "account_type must be BASIC, OPERATION or FEES",
                ));
            }
            Ok(fund_bill(w, mchid, day, account))
        }
    }
}

/// Which bill `GET /v3/bill/…` asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BillKind {
    Trade,
    FundFlow,
}

impl Sim {
    /// Applies for a bill: `{hash_type, hash_value, download_url}`. `base` is the scheme and
    /// host the request came to (the download URL points there).
    ///
    /// # Errors
    /// `PARAM_ERROR` (date, type), `NO_STATEMENT_EXIST` (today or later), `STATEMENT_CREATING`
    /// (yesterday before 10:00), `INVALID_REQUEST` (older than three months).
    pub(crate) fn pay_bill(
        &self,
        mchid: &str,
        kind: BillKind,
        query: &HashMap<String, String>,
        base: &str,
    ) -> PayResult<Value> {
        let date = query
            .get("bill_date")
            .ok_or_else(|| PayError::param("bill_date", "query", "bill_date is required"))?;
        let day = parse_day(date)
            .ok_or_else(|| PayError::param("bill_date", "query", "bill_date must be yyyy-MM-dd"))?;
        let gzip_it = match query.get("tar_type").map(String::as_str) {
            None => false,
            Some("GZIP") => true,
            Some(_) => {
                return Err(PayError::param(
                    "tar_type",
                    "query",
                    "tar_type must be GZIP",
                ))
            }
        };
        let mut w = self.world();
        let now = self.now_in(&w);
        let today = beijing_day(now);
        if day >= today {
            return Err(PayError::new(400, "NO_STATEMENT_EXIST", "账单文件不存在"));
        }
        if day == today - 1 && (now / 1000 + 8 * 3600).rem_euclid(86_400) < READY_AFTER_SECS {
            return Err(PayError::new(
                400,
                "STATEMENT_CREATING",
                "账单生成中，请在次日10点后再下载",
            ));
        }
        if day < today - HISTORY_DAYS {
            return Err(PayError::invalid("仅支持下载三个月内的账单"));
        }
        let csv = generate(&w, mchid, kind, day, query)?.csv();
        let hash = hex::encode(Sha1::digest(csv.as_bytes()));
        let token = random_alnum(40);
        let content = if gzip_it {
            gzip(csv.as_bytes())
        } else {
            csv.into_bytes()
        };
        w.pay.bills.retain(|_, b| b.expires_ms > now);
        w.pay.bills.insert(
            token.clone(),
            BillFile {
                mchid: mchid.to_owned(),
                content,
                gzip: gzip_it,
                expires_ms: now + DOWNLOAD_TTL_SECS * 1000,
            },
        );
        Ok(json!({
            "hash_type": "SHA1",
            "hash_value": hash,
            "download_url": format!("{base}/v3/billdownload/file?token={token}"),
        }))
    }

    /// A merchant's bill of any day as the console shows it (`GET
    /// /_sim/pay/merchants/{mchid}/bills`): the same generator as `/v3/bill/…`, without its
    /// download step or its wait for 10:00 the next day — today's bill so far is shown too,
    /// with `ready: false`. `query`: `kind` (`trade`, default, or `fundflow`), `bill_date`
    /// (default: today in Beijing on the simulator's clock), `bill_type`, `account_type`.
    /// Returns `{mchid, kind, bill_date, bill_type | account_type, ready, ready_at, hash_type,
    /// hash_value, columns, rows, summary_columns, summary, csv}`.
    ///
    /// # Errors
    /// `PARAM_ERROR` (400) for a kind, date or type it does not know; `MCH_NOT_EXISTS` (404)
    /// for an unknown merchant.
    pub fn pay_bill_view(&self, mchid: &str, query: &HashMap<String, String>) -> PayResult<Value> {
        let kind = match query.get("kind").map_or("trade", String::as_str) {
            "trade" => BillKind::Trade,
            "fundflow" => BillKind::FundFlow,
            _ => {
                return Err(PayError::param(
                    "kind",
                    "query",
                    "kind must be trade or fundflow",
                ))
            }
        };
        let w = self.world();
        let now = self.now_in(&w);
        if !w.pay.merchants.contains_key(mchid) {
            return Err(PayError::new(
                404,
                "MCH_NOT_EXISTS",
                format!("no merchant {mchid}"),
            ));
        }
        let day = match query.get("bill_date") {
            None => beijing_day(now),
            Some(date) => parse_day(date).ok_or_else(|| {
                PayError::param("bill_date", "query", "bill_date must be yyyy-MM-dd")
            })?,
        };
        let bill = generate(&w, mchid, kind, day, query)?;
        let csv = bill.csv();
        // Production answers it from 10:00 Beijing time the next day.
        let ready_at = ((day + 1) * 86_400 - 8 * 3600 + READY_AFTER_SECS) * 1000;
        let mut v = bill.view();
        v["mchid"] = json!(mchid);
        v["bill_date"] = json!(day_string(day));
        match kind {
            BillKind::Trade => {
                v["kind"] = json!("trade");
                v["bill_type"] = json!(query.get("bill_type").map_or("ALL", String::as_str));
            }
            BillKind::FundFlow => {
                v["kind"] = json!("fundflow");
                v["account_type"] =
                    json!(query.get("account_type").map_or("BASIC", String::as_str));
            }
        }
        v["ready"] = json!(now >= ready_at);
        v["ready_at"] = json!(rfc3339(ready_at));
        v["hash_type"] = json!("SHA1");
        v["hash_value"] = json!(hex::encode(Sha1::digest(csv.as_bytes())));
        v["csv"] = json!(csv);
        Ok(v)
    }

    /// The file behind a download URL: (bytes, gzip).
    ///
    /// # Errors
    /// `PARAM_ERROR` without a token; `INVALID_REQUEST` for an unknown, expired or another
    /// merchant's token.
    pub(crate) fn pay_bill_file(
        &self,
        mchid: &str,
        query: &HashMap<String, String>,
    ) -> PayResult<(Vec<u8>, bool)> {
        let token = query
            .get("token")
            .ok_or_else(|| PayError::param("token", "query", "token is required"))?;
        let w = self.world();
        let now = self.now_in(&w);
        match w.pay.bills.get(token) {
            Some(b) if b.mchid == mchid && b.expires_ms > now => Ok((b.content.clone(), b.gzip)),
            _ => Err(PayError::invalid("下载链接无效或已过期，请重新申请账单")),
        }
    }
}
