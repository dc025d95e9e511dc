//! Subscribe messages: a template library (categories, titles, keywords with value rules),
//! private templates, and the value rules WeChat applies to each keyword type. Written
//! independently of the SDK's checks, so a mistake shared by both cannot pass unnoticed.

use serde::Serialize;
use serde_json::{json, Value};

/// A category of the public library.
pub const CATEGORIES: &[(i64, &str)] = &[
    (307, "IT科技 > 软件服务"),
    (616, "餐饮 > 外卖"),
    (632, "快递物流 > 快递"),
];

/// A public template: (tid, title, categoryId, keywords (kid, name, example, rule)).
pub type PublicTemplate = (
    i64,
    &'static str,
    i64,
    &'static [(i64, &'static str, &'static str, &'static str)],
);

/// The public library.
pub const LIBRARY: &[PublicTemplate] = &[
    (
        1001,
        "订单配送通知",
        616,
        &[
            (1, "订单号", "A20231110123", "character_string"),
            (2, "商品名称", "黄焖鸡米饭", "thing"),
            (3, "送达时间", "2023-11-10 12:30", "time"),
            (4, "订单金额", "¥32.50", "amount"),
            (5, "配送员", "张三", "name"),
            (6, "联系电话", "13800138000", "phone_number"),
            (7, "订单状态", "已送达", "phrase"),
        ],
    ),
    (
        1002,
        "快递到达通知",
        632,
        &[
            (1, "快递单号", "SF1234567890", "character_string"),
            (2, "到达日期", "2023年11月10日", "date"),
            (3, "取件码", "A123", "letter"),
            (4, "件数", "2", "number"),
            (5, "车牌号", "粤B12345", "car_number"),
            (6, "备注", "请尽快取件", "thing"),
            (7, "标识", "★", "symbol"),
        ],
    ),
    (
        1003,
        "账号登录提醒",
        307,
        &[
            (1, "登录时间", "12:30", "time"),
            (2, "登录地点", "广州", "thing"),
            (3, "设备", "iPhone", "thing"),
        ],
    ),
];

/// A private template of an app.
#[derive(Debug, Clone, Serialize)]
pub struct PrivateTemplate {
    /// Its id.
    #[serde(rename = "priTmplId")]
    pub pri_tmpl_id: String,
    /// Title.
    pub title: String,
    /// `{{thing1.DATA}}` lines.
    pub content: String,
    /// Example lines.
    pub example: String,
    /// 2: one-time.
    #[serde(rename = "type")]
    pub kind: i64,
    /// The data keys (`thing1`, `time2`, …).
    #[serde(skip)]
    pub keys: Vec<String>,
}

/// Builds a private template from `tid` and 2–5 keyword ids (keys are numbered in order).
///
/// # Errors
/// `(200014, …)` unknown tid, `(200020, …)` bad kidList, `(200021, …)` bad sceneDesc.
pub fn instantiate(
    tid: i64,
    kids: &[i64],
    scene_desc: &str,
    id: String,
) -> Result<PrivateTemplate, (i64, &'static str)> {
    let (_, title, _, keywords) = LIBRARY
        .iter()
        .find(|t| t.0 == tid)
        .ok_or((200014, "invalid tid"))?;
    if !(2..=5).contains(&kids.len()) || kids.iter().enumerate().any(|(i, k)| kids[..i].contains(k))
    {
        return Err((200020, "invalid kidList"));
    }
    if scene_desc.chars().count() > 15 {
        return Err((200021, "invalid sceneDesc"));
    }
    let mut keys = Vec::new();
    let mut content = String::new();
    let mut example = String::new();
    for (i, kid) in kids.iter().enumerate() {
        let (_, name, ex, rule) = keywords
            .iter()
            .find(|k| k.0 == *kid)
            .ok_or((200020, "invalid kidList"))?;
        let key = format!("{rule}{}", i + 1);
        content.push_str(&format!("{name}:{{{{{key}.DATA}}}}\n"));
        example.push_str(&format!("{name}:{ex}\n"));
        keys.push(key);
    }
    Ok(PrivateTemplate {
        pri_tmpl_id: id,
        title: (*title).into(),
        content,
        example,
        kind: 2,
        keys,
    })
}

