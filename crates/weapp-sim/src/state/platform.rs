//! The third-party platform domain's state: the platforms registered, their tickets, component
//! tokens and the merchants' authorizations; and the checks other domains make against it — an
//! authorizer token's permission sets and a platform's IP whitelist. The rules are in
//! `crate::platform`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::push::{PushFormat, PushMode, PushTarget};
use crate::error::{WxError, WxResult};

tokio::task_local! {
    /// The address of the request being answered (`None`: the server was started without
    /// connection info), set around every request by the router.
    pub(crate) static CALLER: Option<IpAddr>;
}

/// The caller of the request being answered, if known.
fn caller() -> Option<IpAddr> {
    CALLER.try_with(|c| *c).ok().flatten()
}

/// The permission set (小程序权限集 id) a mini program API at `path` belongs to, for the APIs
/// of the simulator whose set WeChat documents: 17 获取小程序码 (the three code APIs), 18
/// 开发管理与数据分析 (`/datacube/…` and the performance data), 19 客服消息管理 (customer-service
/// messages, typing and their media). A platform acting for a merchant that did not grant the
/// set gets 61007 `api is unauthorized to component`; other APIs need no particular set here.
pub fn permission_set(path: &str) -> Option<i64> {
    match path {
        "/wxa/getwxacode" | "/wxa/getwxacodeunlimit" | "/cgi-bin/wxaapp/createwxaqrcode" => {
            Some(17)
        }
        "/wxa/business/performance/boot" => Some(18),
        p if p.starts_with("/datacube/") => Some(18),
        "/cgi-bin/message/custom/send"
        | "/cgi-bin/message/custom/typing"
        | "/cgi-bin/media/upload"
        | "/cgi-bin/media/get" => Some(19),
        _ => None,
    }
}

/// A merchant's authorization of a platform.
#[derive(Debug, Clone)]
pub(crate) struct Authorization {
    pub(crate) refresh_token: String,
    pub(crate) func_ids: Vec<i64>,
    /// Unix seconds of the last authorization.
    pub(crate) auth_time: i64,
    /// Whether `api_query_auth` has been called since (the list omits the refresh token
    /// before).
    pub(crate) exchanged: bool,
    /// False once the merchant de-authorized (kept, for 61003).
    pub(crate) active: bool,
    /// The authorizer tokens issued under this authorization (current, previous).
    pub(crate) current: Option<String>,
    pub(crate) previous: Option<String>,
}

/// One registered platform.
#[derive(Debug, Clone)]
pub(crate) struct Platform {
    pub(crate) secret: String,
    pub(crate) token: String,
    pub(crate) aes_key: String,
    pub(crate) event_url: Option<String>,
    pub(crate) message_url: Option<String>,
    /// Tickets pushed: (value, Unix ms).
    pub(crate) tickets: Vec<(String, i64)>,
    pub(crate) next_ticket_at: Option<i64>,
    /// When a ticket push was last answered `success`.
    pub(crate) last_ticket_ok: Option<i64>,
    /// Whether the last ticket push was not answered `success`.
    pub(crate) last_ticket_failed: bool,
    pub(crate) ticket_pushes: u64,
    pub(crate) component_current: Option<String>,
    pub(crate) component_previous: Option<String>,
    pub(crate) counters: HashMap<&'static str, (i64, u32)>,
    pub(crate) pre_auth: HashMap<String, (i64, bool)>,
    pub(crate) auth_codes: HashMap<String, (String, i64)>,
    /// By authorizer appid (ordered, for stable paging).
    pub(crate) authorizers: BTreeMap<String, Authorization>,
    /// Component tokens issued.
    pub(crate) tokens_issued: u64,
    /// The addresses component calls may come from (`None`: any).
    pub(crate) ip_whitelist: Option<Vec<IpAddr>>,
}

/// A component token's life.
#[derive(Debug, Clone)]
pub(crate) struct ComponentToken {
    pub(crate) component_appid: String,
    pub(crate) expires_at: i64,
    pub(crate) valid_until: Option<i64>,
}

