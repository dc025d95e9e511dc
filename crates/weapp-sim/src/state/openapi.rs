//! The OpenAPI management domain's state: each app's call counters for `quota/get` and its
//! `clear_quota` calls. The rules are in `crate::openapi`.

use std::collections::HashMap;

/// An app's OpenAPI slice.
#[derive(Debug, Default)]
pub(crate) struct AppOpenapi {
    /// Token-authenticated calls per path today: (day, count).
    pub(crate) daily_calls: HashMap<String, (i64, u64)>,
    /// `clear_quota` calls this month: (month, count).
    pub(crate) clear_quota: (i64, u32),
}

impl AppOpenapi {
    /// Counts one token-authenticated call of `path` on `day` (for `quota/get`).
    pub(crate) fn count_call(&mut self, path: &str, day: i64) {
        let e = self.daily_calls.entry(path.to_owned()).or_insert((day, 0));
        if e.0 != day {
            *e = (day, 0);
        }
        e.1 += 1;
    }
}
