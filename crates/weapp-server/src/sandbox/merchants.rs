//! The sandbox's WeChat Pay: a simulator merchant for each app no `[[merchants]]` serves, so
//! orders, the phone's payment sheet and notifications work without a merchant account.
//!
//! The merchant is the same on every start on one database: its mchid, certificate serial,
//! private key and APIv3 key are kept sealed in the vault (`pay_merchant/<appid>`), and a new
//! simulator is told them (the merchant "brings its own" public key, derived from the kept
//! private key). Only the WeChat Pay public key is new on each start: the simulator makes it,
//! and the server is configured with it then (it is public, and nothing signed with the old
//! one outlives the old simulator).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use weapp_sim::pay::{IssuedMerchant, MerchantSpec};
use weapp_sim::SimHandle;

use super::error::SandboxError;
use super::vault::Vault;
use crate::config::{Config, MerchantConfig};

/// The name the phone's payment sheet shows for a sandbox merchant (商户简称).
pub const MERCHANT_NAME: &str = "weapp sandbox shop";

/// A simulator merchant the sandbox serves an app with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxMerchant {
    /// The app whose orders it takes.
    pub appid: String,
    /// Its 商户号, the same on every start on this database.
    pub mchid: String,
    /// True when an earlier start on this database issued it.
    pub remembered: bool,
}

/// What the vault keeps of a merchant (sealed: it holds the private key and the APIv3 key).
#[derive(Serialize, Deserialize)]
struct Kept {
    mchid: String,
    serial_no: String,
    private_key: String,
    apiv3_key: String,
}

/// The parts of a merchant the server's configuration needs, as the simulator issued them.
struct Issued {
    kept: Kept,
    public_key_id: String,
    public_key: String,
}

fn refused(appid: &str, e: &weapp_sim::PayError) -> SandboxError {
    SandboxError::Refused {
        what: format!("WeChat Pay merchant of {appid}"),
        message: format!("{}: {}", e.code, e.message),
    }
}

fn issued(appid: &str, m: IssuedMerchant) -> Result<Issued, SandboxError> {
    let missing = |what: &str| SandboxError::Refused {
        what: format!("WeChat Pay merchant of {appid}"),
        message: format!("the simulator issued no {what}"),
    };
    Ok(Issued {
        kept: Kept {
            mchid: m.mchid,
            serial_no: m.merchant_serial_no,
            private_key: m
                .merchant_private_key
                .ok_or_else(|| missing("private key"))?,
            apiv3_key: m.apiv3_key,
        },
        public_key_id: m
            .wechatpay_public_key_id
            .ok_or_else(|| missing("WeChat Pay public key id"))?,
        public_key: m
            .wechatpay_public_key
            .ok_or_else(|| missing("WeChat Pay public key"))?,
    })
}

/// The public half of a kept private key, as PEM (PKCS#1), for the simulator.
fn public_pem(appid: &str, private_key: &str) -> Result<String, SandboxError> {
    let key = weapp::pay::MerchantPrivateKey::from_pem(private_key).map_err(|e| {
        SandboxError::Refused {
            what: format!("the kept WeChat Pay merchant of {appid}"),
            message: e.to_string(),
        }
    })?;
    let der = B64.encode(key.public_key().as_pkcs1_der());
    let mut pem = String::from("-----BEGIN RSA PUBLIC KEY-----\n");
    for line in der.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END RSA PUBLIC KEY-----\n");
    Ok(pem)
}

