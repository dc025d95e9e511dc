//! The console's state: each app's backend (where the virtual phone sends its requests, and
//! what it sends) and each user's storage. The console itself is `crate::console`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One request the phone makes to the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTemplate {
    /// `GET`, `POST`, …
    #[serde(default = "post_method")]
    pub method: String,
    /// Path under the backend URL, e.g. `/v1/login`.
    pub path: String,
    /// Headers (values are templates).
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// The body (a template; sent as JSON when it parses as JSON).
    #[serde(default)]
    pub body: String,
}

fn post_method() -> String {
    "POST".into()
}

/// Where an app's backend is and what the phone sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The backend's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Sent after `wx.login` with the code.
    pub login: RequestTemplate,
    /// Sent after `getPhoneNumber` with the phone code.
    pub phone: RequestTemplate,
    /// Sent when the phone starts a payment: the backend places the order
    /// (`/v3/pay/transactions/jsapi`) and answers the five `wx.requestPayment` parameters
    /// (`timeStamp`, `nonceStr`, `package`, `signType`, `paySign`) at the top level of a JSON
    /// object or under `request_payment` or `payment`. Unset: the phone cannot pay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay: Option<RequestTemplate>,
    /// The push receiver's replay window (seconds), when the backend told it: the console warns
    /// when the simulator's clock is further than this from the wall clock, because the backend
    /// then refuses pushes as stale. Unset: weapp-server's default, 300 s; 0: the backend checks
    /// no timestamps (no warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window_secs: Option<u64>,
}

impl Backend {
    /// What `weapp serve` expects: `POST /v1/login {appid, code}`, then `POST /v1/me/phone
    /// {code}` with the session token the login answered.
    pub fn weapp_server(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            login: RequestTemplate {
                method: "POST".into(),
                path: "/v1/login".into(),
                headers: Map::new(),
                body: r#"{"appid": "{{appid}}", "code": "{{code}}"}"#.into(),
            },
            phone: RequestTemplate {
                method: "POST".into(),
                path: "/v1/me/phone".into(),
                headers: [(
                    "Authorization".to_owned(),
                    Value::String("Bearer {{storage.token}}".into()),
                )]
                .into_iter()
                .collect(),
                body: r#"{"code": "{{code}}"}"#.into(),
            },
            pay: None,
            replay_window_secs: None,
        }
    }

    /// The backend's push replay window, for the console's clock warning (what weapp-server's
    /// `replay_window_secs` is set to).
    #[must_use]
    pub fn replay_window(mut self, secs: u64) -> Self {
        self.replay_window_secs = Some(secs);
        self
    }
}

/// The console's state: backends per app, storage per user.
#[derive(Debug, Default)]
pub(crate) struct ConsoleState {
    pub(crate) backends: HashMap<String, Backend>,
    pub(crate) storage: HashMap<(String, String), Map<String, Value>>,
}

impl ConsoleState {
    /// The settings without what users did (for `reset`).
    pub(crate) fn settings_only(self) -> Self {
        Self {
            backends: self.backends,
            storage: HashMap::new(),
        }
    }
}
