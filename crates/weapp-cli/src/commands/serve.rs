//! `weapp serve`: the login/session service and token broker.
//!
//! Nothing is printed before everything is known to be good: the configuration is loaded and
//! validated, the listener bound, the sandbox (if any) and the server state (database, data
//! keys, Redis) set up — and only then the banner, the keys and "listening on" go to stdout, in
//! one write. A failure before that is one `weapp: error: …` line on stderr and nothing on stdout.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use weapp_server::sandbox::Sandbox;
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

impl Args {
    /// The `log_format` of the configuration this command would load (the file, then the
    /// environment); `text` when it does not load (the error is reported when it is loaded for
    /// real).
    pub fn log_format(&self) -> weapp_server::config::LogFormat {
        Config::load(self.config.as_deref())
            .map(|c| c.log_format)
            .unwrap_or_default()
    }
}

/// The database of `--sandbox` when neither the flags, the file nor the environment name one.
const SANDBOX_DATABASE_URL: &str = "sqlite://weapp-sandbox.db";

/// Serves until ctrl-c / SIGTERM.
pub async fn run(args: Args) -> CmdResult {
    // Before anything opens a file: the connection cap is sized from this limit. Said once
    // serving (a failed start is one line on stderr).
    let descriptors = weapp_server::connections::raise_descriptor_limit();
    // A misspelt setting in the environment would be ignored without a word.
    for unknown in weapp_server::config::unknown_env_vars(std::env::vars_os().map(|(k, _)| k)) {
        tracing::warn!("{unknown}");
    }
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(u) = args.database_url {
        config.database_url = u;
    } else if args.sandbox && config.database_url == Config::default().database_url {
        config.database_url = SANDBOX_DATABASE_URL.into();
    }
    if let Some(u) = args.redis_url {
        config.redis_url = Some(u);
    }
    config.validate().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sandbox = if args.sandbox {
        // The sandbox's merchants are notified where this server listens (port 0 resolved).
        config.listen = addr;
        let prepared = weapp_server::sandbox::prepare(config, args.sim_listen)
            .await
            .map_err(|e| e.to_string())?;
        config = prepared.config.clone();
        Some(prepared)
    } else {
        None
    };
    let state = weapp_server::AppState::build(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(s) = &sandbox {
        s.connect(&format!("http://{addr}"))
            .map_err(|e| e.to_string())?;
    }
    print_all(&banner(&config, addr, sandbox.as_ref()));
    match descriptors {
        Ok((before, after)) if after > before => {
            tracing::info!("open-file limit raised from {before} to {after} (the hard limit)");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let served = weapp_server::serve(state, listener, super::shutdown_signal()).await;
    drop(sandbox);
    served.map_err(|e| e.to_string())
}

/// Writes `text` to stdout at once: a reader waiting for "listening on" has the keys too.
fn print_all(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// What `weapp serve` prints once it serves. Keys and secrets only in sandbox mode, and only
/// those the sandbox generated (or a webhook secret the backend needs).
fn banner(config: &Config, addr: SocketAddr, sandbox: Option<&Sandbox>) -> String {
    let mut b = String::new();
    if let Some(s) = sandbox {
        let _ = writeln!(b, "sandbox WeChat simulator: {}", s.sim.url());
        for app in &s.config.apps {
            match &s.demo_app_secret {
                Some(secret) => {
                    let _ = writeln!(b, "  app {} secret {secret}", app.appid);
                }
                None => {
                    let _ = writeln!(b, "  app {} (secret from your config)", app.appid);
                }
            }
        }
        for t in &s.subscribe_templates {
            let _ = writeln!(
                b,
                "  subscribe template of {}: {} ({}: {})",
                t.appid,
                t.template_id,
                t.title,
                t.keys.join(", ")
            );
        }
        for m in &s.pay_merchants {
            let _ = writeln!(
                b,
                "  WeChat Pay merchant of {}: {} (simulator; the console's phone buys from the demo shop POST /v1/sandbox/shop/{}/buy)",
                m.appid, m.mchid, m.appid
            );
        }
        if let Some(key) = &s.demo_client_key {
            let _ = writeln!(b, "  broker client key: {key}");
        }
        if let Some(key) = &s.demo_admin_key {
            let _ = writeln!(b, "  admin key: {key}");
        }
        let db = weapp_server::config::redact_url(&config.database_url);
        if s.remembered {
            let _ = writeln!(b, "  (the same as the last start: kept in {db})");
        } else {
            let _ = writeln!(
                b,
                "  (kept in {db}: a restart on it uses the same; delete it to start afresh)"
            );
        }
    }
    let _ = writeln!(
        b,
        "weapp-server listening on http://{addr} ({})",
        config.database_url.split(':').next().unwrap_or("?")
    );
    if let Some(s) = sandbox {
        let _ = writeln!(
            b,
            "open the console — a virtual phone, tokens, traffic, pushes, faults and the clock: {}/_sim/console",
            s.sim.url()
        );
    }
    if !config.admins.is_empty() {
        let _ = writeln!(
            b,
            "admin console (apps, clients, users, pushes, audit): http://{addr}/admin"
        );
    }
    if config.apps.iter().any(|a| a.access_tokens) {
        let _ = writeln!(
            b,
            "access tokens from /v1/login verify with http://{addr}/.well-known/jwks.json (ES256, iss {:?})",
            config.access_token_issuer
        );
    }
    if let Some(s) = sandbox {
        b.push_str(&backend_env(config, addr, s));
    }
    b
}

/// The sandbox's ready-to-paste block for a backend's shell (the variables
/// `examples/flask` and `examples/express` read, and those the README's commands use), for the
/// first app.
fn backend_env(config: &Config, addr: SocketAddr, s: &Sandbox) -> String {
    let Some(app) = s.config.apps.first() else {
        return String::new();
    };
    // A server listening on every address is reached on loopback.
    let reach = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    };
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut export = |name: &str, value: &str, note: &str| {
        lines.push((
            format!("export {name}={}", shell_quote(value)),
            note.to_owned(),
        ));
    };
    export("WEAPP_URL", &format!("http://{reach}"), "");
    export("WEAPP_APPID", &app.appid, "");
    export("WEAPP_ISSUER", &config.access_token_issuer, "");
    if let Some(key) = &s.demo_client_key {
        export("WEAPP_CLIENT_KEY", key, "broker client (every scope)");
    }
    if let Some(key) = &s.demo_admin_key {
        export("WEAPP_ADMIN_KEY", key, "admin API");
    }
    export(
        "WECHAT_API_BASE",
        s.sim.url(),
        "the in-process WeChat simulator",
    );
    if let Some(t) = s.subscribe_templates.iter().find(|t| t.appid == app.appid) {
        export(
            "WEAPP_TEMPLATE_ID",
            &t.template_id,
            &format!("subscribe message template ({})", t.keys.join(", ")),
        );
    }
    if let Some(m) = s.pay_merchants.iter().find(|m| m.appid == app.appid) {
        export(
            "WEAPP_MCHID",
            &m.mchid,
            "the app's WeChat Pay merchant (simulator)",
        );
    }
    if let Some(secret) = app.push.as_ref().and_then(|p| p.webhook_secret.as_ref()) {
        export(
            "WEAPP_WEBHOOK_SECRET",
            secret.expose(),
            "signs this app's webhooks",
        );
    }
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut b = String::from(
        "\n# for your backend (examples/flask, examples/express) — paste into its shell:\n",
    );
    for (line, note) in &lines {
        if note.is_empty() {
            let _ = writeln!(b, "{line}");
        } else {
            let _ = writeln!(b, "{line:<width$}  # {note}");
        }
    }
    if s.demo_client_key.is_none() {
        let _ = writeln!(b, "# WEAPP_CLIENT_KEY: the key of one of your [[clients]]");
    }
    b
}

/// `value` as one shell word: as it is when it is plain, single-quoted otherwise.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn values_are_one_shell_word() {
        assert_eq!(
            shell_quote("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shell_quote("weapp server"), "'weapp server'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
