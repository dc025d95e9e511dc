//! Receiving WeChat's message pushes: URL verification, signature checks in constant time,
//! AES decryption in plain / compatible / safe mode, XML or JSON bodies, typed messages, a
//! timestamp window and replay cache, encrypted replies — and a small handler router with an
//! axum integration (feature `axum`).
//!
//! ```no_run
//! use weapp::push::{PushConfig, Receiver, PushQuery};
//! # fn run(query: PushQuery, body: &[u8]) -> Result<(), weapp::push::PushError> {
//! let receiver = Receiver::new(PushConfig::new("wx49f0ab532d5d035a", "token", Some("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"))?);
//! let incoming = receiver.receive(&query, body)?;
//! println!("{} from {}", incoming.message.type_name(), incoming.message.from_user_name);
//! # Ok(()) }
//! ```

pub mod crypto;
pub mod message;
pub mod router;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;

pub use crypto::{signature, EncodingAesKey};
pub use message::{Format, MessageKind, PushMessage};
pub use router::{PushRouter, Reply};

/// Why a push was refused. [`PushError::official_code`] gives the code of WeChat's sample
/// implementations for the same failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// `signature` or `msg_signature` does not match.
    #[error("signature does not match")]
    InvalidSignature,
    /// The body is not a well-formed push.
    #[error("cannot parse the push: {0}")]
    Parse(String),
    /// The EncodingAESKey is not 43 characters of base64 for 32 bytes.
    #[error("EncodingAESKey must be 43 characters decoding to 32 bytes")]
    InvalidAesKey,
    /// The decrypted message names another app.
    #[error("the message is for app {actual}, not this one")]
    AppidMismatch {
        /// The appid found.
        actual: String,
    },
    /// AES decryption failed (length, padding or framing).
    #[error("cannot decrypt the message")]
    DecryptFailed,
    /// `Encrypt` is not base64.
    #[error("Encrypt is not valid base64")]
    InvalidBase64,
    /// A required query parameter is missing.
    #[error("query parameter {0} is missing")]
    MissingParameter(&'static str),
    /// `timestamp` is outside the accepted window.
    #[error("timestamp is outside the accepted window")]
    StaleTimestamp,
    /// The same (timestamp, nonce, signature) was already accepted.
    #[error("this push was already received (replay)")]
    Replayed,
}

impl PushError {
    /// The sample-code error number: -40001 signature, -40002 parse, -40004 AES key, -40005
    /// appid, -40007 decrypt, -40010 base64 (0 for the checks the samples do not have).
    pub fn official_code(&self) -> i32 {
        match self {
            PushError::InvalidSignature => -40001,
            PushError::Parse(_) | PushError::MissingParameter(_) => -40002,
            PushError::InvalidAesKey => -40004,
            PushError::AppidMismatch { .. } => -40005,
            PushError::DecryptFailed => -40007,
            PushError::InvalidBase64 => -40010,
            PushError::StaleTimestamp | PushError::Replayed => 0,
        }
    }

    /// True when the request is not authentic (answer 401); otherwise it is malformed (400).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            PushError::InvalidSignature
                | PushError::StaleTimestamp
                | PushError::Replayed
                | PushError::AppidMismatch { .. }
        )
    }
}

/// The query string WeChat sends with a push.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PushQuery {
    /// `sha1(sort(token, timestamp, nonce))`.
    pub signature: Option<String>,
    /// Unix seconds, as text.
    pub timestamp: Option<String>,
    /// Random text.
    pub nonce: Option<String>,
    /// URL verification only: echo it back.
    pub echostr: Option<String>,
    /// The user's openid (messages only).
    pub openid: Option<String>,
    /// `aes` in compatible and safe mode.
    pub encrypt_type: Option<String>,
    /// `sha1(sort(token, timestamp, nonce, Encrypt))` in compatible and safe mode.
    pub msg_signature: Option<String>,
}

/// An app's push settings.
#[derive(Clone)]
pub struct PushConfig {
    appid: String,
    token: String,
    aes_key: Option<EncodingAesKey>,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("appid", &self.appid)
            .field("token", &"***")
            .field("aes_key", &self.aes_key)
            .finish()
    }
}

impl PushConfig {
    /// The appid, the console's Token and (for compatible/safe mode) its EncodingAESKey.
    ///
    /// # Errors
    /// [`PushError::InvalidAesKey`] for a malformed key.
    pub fn new(
        appid: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: Option<&str>,
    ) -> Result<Self, PushError> {
        Ok(Self {
            appid: appid.into(),
            token: token.into(),
            aes_key: encoding_aes_key.map(EncodingAesKey::new).transpose()?,
        })
    }

    /// The appid.
    pub fn appid(&self) -> &str {
        &self.appid
    }
}

/// A push that passed every check.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Incoming {
    /// The message.
    pub message: PushMessage,
    /// Its format.
    pub format: Format,
    /// Whether it arrived encrypted (then replies should be encrypted too).
    pub encrypted: bool,
}

/// Remembers accepted (timestamp, nonce, signature) triples for the timestamp window.
#[derive(Debug, Default)]
struct ReplayCache {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl ReplayCache {
    const CAPACITY: usize = 100_000;

