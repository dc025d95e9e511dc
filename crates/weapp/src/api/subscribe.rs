//! Subscribe messages: sending (with `miniprogram_state` and `lang`), a `data` builder that
//! checks every value against its keyword type's rule before sending, and template management.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::Ack;
use crate::client::Client;
use crate::error::{rejected_locally, Error, Result};
use crate::http::{Body, Endpoint, JsonResponse, Method};

const SEND: &str = "/cgi-bin/message/subscribe/send";

/// Subscribe message APIs. Get one with [`Client::subscribe`].
#[derive(Debug, Clone)]
pub struct SubscribeApi {
    client: Client,
}

impl Client {
    /// Subscribe message APIs.
    pub fn subscribe(&self) -> SubscribeApi {
        SubscribeApi {
            client: self.clone(),
        }
    }
}

/// The type of a template keyword, from its data key's prefix (`thing1` → `Thing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeywordType {
    /// ≤ 20 characters.
    Thing,
    /// ≤ 32 digits, one decimal point allowed.
    Number,
    /// ≤ 32 letters.
    Letter,
    /// ≤ 5 symbols.
    Symbol,
    /// ≤ 32 digits, letters or symbols.
    CharacterString,
    /// 24-hour time, optionally with a date; `a~b` ranges.
    Time,
    /// A date (`2023-11-10`, `2023/11/10`, `2023年11月10日`), optionally with a time; ranges.
    Date,
    /// An optional currency symbol, ≤ 10 digits, ≤ 2 decimals, an optional 元.
    Amount,
    /// ≤ 17 digits or phone symbols.
    PhoneNumber,
    /// ≤ 8 characters: a province character, then letters and digits.
    CarNumber,
    /// ≤ 10 Chinese characters or ≤ 20 letters.
    Name,
    /// ≤ 5 Chinese characters.
    Phrase,
    /// One of the template's enumerated values (checked by WeChat only).
    Enum,
    /// A type this version does not know (not checked locally).
    Other,
}

impl KeywordType {
    /// The type of a data key such as `thing1` or `character_string12`.
    pub fn of_key(key: &str) -> Self {
        match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
            "thing" => Self::Thing,
            "number" => Self::Number,
            "letter" => Self::Letter,
            "symbol" => Self::Symbol,
            "character_string" => Self::CharacterString,
            "time" => Self::Time,
            "date" => Self::Date,
            "amount" => Self::Amount,
            "phone_number" => Self::PhoneNumber,
            "car_number" => Self::CarNumber,
            "name" => Self::Name,
            "phrase" => Self::Phrase,
            "enum" => Self::Enum,
            _ => Self::Other,
        }
    }

    /// Whether `value` satisfies this type's rule.
    pub fn accepts(self, value: &str) -> bool {
        let len = value.chars().count();
        let han = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
        match self {
            Self::Thing => (1..=20).contains(&len),
            Self::Number => {
                let digits = value.strip_prefix('-').unwrap_or(value);
                (1..=32).contains(&len)
                    && digits.split('.').count() <= 2
                    && digits
                        .split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            }
            Self::Letter => {
                (1..=32).contains(&len) && value.bytes().all(|b| b.is_ascii_alphabetic())
            }
            Self::Symbol => {
                (1..=5).contains(&len)
                    && value
                        .chars()
                        .all(|c| !c.is_alphanumeric() && !c.is_whitespace())
            }
            Self::CharacterString => {
                (1..=32).contains(&len) && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
            }
            Self::Time => ranged(value, |p| {
                clock(p) || split_date_time(p).is_some_and(|(d, t)| calendar(d) && clock(t))
            }),
            Self::Date => ranged(value, |p| {
                calendar(p) || split_date_time(p).is_some_and(|(d, t)| calendar(d) && clock(t))
            }),
            Self::Amount => {
                let v = value.strip_suffix('元').unwrap_or(value);
                let v = v.strip_prefix(|c: char| "¥￥$€£".contains(c)).unwrap_or(v);
                let (int, frac) = v.split_once('.').unwrap_or((v, ""));
                !int.is_empty()
                    && int.len() <= 10
                    && frac.len() <= 2
                    && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
                    && (frac.is_empty() != v.contains('.'))
            }
            Self::PhoneNumber => {
                (1..=17).contains(&len)
                    && value
                        .chars()
                        .all(|c| c.is_ascii_digit() || "+-() ".contains(c))
            }
            Self::CarNumber => {
                let mut cs = value.chars();
                (1..=8).contains(&len)
                    && cs
                        .next()
                        .is_some_and(|c| han(c) || c.is_ascii_alphanumeric())
                    && cs.all(|c| c.is_ascii_alphanumeric() || c == '·')
            }
            Self::Name => {
                ((1..=10).contains(&len) && value.chars().all(han))
                    || ((1..=20).contains(&len)
                        && value.chars().all(|c| c.is_ascii_alphabetic() || c == ' '))
            }
            Self::Phrase => (1..=5).contains(&len) && value.chars().all(han),
            Self::Enum | Self::Other => len >= 1,
        }
    }
}

