//! The subscribe-message domain's state: each app's private templates and the grants users
//! gave it. The rules are in `crate::subscribe`.

use std::collections::HashMap;

use serde::Serialize;

/// An app's subscribe slice.
#[derive(Debug, Default)]
pub(crate) struct AppSubscribe {
    /// Private templates.
    pub(crate) templates: Vec<PrivateTemplate>,
    /// Remaining grants per (openid, template_id).
    pub(crate) grants: HashMap<(String, String), u32>,
}

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
