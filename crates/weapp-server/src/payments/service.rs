//! The payments service: the merchants of the configuration, each with its `weapp::pay`
//! client (signing, verifying, decrypting), and the domains it asks.

use std::collections::HashMap;
use std::sync::Arc;

use weapp::pay::PayClient;

use super::error::MerchantError;
use crate::broker::Broker;
use crate::config::MerchantConfig;
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
    /// The merchants, by mchid.
    merchants: HashMap<String, Arc<MerchantRuntime>>,
    /// Which merchant takes each app's orders.
    by_app: HashMap<String, String>,
    /// Per-client limiter of the payment routes (`pay_rate_limit_per_minute`).
    pub pay_limiter: crate::ratelimit::RateLimiter,
}

crate::shared::service_handle!(Payments, PaymentsInner);

impl Payments {
    /// The payments service with the configuration's merchants.
    ///
    /// # Errors
    /// A merchant whose settings, keys or client do not load.
    pub fn new(shared: Shared, broker: Broker, push: Push) -> Result<Self, MerchantError> {
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
            (Some(r), crate::config::RateLimitBackend::Redis) => Some(
                crate::ratelimit::Shared::new(r.connection(), shared.config.redis_prefix.clone()),
            ),
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
            merchants,
            by_app,
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

    /// The merchants served here.
    pub fn merchants(&self) -> impl Iterator<Item = &Arc<MerchantRuntime>> {
        self.merchants.values()
    }

    /// Whether any merchant is served here.
    pub fn has_merchants(&self) -> bool {
        !self.merchants.is_empty()
    }

    /// The merchant `mchid`, if served here.
    pub fn merchant(&self, mchid: &str) -> Option<Arc<MerchantRuntime>> {
        self.merchants.get(mchid).cloned()
    }

    /// The merchant taking `appid`'s orders, if any.
    pub fn merchant_for_app(&self, appid: &str) -> Option<Arc<MerchantRuntime>> {
        self.by_app.get(appid).and_then(|m| self.merchant(m))
    }
}