fn ranged(value: &str, one: impl Fn(&str) -> bool) -> bool {
    !value.is_empty() && value.split('~').all(|p| one(p.trim()))
}

fn split_date_time(v: &str) -> Option<(&str, &str)> {
    v.split_once(' ')
}

fn clock(t: &str) -> bool {
    let parts: Vec<u32> = t
        .split(':')
        .map(|p| {
            if p.len() == 2 {
                p.parse().unwrap_or(99)
            } else {
                99
            }
        })
        .collect();
    matches!(parts.len(), 2 | 3) && parts[0] < 24 && parts[1..].iter().all(|p| *p < 60)
}

fn calendar(d: &str) -> bool {
    if !d
        .chars()
        .all(|c| c.is_ascii_digit() || "-/年月日".contains(c))
    {
        return false;
    }
    let nums: Vec<&str> = d
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    nums.len() == 3
        && nums[0].len() == 4
        && nums[1].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && nums[2].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Value {
    value: String,
}

/// The `data` of a subscribe message, checked value by value.
///
/// ```
/// use weapp::api::subscribe::SubscribeData;
/// let data = SubscribeData::new()
///     .set("thing2", "黄焖鸡米饭")?
///     .set("amount4", "¥32.50")?;
/// assert!(SubscribeData::new().set("phrase7", "已经送达了吗").is_err()); // over 5 characters
/// # Ok::<(), weapp::Error>(())
/// ```
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SubscribeData(BTreeMap<String, Value>);

impl SubscribeData {
    /// Empty data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (e.g. `thing1`) after checking `value` against the key's type.
    ///
    /// # Errors
    /// 47003 naming the field, as WeChat would answer.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        if !KeywordType::of_key(key).accepts(&value) {
            return Err(rejected_locally(
                SEND,
                47003,
                format!(
                    "argument invalid! data.{key}.value `{value}` breaks the {:?} rule",
                    KeywordType::of_key(key)
                ),
            ));
        }
        self.0.insert(key.to_owned(), Value { value });
        Ok(self)
    }
}

/// Which version the message's page opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MiniprogramState {
    /// Development version.
    Developer,
    /// Trial version.
    Trial,
    /// Published version (default).
    #[default]
    Formal,
}

/// The language of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Lang {
    /// Simplified Chinese (default).
    #[default]
    #[serde(rename = "zh_CN")]
    ZhCn,
    /// English.
    #[serde(rename = "en_US")]
    EnUs,
    /// Traditional Chinese (Hong Kong).
    #[serde(rename = "zh_HK")]
    ZhHk,
    /// Traditional Chinese (Taiwan).
    #[serde(rename = "zh_TW")]
    ZhTw,
}

