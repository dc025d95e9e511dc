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
mod error;
pub mod message;
pub mod router;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;

pub use crypto::{signature, EncodingAesKey};
pub use error::PushError;
pub use message::{Format, MessageKind, PushMessage};
pub use router::{PushRouter, Reply};

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

impl PushQuery {
    /// `"<timestamp>:<nonce>"`: what replay protection keys on ([`Incoming::replay_key`] of a
    /// push opened with this query; [`Receiver::remember_key`] for pushes opened elsewhere,
    /// such as a third-party platform's events).
    pub fn replay_key(&self) -> String {
        format!(
            "{}:{}",
            self.timestamp.as_deref().unwrap_or(""),
            self.nonce.as_deref().unwrap_or("")
        )
    }
}

/// How an app's pushes are protected: the choice made in the WeChat console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PushMode {
    /// 明文模式: pushes are authenticated by `signature` over (token, timestamp, nonce) only —
    /// the body is not covered, so anyone who saw one push URL can forge bodies for as long as
    /// the timestamp window lasts. Choose it explicitly, for development.
    Plain,
    /// 兼容模式: WeChat sends the plaintext and an encrypted copy; only the encrypted copy is
    /// read (its `msg_signature` covers the ciphertext).
    Compatible,
    /// 安全模式: only the encrypted copy is sent. The default whenever an AES key is given.
    #[default]
    Safe,
}

impl PushMode {
    /// `plain`, `compatible` or `safe`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushMode::Plain => "plain",
            PushMode::Compatible => "compatible",
            PushMode::Safe => "safe",
        }
    }
}

/// An app's push settings.
#[derive(Clone)]
pub struct PushConfig {
    appid: String,
    token: String,
    aes_key: Option<EncodingAesKey>,
    mode: PushMode,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("appid", &self.appid)
            .field("token", &"***")
            .field("aes_key", &self.aes_key)
            .field("mode", &self.mode)
            .finish()
    }
}

impl PushConfig {
    /// The appid, the console's Token and its EncodingAESKey. With a key the mode is
    /// [`PushMode::Safe`]: only encrypted pushes signed over their ciphertext are accepted
    /// (which also covers compatible mode). Without one it is [`PushMode::Plain`].
    ///
    /// # Errors
    /// [`PushError::InvalidAesKey`] for a malformed key.
    pub fn new(
        appid: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: Option<&str>,
    ) -> Result<Self, PushError> {
        let aes_key = encoding_aes_key.map(EncodingAesKey::new).transpose()?;
        let mode = if aes_key.is_some() {
            PushMode::Safe
        } else {
            PushMode::Plain
        };
        Ok(Self {
            appid: appid.into(),
            token: token.into(),
            aes_key,
            mode,
        })
    }

    /// Sets the mode. [`PushMode::Plain`] with a key accepts plaintext pushes as well as
    /// encrypted ones (for a switch-over in the console); the other modes need a key.
    ///
    /// # Errors
    /// [`PushError::InvalidAesKey`] for compatible or safe mode without a key.
    pub fn with_mode(mut self, mode: PushMode) -> Result<Self, PushError> {
        if mode != PushMode::Plain && self.aes_key.is_none() {
            return Err(PushError::InvalidAesKey);
        }
        self.mode = mode;
        Ok(self)
    }

    /// The appid.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// The mode.
    pub fn mode(&self) -> PushMode {
        self.mode
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
    /// `"<timestamp>:<nonce>"`: what replay protection keys on (for a replay store shared by
    /// a fleet; see [`Receiver::open`]).
    pub replay_key: String,
}

/// Remembers accepted (timestamp, nonce) pairs for the timestamp window.
#[derive(Debug, Default)]
struct ReplayCache {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl ReplayCache {
    /// Bounded memory: beyond this many remembered pushes the oldest are dropped early.
    const CAPACITY: usize = 100_000;

    fn check_and_insert(&mut self, key: &str, now: i64, window: i64) -> bool {
        // Kept for twice the window: a push's timestamp may be up to `window` ahead of its
        // arrival, and it stays acceptable until `window` after that timestamp.
        let keep = window.saturating_mul(2);
        while let Some((t, k)) = self.order.front() {
            if now - *t <= keep && self.order.len() < Self::CAPACITY {
                break;
            }
            if self.seen.get(k) == Some(t) {
                self.seen.remove(k);
            }
            self.order.pop_front();
        }
        if self.seen.contains_key(key) {
            return false;
        }
        self.seen.insert(key.to_owned(), now);
        self.order.push_back((now, key.to_owned()));
        true
    }

