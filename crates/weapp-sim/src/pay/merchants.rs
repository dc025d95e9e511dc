//! WeChat's merchant platform: issuing merchants (their API key pair or their own public key,
//! the APIv3 key, the WeChat Pay public key and/or platform certificates), rotating the
//! platform certificate with an overlap, moving a merchant through the migration from
//! certificates to the public key, and choosing which key signs a response or a notification.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::keys;
use super::time::rfc3339;
use crate::error::{PayError, PayResult};
use crate::journal::Event;
use crate::random::{random_alnum, random_hex};
use crate::state::pay::{Merchant, PlatformCert, Secret, SecretKey, Verification};
use crate::world::{Sim, World};

/// How long a platform certificate is valid (production: 5 years).
pub const CERT_VALIDITY_SECS: i64 = 5 * 365 * 86_400;

/// The default overlap of a platform-certificate rotation: the new certificate is listed this
/// long before WeChat signs with it, and the old one expires then (production: 24 h).
pub const ROTATION_OVERLAP_SECS: i64 = 86_400;

/// The migration's automatic ramp: the share (%) of notifications signed with the public key
/// on day 1, 2, … after the merchant clicked 开始更换 (wechat-pay.md §2.5).
pub const MIGRATION_RAMP: [f64; 7] = [0.1, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// A merchant to issue (`POST /_sim/pay/merchants`); every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantSpec {
    /// The 商户号; default: ten random digits starting with 19.
    pub mchid: Option<String>,
    /// The merchant's short name (商户简称), shown on the phone's payment sheet; at most 64
    /// characters; default none (the sheet shows the mchid).
    pub name: Option<String>,
    /// Mini program appids bound to the merchant; default: any appid is accepted.
    pub appids: Option<Vec<String>>,
    /// How the merchant verifies WeChat Pay; default `public_key` (merchants opened since 2024).
    pub verification: Option<Verification>,
    /// The merchant's own API public key (PEM, SPKI or PKCS#1) instead of a generated pair.
    pub merchant_public_key: Option<String>,
    /// The serial number of the merchant's API certificate (required with
    /// `merchant_public_key`; default 40 random hex digits).
    pub merchant_serial_no: Option<String>,
    /// The APIv3 key (32 ASCII characters); default random.
    pub apiv3_key: Option<String>,
    /// Whether notifications are delivered (default true); see `PUT …/notifications`.
    pub deliver: Option<bool>,
    /// The basic account's available balance in fen (refunds beyond it: `NOT_ENOUGH`);
    /// default unlimited.
    pub balance: Option<i64>,
    /// Sign this merchant's answers and notifications with the WeChat Pay public key pair of
    /// the merchant named here instead of a new pair (sub-merchants of one service provider
    /// share the provider's key: with the same `apiv3_key` too, each could be shown the
    /// other's notifications). Public-key verification only.
    pub share_wechatpay_key_with: Option<String>,
}

/// A platform certificate as the control API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    /// 40 hex digits.
    pub serial_no: String,
    /// PEM.
    pub certificate: String,
    /// RFC 3339.
    pub effective_time: String,
    /// RFC 3339 (moved to the end of the overlap when the certificate is rotated out).
    pub expire_time: String,
}

/// What the merchant platform hands the merchant (`POST /_sim/pay/merchants`).
#[derive(Debug, Clone, Serialize)]
pub struct IssuedMerchant {
    /// 商户号.
    pub mchid: String,
    /// The merchant API certificate's serial number (`serial_no` in `Authorization`).
    pub merchant_serial_no: String,
    /// `apiclient_key.pem` (PKCS#8); `null` when the merchant brought its own public key.
    pub merchant_private_key: Option<String>,
    /// The APIv3 key.
    pub apiv3_key: String,
    /// `PUB_KEY_ID_…`; `null` for a certificate-only merchant.
    pub wechatpay_public_key_id: Option<String>,
    /// `pub_key.pem` (SPKI); `null` for a certificate-only merchant.
    pub wechatpay_public_key: Option<String>,
    /// The platform certificates listed now; empty for a public-key-only merchant.
    pub platform_certificates: Vec<CertView>,
    /// The verification mode.
    pub verification: Verification,
    /// Bound appids (`null`: any).
    pub appids: Option<Vec<String>>,
}

