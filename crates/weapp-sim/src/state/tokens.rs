//! The tokens domain's state: every token issued (to answer calls made with it), each app's
//! current and previous classic and stable tokens, and counts per app. The rules are in
//! `crate::tokens`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

/// Which token endpoint issued a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// `/cgi-bin/token`
    Classic,
    /// `/cgi-bin/stable_token`
    Stable,
    /// `/cgi-bin/component/api_query_auth` and `api_authorizer_token`: a third-party
    /// platform's token for a mini program that authorized it.
    Authorizer,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenRec {
    pub(crate) appid: String,
    pub(crate) issued_at: i64,
    pub(crate) expires_at: i64,
    /// Set when superseded: the token works until then (and never past `expires_at`).
    pub(crate) valid_until: Option<i64>,
    /// For an authorizer token: the platform acting for the mini program with it (whose
    /// granted permission sets decide which APIs the token may call).
    pub(crate) component: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Slot {
    pub(crate) current: Option<(String, i64)>,
    pub(crate) previous: Option<String>,
}

/// An app's token slice.
#[derive(Debug, Default)]
pub(crate) struct AppTokens {
    pub(crate) classic: Slot,
    pub(crate) stable: Slot,
    pub(crate) last_force: Option<i64>,
    /// `stable_token` calls with `force_refresh: true` (whatever they answered).
    pub(crate) force_requests: u64,
}

/// Every token ever issued (to answer calls made with it), and counts per app.
#[derive(Debug, Default)]
pub(crate) struct TokenTable {
    pub(crate) tokens: HashMap<String, TokenRec>,
    pub(crate) issued: HashMap<String, HashMap<TokenKind, u64>>,
}

impl TokenTable {
    /// Whether `token` was issued to a platform acting for a mini program.
    pub(crate) fn is_authorizer_token(&self, token: &str) -> bool {
        self.tokens
            .get(token)
            .is_some_and(|r| r.component.is_some())
    }

    /// Marks `token` (an authorizer token) as issued to `component_appid`.
    pub(crate) fn bind_component(&mut self, token: &str, component_appid: &str) {
        if let Some(rec) = self.tokens.get_mut(token) {
            rec.component = Some(component_appid.to_owned());
        }
    }

    /// `{appid: {classic: n, stable: n}}`.
    pub(crate) fn issued_json(&self) -> serde_json::Map<String, Value> {
        self.issued
            .iter()
            .map(|(appid, m)| {
                (
                    appid.clone(),
                    json!({
                        "classic": m.get(&TokenKind::Classic).copied().unwrap_or(0),
                        "stable": m.get(&TokenKind::Stable).copied().unwrap_or(0),
                    }),
                )
            })
            .collect()
    }
}
