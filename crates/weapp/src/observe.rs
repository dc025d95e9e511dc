//! Optional observer hooks: how a service measures the SDK's upstream calls (and, with the
//! `redis` feature, its Redis store) without wrapping every call site.
//!
//! An observer is called synchronously on the task that made the call, once per attempt: keep
//! it cheap (an atomic increment, a histogram observation) and never block in it. It sees the
//! endpoint's path (never its query string, which may carry a secret, nor the access token),
//! the errcode and the time taken: nothing secret.

use std::time::Duration;

/// What became of one attempt of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// WeChat answered without a non-zero errcode.
    Ok,
    /// WeChat answered with this non-zero errcode.
    ErrCode(i64),
    /// No usable answer: a transport failure, a timeout, an HTTP status without an errcode
    /// body, or a body that did not decode.
    Failed,
}

impl CallOutcome {
    /// The errcode as a metric label would carry it: `0` for success, `-2` for a failure
    /// without one (the convention of weapp-server's `weapp_upstream_errors_total`).
    pub fn errcode(self) -> i64 {
        match self {
            CallOutcome::Ok => 0,
            CallOutcome::ErrCode(code) => code,
            CallOutcome::Failed => -2,
        }
    }
}

/// One attempt of an upstream call, as an observer sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallEvent<'a> {
    /// The endpoint's path, e.g. `/sns/jscode2session` (no query string).
    pub path: &'a str,
    /// How it ended.
    pub outcome: CallOutcome,
    /// From sending the request to having decoded (or failed to decode) the answer.
    pub elapsed: Duration,
}

/// Sees every attempt of every upstream call a [`Client`](crate::Client) makes, token fetches
/// included (retries are separate attempts). Set with
/// [`ClientBuilder::observer`](crate::ClientBuilder::observer).
///
/// ```
/// use weapp::observe::{CallEvent, CallObserver};
/// #[derive(Debug)]
/// struct Log;
/// impl CallObserver for Log {
///     fn call(&self, e: &CallEvent<'_>) {
///         eprintln!("{} {:?} in {:?}", e.path, e.outcome, e.elapsed);
///     }
/// }
/// let client = weapp::Client::builder("wx1234567890abcdef", "secret")
///     .observer(std::sync::Arc::new(Log))
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    /// Called once per attempt, after the answer was decoded or the attempt failed.
    fn call(&self, event: &CallEvent<'_>);
}

/// What a Redis store saw. Set with `RedisStore::with_observer` (feature `redis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisEvent {
    /// A command failed (I/O, timeout, or an error reply); `op` names the command or script.
    Error {
        /// `MGET`, `store`, `lock`, … (a fixed name, never a key).
        op: &'static str,
    },
    /// A failover seen: a command succeeded after the previous one had failed (the connection
    /// was re-established), or Redis answered READONLY (a primary demoted to a replica) or
    /// MOVED (a Cluster slot moved).
    Failover,
}

/// Sees a Redis store's errors and the failovers it lived through.
pub trait RedisObserver: Send + Sync + std::fmt::Debug {
    /// Called synchronously after the command; keep it cheap.
    fn redis(&self, event: RedisEvent);
}