fn keygen_error() -> PayError {
    PayError::new(500, "SYSTEM_ERROR", "key generation failed")
}

/// A fresh key pair, generated on a blocking thread.
async fn generate() -> PayResult<rsa::RsaPrivateKey> {
    tokio::task::spawn_blocking(keys::generate)
        .await
        .map_err(|_| keygen_error())
}

/// A platform certificate for `key`, valid from `now_ms` for five years.
fn new_cert(key: rsa::RsaPrivateKey, mchid: &str, now_ms: i64, use_from_ms: i64) -> PlatformCert {
    // 20 bytes, the first 0x10–0x7F: 40 hex digits without a leading zero, a positive INTEGER.
    let serial_no = format!(
        "{:02X}{}",
        0x10 + rand::random::<u8>() % 0x70,
        random_hex(19)
    )
    .to_ascii_uppercase();
    let not_before = now_ms / 1000 - 60;
    let not_after = now_ms / 1000 + CERT_VALIDITY_SECS;
    let pem = keys::self_signed_certificate(&key, &serial_no, mchid, not_before, not_after);
    PlatformCert {
        serial_no,
        key: SecretKey(key),
        pem,
        effective_ms: not_before * 1000,
        expire_ms: not_after * 1000,
        use_from_ms,
    }
}

fn public_key_id(mchid: &str, now_ms: i64) -> String {
    let digits: String = (0..14)
        .map(|_| char::from(b'0' + rand::random::<u8>() % 10))
        .collect();
    format!(
        "PUB_KEY_ID_01{mchid}{}{digits}",
        &super::time::compact(now_ms)[..8]
    )
}

fn cert_view(c: &PlatformCert) -> CertView {
    CertView {
        serial_no: c.serial_no.clone(),
        certificate: c.pem.clone(),
        effective_time: rfc3339(c.effective_ms),
        expire_time: rfc3339(c.expire_ms),
    }
}

/// The certificates a merchant can see now (listed and not expired), oldest first.
pub(crate) fn listed_certs(m: &Merchant, now_ms: i64) -> Vec<&PlatformCert> {
    if m.verification == Verification::PublicKey {
        return Vec::new();
    }
    m.certs.iter().filter(|c| c.expire_ms > now_ms).collect()
}

/// The certificate WeChat signs with by default now: the newest listed one in use.
fn current_cert(m: &Merchant, now_ms: i64) -> Option<&PlatformCert> {
    let listed = listed_certs(m, now_ms);
    listed
        .iter()
        .filter(|c| c.use_from_ms <= now_ms)
        .max_by_key(|c| c.use_from_ms)
        .or_else(|| listed.first())
        .copied()
}

/// The share (%) of notifications signed with the public key now.
pub(crate) fn notify_percent(m: &Merchant, now_ms: i64) -> f64 {
    match m.verification {
        Verification::PublicKey => 100.0,
        Verification::Certificate => 0.0,
        Verification::Both => m.notify_percent.unwrap_or_else(|| {
            let day = (now_ms - m.migration_started_ms.unwrap_or(m.created_ms)).max(0) / 86_400_000;
            MIGRATION_RAMP[(day as usize).min(MIGRATION_RAMP.len() - 1)]
        }),
    }
}

/// A signing key and the serial (`Wechatpay-Serial`) it goes by.
pub(crate) type Signer = (String, rsa::RsaPrivateKey);

