//! The phone domain's state: the getPhoneNumber button's one-time codes. The rules are in
//! `crate::phone`.

use std::collections::HashMap;

use super::Code;

/// Phone codes by value.
#[derive(Debug, Default)]
pub(crate) struct PhoneCodes {
    pub(crate) codes: HashMap<String, Code>,
}