    fn check_and_insert(&mut self, key: String, now: i64, window: i64) -> bool {
        while let Some((t, k)) = self.order.front() {
            if now - *t <= window && self.order.len() < Self::CAPACITY {
                break;
            }
            self.seen.remove(k);
            self.order.pop_front();
        }
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key.clone(), now);
        self.order.push_back((now, key));
        true
    }
}

/// Verifies and opens pushes for one app.
#[derive(Debug)]
pub struct Receiver {
    config: PushConfig,
    window_secs: Option<i64>,
    replay: Option<Mutex<ReplayCache>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn required<'q>(v: &'q Option<String>, name: &'static str) -> Result<&'q str, PushError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(PushError::MissingParameter(name))
}

impl Receiver {
    /// A receiver without timestamp window or replay cache.
    pub fn new(config: PushConfig) -> Self {
        Self {
            config,
            window_secs: None,
            replay: None,
        }
    }

    /// Rejects pushes whose `timestamp` is more than `secs` away from now, and remembers
    /// accepted ones for that long to reject exact replays.
    #[must_use]
    pub fn with_replay_protection(mut self, secs: u64) -> Self {
        self.window_secs = Some(secs as i64);
        self.replay = Some(Mutex::new(ReplayCache::default()));
        self
    }

    /// The settings.
    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    fn check_signature(&self, q: &PushQuery) -> Result<(), PushError> {
        let ts = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let given = required(&q.signature, "signature")?;
        if crypto::signature_matches(&signature(&[&self.config.token, ts, nonce]), given) {
            Ok(())
        } else {
            Err(PushError::InvalidSignature)
        }
    }

    fn check_freshness(&self, q: &PushQuery, sig: &str) -> Result<(), PushError> {
        let Some(window) = self.window_secs else {
            return Ok(());
        };
        let ts: i64 = required(&q.timestamp, "timestamp")?
            .parse()
            .map_err(|_| PushError::StaleTimestamp)?;
        let now = now_secs();
        if (now - ts).abs() > window {
            return Err(PushError::StaleTimestamp);
        }
        if let Some(cache) = &self.replay {
            let key = format!("{ts}:{}:{sig}", q.nonce.as_deref().unwrap_or(""));
            if !cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check_and_insert(key, now, window)
            {
                return Err(PushError::Replayed);
            }
        }
        Ok(())
    }

    /// URL verification (`GET`): returns `echostr` to send back verbatim.
    ///
    /// # Errors
    /// [`PushError::MissingParameter`], [`PushError::InvalidSignature`].
    pub fn verify_url(&self, q: &PushQuery) -> Result<String, PushError> {
        self.check_signature(q)?;
        Ok(required(&q.echostr, "echostr")?.to_owned())
    }

    /// Verifies, decrypts (when `encrypt_type=aes`) and parses a pushed body.
    ///
    /// # Errors
    /// Every [`PushError`]: nothing is returned unless the push is authentic and well formed.
    pub fn receive(&self, q: &PushQuery, body: &[u8]) -> Result<Incoming, PushError> {
        let text =
            std::str::from_utf8(body).map_err(|_| PushError::Parse("body is not UTF-8".into()))?;
        let format = Format::detect(body)
            .ok_or_else(|| PushError::Parse("body is neither XML nor JSON".into()))?;
        let encrypted = q.encrypt_type.as_deref() == Some("aes");
        if !encrypted {
            self.check_signature(q)?;
            self.check_freshness(q, q.signature.as_deref().unwrap_or(""))?;
            let message = PushMessage::parse(text, format)?;
            return Ok(Incoming {
                message,
                format,
                encrypted,
            });
        }
        let key = self
            .config
            .aes_key
            .as_ref()
            .ok_or(PushError::InvalidAesKey)?;
        let envelope = message::parse_tree(text, format)?;
        let encrypt = envelope
            .get("Encrypt")
            .and_then(|e| e.as_str())
            .ok_or_else(|| PushError::Parse("Encrypt is missing".into()))?;
        let ts = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let given = required(&q.msg_signature, "msg_signature")?;
        if !crypto::signature_matches(&signature(&[&self.config.token, ts, nonce, encrypt]), given)
        {
            return Err(PushError::InvalidSignature);
        }
        self.check_freshness(q, given)?;
        let plain = key.decrypt(encrypt, &self.config.appid)?;
        let inner = Format::detect(plain.as_bytes()).unwrap_or(format);
        let message = PushMessage::parse(&plain, inner)?;
        Ok(Incoming {
            message,
            format,
            encrypted,
        })
    }

