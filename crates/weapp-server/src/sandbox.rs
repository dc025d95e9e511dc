//! Zero-setup mode: an in-process weapp-sim stands in for WeChat, the configured apps (or one
//! demo app) are registered there, and the real service runs against it on SQLite.
//!
//! A sandbox remembers: what it generates for the caller — the demo app's secret, the broker
//! client key, the admin key, the subscribe template ids, the simulator's port, the WeChat Pay
//! merchants — is kept in its database (the `vault` module), so a restart on the same database
//! prints and accepts the same values, and the new simulator is seeded with them.
//!
//! Each app no `[[merchants]]` serves gets a simulator merchant (`merchants`), and the
//! sandbox-only demo shop (`payments::shop`) lets the console's phone buy something from it.

mod error;
mod merchants;
mod vault;

use std::net::SocketAddr;

use weapp_sim::{ClockMode, SimConfig, SimHandle};

use crate::config::{AppConfig, ClientConfig, Config};

/// The demo app registered when the configuration has none.
pub const DEMO_APPID: &str = "wxdemo0000000001";

/// The public template every sandbox app gets a private subscribe template from: 订单配送通知
/// (an order delivered), with its keywords 商品名称 (`thing1`), 送达时间 (`time2`) and 订单状态
/// (`phrase3`).
pub const SUBSCRIBE_TEMPLATE: (i64, &[i64]) = (1001, &[2, 3, 7]);

pub use error::SandboxError;
pub use merchants::{SandboxMerchant, MERCHANT_NAME};

/// A subscribe message template the sandbox seeded in its simulator.
#[derive(Debug, Clone)]
pub struct SubscribeTemplate {
    /// The app it belongs to.
    pub appid: String,
    /// Its id (`template_id` of `message/subscribe/send`), the same on every start.
    pub template_id: String,
    /// Its title.
    pub title: String,
    /// Its data keys, in order (`thing1`, `time2`, …).
    pub keys: Vec<String>,
}

/// What the sandbox set up. `Debug` shows which values were generated, never them.
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
    /// One subscribe template per app, seeded in the simulator.
    pub subscribe_templates: Vec<SubscribeTemplate>,
    /// The simulator merchants of the apps no `[[merchants]]` serves (in `config.merchants`
    /// too), the same on every start.
    pub pay_merchants: Vec<SandboxMerchant>,
    /// True when the generated values above come from an earlier start on this database.
    pub remembered: bool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .field("sim", &self.sim.url())
            .field("demo_client_key", &shown(&self.demo_client_key))
            .field("demo_admin_key", &shown(&self.demo_admin_key))
            .field("demo_app_secret", &shown(&self.demo_app_secret))
            .field("subscribe_templates", &self.subscribe_templates)
            .field("pay_merchants", &self.pay_merchants)
            .field("remembered", &self.remembered)
            .finish()
    }
}