/// `message/subscribe/send`.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct SendSubscribe {
    #[serde(skip)]
    client: Client,
    touser: String,
    template_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    data: SubscribeData,
    miniprogram_state: MiniprogramState,
    lang: Lang,
}

/// The answer of a send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Sent {
    /// The message id (matches `subscribe_msg_sent_event`).
    #[serde(default)]
    pub msgid: Option<i64>,
}

impl JsonResponse for Sent {}

impl SendSubscribe {
    /// The page the message opens (with its query).
    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.page = Some(page.into());
        self
    }

    /// Which version the page opens (default formal).
    pub fn state(mut self, state: MiniprogramState) -> Self {
        self.miniprogram_state = state;
        self
    }

    /// The message language (default zh_CN).
    pub fn lang(mut self, lang: Lang) -> Self {
        self.lang = lang;
        self
    }

    /// Sends it. Not retried on an unknown outcome (a retry could deliver twice).
    ///
    /// # Errors
    /// 43101 the user has no grant left, 47003 a value breaks its rule, 40037, 40003,
    /// [`Error::OutcomeUnknown`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::subscribe::{Lang, MiniprogramState, SubscribeData};
    /// let data = SubscribeData::new().set("thing2", "黄焖鸡米饭")?.set("phrase7", "已送达")?;
    /// client.subscribe().send("oOPENID", "TEMPLATE_ID", data).page("pages/order/order?id=1")
    ///     .state(MiniprogramState::Trial).lang(Lang::EnUs).send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<Sent> {
        if self.touser.is_empty() || self.template_id.is_empty() {
            return Err(Error::InvalidArgument(
                "touser and template_id must not be empty".into(),
            ));
        }
        self.client.send(&self).await
    }
}

impl Endpoint for SendSubscribe {
    type Output = Sent;
    const PATH: &'static str = SEND;
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// A category of the public template library.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Category {
    /// Category id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// A public template.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubTemplate {
    /// Template id in the library.
    pub tid: i64,
    /// Title.
    pub title: String,
    /// 2: one-time, 3: long-term.
    #[serde(rename = "type")]
    pub kind: i64,
    /// Its category.
    #[serde(rename = "categoryId", deserialize_with = "string_or_int")]
    pub category_id: i64,
}

fn string_or_int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum E {
        S(String),
        N(i64),
    }
    match E::deserialize(d)? {
        E::N(n) => Ok(n),
        E::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// A page of public templates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct PubTemplates {
    /// Total matching.
    pub count: u64,
    /// This page.
    pub data: Vec<PubTemplate>,
}

impl JsonResponse for PubTemplates {}

/// A keyword of a public template.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubKeyword {
    /// Keyword id (for `kidList`).
    pub kid: i64,
    /// Name.
    pub name: String,
    /// Example value.
    pub example: String,
    /// Its type (`thing`, `time`, …).
    pub rule: String,
}

/// A private template of the app.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrivateTemplate {
    /// The `template_id` to send with.
    #[serde(rename = "priTmplId")]
    pub pri_tmpl_id: String,
    /// Title.
    pub title: String,
    /// `name:{{thing1.DATA}}` lines.
    pub content: String,
    /// Example lines.
    pub example: String,
    /// 2: one-time, 3: long-term.
    #[serde(rename = "type")]
    pub kind: i64,
}

#[derive(Debug, Deserialize)]
struct Data<T> {
    data: Vec<T>,
}

impl<T: serde::de::DeserializeOwned> JsonResponse for Data<T> {}