/// The platforms and their component tokens.
#[derive(Debug, Default)]
pub(crate) struct PlatformTable {
    pub(crate) platforms: HashMap<String, Platform>,
    pub(crate) tokens: HashMap<String, ComponentToken>,
    /// Authorizer options set, by authorizer appid (an account's settings, whichever platform
    /// set them).
    pub(crate) options: HashMap<String, BTreeMap<String, String>>,
}

impl PlatformTable {
    /// The registrations alone (what a reset keeps): secrets, keys and URLs.
    pub(crate) fn registrations_only(&self) -> Self {
        Self {
            platforms: self
                .platforms
                .iter()
                .map(|(id, p)| {
                    let mut kept = fresh(
                        p.secret.clone(),
                        p.token.clone(),
                        p.aes_key.clone(),
                        p.event_url.clone(),
                        p.message_url.clone(),
                    );
                    kept.ip_whitelist = p.ip_whitelist.clone();
                    (id.clone(), kept)
                })
                .collect(),
            tokens: HashMap::new(),
            options: HashMap::new(),
        }
    }

    /// 61004 when `component_appid` has an IP whitelist without the caller's address (calls
    /// it makes with its component token, and for a merchant with an authorizer token).
    pub(crate) fn check_whitelist(&self, component_appid: &str) -> WxResult<()> {
        let Some(list) = self
            .platforms
            .get(component_appid)
            .and_then(|p| p.ip_whitelist.as_ref())
        else {
            return Ok(());
        };
        match caller() {
            Some(ip) if list.contains(&ip) => Ok(()),
            ip => Err(WxError::new(
                61004,
                format!(
                    "access clientip is not registered requestIP: {}",
                    ip.map_or_else(|| "unknown".to_owned(), |i| i.to_string())
                ),
            )),
        }
    }

    /// Whether `authorizer` has (still) granted `component_appid` the permission set `set`.
    pub(crate) fn granted(&self, component_appid: &str, authorizer: &str, set: i64) -> bool {
        self.platforms
            .get(component_appid)
            .and_then(|p| p.authorizers.get(authorizer))
            .is_some_and(|a| a.active && a.func_ids.contains(&set))
    }

    /// Where WeChat pushes the messages of `appid` when a platform manages them: the message
    /// URL of a platform it has authorized (`$APPID$` replaced by the appid), XML in safe mode,
    /// signed and encrypted with the platform's token and key, to the platform's appid.
    pub(crate) fn message_target(&self, appid: &str) -> Option<(PushTarget, String)> {
        let mut ids: Vec<&String> = self.platforms.keys().collect();
        ids.sort();
        ids.into_iter().find_map(|id| {
            let p = &self.platforms[id];
            let url = p.message_url.as_ref()?;
            p.authorizers.get(appid).filter(|a| a.active)?;
            Some((
                PushTarget {
                    url: url.replace("$APPID$", appid),
                    token: p.token.clone(),
                    encoding_aes_key: Some(p.aes_key.clone()),
                    mode: PushMode::Safe,
                    format: PushFormat::Xml,
                },
                id.clone(),
            ))
        })
    }
}

/// A newly registered platform: no tickets, tokens or authorizations yet (with an event URL,
/// its first ticket push is due at once).
pub(crate) fn fresh(
    secret: String,
    token: String,
    aes_key: String,
    event_url: Option<String>,
    message_url: Option<String>,
) -> Platform {
    Platform {
        secret,
        token,
        aes_key,
        next_ticket_at: event_url.as_ref().map(|_| 0),
        event_url,
        message_url,
        tickets: Vec::new(),
        last_ticket_ok: None,
        last_ticket_failed: false,
        ticket_pushes: 0,
        component_current: None,
        component_previous: None,
        counters: HashMap::new(),
        pre_auth: HashMap::new(),
        auth_codes: HashMap::new(),
        authorizers: BTreeMap::new(),
        tokens_issued: 0,
        ip_whitelist: None,
    }
}
