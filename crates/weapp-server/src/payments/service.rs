//! The payments service: the merchants of the configuration, each with its `weapp::pay`
//! client (signing, verifying, decrypting), and the domains it asks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use weapp::pay::PayClient;

use super::error::MerchantError;
use crate::broker::Broker;
use crate::config::MerchantConfig;
use crate::keys::Keys;
use crate::push::Push;
use crate::shared::Shared;

/// One merchant served: its client and where WeChat notifies it.
#[derive(Debug)]
pub struct MerchantRuntime {
    /// The merchant id.
    pub mchid: String,
    /// The apps whose orders it takes.
    pub appids: Vec<String>,
    /// Its WeChat Pay client: requests signed with its key, answers and notifications verified
    /// with its WeChat Pay public key and/or platform certificates.
    pub client: PayClient,
    /// The `notify_url` sent with every prepay.
    pub notify_url: String,
    /// Where it is defined: the configuration file or the admin API.
    pub source: MerchantSource,
}

/// Where a merchant is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantSource {
    /// `[[merchants]]` of the configuration file (changed there only).
    Config,
    /// The admin API (`/v1/admin/merchants`), stored in `pay_merchants`.
    Admin,
}

impl MerchantSource {
    /// `config` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantSource::Config => "config",
            MerchantSource::Admin => "admin",
        }
    }
}

impl MerchantRuntime {
    /// Builds the merchant's client from its settings (`clock`: the server's, shared with a
    /// simulator in tests).
    ///
    /// # Errors
    /// Settings or keys that do not load; a client the SDK refuses.
    pub fn build(
        config: &MerchantConfig,
        clock: Option<Arc<dyn weapp::clock::Clock>>,
    ) -> Result<Self, MerchantError> {
        let keys = config.resolve_keys()?;
        let mut builder = PayClient::builder(keys.merchant, keys.apiv3_key);
        if let Some((id, key)) = keys.public_key {
            builder = builder.wechatpay_public_key(id, key);
        }
        if config.platform_certificates {
            builder = builder.platform_certificates();
        }
        // The production host keeps its backup host; any other base (a simulator, a forward
        // proxy) is used alone.
        if config.api_base.trim_end_matches('/') != weapp::pay::PAY_BASE_URL {
            builder = builder.base_url(config.api_base.clone());
        }
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        let client = builder.build().map_err(|source| MerchantError::Client {
            mchid: config.mchid.clone(),
            source: Box::new(source),
        })?;
        Ok(Self {
            mchid: config.mchid.clone(),
            appids: config.appids.clone(),
            client,
            notify_url: config.notify_url.clone(),
            source: MerchantSource::Config,
        })
    }
}

/// Everything the payment handlers need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Payments(Arc<PaymentsInner>);

/// The parts of [`Payments`].
#[derive(Debug)]
pub struct PaymentsInner {
    shared: Shared,
    /// Client keys (`pay:write`).
    pub broker: Broker,
    /// The event log and the outbox: one event per business change.
    pub push: Push,
    /// Opens the runtime merchants' sealed keys.
    pub keys: Keys,
    /// The merchants served now: the file's, and the admin API's as last loaded. Replaced
    /// whole (never changed in place) by [`Payments::sync_merchants`]; readers clone the
    /// `Arc` and hold no lock across an await.
    merchants: RwLock<Arc<MerchantMap>>,
    /// One merchant sync at a time (two interleaved ones could apply an older read last).
    sync_lock: tokio::sync::Mutex<()>,
    /// Per-client limiter of the payment routes (`pay_rate_limit_per_minute`).
    pub pay_limiter: crate::ratelimit::RateLimiter,
}

/// The merchants served, by mchid and by app.
#[derive(Debug, Default, Clone)]
pub struct MerchantMap {
    /// The merchants, by mchid.
    pub by_mchid: HashMap<String, Arc<MerchantRuntime>>,
    /// Which merchant takes each app's orders.
    pub by_app: HashMap<String, String>,
    /// The stored row each runtime merchant was built from (a digest of it): unchanged rows
    /// keep their client (and its certificate cache) across syncs.
    pub(super) loaded: HashMap<String, [u8; 32]>,
}

crate::shared::service_handle!(Payments, PaymentsInner);

impl Payments {
    /// The payments service with the configuration's merchants.
    ///
    /// # Errors
    /// A merchant whose settings, keys or client do not load.
    pub fn new(
        shared: Shared,
        keys: Keys,
        broker: Broker,
        push: Push,
    ) -> Result<Self, MerchantError> {
        let mut merchants = HashMap::new();
        let mut by_app = HashMap::new();
        for m in &shared.config.merchants {
            let runtime = MerchantRuntime::build(m, shared.config.clock.clone())?;
            for appid in &runtime.appids {
                by_app.insert(appid.clone(), runtime.mchid.clone());
            }
            merchants.insert(runtime.mchid.clone(), Arc::new(runtime));
        }
        let limits = match (&shared.redis, shared.config.rate_limit_backend) {
            (Some(r), crate::config::RateLimitBackend::Redis) => {
                Some(crate::ratelimit::Shared::new(r.clone()))
            }
            _ => None,
        };
        let pay_limiter = crate::ratelimit::RateLimiter::new(
            "pay",
            shared.config.pay_rate_limit_per_minute,
            shared.config.rate_limit_max_keys,
        )
        .shared(limits);
        Ok(Payments(Arc::new(PaymentsInner {
            shared,
            broker,
            push,
            keys,
            merchants: RwLock::new(Arc::new(MerchantMap {
                by_mchid: merchants,
                by_app,
                loaded: HashMap::new(),
            })),
            sync_lock: tokio::sync::Mutex::new(()),
            pay_limiter,
        })))
    }

    /// Now, Unix ms, on the payments clock: orders' schedules, expiry and prepay ages are
    /// measured with it (the configuration's clock — a simulator's virtual one in tests —
    /// else the system's).
    pub fn now(&self) -> i64 {
        self.config
            .clock
            .as_ref()
            .map_or_else(crate::shared::now_ms, |c| c.now_ms())
    }

    /// The merchants served now (a snapshot).
    pub fn merchants(&self) -> Arc<MerchantMap> {
        self.merchants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the merchants served.
    pub(super) fn set_merchants(&self, map: MerchantMap) {
        *self.merchants.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    /// Holds off other merchant syncs while held.
    pub(super) async fn sync_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sync_lock.lock().await
    }

    /// Whether any merchant is served here.
    pub fn has_merchants(&self) -> bool {
        !self.merchants().by_mchid.is_empty()
    }

    /// The merchant `mchid`, if served here.
    pub fn merchant(&self, mchid: &str) -> Option<Arc<MerchantRuntime>> {
        self.merchants().by_mchid.get(mchid).cloned()
    }

    /// The merchant taking `appid`'s orders, if any.
    pub fn merchant_for_app(&self, appid: &str) -> Option<Arc<MerchantRuntime>> {
        let map = self.merchants();
        map.by_app
            .get(appid)
            .and_then(|m| map.by_mchid.get(m).cloned())
    }
}