macro_rules! get_endpoint {
    ($name:ident, $path:literal, $out:ty) => {
        struct $name(Vec<(&'static str, String)>);
        impl Endpoint for $name {
            type Output = $out;
            const PATH: &'static str = $path;
            const IDEMPOTENT: bool = true;
            const METHOD: Method = Method::Get;
            fn query(&self) -> Vec<(&'static str, String)> {
                self.0.clone()
            }
        }
    };
}

get_endpoint!(GetCategory, "/wxaapi/newtmpl/getcategory", Data<Category>);
get_endpoint!(
    GetTitles,
    "/wxaapi/newtmpl/getpubtemplatetitles",
    PubTemplates
);
get_endpoint!(
    GetKeywords,
    "/wxaapi/newtmpl/getpubtemplatekeywords",
    Data<PubKeyword>
);
get_endpoint!(
    GetTemplates,
    "/wxaapi/newtmpl/gettemplate",
    Data<PrivateTemplate>
);

#[derive(Serialize)]
struct AddTemplate<'a> {
    tid: String,
    #[serde(rename = "kidList")]
    kid_list: &'a [i64],
    #[serde(rename = "sceneDesc")]
    scene_desc: &'a str,
}

#[derive(Debug, Deserialize)]
struct Added {
    #[serde(rename = "priTmplId")]
    pri_tmpl_id: String,
}

impl JsonResponse for Added {}

impl Endpoint for AddTemplate<'_> {
    type Output = Added;
    const PATH: &'static str = "/wxaapi/newtmpl/addtemplate";
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

#[derive(Serialize)]
struct DelTemplate<'a> {
    #[serde(rename = "priTmplId")]
    pri_tmpl_id: &'a str,
}

