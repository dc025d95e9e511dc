//! WeChat Pay's trade bill (交易账单, `bill_type=ALL`) parsed: a header line naming the
//! columns, one line per payment or refund whose every value starts with a back-tick (so that
//! spreadsheets keep long numbers as text), then a summary header (`总交易单数,…`) and its
//! line. Columns are found by their names, not their positions; amounts are yuan with two
//! decimals, read exactly into fen.
//!
//! The format has no quoting: a value holding a line break or `` ,` `` (a merchant's own
//! `attach` or description) would end a line early or shift its columns. So every line must
//! have exactly the header's number of values, the rows end only at the summary header, and
//! the summary's count must be the number of rows read; anything else is an error (the day is
//! not reported clean on a bill read wrongly). The service refuses such text in orders.

/// One line of the bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    /// The app (公众账号ID).
    pub appid: String,
    /// WeChat's transaction id (微信订单号).
    pub transaction_id: String,
    /// The order (商户订单号).
    pub out_trade_no: String,
    /// `SUCCESS` for a payment, `REFUND` for a refund line (交易状态).
    pub trade_state: String,
    /// The order's total in fen (订单金额; 应结订单金额 when absent).
    pub total: i64,
    /// A refund line: the refund (商户退款单号, 微信退款单号, 申请退款金额 or 退款金额 in
    /// fen, 退款状态).
    pub refund: Option<BillRefund>,
}

/// The refund of a refund line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRefund {
    /// 商户退款单号.
    pub out_refund_no: String,
    /// 微信退款单号.
    pub refund_id: String,
    /// Fen.
    pub amount: i64,
    /// 退款状态 (`SUCCESS`, …).
    pub status: String,
}

/// Why a bill could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BillError {
    /// No header line, or one without the columns needed.
    #[error("the bill has no header naming the column {0}")]
    MissingColumn(&'static str),
    /// A line whose value is not what its column holds, or with more or fewer values than
    /// the header names.
    #[error("bill line {line}: {what}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The bill ends without its summary (`总交易单数`), or the summary's count is not the
    /// number of rows read.
    #[error("the bill's summary is missing or does not match its rows: {0}")]
    Summary(String),
}

/// The first column of the summary header: the rows end at the line starting with it.
const SUMMARY_HEADER: &str = "总交易单数";

/// Yuan (`12.30`, `-0.01`, `5`) as fen, exactly; `None` for anything else.
pub fn yuan_to_fen(text: &str) -> Option<i64> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut fen = whole.parse::<i64>().ok()?.checked_mul(100)?;
    let cents = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse::<i64>().ok()?,
    };
    fen = fen.checked_add(cents)?;
    Some(if neg { -fen } else { fen })
}

/// The values of a line: `` `a,`b,`c `` → `a`, `b`, `c` (a comma inside a value is kept:
/// values are split at the back-tick that starts the next one).
fn values(line: &str) -> Vec<String> {
    let line = line.strip_prefix('`').unwrap_or(line);
    line.split(",`").map(|v| v.trim().to_owned()).collect()
}

