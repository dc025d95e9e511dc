//! `weapp serve`: the login/session service and token broker.

use std::net::SocketAddr;
use std::path::PathBuf;

use weapp_server::Config;

use super::CmdResult;

/// Arguments of `weapp serve`. Flags override the file, which overrides defaults; every
/// top-level setting can also come from a `WEAPP_*` environment variable (see the README).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (env `WEAPP_CONFIG`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run against a built-in WeChat simulator: no WeChat account needed.
    #[arg(long)]
    sandbox: bool,
    /// Address of the sandbox simulator (default: a free port).
    #[arg(long, requires = "sandbox")]
    sim_listen: Option<SocketAddr>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// `sqlite://file.db` or `postgres://…`.
    #[arg(long)]
    database_url: Option<String>,
    /// Redis shared by all instances.
    #[arg(long)]
    redis_url: Option<String>,
}

/// Serves until ctrl-c / SIGTERM.
pub async fn run(args: Args) -> CmdResult {
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(u) = args.database_url {
        config.database_url = u;
    } else if args.sandbox && config.database_url == Config::default().database_url {
        config.database_url = "sqlite://weapp-sandbox.db".into();
    }
    if let Some(u) = args.redis_url {
        config.redis_url = Some(u);
    }
    let mut sandbox = None;
    if args.sandbox {
        let prepared = weapp_server::sandbox::prepare(config, args.sim_listen).await?;
        println!("sandbox WeChat simulator: {}", prepared.sim.url());
        for app in &prepared.config.apps {
            match &prepared.demo_app_secret {
                Some(secret) => println!("  app {} secret {secret}", app.appid),
                None => println!("  app {} (secret from your config)", app.appid),
            }
        }
        if let Some(key) = &prepared.demo_client_key {
            println!("  broker client key: {key}");
        }
        if let Some(key) = &prepared.demo_admin_key {
            println!("  admin key: {key}");
        }
        config = prepared.config.clone();
        sandbox = Some(prepared);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(s) = &sandbox {
        s.connect(&format!("http://{addr}"))?;
    }
    println!(
        "weapp-server listening on http://{addr} ({})",
        config.database_url.split(':').next().unwrap_or("?")
    );
    if let Some(s) = &sandbox {
        println!(
            "open the console — a virtual phone, tokens, traffic, pushes, faults and the clock: {}/_sim/console",
            s.sim.url()
        );
    }
    if !config.admins.is_empty() {
        println!("admin console (apps, clients, users, pushes, audit): http://{addr}/admin");
    }
    if config.apps.iter().any(|a| a.access_tokens) {
        println!(
            "access tokens from /v1/login verify with http://{addr}/.well-known/jwks.json (ES256, iss {:?})",
            config.access_token_issuer
        );
    }
    let served = weapp_server::run(config, listener, super::shutdown_signal()).await;
    drop(sandbox);
    served
}