/// The key that signs a response to a request that sent `requested` as `Wechatpay-Serial`:
/// the header picks the public key or a listed certificate; otherwise the mode's default.
///
/// # Errors
/// 400 `PARAM_ERROR` for a `PUB_KEY_ID_…` sent to a certificate-only merchant (production's
/// answer before the migration started).
pub(crate) fn response_signer(
    m: &Merchant,
    requested: Option<&str>,
    now_ms: i64,
) -> PayResult<Signer> {
    let public = || {
        m.wechatpay_key
            .as_ref()
            .map(|(id, k)| (id.clone(), k.0.clone()))
    };
    if let Some(serial) = requested.map(str::trim).filter(|s| !s.is_empty()) {
        if serial.starts_with("PUB_KEY_ID_") {
            return match &m.wechatpay_key {
                Some((id, k)) if id == serial && m.verification != Verification::Certificate => {
                    Ok((id.clone(), k.0.clone()))
                }
                _ => Err(PayError::new(
                    400,
                    "PARAM_ERROR",
                    "平台证书序列号Wechatpay-Serial错误",
                )),
            };
        }
        if let Some(c) = listed_certs(m, now_ms)
            .into_iter()
            .find(|c| c.serial_no == serial)
        {
            return Ok((c.serial_no.clone(), c.key.0.clone()));
        }
    }
    match m.verification {
        Verification::PublicKey => public().ok_or_else(keygen_error),
        _ => current_cert(m, now_ms)
            .map(|c| (c.serial_no.clone(), c.key.0.clone()))
            .ok_or_else(|| PayError::new(500, "SYSTEM_ERROR", "系统错误")),
    }
}

/// The key that signs a notification now: the public key, the current certificate, or during
/// the migration one or the other by the day's share.
pub(crate) fn notification_signer(m: &Merchant, now_ms: i64) -> Option<Signer> {
    let use_public = rand::random::<f64>() * 100.0 < notify_percent(m, now_ms);
    match (&m.wechatpay_key, current_cert(m, now_ms)) {
        (Some((id, k)), _) if use_public || m.verification == Verification::PublicKey => {
            Some((id.clone(), k.0.clone()))
        }
        (_, Some(c)) => Some((c.serial_no.clone(), c.key.0.clone())),
        (Some((id, k)), None) => Some((id.clone(), k.0.clone())),
        (None, None) => None,
    }
}

/// A merchant's settings without secrets (for `GET /_sim/pay/merchants` and the console).
pub(crate) fn merchant_view(m: &Merchant, now_ms: i64) -> Value {
    let current = current_cert(m, now_ms).map(|c| c.serial_no.clone());
    json!({
        "mchid": m.mchid,
        "name": m.name,
        "appids": m.appids,
        "verification": m.verification,
        "merchant_serial_no": m.serial_no,
        "wechatpay_public_key_id": m.wechatpay_key.as_ref().map(|(id, _)| id),
        "wechatpay_public_key": m.wechatpay_key.as_ref().map(|(_, k)| keys::public_pem(&k.0.to_public_key())),
        "platform_certificates": listed_certs(m, now_ms).iter().map(|c| json!({
            "serial_no": c.serial_no,
            "certificate": c.pem,
            "effective_time": rfc3339(c.effective_ms),
            "expire_time": rfc3339(c.expire_ms),
            "in_use": Some(&c.serial_no) == current.as_ref(),
            "in_use_from": rfc3339(c.use_from_ms),
        })).collect::<Vec<_>>(),
        "migration": (m.verification == Verification::Both).then(|| json!({
            "started": m.migration_started_ms.map(rfc3339),
            "notify_percent": notify_percent(m, now_ms),
            "notify_percent_fixed": m.notify_percent.is_some(),
        })),
        "deliver": m.deliver,
        "balance": m.balance,
        "created": rfc3339(m.created_ms),
    })
}

fn not_found(mchid: &str) -> PayError {
    PayError::new(404, "MCH_NOT_EXISTS", format!("no merchant {mchid}"))
}

pub(crate) fn merchant_mut<'w>(w: &'w mut World, mchid: &str) -> PayResult<&'w mut Merchant> {
    w.pay
        .merchants
        .get_mut(mchid)
        .ok_or_else(|| not_found(mchid))
}

