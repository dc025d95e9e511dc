//! Secrets in the configuration ([`Secret`] prints `***`) and URLs printed without their
//! password or path.

use serde::Deserialize;

/// A secret from the configuration. `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self(v)
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.to_owned())
    }
}

/// `url` without its password (`redis://:pw@host` → `redis://***@host`), for logs and errors.
///
/// Everything up to the **last** `@` is hidden, wherever it is: a password with an unencoded
/// `/`, `?` or `#` (base64 passwords often have a `/`) makes the URL invalid, and is exactly
/// when it gets shown in an error — it must not show there.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (hidden, rest) = match rest.rsplit_once('@') {
                Some((_, after)) => (true, after),
                None => (false, rest),
            };
            // The authority ends at the first `/`, `?` or `#` (a URL without a path may still
            // carry a query, which may carry a password); the query and fragment are dropped.
            let (authority, path) = match rest.find(['/', '?', '#']) {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let path = path.split(['?', '#']).next().unwrap_or("");
            if hidden {
                format!("{scheme}://***@{authority}{path}")
            } else {
                format!("{scheme}://{authority}{path}")
            }
        }
        None => "<not a URL>".into(),
    }
}

/// A webhook URL as it is shown — in the admin API, the console, logs and `Debug` output: its
/// scheme, host and port, with credentials and everything after the host hidden
/// (`https://hooks.example.com/***`), since a webhook's path or query often carries a token of
/// its own.
pub fn redact_webhook_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let credentials = if u.username().is_empty() && u.password().is_none() {
                ""
            } else {
                "***@"
            };
            let rest = if u.path() == "/" && u.query().is_none() && u.fragment().is_none() {
                "/"
            } else {
                "/***"
            };
            format!("{}://{credentials}{host}{port}{rest}", u.scheme())
        }
        _ => "<not a URL>".into(),
    }
}
