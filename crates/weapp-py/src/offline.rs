//! What needs no network: decrypting user data, the rawData signature, and WeChat's pushes.

use std::collections::HashMap;

use pyo3::prelude::*;
use serde_json::json;
use weapp::crypto::{self, DecryptOptions};
use weapp::push::{MessageKind, PushConfig, PushMode, PushQuery, Receiver};
use weapp::SessionKey;

use crate::convert::to_py;
use crate::errors;

/// Decrypts a mini program's `encryptedData` (AES-128-CBC, strict PKCS#7) with the user's
/// session_key. The watermark must be there; its appid is compared when `appid` is given, its
/// age only when `max_age_secs` is given.
#[pyfunction]
#[pyo3(signature = (session_key, encrypted_data, iv, appid=None, max_age_secs=None))]
pub fn decrypt_user_data(
    py: Python<'_>,
    session_key: &str,
    encrypted_data: &str,
    iv: &str,
    appid: Option<&str>,
    max_age_secs: Option<u64>,
) -> PyResult<Py<PyAny>> {
    let key = SessionKey::new(session_key);
    let options = DecryptOptions {
        max_age_secs,
        ..DecryptOptions::default()
    };
    let value = match appid {
        Some(appid) => crypto::decrypt_user_data(appid, &key, iv, encrypted_data, &options),
        None => crypto::decrypt_user_data_any_app(&key, iv, encrypted_data, &options),
    }
    .map_err(|e| errors::crypto(py, &e))?;
    to_py(py, &value)
}

/// Checks the legacy rawData `signature` (`sha1(rawData + session_key)`) in constant time.
#[pyfunction]
pub fn verify_raw_signature(session_key: &str, raw_data: &str, signature: &str) -> bool {
    crypto::verify_raw_data(raw_data, &SessionKey::new(session_key), signature)
}

fn query(q: &HashMap<String, String>) -> PushQuery {
    let get = |k: &str| q.get(k).cloned();
    PushQuery {
        signature: get("signature"),
        timestamp: get("timestamp"),
        nonce: get("nonce"),
        echostr: get("echostr"),
        openid: get("openid"),
        encrypt_type: get("encrypt_type"),
        msg_signature: get("msg_signature"),
    }
}

/// WeChat's message push for one app: URL verification, then signed (and in safe mode
/// encrypted) XML or JSON bodies, each accepted once within the replay window.
#[pyclass(frozen, module = "weapp._native")]
pub struct NativePushReceiver {
    receiver: Receiver,
}

#[pymethods]
impl NativePushReceiver {
    #[new]
    #[pyo3(signature = (appid, token, encoding_aes_key=None, mode=None, replay_window_secs=300))]
    fn new(
        py: Python<'_>,
        appid: String,
        token: String,
        encoding_aes_key: Option<&str>,
        mode: Option<&str>,
        replay_window_secs: u64,
    ) -> PyResult<Self> {
        if token.is_empty() {
            return Err(errors::invalid(py, "token must not be empty"));
        }
        let mut config =
            PushConfig::new(appid, token, encoding_aes_key).map_err(|e| errors::push(py, &e))?;
        if let Some(mode) = mode {
            let mode = match mode {
                "plain" => PushMode::Plain,
                "compatible" => PushMode::Compatible,
                "safe" => PushMode::Safe,
                _ => {
                    return Err(errors::invalid(
                        py,
                        "mode must be \"plain\", \"compatible\" or \"safe\"",
                    ))
                }
            };
            config = config.with_mode(mode).map_err(|e| errors::push(py, &e))?;
        }
        let receiver = if replay_window_secs == 0 {
            Receiver::new(config).without_replay_protection()
        } else {
            Receiver::new(config).with_replay_protection(replay_window_secs)
        };
        Ok(Self { receiver })
    }

    /// `plain`, `compatible` or `safe`.
    #[getter]
    fn mode(&self) -> &'static str {
        self.receiver.config().mode().as_str()
    }

    /// The GET handshake: the `echostr` to answer, after the signature and time checks.
    fn verify_url(
        &self,
        py: Python<'_>,
        query_params: HashMap<String, String>,
    ) -> PyResult<String> {
        self.receiver
            .verify_url(&query(&query_params))
            .map_err(|e| errors::push(py, &e))
    }

    /// Verifies, decrypts and parses a POSTed push (the raw body, as bytes) and reserves it in
    /// the replay memory; returns its fields as a dict.
    fn parse(
        &self,
        py: Python<'_>,
        query_params: HashMap<String, String>,
        body: &[u8],
    ) -> PyResult<Py<PyAny>> {
        let incoming = self
            .receiver
            .receive(&query(&query_params), body)
            .map_err(|e| errors::push(py, &e))?;
        let m = &incoming.message;
        let kind = match &m.kind {
            MessageKind::Text { content, msg_id } => json!({"content": content, "msg_id": msg_id}),
            MessageKind::Image {
                pic_url,
                media_id,
                msg_id,
            } => json!({"pic_url": pic_url, "media_id": media_id, "msg_id": msg_id}),
            MessageKind::MiniProgramPage {
                title,
                app_id,
                page_path,
                thumb_url,
                thumb_media_id,
                msg_id,
            } => json!({
                "title": title, "app_id": app_id, "page_path": page_path,
                "thumb_url": thumb_url, "thumb_media_id": thumb_media_id, "msg_id": msg_id,
            }),
            MessageKind::UserEnterTempSession { session_from } => {
                json!({"session_from": session_from})
            }
            MessageKind::SubscribePopup(list) | MessageKind::SubscribeChange(list) => json!({
                "decisions": list.iter().map(|d| json!({
                    "template_id": d.template_id, "status": d.status, "popup_scene": d.popup_scene,
                })).collect::<Vec<_>>(),
            }),
            MessageKind::SubscribeSent(list) => json!({
                "sent": list.iter().map(|s| json!({
                    "template_id": s.template_id, "msg_id": s.msg_id,
                    "error_code": s.error_code, "error_status": s.error_status,
                })).collect::<Vec<_>>(),
            }),
            MessageKind::MediaCheck(c) => json!({
                "trace_id": c.trace_id, "suggest": c.suggest, "label": c.label, "detail": c.detail,
            }),
            _ => json!({}),
        };
        let value = json!({
            "type": m.type_name(),
            "to_user_name": m.to_user_name,
            "from_user_name": m.from_user_name,
            "create_time": m.create_time,
            "msg_type": m.msg_type,
            "event": m.event,
            "format": match incoming.format { weapp::push::Format::Xml => "xml", weapp::push::Format::Json => "json" },
            "encrypted": incoming.encrypted,
            "fields": kind,
            "raw": m.raw,
        });
        to_py(py, &value)
    }

    fn __repr__(&self) -> String {
        format!(
            "PushReceiver(appid={:?}, mode={:?})",
            self.receiver.config().appid(),
            self.mode()
        )
    }
}