impl Endpoint for DelTemplate<'_> {
    type Output = Ack;
    const PATH: &'static str = "/wxaapi/newtmpl/deltemplate";
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl SubscribeApi {
    /// A message to `touser` with `template_id` and checked `data`; see [`SendSubscribe`].
    pub fn send(
        &self,
        touser: impl Into<String>,
        template_id: impl Into<String>,
        data: SubscribeData,
    ) -> SendSubscribe {
        SendSubscribe {
            client: self.client.clone(),
            touser: touser.into(),
            template_id: template_id.into(),
            page: None,
            data,
            miniprogram_state: MiniprogramState::default(),
            lang: Lang::default(),
        }
    }

    /// The app's categories in the template library.
    ///
    /// # Errors
    /// WeChat errors.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let categories = client.subscribe().categories().await?;
    /// # Ok(()) }
    /// ```
    pub async fn categories(&self) -> Result<Vec<Category>> {
        self.client
            .send(&GetCategory(Vec::new()))
            .await
            .map(|d| d.data)
    }

    /// Public templates of `category_ids`, `limit` (≤ 30) from `start`.
    ///
    /// # Errors
    /// Local: empty ids or a limit over 30; WeChat 200016–200019.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let page = client.subscribe().public_templates(&[616], 0, 30).await?;
    /// # Ok(()) }
    /// ```
    pub async fn public_templates(
        &self,
        category_ids: &[i64],
        start: u32,
        limit: u32,
    ) -> Result<PubTemplates> {
        if category_ids.is_empty() {
            return Err(rejected_locally(
                "/wxaapi/newtmpl/getpubtemplatetitles",
                200018,
                "category ids missing",
            ));
        }
        if !(1..=30).contains(&limit) {
            return Err(rejected_locally(
                "/wxaapi/newtmpl/getpubtemplatetitles",
                200017,
                "limit must be 1-30",
            ));
        }
        let ids = category_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.client
            .send(&GetTitles(vec![
                ("ids", ids),
                ("start", start.to_string()),
                ("limit", limit.to_string()),
            ]))
            .await
    }

    /// The keywords of public template `tid`.
    ///
    /// # Errors
    /// 200014 unknown tid.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let keywords = client.subscribe().public_keywords(1001).await?;
    /// # Ok(()) }
    /// ```
    pub async fn public_keywords(&self, tid: i64) -> Result<Vec<PubKeyword>> {
        self.client
            .send(&GetKeywords(vec![("tid", tid.to_string())]))
            .await
            .map(|d| d.data)
    }

    /// Adds a private template from public template `tid` with 2–5 keywords; returns its id.
    ///
    /// # Errors
    /// Local: kid count or sceneDesc length; WeChat 200012, 200014, 200020, 200021.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let template_id = client.subscribe().add_template(1001, &[1, 2, 7], "外卖送达").await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_template(
        &self,
        tid: i64,
        kid_list: &[i64],
        scene_desc: &str,
    ) -> Result<String> {
        const P: &str = "/wxaapi/newtmpl/addtemplate";
        if !(2..=5).contains(&kid_list.len()) {
            return Err(rejected_locally(
                P,
                200020,
                "kidList must hold 2-5 keywords",
            ));
        }
        if scene_desc.chars().count() > 15 {
            return Err(rejected_locally(
                P,
                200021,
                "sceneDesc must be at most 15 characters",
            ));
        }
        self.client
            .send(&AddTemplate {
                tid: tid.to_string(),
                kid_list,
                scene_desc,
            })
            .await
            .map(|a| a.pri_tmpl_id)
    }

    /// Deletes a private template.
    ///
    /// # Errors
    /// WeChat errors for unknown ids.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// client.subscribe().delete_template("TEMPLATE_ID").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_template(&self, pri_tmpl_id: &str) -> Result<()> {
        self.client
            .send(&DelTemplate { pri_tmpl_id })
            .await
            .map(|_| ())
    }

    /// The app's private templates.
    ///
    /// # Errors
    /// WeChat errors.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// for t in client.subscribe().templates().await? { println!("{} {}", t.pri_tmpl_id, t.title); }
    /// # Ok(()) }
    /// ```
    pub async fn templates(&self) -> Result<Vec<PrivateTemplate>> {
        self.client
            .send(&GetTemplates(Vec::new()))
            .await
            .map(|d| d.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_of_each_rule() {
        use KeywordType as K;
        let cases: &[(K, &str, bool)] = &[
            (K::Thing, &"字".repeat(20), true),
            (K::Thing, &"字".repeat(21), false),
            (K::Thing, "", false),
            (K::Number, "12.50", true),
            (K::Number, "1.2.3", false),
            (K::Number, &"9".repeat(33), false),
            (K::Letter, &"a".repeat(32), true),
            (K::Letter, "abc1", false),
            (K::Symbol, "★☆★☆★", true),
            (K::Symbol, "★☆★☆★☆", false),
            (K::CharacterString, "SF-1234_x", true),
            (K::CharacterString, "中文", false),
            (K::Time, "23:59", true),
            (K::Time, "24:00", false),
            (K::Time, "2023-11-10 12:30~2023-11-10 13:30", true),
            (K::Date, "2023年11月10日", true),
            (K::Date, "2023-02-31", true),
            (K::Date, "2023-13-01", false),
            (K::Amount, "¥1234567890.99", true),
            (K::Amount, "12345678901", false),
            (K::Amount, "1.234", false),
            (K::Amount, "100元", true),
            (K::PhoneNumber, &"1".repeat(17), true),
            (K::PhoneNumber, &"1".repeat(18), false),
            (K::CarNumber, "粤B12345", true),
            (K::CarNumber, "粤B1234567", false),
            (K::Name, &"张".repeat(10), true),
            (K::Name, &"张".repeat(11), false),
            (K::Name, "John Smith", true),
            (K::Phrase, "已送达", true),
            (K::Phrase, "已经送达了吧", false),
            (K::Phrase, "ok", false),
        ];
        for (t, v, ok) in cases {
            assert_eq!(t.accepts(v), *ok, "{t:?} {v:?}");
        }
        assert_eq!(
            KeywordType::of_key("character_string12"),
            K::CharacterString
        );
        let err = SubscribeData::new()
            .set("thing1", "字".repeat(21))
            .unwrap_err();
        assert_eq!(err.errcode().unwrap().code(), 47003);
        assert!(err.to_string().contains("data.thing1"));
    }
}