/// Parses a trade bill. An empty text (no bill) is no rows.
///
/// # Errors
/// A header without the columns needed; a row with more or fewer values than the header, or
/// a line that is neither a row nor the summary header; an amount that is not yuan; no
/// summary, or a summary counting another number of rows.
pub fn parse_trade_bill(text: &str) -> Result<Vec<BillRow>, BillError> {
    let text = text.trim_start_matches('\u{feff}');
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &'static str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or(BillError::MissingColumn(name))
    };
    let appid = col("公众账号ID")?;
    let tid = col("微信订单号")?;
    let no = col("商户订单号")?;
    let state = col("交易状态")?;
    let settle = col("应结订单金额")?;
    let total = col("订单金额").ok();
    let refund_id = col("微信退款单号")?;
    let refund_no = col("商户退款单号")?;
    let refund_amount = col("退款金额")?;
    let asked = col("申请退款金额").ok();
    let refund_status = col("退款状态")?;
    let mut rows = Vec::new();
    let mut summary = None;
    while let Some((i, line)) = lines.next() {
        let bad = |what: String| BillError::Line { line: i + 1, what };
        if line.starts_with(SUMMARY_HEADER) {
            summary =
                Some(lines.next().ok_or_else(|| {
                    BillError::Summary("the summary header has no line".to_owned())
                })?);
            break;
        }
        if !line.starts_with('`') {
            return Err(bad(
                "neither a row nor the summary header (a line break inside a value?)".to_owned(),
            ));
        }
        let v = values(line);
        if v.len() != names.len() {
            return Err(bad(format!(
                "{} values where the header names {} columns (a line break or ,` inside a value?)",
                v.len(),
                names.len()
            )));
        }
        let get = |c: usize| v.get(c).map_or("", String::as_str);
        let amount = |c: usize, what: &str| {
            yuan_to_fen(get(c)).ok_or_else(|| BillError::Line {
                line: i + 1,
                what: format!("{what} is not an amount in yuan"),
            })
        };
        let order_total = match total {
            Some(c) if !get(c).is_empty() && get(c) != "0.00" => amount(c, "订单金额")?,
            _ => amount(settle, "应结订单金额")?,
        };
        let out_refund_no = get(refund_no);
        let refund = if out_refund_no.is_empty() || out_refund_no == "0" {
            None
        } else {
            let asked_amount = match asked {
                Some(c) if !get(c).is_empty() => amount(c, "申请退款金额")?,
                _ => amount(refund_amount, "退款金额")?,
            };
            Some(BillRefund {
                out_refund_no: out_refund_no.to_owned(),
                refund_id: get(refund_id).to_owned(),
                amount: asked_amount,
                status: get(refund_status).to_owned(),
            })
        };
        rows.push(BillRow {
            appid: get(appid).to_owned(),
            transaction_id: get(tid).to_owned(),
            out_trade_no: get(no).to_owned(),
            trade_state: get(state).to_owned(),
            total: order_total,
            refund,
        });
    }
    let Some((i, line)) = summary else {
        return Err(BillError::Summary(
            "no summary header (the bill is cut short?)".to_owned(),
        ));
    };
    let count = values(line);
    match count.first().and_then(|c| c.parse::<usize>().ok()) {
        Some(n) if n == rows.len() => Ok(rows),
        Some(n) => Err(BillError::Summary(format!(
            "it counts {n} rows, {} were read",
            rows.len()
        ))),
        None => Err(BillError::Summary(format!(
            "line {}: the count is not a number",
            i + 1
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

    #[test]
    fn yuan_reads_exactly_into_fen() {
        assert_eq!(yuan_to_fen("9.80"), Some(980));
        assert_eq!(yuan_to_fen("0.01"), Some(1));
        assert_eq!(yuan_to_fen("12"), Some(1200));
        assert_eq!(yuan_to_fen("1.5"), Some(150));
        assert_eq!(yuan_to_fen("-0.10"), Some(-10));
        assert_eq!(yuan_to_fen("1.234"), None);
        assert_eq!(yuan_to_fen("abc"), None);
        assert_eq!(yuan_to_fen(""), None);
    }

    #[test]
    fn payments_and_refunds_are_read_by_column_name() {
        let bill = format!(
            "{HEADER}\r\n\
             `2026-01-01 10:00:00,`wxapp,`1900000001,`0,`,`4200001,`order_1,`oUser,`JSAPI,`SUCCESS,`OTHERS,`CNY,`9.80,`0.00,`0,`0,`0.00,`0.00,`,`,`Tea, green,`,`0.05880,`0.60%,`9.80,`0.00,`\r\n\
             `2026-01-01 11:00:00,`wxapp,`1900000001,`0,`,`4200001,`order_1,`oUser,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`5000001,`refund_1,`1.00,`0.00,`ORIGINAL,`SUCCESS,`Tea,`,`-0.00600,`0.60%,`0.00,`1.00,`\r\n\
             总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
             `2,`9.80,`1.00,`0.00,`0.05280,`9.80,`1.00\r\n"
        );
        let rows = parse_trade_bill(&bill).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].out_trade_no, "order_1");
        assert_eq!(rows[0].total, 980);
        assert_eq!(rows[0].trade_state, "SUCCESS");
        assert!(rows[0].refund.is_none());
        let r = rows[1].refund.as_ref().unwrap();
        assert_eq!(
            (r.out_refund_no.as_str(), r.amount, r.status.as_str()),
            ("refund_1", 100, "SUCCESS")
        );
        assert_eq!(parse_trade_bill("").unwrap(), Vec::new());
        assert!(parse_trade_bill("a,b\r\n").is_err());
    }

    const SUMMARY: &str = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

    /// A payment line as the simulator writes it, `attach` and the description verbatim.
    fn payment(no: &str, description: &str, attach: &str) -> String {
        format!("`2026-01-01 10:00:00,`wxapp,`1900000001,`0,`,`42{no},`{no},`oUser,`JSAPI,`SUCCESS,`OTHERS,`CNY,`9.80,`0.00,`0,`0,`0.00,`0.00,`,`,`{description},`{attach},`0.05880,`0.60%,`9.80,`0.00,`")
    }

    fn bill(lines: &[String], count: usize) -> String {
        let mut text = format!("{HEADER}\r\n");
        for l in lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        text.push_str(&format!(
            "{SUMMARY}\r\n`{count},`0.00,`0.00,`0.00,`0.00,`0.00,`0.00\r\n"
        ));
        text
    }

    #[test]
    fn a_line_break_in_attach_is_an_error_not_the_end_of_the_rows() {
        let lines = [
            payment("order_1", "Tea", "first\r\nsecond"),
            payment("order_2", "Tea", ""),
        ];
        let err = parse_trade_bill(&bill(&lines, 2)).unwrap_err();
        assert!(
            matches!(err, BillError::Line { line: 2, .. }),
            "the cut row itself is refused: {err}"
        );
    }

    #[test]
    fn a_row_with_more_or_fewer_values_than_the_header_is_an_error() {
        let long = payment("order_1", "Tea `,`green", "");
        let err = parse_trade_bill(&bill(&[long], 1)).unwrap_err();
        assert!(
            matches!(&err, BillError::Line { line: 2, what } if what.contains("28 values")),
            "{err}"
        );
        let short = payment("order_1", "Tea", "");
        let short = short.rsplitn(3, ",`").last().unwrap().to_owned();
        let err = parse_trade_bill(&bill(&[short], 1)).unwrap_err();
        assert!(
            matches!(&err, BillError::Line { line: 2, what } if what.contains("25 values")),
            "{err}"
        );
        // Exact rows still read.
        let rows = parse_trade_bill(&bill(&[payment("order_1", "Tea, green", "a,b")], 1)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].total, 980);
    }

    #[test]
    fn the_rows_end_only_at_the_summary_and_its_count_must_match() {
        let lines = [payment("order_1", "Tea", ""), payment("order_2", "Tea", "")];
        assert_eq!(parse_trade_bill(&bill(&lines, 2)).unwrap().len(), 2);
        // A stray line between rows: an error, not the end of the rows.
        let text = bill(&lines, 2).replacen(
            &format!("{}\r\n", lines[1]),
            &format!("stray\r\n{}\r\n", lines[1]),
            1,
        );
        assert!(matches!(
            parse_trade_bill(&text),
            Err(BillError::Line { line: 3, .. })
        ));
        // A summary counting more rows than were read; no summary at all; a header alone.
        assert!(matches!(
            parse_trade_bill(&bill(&lines, 3)),
            Err(BillError::Summary(_))
        ));
        let cut = format!("{HEADER}\r\n{}\r\n{}\r\n", lines[0], lines[1]);
        assert!(matches!(parse_trade_bill(&cut), Err(BillError::Summary(_))));
        let cut = format!("{HEADER}\r\n{}\r\n{SUMMARY}\r\n", lines[0]);
        assert!(matches!(parse_trade_bill(&cut), Err(BillError::Summary(_))));
        // A day without transactions: the header, a zero summary.
        assert_eq!(parse_trade_bill(&bill(&[], 0)).unwrap(), Vec::new());
    }
}
