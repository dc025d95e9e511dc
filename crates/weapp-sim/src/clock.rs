//! Time as WeChat counts it: the clock modes, the wall clock, and the periods quotas reset on
//! (Beijing days, minutes, 30-day months).
//!
//! A leaf: it imports nothing of the crate. The simulator's own clock (virtual or real, and
//! advanced by the control API) is [`crate::Sim`]'s, in `world.rs`.

/// How the simulator's clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Frozen at start; moves only when advanced (the default; deterministic tests).
    #[default]
    Virtual,
    /// Follows the wall clock, plus any advances (for long-running sandboxes).
    Real,
}

/// The wall clock, Unix ms.
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Beijing time, where WeChat's daily quotas reset at midnight.
pub(crate) fn day_of(now_ms: i64) -> i64 {
    (now_ms / 1000 + 8 * 3600).div_euclid(86_400)
}

pub(crate) fn minute_of(now_ms: i64) -> i64 {
    (now_ms / 1000).div_euclid(60)
}

pub(crate) fn month_of(now_ms: i64) -> i64 {
    day_of(now_ms).div_euclid(30)
}