    /// Wraps a plaintext reply for safe mode: `{Encrypt, MsgSignature, TimeStamp, Nonce}` in the
    /// push's format.
    ///
    /// # Errors
    /// [`PushError::InvalidAesKey`] when no key is configured.
    pub fn encrypt_reply(
        &self,
        plain: &str,
        format: Format,
        timestamp: &str,
        nonce: &str,
    ) -> Result<String, PushError> {
        let key = self
            .config
            .aes_key
            .as_ref()
            .ok_or(PushError::InvalidAesKey)?;
        let encrypt = key.encrypt(plain, &self.config.appid);
        let sig = signature(&[&self.config.token, timestamp, nonce, &encrypt]);
        let v = json!({"Encrypt": encrypt, "MsgSignature": sig, "TimeStamp": timestamp, "Nonce": nonce});
        Ok(match format {
            Format::Json => v.to_string(),
            Format::Xml => message::value_to_xml(&v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    const APPID: &str = "wx49f0ab532d5d035a";

    fn query(token: &str, encrypt: Option<&str>) -> PushQuery {
        let (ts, nonce) = (now_secs().to_string(), "461056294".to_string());
        PushQuery {
            signature: Some(signature(&[token, &ts, &nonce])),
            msg_signature: encrypt.map(|e| signature(&[token, &ts, &nonce, e])),
            encrypt_type: encrypt.map(|_| "aes".into()),
            timestamp: Some(ts),
            nonce: Some(nonce),
            echostr: Some("echo-123".into()),
            openid: None,
        }
    }

    const TEXT: &str = r#"{"ToUserName":"gh_1","FromUserName":"oU","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":7}"#;

    #[test]
    fn url_verification_echoes_only_with_a_valid_signature() {
        let r = Receiver::new(PushConfig::new(APPID, "123456", None).unwrap());
        assert_eq!(r.verify_url(&query("123456", None)).unwrap(), "echo-123");
        assert_eq!(
            r.verify_url(&query("wrong", None)).unwrap_err(),
            PushError::InvalidSignature
        );
        assert_eq!(
            r.verify_url(&PushQuery::default()).unwrap_err(),
            PushError::MissingParameter("timestamp")
        );
    }

    #[test]
    fn plain_compatible_and_safe_modes() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", Some(KEY)).unwrap());
        let plain = r.receive(&query("tok", None), TEXT.as_bytes()).unwrap();
        assert!(!plain.encrypted);
        assert_eq!(
            plain.message.kind,
            MessageKind::Text {
                content: "hi".into(),
                msg_id: 7
            }
        );

        let enc = EncodingAesKey::new(KEY).unwrap().encrypt(TEXT, APPID);
        let safe = serde_json::json!({"ToUserName": "gh_1", "Encrypt": enc}).to_string();
        let got = r
            .receive(&query("tok", Some(&enc)), safe.as_bytes())
            .unwrap();
        assert!(got.encrypted);
        assert_eq!(got.message.kind, plain.message.kind);

        let mut compat: serde_json::Value = serde_json::from_str(TEXT).unwrap();
        compat["Encrypt"] = enc.clone().into();
        assert!(r
            .receive(&query("tok", Some(&enc)), compat.to_string().as_bytes())
            .is_ok());

        let xml_safe = format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
        let got = r
            .receive(&query("tok", Some(&enc)), xml_safe.as_bytes())
            .unwrap();
        assert_eq!(got.format, Format::Xml);

        assert_eq!(
            r.receive(&query("bad", Some(&enc)), safe.as_bytes())
                .unwrap_err(),
            PushError::InvalidSignature
        );
        let other = Receiver::new(PushConfig::new("wxother", "tok", Some(KEY)).unwrap());
        assert!(matches!(
            other
                .receive(&query("tok", Some(&enc)), safe.as_bytes())
                .unwrap_err(),
            PushError::AppidMismatch { .. }
        ));
        assert!(matches!(
            r.receive(&query("tok", None), b"garbage").unwrap_err(),
            PushError::Parse(_)
        ));
    }

    #[test]
    fn replays_and_stale_timestamps_are_refused() {
        let r =
            Receiver::new(PushConfig::new(APPID, "tok", None).unwrap()).with_replay_protection(300);
        let q = query("tok", None);
        r.receive(&q, TEXT.as_bytes()).unwrap();
        assert_eq!(
            r.receive(&q, TEXT.as_bytes()).unwrap_err(),
            PushError::Replayed
        );
        let mut old = q.clone();
        old.timestamp = Some((now_secs() - 301).to_string());
        old.signature = Some(signature(&[
            "tok",
            old.timestamp.as_deref().unwrap(),
            "461056294",
        ]));
        assert_eq!(
            r.receive(&old, TEXT.as_bytes()).unwrap_err(),
            PushError::StaleTimestamp
        );
    }

    #[test]
    fn encrypted_reply_round_trips() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", Some(KEY)).unwrap());
        for format in [Format::Json, Format::Xml] {
            let reply = r
                .encrypt_reply("success", format, "1411525903", "n1")
                .unwrap();
            let tree = message::parse_tree(&reply, format).unwrap();
            let enc = tree["Encrypt"].as_str().unwrap();
            assert_eq!(
                tree["MsgSignature"].as_str().unwrap(),
                signature(&["tok", "1411525903", "n1", enc])
            );
            assert_eq!(
                EncodingAesKey::new(KEY)
                    .unwrap()
                    .decrypt(enc, APPID)
                    .unwrap(),
                "success"
            );
        }
    }
}