/// Registers a kept merchant with the simulator of this start.
async fn register(sim: &SimHandle, appid: &str, kept: Kept) -> Result<Issued, SandboxError> {
    let m = sim
        .sim()
        .add_pay_merchant(MerchantSpec {
            mchid: Some(kept.mchid.clone()),
            name: Some(MERCHANT_NAME.into()),
            appids: Some(vec![appid.to_owned()]),
            merchant_public_key: Some(public_pem(appid, &kept.private_key)?),
            merchant_serial_no: Some(kept.serial_no.clone()),
            apiv3_key: Some(kept.apiv3_key.clone()),
            ..MerchantSpec::default()
        })
        .await
        .map_err(|e| refused(appid, &e))?;
    let public_key_id = m.wechatpay_public_key_id.clone();
    let public_key = m.wechatpay_public_key.clone();
    match (public_key_id, public_key) {
        (Some(public_key_id), Some(public_key)) => Ok(Issued {
            kept,
            public_key_id,
            public_key,
        }),
        _ => Err(SandboxError::Refused {
            what: format!("WeChat Pay merchant of {appid}"),
            message: "the simulator issued no WeChat Pay public key".into(),
        }),
    }
}

/// The merchant of `appid` on this database: the kept one registered with `sim`, or a new one
/// issued by `sim` and kept. Two starts racing on one database end with the first one's.
async fn merchant_of(
    vault: &Vault,
    sim: &SimHandle,
    appid: &str,
) -> Result<(Issued, bool), SandboxError> {
    let name = format!("pay_merchant/{appid}");
    let parse = |json: &str| {
        serde_json::from_str::<Kept>(json).map_err(|_| SandboxError::Unreadable {
            name: name.clone(),
            key_id: None,
        })
    };
    if let Some(json) = vault.kept_secret(&name).await? {
        return Ok((register(sim, appid, parse(&json)?).await?, true));
    }
    let fresh = sim
        .sim()
        .add_pay_merchant(MerchantSpec {
            name: Some(MERCHANT_NAME.into()),
            appids: Some(vec![appid.to_owned()]),
            ..MerchantSpec::default()
        })
        .await
        .map_err(|e| refused(appid, &e))?;
    let fresh = issued(appid, fresh)?;
    let json = serde_json::to_string(&fresh.kept).unwrap_or_default();
    let kept = vault.secret(&name, || json).await?;
    if kept.remembered {
        // Another start kept its merchant first: that one is the sandbox's.
        return Ok((register(sim, appid, parse(&kept.value)?).await?, true));
    }
    Ok((fresh, false))
}

/// Gives every app of `config` that no `[[merchants]]` serves a simulator merchant (kept in
/// the vault), and adds it to `config.merchants`: its API at the simulator, its notifications
/// to `server_url`. Returns the sandbox's merchants.
pub(super) async fn ensure(
    vault: &Vault,
    sim: &SimHandle,
    config: &mut Config,
    server_url: &str,
) -> Result<Vec<SandboxMerchant>, SandboxError> {
    let served: Vec<String> = config
        .merchants
        .iter()
        .flat_map(|m| m.appids.iter().cloned())
        .collect();
    let apps: Vec<String> = config
        .apps
        .iter()
        .map(|a| a.appid.clone())
        .filter(|a| !served.contains(a))
        .collect();
    let mut out = Vec::new();
    for appid in apps {
        let (m, remembered) = merchant_of(vault, sim, &appid).await?;
        // Built as the configuration file would give it: settings added to `[[merchants]]`
        // later take their defaults here too.
        let merchant: MerchantConfig = serde_json::from_value(serde_json::json!({
            "mchid": m.kept.mchid,
            "appids": [appid],
            "serial_no": m.kept.serial_no,
            "private_key": m.kept.private_key,
            "apiv3_key": m.kept.apiv3_key,
            "public_key_id": m.public_key_id,
            "public_key": m.public_key,
            "api_base": sim.url(),
            "notify_url": format!("{}/v1/pay/{}/notify", server_url.trim_end_matches('/'), m.kept.mchid),
        }))
        .map_err(|e| SandboxError::Refused {
            what: format!("WeChat Pay merchant of {appid}"),
            message: e.to_string(),
        })?;
        config.merchants.push(merchant);
        out.push(SandboxMerchant {
            appid,
            mchid: m.kept.mchid,
            remembered,
        });
    }
    Ok(out)
}