    fn remove(&mut self, key: &str) {
        // The queue entry stays until it ages out; `check_and_insert` skips stale ones.
        self.seen.remove(key);
    }
}

/// The default timestamp window and replay memory, in seconds.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;

/// Verifies and opens pushes for one app.
///
/// Replay protection is on by default: a push whose `timestamp` is more than
/// [`DEFAULT_REPLAY_WINDOW_SECS`] from now is refused, and so is a second push with the same
/// (timestamp, nonce) within that window. A push that was accepted but could not be processed
/// should be [forgotten](Receiver::forget), so that WeChat's retry of it is not refused as a
/// replay.
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
    /// A receiver with the default timestamp window and replay memory (300 s).
    pub fn new(config: PushConfig) -> Self {
        Self {
            config,
            window_secs: None,
            replay: None,
        }
        .with_replay_protection(DEFAULT_REPLAY_WINDOW_SECS)
    }

    /// Rejects pushes whose `timestamp` is more than `secs` away from now, and remembers
    /// accepted (timestamp, nonce) pairs for that long to reject replays. 0 turns both off.
    #[must_use]
    pub fn with_replay_protection(mut self, secs: u64) -> Self {
        if secs == 0 {
            return self.without_replay_protection();
        }
        self.window_secs = Some(i64::try_from(secs).unwrap_or(i64::MAX));
        self.replay = Some(Mutex::new(ReplayCache::default()));
        self
    }

    /// Turns the timestamp window and the replay memory off (a duplicate is then caught only
    /// by de-duplicating on `MsgId`, if the application does).
    #[must_use]
    pub fn without_replay_protection(mut self) -> Self {
        self.window_secs = None;
        self.replay = None;
        self
    }