/// The migration's controls (`POST /_sim/pay/merchants/{mchid}/migration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationAction {
    /// 开始更换: a certificate merchant gets a public key and enters `both`, on the ramp.
    Start,
    /// 停止更换: back to certificates only (the public key stays issued, unused).
    Stop,
    /// 作废平台证书: the public key only; `GET /v3/certificates` answers 404 from then on.
    Finish,
}

impl Sim {
    /// Issues a merchant the way WeChat's merchant platform does, generating what `spec` leaves
    /// out. Key generation runs on blocking threads (about a tenth of a second per key).
    ///
    /// # Errors
    /// `PARAM_ERROR` (400) for an invalid field, `INVALID_REQUEST` (409) for a taken mchid.
    pub async fn add_pay_merchant(&self, spec: MerchantSpec) -> PayResult<IssuedMerchant> {
        let mchid = spec
            .mchid
            .clone()
            .unwrap_or_else(|| format!("19{:08}", rand::random::<u32>() % 100_000_000));
        if mchid.is_empty() || mchid.len() > 32 || !mchid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PayError::param(
                "mchid",
                "body",
                "mchid must be 1-32 digits",
            ));
        }
        if self.world().pay.merchants.contains_key(&mchid) {
            return Err(PayError::new(
                409,
                "INVALID_REQUEST",
                format!("merchant {mchid} exists"),
            ));
        }
        if spec
            .name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 64)
        {
            return Err(PayError::param(
                "name",
                "body",
                "name must be 1-64 characters",
            ));
        }
        let apiv3_key = spec.apiv3_key.clone().unwrap_or_else(|| random_alnum(32));
        if apiv3_key.len() != 32 || !apiv3_key.is_ascii() {
            return Err(PayError::param(
                "apiv3_key",
                "body",
                "apiv3_key must be 32 ASCII characters",
            ));
        }
        if let Some(b) = spec.balance.filter(|b| *b < 0) {
            return Err(PayError::param(
                "balance",
                "body",
                format!("balance {b} is negative"),
            ));
        }
        let verification = spec.verification.unwrap_or_default();
        let (public_key, private_pem, serial_no) = match &spec.merchant_public_key {
            Some(pem) => {
                let key = keys::parse_public_pem(pem).ok_or_else(|| {
                    PayError::param(
                        "merchant_public_key",
                        "body",
                        "not an RSA public key in PEM (SPKI or PKCS#1)",
                    )
                })?;
                let serial = spec.merchant_serial_no.clone().ok_or_else(|| {
                    PayError::param(
                        "merchant_serial_no",
                        "body",
                        "required with merchant_public_key",
                    )
                })?;
                (key, None, serial)
            }
            None => {
                let key = generate().await?;
                let serial = spec
                    .merchant_serial_no
                    .clone()
                    .unwrap_or_else(|| random_hex(20).to_ascii_uppercase());
                (key.to_public_key(), Some(keys::private_pem(&key)), serial)
            }
        };
        if serial_no.is_empty()
            || serial_no.len() > 64
            || !serial_no.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(PayError::param(
                "merchant_serial_no",
                "body",
                "1-64 letters or digits",
            ));
        }
        let now = self.now_ms();
        let shared_key = match &spec.share_wechatpay_key_with {
            None => None,
            Some(other) => {
                let key = self
                    .world()
                    .pay
                    .merchants
                    .get(other)
                    .and_then(|m| m.wechatpay_key.clone());
                match key {
                    Some(key) if verification == Verification::PublicKey => Some(key),
                    _ => {
                        return Err(PayError::param(
                            "share_wechatpay_key_with",
                            "body",
                            "names no merchant with a WeChat Pay public key (and this merchant must verify by public key)",
                        ))
                    }
                }
            }
        };
        let wechatpay_key = if verification == Verification::Certificate {
            None
        } else if let Some(key) = shared_key {
            Some(key)
        } else {
            Some((public_key_id(&mchid, now), SecretKey(generate().await?)))
        };
        let certs = if verification == Verification::PublicKey {
            Vec::new()
        } else {
            vec![new_cert(generate().await?, &mchid, now, now)]
        };
        let merchant = Merchant {
            mchid: mchid.clone(),
            name: spec.name.clone(),
            appids: spec.appids.clone(),
            serial_no: serial_no.clone(),
            public_key,
            apiv3_key: Secret(apiv3_key.clone()),
            verification,
            wechatpay_key,
            certs,
            migration_started_ms: (verification == Verification::Both).then_some(now),
            notify_percent: None,
            deliver: spec.deliver.unwrap_or(true),
            balance: spec.balance,
            created_ms: now,
        };
        let issued = IssuedMerchant {
            mchid: mchid.clone(),
            merchant_serial_no: serial_no,
            merchant_private_key: private_pem,
            apiv3_key,
            wechatpay_public_key_id: merchant.wechatpay_key.as_ref().map(|(id, _)| id.clone()),
            wechatpay_public_key: merchant
                .wechatpay_key
                .as_ref()
                .map(|(_, k)| keys::public_pem(&k.0.to_public_key())),
            platform_certificates: merchant.certs.iter().map(cert_view).collect(),
            verification,
            appids: spec.appids,
        };
        {
            let mut w = self.world();
            if w.pay.merchants.contains_key(&mchid) {
                return Err(PayError::new(
                    409,
                    "INVALID_REQUEST",
                    format!("merchant {mchid} exists"),
                ));
            }
            w.pay.merchants.insert(mchid.clone(), merchant);
        }
        self.record(Event::new("pay_merchant").detail(json!({
            "mchid": mchid,
            "verification": verification,
            "wechatpay_public_key_id": issued.wechatpay_public_key_id,
            "platform_certificates": issued.platform_certificates.iter().map(|c| &c.serial_no).collect::<Vec<_>>(),
        })));
        Ok(issued)
    }

    /// Every merchant, without secrets.
    pub fn pay_merchants(&self) -> Vec<Value> {
        let w = self.world();
        let now = self.now_in(&w);
        w.pay
            .merchants
            .values()
            .map(|m| merchant_view(m, now))
            .collect()
    }

    /// Rotates the merchant's platform certificate: a new one is listed now and used after
    /// `overlap_secs` (default 24 h), when the current ones expire. Returns the certificates
    /// now listed.
    ///
    /// # Errors
    /// 404 unknown merchant; 409 for a public-key-only merchant or during the migration (they
    /// cannot run together in production).
    pub async fn rotate_platform_certificate(
        &self,
        mchid: &str,
        overlap_secs: Option<i64>,
    ) -> PayResult<Vec<CertView>> {
        let overlap = overlap_secs
            .unwrap_or(ROTATION_OVERLAP_SECS)
            .clamp(0, CERT_VALIDITY_SECS);
        {
            let mut w = self.world();
            let m = merchant_mut(&mut w, mchid)?;
            if m.verification != Verification::Certificate {
                return Err(PayError::new(
                    409,
                    "INVALID_REQUEST",
                    "only a certificate merchant (not public_key, not during the migration) rotates platform certificates",
                ));
            }
        }
        let key = generate().await?;
        let mut w = self.world();
        let now = self.now_in(&w);
        let m = merchant_mut(&mut w, mchid)?;
        let switch = now + overlap * 1000;
        for c in m.certs.iter_mut().filter(|c| c.expire_ms > switch) {
            c.expire_ms = switch;
        }
        let cert = new_cert(key, mchid, now, switch);
        let serial = cert.serial_no.clone();
        m.certs.push(cert);
        let listed: Vec<CertView> = listed_certs(m, now).into_iter().map(cert_view).collect();
        self.record_at(
            now,
            Event::new("pay_certificate_rotated").detail(
                json!({"mchid": mchid, "serial_no": serial, "in_use_from": rfc3339(switch)}),
            ),
        );
        Ok(listed)
    }

    /// Moves a merchant through the migration from platform certificates to the public key,
    /// and/or fixes the share of notifications signed with the public key (0–100) instead of
    /// the 7-day ramp. Returns the merchant's view (with the public key once it has one).
    ///
    /// # Errors
    /// 404 unknown merchant; 409 for an action the merchant's mode does not allow; 400 for a
    /// share outside 0–100.
    pub async fn pay_migration(
        &self,
        mchid: &str,
        action: Option<MigrationAction>,
        notify_percent: Option<f64>,
    ) -> PayResult<Value> {
        if let Some(p) = notify_percent.filter(|p| !(0.0..=100.0).contains(p)) {
            return Err(PayError::param(
                "notify_percent",
                "body",
                format!("{p} is not within 0-100"),
            ));
        }
        let needs_key = action == Some(MigrationAction::Start) && {
            let mut w = self.world();
            merchant_mut(&mut w, mchid)?.wechatpay_key.is_none()
        };
        let key = if needs_key {
            Some(generate().await?)
        } else {
            None
        };
        let mut w = self.world();
        let now = self.now_in(&w);
        let m = merchant_mut(&mut w, mchid)?;
        let refuse = |what: &str| Err(PayError::new(409, "INVALID_REQUEST", what.to_owned()));
        match (action, m.verification) {
            (None, _) => {}
            (Some(MigrationAction::Start), Verification::Certificate) => {
                if let Some(k) = key {
                    m.wechatpay_key = Some((public_key_id(mchid, now), SecretKey(k)));
                }
                m.verification = Verification::Both;
                m.migration_started_ms = Some(now);
                m.notify_percent = None;
                // A rotation in progress ends now: the migration cannot run alongside it.
                for c in &mut m.certs {
                    c.use_from_ms = c.use_from_ms.min(now);
                }
            }
            (Some(MigrationAction::Start), _) => {
                return refuse("start: only a certificate merchant migrates")
            }
            (Some(MigrationAction::Stop), Verification::Both) => {
                m.verification = Verification::Certificate;
                m.migration_started_ms = None;
                m.notify_percent = None;
            }
            (Some(MigrationAction::Finish), Verification::Both) => {
                m.verification = Verification::PublicKey;
                m.migration_started_ms = None;
                m.notify_percent = None;
            }
            (Some(_), _) => {
                return refuse("stop and finish apply during the migration (verification both)")
            }
        }
        if let Some(p) = notify_percent {
            if m.verification != Verification::Both {
                return refuse("notify_percent applies during the migration (verification both)");
            }
            m.notify_percent = Some(p);
        }
        let view = merchant_view(m, now);
        self.record_at(
            now,
            Event::new("pay_migration").detail(json!({
                "mchid": mchid,
                "verification": view["verification"],
                "migration": view["migration"],
            })),
        );
        Ok(view)
    }

    /// Turns notification delivery for a merchant off (they are lost, as when WeChat's
    /// notifications never arrive) or back on.
    ///
    /// # Errors
    /// 404 unknown merchant.
    pub fn set_pay_delivery(&self, mchid: &str, deliver: bool) -> PayResult<()> {
        let mut w = self.world();
        merchant_mut(&mut w, mchid)?.deliver = deliver;
        Ok(())
    }

    /// Sets the basic account's available balance in fen (`None`: unlimited).
    ///
    /// # Errors
    /// 404 unknown merchant; 400 for a negative balance.
    pub fn set_pay_balance(&self, mchid: &str, balance: Option<i64>) -> PayResult<()> {
        if balance.is_some_and(|b| b < 0) {
            return Err(PayError::param("balance", "body", "negative"));
        }
        let mut w = self.world();
        merchant_mut(&mut w, mchid)?.balance = balance;
        Ok(())
    }
}
