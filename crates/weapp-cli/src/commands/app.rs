//! Which app a command talks to: `--appid/--secret/--api-base`, or an app of a server
//! configuration file (`--config`).

use std::path::PathBuf;

use weapp::{AppSecret, Client, TokenMode};

/// Arguments that select an app.
#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// The mini program's appid (with `--config`: which of its apps; default its only one).
    #[arg(long, env = "WEAPP_APPID")]
    appid: Option<String>,
    /// The AppSecret (prefer the environment variable).
    #[arg(long, env = "WEAPP_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Take the app (appid, secret, api_base, token mode) from a `weapp serve` configuration.
    #[arg(long)]
    config: Option<PathBuf>,
    /// API base URL (a `weapp sim` URL, or WeChat).
    #[arg(long, env = "WEAPP_API_BASE")]
    api_base: Option<String>,
}

impl AppArgs {
    /// A client for the selected app.
    ///
    /// # Errors
    /// One line naming what is missing or wrong.
    pub fn client(&self) -> Result<Client, String> {
        let (appid, secret, base, mode) = match &self.config {
            Some(path) => {
                let config = weapp_server::Config::load(Some(path)).map_err(|e| e.to_string())?;
                let app = match &self.appid {
                    Some(a) => config
                        .apps
                        .iter()
                        .find(|x| &x.appid == a)
                        .ok_or(format!("app {a} is not in {}", path.display()))?,
                    None if config.apps.len() == 1 => &config.apps[0],
                    None => {
                        return Err(format!(
                            "{} has {} apps: choose one with --appid",
                            path.display(),
                            config.apps.len()
                        ))
                    }
                };
                let secret = match &self.secret {
                    Some(s) => AppSecret::new(s.clone()),
                    None => app.resolve_secret().map_err(|e| e.to_string())?,
                };
                (
                    app.appid.clone(),
                    secret,
                    app.api_base.clone(),
                    app.token_mode,
                )
            }
            None => {
                let appid = self
                    .appid
                    .clone()
                    .ok_or("--appid is required (or --config)")?;
                let secret = self
                    .secret
                    .clone()
                    .ok_or("--secret (or WEAPP_SECRET) is required (or --config)")?;
                (
                    appid,
                    AppSecret::new(secret),
                    weapp::DEFAULT_BASE_URL.to_owned(),
                    TokenMode::Stable,
                )
            }
        };
        let base = self.api_base.clone().unwrap_or(base);
        Client::builder(appid, secret)
            .base_url(base)
            .token_mode(mode)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// Writes bytes to `path`, with a one-line error.
pub fn write(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
