//! The links domain's state: generated schemes and links by ticket, and the permanent short
//! links each app made. The rules are in `crate::links`.

use std::collections::HashMap;

use serde::Serialize;

/// A generated scheme or link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkRecord {
    /// Owner.
    pub appid: String,
    /// Page (empty: home).
    pub path: String,
    /// Query.
    pub query: String,
    /// Unix seconds.
    pub create_time: i64,
    /// Unix seconds (0: never).
    pub expire_time: i64,
    /// release / trial / develop.
    pub env_version: String,
}

/// Schemes and links by ticket, and permanent short links made per app.
#[derive(Debug, Default)]
pub(crate) struct LinkTable {
    pub(crate) links: HashMap<String, LinkRecord>,
    pub(crate) permanent_short_links: HashMap<String, u64>,
}
