//! The login domain's state: one-time login and plugin codes, and each app's payments (for the
//! paid unionid). The rules are in `crate::login`.

use std::collections::HashMap;

use super::Code;

/// A payment a user made, for `getpaidunionid` within 5 minutes of it.
#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub(crate) openid: String,
    pub(crate) transaction_id: Option<String>,
    pub(crate) mch_id: Option<String>,
    pub(crate) out_trade_no: Option<String>,
    pub(crate) paid_at: i64,
}

/// An app's login slice.
#[derive(Debug, Default)]
pub(crate) struct AppLogin {
    pub(crate) payments: Vec<Payment>,
}

/// Login and plugin codes by value.
#[derive(Debug, Default)]
pub(crate) struct LoginCodes {
    pub(crate) codes: HashMap<String, Code>,
    pub(crate) plugin_codes: HashMap<String, Code>,
}
