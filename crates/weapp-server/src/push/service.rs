//! The push service: the receiving apps (through the broker), the outbox's wake-up, and the
//! pushes this instance is storing right now.

use std::sync::{Arc, Mutex};

use crate::broker::Broker;
use crate::config::Secret;
use crate::shared::Shared;

/// Where a third-party platform's own events go (the platforms domain answers; the outbox asks
/// without knowing platforms).
pub trait PlatformWebhooks: Send + Sync {
    /// `None` when `id` is not a platform served here; `Some(None)` for a platform without a
    /// webhook; otherwise its webhook URL and secret.
    fn platform_webhook(&self, id: &str) -> Option<Option<(String, Secret)>>;
}

/// Everything the push handlers and the outbox worker need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Push(Arc<PushInner>);

/// The parts of [`Push`].
#[derive(Debug)]
pub struct PushInner {
    shared: Shared,
    /// The apps (their push receivers and webhooks) and broker clients.
    pub broker: Broker,
    /// Wakes the outbox worker when an event is stored.
    pub outbox: tokio::sync::Notify,
    /// Pushes (app and replay key) being stored by this instance right now, when the replay
    /// memory is local: a retry arriving meanwhile is answered 503, not refused as a replay.
    pub pushes_in_flight: Mutex<std::collections::HashSet<String>>,
}

crate::shared::service_handle!(Push, PushInner);

impl Push {
    /// The push service.
    pub fn new(shared: Shared, broker: Broker) -> Self {
        Push(Arc::new(PushInner {
            shared,
            broker,
            outbox: tokio::sync::Notify::new(),
            pushes_in_flight: Mutex::new(std::collections::HashSet::new()),
        }))
    }
}