impl Sandbox {
    /// Wires the simulator to the server listening at `server_url`: its pushes for every app
    /// go to the server's push URL (safe mode, JSON), as the WeChat console's message-push
    /// settings would, and the console's phone sends its codes to the server's `/v1/login` and
    /// `/v1/me/phone`.
    ///
    /// # Errors
    /// An app's push settings, or a platform's secret, the simulator refuses or the sandbox
    /// cannot resolve.
    pub fn connect(&self, server_url: &str) -> Result<(), SandboxError> {
        for app in &self.config.apps {
            self.sim
                .sim()
                .set_backend(&app.appid, {
                    // The console warns when its clock runs past the window this server
                    // accepts pushes in (they would be refused as stale).
                    let mut backend = weapp_sim::Backend::weapp_server(server_url);
                    // The phone's "request payment" buys from the demo shop as the signed-in
                    // user, when a merchant takes the app's orders.
                    if self
                        .config
                        .merchants
                        .iter()
                        .any(|m| m.appids.contains(&app.appid))
                    {
                        backend.pay = Some(shop_request());
                    }
                    match &app.push {
                        Some(p) => backend.replay_window(p.replay_window_secs),
                        None => backend,
                    }
                })
                .map_err(|e| SandboxError::NotConnected {
                    what: format!("app {}: backend", app.appid),
                    message: e.msg,
                })?;
        }
        // Third-party platforms: WeChat (the simulator) pushes tickets and authorization events
        // to this server.
        for p in &self.config.platforms {
            self.sim
                .sim()
                .add_platform(weapp_sim::platform::PlatformConfig {
                    component_appid: Some(p.component_appid.clone()),
                    secret: Some(p.resolve_secret()?.expose().to_owned()),
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
                .map_err(|e| SandboxError::NotConnected {
                    what: format!("platform {}", p.component_appid),
                    message: e.msg,
                })?;
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
                .map_err(|e| SandboxError::NotConnected {
                    what: format!("app {}: push target", app.appid),
                    message: e.msg,
                })?;
        }
        Ok(())
    }
}

/// What the console's phone sends to buy from the demo shop: `POST
/// /v1/sandbox/shop/{appid}/buy` with the session token the login answered.
fn shop_request() -> weapp_sim::RequestTemplate {
    weapp_sim::RequestTemplate {
        method: "POST".into(),
        path: "/v1/sandbox/shop/{{appid}}/buy".into(),
        headers: [(
            "Authorization".to_owned(),
            serde_json::Value::String("Bearer {{storage.token}}".into()),
        )]
        .into_iter()
        .collect(),
        body: "{}".into(),
    }
}

/// The URL the server will be reached at when it listens on `listen` (loopback for an
/// unspecified address).
fn reach(listen: SocketAddr) -> String {
    let addr = match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    };
    format!("http://{addr}")
}

/// Starts the simulator on `listen`; without one, on the address of the last start if it is
/// free (the console's URL and a backend's `WECHAT_API_BASE` stay valid across restarts), on a
/// free port otherwise.
async fn spawn_simulator(
    vault: &vault::Vault,
    listen: Option<SocketAddr>,
) -> Result<SimHandle, SandboxError> {
    let spawn = |listen: SocketAddr| {
        weapp_sim::spawn(SimConfig {
            listen: Some(listen),
            apps: Vec::new(),
            clock: ClockMode::Real,
        })
    };
    if let Some(listen) = listen {
        return spawn(listen).await.map_err(SandboxError::Simulator);
    }
    let last = vault.get("sim_listen").await?;
    let reused = match last.as_deref().and_then(|a| a.parse::<SocketAddr>().ok()) {
        Some(addr) => spawn(addr).await.ok(),
        None => None,
    };
    let sim = match reused {
        Some(sim) => sim,
        None => spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(SandboxError::Simulator)?,
    };
    vault
        .set("sim_listen", last.as_deref(), &sim.addr().to_string())
        .await?;
    Ok(sim)
}

/// Opens the sandbox database, starts the simulator and rewrites `config` to use it. Values
/// generated for the caller are those an earlier start on the same database kept, or new ones,
/// kept for the next start. Each app no `[[merchants]]` serves gets the simulator merchant kept
/// for it, notified at `config.listen` (bind first and put the bound address there).
///
/// # Errors
/// The database cannot be opened or is not a sandbox one, a kept value does not open with the
/// data keys, the simulator cannot listen or refuses a merchant, or an app's secret cannot be
/// resolved.
pub async fn prepare(
    mut config: Config,
    sim_listen: Option<SocketAddr>,
) -> Result<Sandbox, SandboxError> {
    let vault = vault::Vault::open(&config).await?;
    let sim = spawn_simulator(&vault, sim_listen).await?;
    let mut remembered = false;
    let mut demo_app_secret = None;
    if config.apps.is_empty() {
        // An AppSecret as WeChat makes them: 32 hex digits.
        let kept = vault
            .secret(&format!("app_secret/{DEMO_APPID}"), || {
                hex::encode(rand::random::<[u8; 16]>())
            })
            .await?;
        remembered |= kept.remembered;
        config.apps.push(AppConfig {
            appid: DEMO_APPID.into(),
            secret: Some(kept.value.clone().into()),
            secret_env: None,
            api_base: sim.url().to_owned(),
            token_mode: weapp::TokenMode::Stable,
            push: None,
            warm: None,
            access_tokens: true,
        });
        demo_app_secret = Some(kept.value);
    }
    let mut subscribe_templates = Vec::new();
    for app in &mut config.apps {
        if app.push.is_none() {
            // The simulator pushes (customer-service messages, subscribe popups) to this
            // server in safe mode, once it listens (see `Sandbox::connect`). Both ends learn
            // these on every start: nothing else uses them.
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
        let secret = app.resolve_secret()?;
        sim.sim().add_app(
            Some(app.appid.clone()),
            Some(secret.expose().to_owned()),
            true,
        );
        app.api_base = sim.url().to_owned();
        // A template for the console's subscribe popup and for backends sending subscribe
        // messages, under the id the first start chose (WeChat's are 43 letters and digits).
        let kept = vault
            .plain(&format!("subscribe_template/{}", app.appid), || {
                use rand::distributions::{Alphanumeric, DistString};
                Alphanumeric.sample_string(&mut rand::thread_rng(), 43)
            })
            .await?;
        let (tid, kids) = SUBSCRIBE_TEMPLATE;
        let template = sim
            .sim()
            .add_template_with_id(&app.appid, tid, kids, "sandbox", &kept.value)
            .map_err(|e| SandboxError::Refused {
                what: format!("subscribe template of {}", app.appid),
                message: e.msg,
            })?;
        subscribe_templates.push(SubscribeTemplate {
            appid: app.appid.clone(),
            template_id: template.pri_tmpl_id,
            title: template.title,
            keys: template.keys,
        });
    }
    // WeChat Pay: a merchant for each app without one, notifying the server where it listens
    // (`config.listen`: the caller binds first and passes the address it got).
    let server_url = reach(config.listen);
    let pay_merchants = merchants::ensure(&vault, &sim, &mut config, &server_url).await?;
    remembered |= pay_merchants.iter().any(|m| m.remembered);
    // Sandbox data is throwaway: without a configured key, one is generated and kept in the
    // (sandbox) database, so a restart still opens what the last run sealed.
    config.sandbox = true;
    let mut demo_client_key = None;
    if config.clients.is_empty() {
        let kept = vault
            .secret("client_key", || {
                format!("wck_{}", hex::encode(rand::random::<[u8; 20]>()))
            })
            .await?;
        remembered |= kept.remembered;
        config.clients.push(ClientConfig {
            name: "sandbox".into(),
            key: Some(kept.value.clone().into()),
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
        demo_client_key = Some(kept.value);
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
        let kept = vault
            .secret("admin_key", || {
                format!("wak_{}", hex::encode(rand::random::<[u8; 20]>()))
            })
            .await?;
        remembered |= kept.remembered;
        config.admins.push(crate::config::AdminConfig {
            name: "sandbox".into(),
            key: Some(kept.value.clone().into()),
            key_env: None,
            key_sha256: None,
        });
        demo_admin_key = Some(kept.value);
    }
    Ok(Sandbox {
        config,
        sim,
        demo_client_key,
        demo_admin_key,
        demo_app_secret,
        subscribe_templates,
        pay_merchants,
        remembered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_on(db: &std::path::Path) -> Config {
        Config {
            database_url: format!("sqlite://{}", db.display()),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn a_second_sandbox_on_the_database_is_the_same_and_debug_shows_no_secret() {
        let db = std::env::temp_dir().join(format!(
            "weapp-sandbox-unit-{}-{}.db",
            std::process::id(),
            rand::random::<u32>()
        ));
        let first = prepare(config_on(&db), None).await.unwrap();
        assert!(!first.remembered);
        let secrets = |s: &Sandbox| {
            (
                s.demo_app_secret.clone().unwrap(),
                s.demo_client_key.clone().unwrap(),
                s.demo_admin_key.clone().unwrap(),
                s.subscribe_templates[0].template_id.clone(),
            )
        };
        let kept = secrets(&first);
        let shown = format!("{first:?}");
        for secret in [&kept.0, &kept.1, &kept.2] {
            assert!(!shown.contains(secret.as_str()), "{shown}");
        }
        drop(first);
        let second = prepare(config_on(&db), None).await.unwrap();
        assert!(second.remembered);
        assert_eq!(secrets(&second), kept);
        assert_eq!(
            second.sim.sim().templates(DEMO_APPID).unwrap()[0]["priTmplId"],
            kept.3.as_str()
        );
        drop(second);
        // A configured data key besides the generated one: the ring still opens them.
        let mut keyed = config_on(&db);
        keyed.data_key = Some(crate::keys::seal::DataKey::generate_base64().into());
        let third = prepare(keyed, None).await.unwrap();
        assert_eq!(secrets(&third), kept);
        drop(third);
        // The key that sealed them gone: refused, naming the value and the key, never a secret.
        let store = crate::store::connect(&config_on(&db).database_url, &Default::default())
            .await
            .unwrap();
        let old = store.meta_get("data_key").await.unwrap().unwrap();
        let old_id = crate::keys::seal::DataKey::from_base64(&old).unwrap().id();
        assert!(store
            .meta_cas(
                "data_key",
                Some(&old),
                &crate::keys::seal::DataKey::generate_base64()
            )
            .await
            .unwrap());
        let e = prepare(config_on(&db), None).await.unwrap_err().to_string();
        assert!(e.contains("app_secret/wxdemo0000000001"), "{e}");
        assert!(e.contains(&format!("sealed with data key {old_id}")), "{e}");
        assert!(!e.contains(&kept.0), "{e}");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
}