/// The public template list as `getpubtemplatetitles` answers it.
pub fn titles(ids: &[i64]) -> Vec<Value> {
    LIBRARY
        .iter()
        .filter(|t| ids.contains(&t.2))
        .map(|t| json!({"tid": t.0, "title": t.1, "type": 2, "categoryId": t.2.to_string()}))
        .collect()
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn is_time(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_digit()))
        && parts[0].parse::<u32>().is_ok_and(|h| h < 24)
        && parts[1..]
            .iter()
            .all(|p| p.parse::<u32>().is_ok_and(|m| m < 60))
}

fn is_date(s: &str) -> bool {
    let nums: Vec<&str> = s
        .split(['-', '/', '年', '月', '日'])
        .filter(|p| !p.is_empty())
        .collect();
    let shape_ok = s
        .chars()
        .all(|c| c.is_ascii_digit() || "-/年月日".contains(c));
    shape_ok
        && nums.len() == 3
        && nums[0].len() == 4
        && nums[1].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && nums[2].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
}

fn date_time(v: &str, time_required: bool) -> bool {
    v.split('~').all(|part| {
        let part = part.trim();
        match part.split_once(' ') {
            Some((d, t)) => is_date(d) && is_time(t),
            None if time_required => is_time(part),
            None => is_date(part),
        }
    })
}

/// Checks a value against its keyword type (the key without its number).
pub fn value_ok(rule: &str, v: &str) -> bool {
    let n = v.chars().count();
    match rule {
        "thing" => (1..=20).contains(&n),
        "number" => {
            (1..=32).contains(&n)
                && v.chars().filter(|c| *c == '.').count() <= 1
                && v.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
        }
        "letter" => (1..=32).contains(&n) && v.chars().all(|c| c.is_ascii_alphabetic()),
        "symbol" => {
            (1..=5).contains(&n)
                && v.chars()
                    .all(|c| !c.is_alphanumeric() && !c.is_whitespace())
        }
        "character_string" => (1..=32).contains(&n) && v.chars().all(|c| c.is_ascii_graphic()),
        "time" => {
            date_time(v, true)
                || v.split('~').all(|p| {
                    p.trim()
                        .split_once(' ')
                        .is_some_and(|(d, t)| is_date(d) && is_time(t))
                })
        }
        "date" => date_time(v, false),
        "amount" => {
            let body = v.strip_suffix('元').unwrap_or(v);
            let body = body
                .strip_prefix(['¥', '￥', '$', '€', '£'])
                .unwrap_or(body);
            let (int, frac) = body.split_once('.').unwrap_or((body, ""));
            (1..=10).contains(&int.len())
                && int.chars().all(|c| c.is_ascii_digit())
                && frac.len() <= 2
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        "phone_number" => {
            (1..=17).contains(&n) && v.chars().all(|c| c.is_ascii_digit() || "+-() ".contains(c))
        }
        "car_number" => {
            (1..=8).contains(&n)
                && v.chars()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_alphanumeric() || (i == 0 && is_cjk(c)) || c == '·')
        }
        "name" => {
            (n <= 10 && n > 0 && v.chars().all(is_cjk))
                || (n <= 20 && n > 0 && v.chars().all(|c| c.is_ascii_alphabetic() || c == ' '))
        }
        "phrase" => (1..=5).contains(&n) && v.chars().all(is_cjk),
        _ => true,
    }
}

/// The keyword type of a data key: `thing1` → `thing`.
pub fn rule_of(key: &str) -> &str {
    key.trim_end_matches(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rules() {
        for (rule, ok, bad) in [
            (
                "thing",
                "外卖已送达",
                "一二三四五六七八九十一二三四五六七八九十一",
            ),
            ("number", "12.5", "1.2.3"),
            ("letter", "ABC", "AB1"),
            ("symbol", "★", "A"),
            ("character_string", "A-1_x", "含中文"),
            ("time", "2023-11-10 12:30", "25:00"),
            ("date", "2023年11月10日", "2023-13-01"),
            ("amount", "¥32.50", "¥¥3"),
            ("phone_number", "+86 138-0013", "abc"),
            ("car_number", "粤B12345", "粤B123456789"),
            ("name", "张三", "张三3"),
            ("phrase", "已送达", "已送达了吗吗吗"),
        ] {
            assert!(value_ok(rule, ok), "{rule}: {ok}");
            assert!(!value_ok(rule, bad), "{rule}: {bad}");
        }
        assert!(value_ok("time", "12:30~13:30"));
        assert!(value_ok("date", "2023-11-10 12:30"));
        assert!(value_ok("amount", "100元"));
    }
}
