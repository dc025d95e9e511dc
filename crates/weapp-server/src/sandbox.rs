//! Zero-setup mode: an in-process weapp-sim stands in for WeChat, the configured apps (or one
//! demo app) are registered there, and the real service runs against it on SQLite.

use std::net::SocketAddr;

use weapp_sim::{ClockMode, SimConfig, SimHandle};

use crate::config::{AppConfig, ClientConfig, Config};

/// The demo app registered when the configuration has none.
pub const DEMO_APPID: &str = "wxdemo0000000001";

/// What the sandbox set up.
#[derive(Debug)]
pub struct Sandbox {
    /// The configuration to serve with (apps pointed at the simulator).
    pub config: Config,
    /// The simulator; keep it alive as long as the server.
    pub sim: SimHandle,
    /// A broker key generated for the demo client, when the configuration had no clients.
    pub demo_client_key: Option<String>,
    /// The generated admin key, when the configuration had no `[[admins]]`.
    pub demo_admin_key: Option<String>,
    /// The generated secret of the demo app, when the configuration had no apps.
    pub demo_app_secret: Option<String>,
}

impl Sandbox {
    /// Wires the simulator to the server listening at `server_url`: its pushes for every app
    /// go to the server's push URL (safe mode, JSON), as the WeChat console's message-push
    /// settings would, and the console's phone sends its codes to the server's `/v1/login` and
    /// `/v1/me/phone`.
    ///
    /// # Errors
    /// An app's push settings the simulator refuses.
    pub fn connect(&self, server_url: &str) -> Result<(), String> {
        for app in &self.config.apps {
            self.sim
                .sim()
                .set_backend(&app.appid, weapp_sim::Backend::weapp_server(server_url))
                .map_err(|e| format!("app {}: backend: {}", app.appid, e.msg))?;
        }
        // Third-party platforms: WeChat (the simulator) pushes tickets and authorization events
        // to this server.
        for p in &self.config.platforms {
            self.sim
                .sim()
                .add_platform(weapp_sim::platform::PlatformConfig {
                    component_appid: Some(p.component_appid.clone()),
                    secret: Some(
                        p.resolve_secret()
                            .map_err(|e| e.to_string())?
                            .expose()
                            .to_owned(),
                    ),
                    token: Some(p.token.expose().to_owned()),
                    encoding_aes_key: Some(p.encoding_aes_key.expose().to_owned()),
                    event_url: Some(format!(
                        "{server_url}/v1/platforms/{}/events",
                        p.component_appid
                    )),
                    message_url: Some(format!(
                        "{server_url}/v1/platforms/{}/apps/$APPID$/push",
                        p.component_appid
                    )),
                    // The sandbox's simulator answers the server from anywhere.
                    ip_whitelist: None,
                })
                .map_err(|e| format!("platform {}: {}", p.component_appid, e.msg))?;
        }
        for app in &self.config.apps {
            let Some(p) = &app.push else { continue };
            let mode = match p.effective_mode()? {
                weapp::push::PushMode::Plain => weapp_sim::PushMode::Plain,
                weapp::push::PushMode::Compatible => weapp_sim::PushMode::Compatible,
                _ => weapp_sim::PushMode::Safe,
            };
            self.sim
                .sim()
                .set_push_target(
                    &app.appid,
                    weapp_sim::PushTarget {
                        url: format!("{server_url}/v1/apps/{}/push", app.appid),
                        token: p.token.expose().to_owned(),
                        encoding_aes_key: p
                            .encoding_aes_key
                            .as_ref()
                            .map(|k| k.expose().to_owned()),
                        mode,
                        format: weapp_sim::PushFormat::Json,
                    },
                )
                .map_err(|e| format!("app {}: push target: {}", app.appid, e.msg))?;
        }
        Ok(())
    }
}

/// Starts the simulator and rewrites `config` to use it.
///
/// # Errors
/// The simulator cannot listen, or an app's secret cannot be resolved.
pub async fn prepare(
    mut config: Config,
    sim_listen: Option<SocketAddr>,
) -> Result<Sandbox, String> {
    let sim = weapp_sim::spawn(SimConfig {
        listen: Some(sim_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))),
        apps: Vec::new(),
        clock: ClockMode::Real,
    })
    .await
    .map_err(|e| format!("sandbox simulator: {e}"))?;
    let mut demo_app_secret = None;
    if config.apps.is_empty() {
        let secret = hex::encode(rand::random::<[u8; 16]>());
        demo_app_secret = Some(secret.clone());
        config.apps.push(AppConfig {
            appid: DEMO_APPID.into(),
            secret: Some(secret.into()),
            secret_env: None,
            api_base: sim.url().to_owned(),
            token_mode: weapp::TokenMode::Stable,
            push: None,
            warm: None,
            access_tokens: true,
        });
    }
    for app in &mut config.apps {
        if app.push.is_none() {
            // The simulator pushes (customer-service messages, subscribe popups) to this
            // server in safe mode, once it listens (see `Sandbox::connect_pushes`).
            let aes = {
                use base64::Engine;
                let b64 =
                    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
                b64.trim_end_matches('=').to_owned()
            };
            app.push = Some(crate::config::PushConfig {
                token: hex::encode(rand::random::<[u8; 12]>()).into(),
                encoding_aes_key: Some(aes.into()),
                mode: None,
                webhook_url: None,
                webhook_secret: None,
                replay_window_secs: 300,
            });
        }
        let secret = app.resolve_secret().map_err(|e| e.to_string())?;
        sim.sim().add_app(
            Some(app.appid.clone()),
            Some(secret.expose().to_owned()),
            true,
        );
        app.api_base = sim.url().to_owned();
    }
    // Sandbox data is throwaway: without a configured key, one is generated and kept in the
    // (sandbox) database, so a restart still opens what the last run sealed.
    config.sandbox = true;
    let mut demo_client_key = None;
    if config.clients.is_empty() {
        let key = format!("wck_{}", hex::encode(rand::random::<[u8; 20]>()));
        config.clients.push(ClientConfig {
            name: "sandbox".into(),
            key: Some(key.clone().into()),
            key_env: None,
            key_sha256: None,
            apps: config.apps.iter().map(|a| a.appid.clone()).collect(),
            scopes: Some(
                crate::config::SCOPES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
        });
        demo_client_key = Some(key);
    }
    for p in &mut config.platforms {
        p.api_base = sim.url().to_owned();
    }
    // Apps registered at runtime (the admin API) talk to the simulator, which learns them.
    config.sandbox_api_base = Some(sim.url().to_owned());
    let registrar = sim.sim().clone();
    config.app_hook = Some(crate::config::AppHook(std::sync::Arc::new(
        move |appid: &str, secret: &str| {
            registrar.add_app(Some(appid.to_owned()), Some(secret.to_owned()), true);
        },
    )));
    let mut demo_admin_key = None;
    if config.admins.is_empty() {
        let key = format!("wak_{}", hex::encode(rand::random::<[u8; 20]>()));
        config.admins.push(crate::config::AdminConfig {
            name: "sandbox".into(),
            key: Some(key.clone().into()),
            key_env: None,
            key_sha256: None,
        });
        demo_admin_key = Some(key);
    }
    Ok(Sandbox {
        config,
        sim,
        demo_client_key,
        demo_admin_key,
        demo_app_secret,
    })
}
