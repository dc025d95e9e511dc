//! A per-key fixed-window limiter (per client IP on `POST /v1/login`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Allows `per_minute` hits per key per wall-clock minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl RateLimiter {
    /// A limiter; `per_minute == 0` disables it.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok(())` if the hit is allowed, else the seconds until the window resets.
    ///
    /// # Errors
    /// The number of seconds to wait.
    pub fn check(&self, key: IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let minute = now / 60;
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() > 100_000 {
            // Bounded memory under a flood of distinct addresses: old windows are worthless.
            w.retain(|_, (m, _)| *m == minute);
        }
        let entry = w.entry(key).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return Err(60 - now % 60);
        }
        entry.1 += 1;
        Ok(())
    }
}