    /// The timestamp window in seconds, if replay protection is on.
    pub fn replay_window_secs(&self) -> Option<u64> {
        self.window_secs.map(|w| w as u64)
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

    fn check_window(&self, q: &PushQuery) -> Result<(), PushError> {
        let Some(window) = self.window_secs else {
            return Ok(());
        };
        let ts: i64 = required(&q.timestamp, "timestamp")?
            .parse()
            .map_err(|_| PushError::StaleTimestamp)?;
        if now_secs().saturating_sub(ts).abs() > window {
            return Err(PushError::StaleTimestamp);
        }
        Ok(())
    }

    /// URL verification (`GET`): returns `echostr` to send back verbatim. The timestamp must be
    /// within the window too: a leaked verification URL cannot be replayed for ever to make the
    /// server echo text.
    ///
    /// # Errors
    /// [`PushError::MissingParameter`], [`PushError::InvalidSignature`],
    /// [`PushError::StaleTimestamp`].
    pub fn verify_url(&self, q: &PushQuery) -> Result<String, PushError> {
        self.check_signature(q)?;
        self.check_window(q)?;
        Ok(required(&q.echostr, "echostr")?.to_owned())
    }

    /// Verifies, decrypts and parses a pushed body, and reserves its (timestamp, nonce) in
    /// this receiver's replay memory. Call [`Receiver::forget`] if it cannot be processed.
    ///
    /// # Errors
    /// Every [`PushError`]: nothing is returned unless the push is authentic, fresh, not a
    /// replay, and well formed.
    pub fn receive(&self, q: &PushQuery, body: &[u8]) -> Result<Incoming, PushError> {
        let incoming = self.open(q, body)?;
        self.remember(&incoming)?;
        Ok(incoming)
    }

    /// Reserves `incoming`'s (timestamp, nonce) in this receiver's replay memory (what
    /// [`Receiver::receive`] does after [`Receiver::open`]).
    ///
    /// # Errors
    /// [`PushError::Replayed`] when it is already there.
    pub fn remember(&self, incoming: &Incoming) -> Result<(), PushError> {
        self.remember_key(&incoming.replay_key)
    }

    /// Reserves a replay key ([`PushQuery::replay_key`]) in this receiver's replay memory:
    /// for pushes verified by something else that share this receiver's memory (a third-party
    /// platform's events and its merchants' messages, say).
    ///
    /// # Errors
    /// [`PushError::Replayed`] when it is already there.
    pub fn remember_key(&self, replay_key: &str) -> Result<(), PushError> {
        if let Some(cache) = &self.replay {
            let window = self.window_secs.unwrap_or(0);
            if !cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check_and_insert(replay_key, now_secs(), window)
            {
                return Err(PushError::Replayed);
            }
        }
        Ok(())
    }

    /// Releases the replay reservation [`Receiver::receive`] made for `incoming`, so that
    /// WeChat's retry of a push that could not be stored is accepted.
    pub fn forget(&self, incoming: &Incoming) {
        self.forget_key(&incoming.replay_key);
    }

    /// Releases a reservation made with [`Receiver::remember_key`].
    pub fn forget_key(&self, replay_key: &str) {
        if let Some(cache) = &self.replay {
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(replay_key);
        }
    }

    /// Like [`Receiver::receive`] — signature, mode, timestamp window, decryption, parsing —
    /// but without touching the replay memory: for a replay store shared by a fleet (keyed on
    /// [`Incoming::replay_key`] for [`Receiver::replay_window_secs`]).
    ///
    /// When an AES key is configured (compatible or safe mode) only `encrypt_type=aes` pushes
    /// with a valid `msg_signature` over the ciphertext are accepted, and only the encrypted
    /// copy is read: a plaintext body signed with nothing but the URL's `signature` (which
    /// covers no body) is refused.
    ///
    /// # Errors
    /// Every [`PushError`] except [`PushError::Replayed`].
    pub fn open(&self, q: &PushQuery, body: &[u8]) -> Result<Incoming, PushError> {
        let text =
            std::str::from_utf8(body).map_err(|_| PushError::Parse("body is not UTF-8".into()))?;
        let format = Format::detect(body)
            .ok_or_else(|| PushError::Parse("body is neither XML nor JSON".into()))?;
        let encrypted = q.encrypt_type.as_deref() == Some("aes");
        let replay_key = PushQuery::replay_key;
        if !encrypted {
            if self.config.mode != PushMode::Plain {
                return Err(PushError::NotEncrypted);
            }
            self.check_signature(q)?;
            self.check_window(q)?;
            let message = PushMessage::parse(text, format)?;
            return Ok(Incoming {
                message,
                format,
                encrypted,
                replay_key: replay_key(q),
            });
        }
        let key = self
            .config
            .aes_key
            .as_ref()
            .ok_or(PushError::InvalidAesKey)?;
        let ts = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let given = q
            .msg_signature
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(PushError::NotEncrypted)?;
        let envelope = message::parse_tree(text, format)?;
        let encrypt = envelope
            .get("Encrypt")
            .and_then(|e| e.as_str())
            .ok_or_else(|| PushError::Parse("Encrypt is missing".into()))?;
        if !crypto::signature_matches(&signature(&[&self.config.token, ts, nonce, encrypt]), given)
        {
            return Err(PushError::InvalidSignature);
        }
        self.check_window(q)?;
        let plain = key.decrypt(encrypt, &self.config.appid)?;
        let inner = Format::detect(plain.as_bytes()).unwrap_or(format);
        // Only the category reaches the error: the decrypted text is the user's message.
        let message = PushMessage::parse(&plain, inner).map_err(|_| {
            PushError::Parse("the decrypted message is not a well-formed push".into())
        })?;
        Ok(Incoming {
            message,
            format,
            encrypted,
            replay_key: replay_key(q),
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
        let ts = now_secs().to_string();
        let nonce = rand::random::<u32>().to_string();
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
    fn plain_mode_reads_the_body_signed_by_the_url() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", None).unwrap());
        assert_eq!(r.config().mode(), PushMode::Plain);
        let plain = r.receive(&query("tok", None), TEXT.as_bytes()).unwrap();
        assert!(!plain.encrypted);
        assert_eq!(
            plain.message.kind,
            MessageKind::Text {
                content: "hi".into(),
                msg_id: 7
            }
        );
        // Plain mode chosen explicitly beside a key (a switch-over) takes both.
        let both = Receiver::new(
            PushConfig::new(APPID, "tok", Some(KEY))
                .unwrap()
                .with_mode(PushMode::Plain)
                .unwrap(),
        );
        assert!(both.receive(&query("tok", None), TEXT.as_bytes()).is_ok());
        assert!(PushConfig::new(APPID, "tok", None)
            .unwrap()
            .with_mode(PushMode::Safe)
            .is_err());
    }

    #[test]
    fn with_a_key_only_the_encrypted_copy_counts() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", Some(KEY)).unwrap());
        assert_eq!(r.config().mode(), PushMode::Safe);
        // A plaintext push carrying a valid URL signature (copied from a verification request)
        // is a forgery as far as a receiver with a key is concerned.
        assert_eq!(
            r.receive(&query("tok", None), TEXT.as_bytes()).unwrap_err(),
            PushError::NotEncrypted
        );
        let enc = EncodingAesKey::new(KEY).unwrap().encrypt(TEXT, APPID);
        let safe = serde_json::json!({"ToUserName": "gh_1", "Encrypt": enc}).to_string();
        let mut no_msg_sig = query("tok", Some(&enc));
        no_msg_sig.msg_signature = None;
        assert_eq!(
            r.receive(&no_msg_sig, safe.as_bytes()).unwrap_err(),
            PushError::NotEncrypted
        );
        let got = r
            .receive(&query("tok", Some(&enc)), safe.as_bytes())
            .unwrap();
        assert!(got.encrypted);
        assert_eq!(
            got.message.kind,
            MessageKind::Text {
                content: "hi".into(),
                msg_id: 7
            }
        );

        // Compatible mode: the plaintext beside the ciphertext is ignored, even when forged.
        let mut compat: serde_json::Value = serde_json::from_str(TEXT).unwrap();
        compat["Content"] = "forged".into();
        compat["Encrypt"] = enc.clone().into();
        let got = r
            .receive(&query("tok", Some(&enc)), compat.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            got.message.kind,
            MessageKind::Text {
                content: "hi".into(),
                msg_id: 7
            }
        );

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
        let err = other
            .receive(&query("tok", Some(&enc)), safe.as_bytes())
            .unwrap_err();
        assert_eq!(err, PushError::AppidMismatch);
        assert!(
            !format!("{err} {err:?}").contains(APPID),
            "no decrypted text"
        );
        assert!(matches!(
            r.receive(&query("tok", None), b"garbage").unwrap_err(),
            PushError::Parse(_)
        ));
    }

    #[test]
    fn errors_about_decrypted_text_do_not_quote_it() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", Some(KEY)).unwrap());
        for secret_text in [
            "<xml><Content>my card 6222021234</Content>",
            "<notxml>my card 6222021234</notxml>",
            "<xml><Content>&bogus6222021234;</Content></xml>",
            "{\"Content\": \"my card 6222021234\"",
        ] {
            let enc = EncodingAesKey::new(KEY)
                .unwrap()
                .encrypt(secret_text, APPID);
            let body = serde_json::json!({"Encrypt": enc}).to_string();
            let err = r
                .receive(&query("tok", Some(&enc)), body.as_bytes())
                .unwrap_err();
            assert!(matches!(err, PushError::Parse(_)), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("6222021234"), "{err}");
        }
        // Plain bodies too: their errors name a position, not the text.
        let err = xml_to_value_err("<xml><a>6222021234</b></xml>");
        assert!(!err.contains("6222021234"), "{err}");
    }

    fn xml_to_value_err(x: &str) -> String {
        message::xml_to_value(x).unwrap_err().to_string()
    }

    #[test]
    fn replays_are_keyed_on_timestamp_and_nonce_and_on_by_default() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", None).unwrap());
        assert_eq!(r.replay_window_secs(), Some(DEFAULT_REPLAY_WINDOW_SECS));
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
            old.nonce.as_deref().unwrap(),
        ]));
        assert_eq!(
            r.receive(&old, TEXT.as_bytes()).unwrap_err(),
            PushError::StaleTimestamp
        );
        // The same (timestamp, nonce) under another signature scheme is still a replay.
        let keyed = Receiver::new(
            PushConfig::new(APPID, "tok", Some(KEY))
                .unwrap()
                .with_mode(PushMode::Plain)
                .unwrap(),
        );
        let enc = EncodingAesKey::new(KEY).unwrap().encrypt(TEXT, APPID);
        let mut q = query("tok", Some(&enc));
        let body = serde_json::json!({"Encrypt": enc}).to_string();
        keyed.receive(&q, body.as_bytes()).unwrap();
        q.encrypt_type = None;
        assert_eq!(
            keyed.receive(&q, TEXT.as_bytes()).unwrap_err(),
            PushError::Replayed
        );
    }

    #[test]
    fn a_forgotten_push_is_accepted_again() {
        let r = Receiver::new(PushConfig::new(APPID, "tok", None).unwrap());
        let q = query("tok", None);
        let first = r.receive(&q, TEXT.as_bytes()).unwrap();
        r.forget(&first);
        r.receive(&q, TEXT.as_bytes()).unwrap();
        assert_eq!(
            r.receive(&q, TEXT.as_bytes()).unwrap_err(),
            PushError::Replayed
        );
        // Opening never reserves.
        let q = query("tok", None);
        r.open(&q, TEXT.as_bytes()).unwrap();
        r.open(&q, TEXT.as_bytes()).unwrap();
        let off =
            Receiver::new(PushConfig::new(APPID, "tok", None).unwrap()).without_replay_protection();
        off.receive(&q, TEXT.as_bytes()).unwrap();
        off.receive(&q, TEXT.as_bytes()).unwrap();
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
