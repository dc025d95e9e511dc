//! `weapp token`: get an app's access token through the same manager the SDK uses, optionally
//! shared through Redis with every other process of the app.

use std::sync::Arc;
use std::time::Duration;

use weapp::token::redis::{RedisStore, RedisTopology};
use weapp::token::TokenPolicy;
use weapp::{AppSecret, Client, TokenMode};

use super::CmdResult;

/// Arguments of `weapp token`. Their `Debug` hides the secret and the store URL's password.
#[derive(clap::Args)]
pub struct Args {
    /// The mini program's appid.
    #[arg(long, env = "WEAPP_APPID")]
    appid: String,
    /// The AppSecret (prefer the environment variable: it stays out of shell history).
    #[arg(long, env = "WEAPP_SECRET", hide_env_values = true)]
    secret: String,
    /// API base URL (a `weapp sim` URL, or a broker's mirror).
    #[arg(long, env = "WEAPP_API_BASE", default_value = weapp::DEFAULT_BASE_URL)]
    api_base: String,
    /// `stable` (stable_token, the default) or `classic` (/cgi-bin/token).
    #[arg(long, default_value = "stable")]
    mode: TokenMode,
    /// `memory` (this process only) or a Redis URL shared with other processes: `redis://…`,
    /// `rediss://…`, `redis+sentinel://h:p,h:p/<master>` or `redis+cluster://h:p,h:p`.
    #[arg(long, env = "WEAPP_TOKEN_STORE", default_value = "memory")]
    store: String,
    /// Key prefix in Redis.
    #[arg(long, env = "WEAPP_REDIS_PREFIX", default_value = "weapp")]
    redis_prefix: String,
    /// Get a new token even if the current one is fresh (stable mode: force_refresh, 20/day).
    #[arg(long)]
    force: bool,
    /// Print `{"access_token", "expires_in", "expires_at"}` instead of the bare token.
    #[arg(long)]
    json: bool,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// How long this process's refresh lease in Redis lasts without renewal (it is renewed
    /// while a fetch runs; it is how long a crashed process blocks the others).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    lock_ttl_ms: u64,
    /// The bound on one whole refresh (every attempt) in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    fetch_timeout_ms: u64,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("appid", &self.appid)
            .field("secret", &"***")
            .field(
                "api_base",
                &weapp_server::config::redact_url(&self.api_base),
            )
            .field("mode", &self.mode)
            .field("store", &weapp_server::config::redact_url(&self.store))
            .field("force", &self.force)
            .finish_non_exhaustive()
    }
}

/// Prints the token.
pub async fn run(args: Args) -> CmdResult {
    let mut builder = Client::builder(&args.appid, AppSecret::new(args.secret))
        .base_url(&args.api_base)
        .token_mode(args.mode)
        .timeout(Duration::from_millis(args.timeout_ms))
        .connect_timeout(Duration::from_millis(args.timeout_ms.min(5_000)))
        .token_policy(TokenPolicy {
            lock_ttl: Duration::from_millis(args.lock_ttl_ms),
            fetch_timeout: Duration::from_millis(args.fetch_timeout_ms),
            ..TokenPolicy::default()
        });
    if RedisTopology::is_redis_scheme(&args.store) {
        let store = RedisStore::connect(&args.store, args.redis_prefix)
            .await
            .map_err(|e| format!("{e}"))?;
        builder = builder.token_store(Arc::new(store));
    } else if args.store != "memory" {
        let shown = if args.store.contains("://") {
            weapp_server::config::redact_url(&args.store)
        } else {
            args.store.clone()
        };
        return Err(format!(
            "--store must be `memory` or a Redis URL (redis://, rediss://, redis+sentinel://, redis+cluster://), not `{shown}`"
        ));
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let manager = client
        .token_manager()
        .ok_or("no token manager configured")?;
    let token = if args.force {
        manager.force_refresh().await
    } else {
        manager.current().await
    }
    .map_err(|e| e.to_string())?;
    if args.json {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let out = serde_json::json!({
            "access_token": token.access_token.expose(),
            "expires_in": (token.expires_at_ms - now_ms) / 1000,
            "expires_at": token.expires_at_ms / 1000,
        });
        println!("{out}");
    } else {
        println!("{}", token.access_token.expose());
    }
    Ok(())
}
