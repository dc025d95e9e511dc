//! The data each WeChat domain keeps, one file per domain: only its shape (and the few queries
//! lower layers make of it, such as what a reset keeps); the rules that change it, and the
//! routes, are in the domain's own module (`crate::tokens` for `state::tokens`, and so on).
//!
//! [`World`](crate::world::World) and each [`App`](crate::world::App) hold one slice of every
//! domain, which is why the shapes live here, below both the world and the domains: a domain
//! imports the world and its own slice, and nothing here imports a domain. Fields are
//! `pub(crate)` because the module with the rules is a sibling, not a parent.

pub(crate) mod console;
pub(crate) mod customer_service;
pub(crate) mod links;
pub(crate) mod login;
pub(crate) mod openapi;
pub(crate) mod pay;
pub(crate) mod phone;
pub(crate) mod platform;
pub(crate) mod push;
pub(crate) mod subscribe;
pub(crate) mod tokens;
pub(crate) mod wxacode;

/// A one-time code (login, phone, plugin).
#[derive(Debug, Clone)]
pub(crate) struct Code {
    pub(crate) appid: String,
    pub(crate) openid: String,
    pub(crate) issued_at: i64,
    pub(crate) used: bool,
    pub(crate) phone: Option<String>,
}
