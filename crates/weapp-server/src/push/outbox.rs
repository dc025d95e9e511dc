//! Webhook delivery of received pushes: an outbox over the event log, at least once, with
//! exponential backoff, leases so that a fleet delivers each event from one instance at a time,
//! and restarts that lose nothing (an unacknowledged event is simply due again). Redirects are
//! never followed (a 3xx is a failure); a URL whose host is, or now resolves to, an internal
//! address not in `webhook_allow_private` is not connected to (a failed attempt, like an
//! unreachable host; see `crate::egress`); after `webhook_max_attempts` an event is
//! dead-lettered: kept, counted in `/metrics`, and redeliverable through the API.
//!
//! Each delivery is `POST webhook_url` with the JSON `{id, appid, type, created_at, payload}` and
//! `Weapp-Signature: t=<unix>,v1=<hex hmac_sha256(webhook_secret, "<t>.<body>")>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::service::{PlatformWebhooks, Push};
use crate::shared::now_ms;
use crate::store::EventRecord;

fn mac(secret: &str, t: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The `Weapp-Signature` header value for `body` signed at `t` (Unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac(secret, t, body))
}

/// Checks a `Weapp-Signature` header: well formed, signed with `secret`, and `t` within
/// `tolerance_secs` of `now_secs`. For webhook consumers written in Rust.
pub fn verify(secret: &str, header: &str, body: &[u8], now_secs: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    // `abs_diff`: a timestamp far from now (i64::MIN, say) cannot overflow.
    tolerance_secs >= 0
        && now_secs.abs_diff(t) <= tolerance_secs.unsigned_abs()
        && bool::from(mac(secret, t, body).as_bytes().ct_eq(v1.as_bytes()))
}

/// The JSON body of a delivery.
pub fn body(event: &EventRecord) -> Vec<u8> {
    let payload: serde_json::Value =
        serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({
        "id": event.id,
        "appid": event.appid,
        "type": event.kind,
        "created_at": event.created_at / 1000,
        "payload": payload,
    }))
    .unwrap_or_default()
}

/// The delay before attempt `attempts + 1`: base × 2^attempts, capped, with ±20 % jitter.
fn backoff(state: &Push, attempts: u32) -> Duration {
    let base = Duration::from_millis(state.config.webhook_retry_base_ms.max(1));
    let max = Duration::from_secs(state.config.webhook_retry_max_secs.max(1));
    let d = base.saturating_mul(1u32 << attempts.min(20)).min(max);
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

async fn deliver_one(
    state: &Push,
    platforms: &dyn PlatformWebhooks,
    http: &reqwest::Client,
    event: EventRecord,
) {
    // A third-party platform's own events (merchants authorizing it) go to its webhook.
    if let Some(webhook) = platforms.platform_webhook(&event.appid) {
        let Some((url, secret)) = webhook else {
            let _ = state
                .store
                .mark_failed(event.id, crate::store::NEVER, "no webhook configured", None)
                .await;
            return;
        };
        return deliver_to(state, http, event, &url, &secret).await;
    }
    let app = state.broker.app(&event.appid);
    if app.is_none() {
        // Not served here right now (disabled for a moment, not synced yet, failed to load):
        // try again in a minute rather than parking the event.
        let _ = state
            .store
            .mark_failed(
                event.id,
                now_ms() + 60_000,
                "app not served by this instance right now",
                None,
            )
            .await;
        return;
    }
    let push = app.as_ref().and_then(|a| a.push.as_ref());
    let Some((url, secret)) =
        push.and_then(|p| Some((p.webhook_url.as_deref()?, p.webhook_secret.as_ref()?)))
    else {
        // The webhook was removed from the configuration: keep the event for the pull API.
        let _ = state
            .store
            .mark_failed(event.id, crate::store::NEVER, "no webhook configured", None)
            .await;
        return;
    };
    let (url, secret) = (url.to_owned(), secret.clone());
    deliver_to(state, http, event, &url, &secret).await;
}

/// Why a delivery got no answer.
enum Refused {
    /// The URL's host is an internal address not allowed (names are refused by the client's
    /// resolver, inside [`Refused::Http`]).
    Target(crate::egress::TargetError),
    /// The request failed.
    Http(reqwest::Error),
}

/// Signs and posts `event` to `url`, if its host may be sent to: an IP literal is checked
/// here; a name by the client itself, against every address it resolves to at this moment, so
/// only a checked address is connected to.
async fn send(
    state: &Push,
    http: &reqwest::Client,
    event: &EventRecord,
    url: &str,
    secret: &crate::config::Secret,
) -> Result<reqwest::Response, Refused> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| Refused::Target(crate::egress::TargetError::NotAUrl))?;
    state
        .egress
        .check_literal(&parsed)
        .map_err(Refused::Target)?;
    let body = body(event);
    let signature = sign(secret.expose(), now_ms() / 1000, &body);
    http.post(parsed)
        .header("content-type", "application/json")
        .header("weapp-signature", signature)
        .body(body)
        .timeout(Duration::from_secs(state.config.webhook_timeout_secs))
        .send()
        .await
        .map_err(Refused::Http)
}

/// One signed delivery of `event` to `url`, and its outcome recorded.
async fn deliver_to(
    state: &Push,
    http: &reqwest::Client,
    event: EventRecord,
    url: &str,
    secret: &crate::config::Secret,
) {
    let started = std::time::Instant::now();
    let outcome = match send(state, http, &event, url, secret).await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) if r.status().is_redirection() => Err(format!(
            "HTTP {} (redirects are not followed)",
            r.status().as_u16()
        )),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        // Refused before connecting: the same failed attempt as an unreachable host, with why.
        Err(Refused::Target(e)) => Err(format!("not sent: {e}")),
        Err(Refused::Http(e)) => Err(match crate::egress::refusal_in(&e) {
            Some(target) => format!("not sent: {target}"),
            None => e.without_url().to_string(),
        }),
    };
    let took = Some(started.elapsed());
    let stored = match outcome {
        Ok(()) => {
            state.metrics.webhook(&event.appid, "ok", took);
            state.store.mark_delivered(event.id, now_ms()).await
        }
        Err(error) => {
            let attempts = event.attempts + 1;
            let next = now_ms() + backoff(state, event.attempts).as_millis() as i64;
            if attempts >= state.config.webhook_max_attempts {
                state.metrics.webhook(&event.appid, "dead", took);
                tracing::warn!(event = event.id, appid = %event.appid, attempts, %error, "webhook delivery failed for the last time; dead-lettered (redeliver through POST /v1/apps/{{appid}}/events/{{id}}/redeliver)");
                state
                    .store
                    .mark_failed(event.id, next, &error, Some(now_ms()))
                    .await
            } else {
                state.metrics.webhook(&event.appid, "failed", took);
                tracing::info!(event = event.id, appid = %event.appid, attempts, %error, "webhook delivery failed; will retry");
                state.store.mark_failed(event.id, next, &error, None).await
            }
        }
    };
    if let Err(e) = stored {
        // The lease runs out and the event is retried: at least once, never lost.
        tracing::warn!(event = event.id, error = %e, "could not record the delivery outcome");
    }
}

/// The client deliveries go out with ([`crate::egress::Egress::webhook_client`]): names
/// resolved and checked against `egress` at each connection, no redirects (a webhook URL that
/// redirects elsewhere is a misconfiguration or an attack, and the signature must not travel to
/// another host), no proxy from the environment.
pub fn http_client(egress: &crate::egress::Egress) -> reqwest::Client {
    egress.webhook_client()
}

/// Runs until `stop` flips: claims due events in batches and delivers them, waking on new
/// events or every 250 ms. On stop, deliveries in flight are abandoned at once; their leases
/// run out and another instance (or the next start) delivers them.
pub fn spawn_outbox(
    state: Push,
    platforms: std::sync::Arc<dyn PlatformWebhooks>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = http_client(&state.egress);
        let lease_ms = (state.config.webhook_lease_secs as i64).saturating_mul(1000);
        loop {
            if *stop.borrow() {
                break;
            }
            let now = now_ms();
            match state.store.claim_due_events(now, now + lease_ms, 32).await {
                Ok(events) if !events.is_empty() => {
                    // Concurrently: one slow webhook does not hold up the batch's others.
                    let mut batch = tokio::task::JoinSet::new();
                    let mut pending: std::collections::HashMap<tokio::task::Id, i64> =
                        std::collections::HashMap::new();
                    for event in events {
                        let (state, http) = (state.clone(), http.clone());
                        let platforms = platforms.clone();
                        let id = event.id;
                        let handle = batch.spawn(async move {
                            deliver_one(&state, platforms.as_ref(), &http, event).await
                        });
                        pending.insert(handle.id(), id);
                    }
                    let stopped = tokio::select! {
                        () = async {
                            while let Some(done) = batch.join_next_with_id().await {
                                let task = match done {
                                    Ok((task, ())) => task,
                                    Err(e) => e.id(),
                                };
                                pending.remove(&task);
                            }
                        } => false,
                        _ = stop.changed() => true,
                    };
                    if stopped {
                        batch.abort_all();
                        // Abandoned deliveries are due again at once for whoever runs next (a
                        // webhook that got one before the abort gets it again: at least once).
                        let ids: Vec<i64> = pending.into_values().collect();
                        if let Err(e) = state.store.release_leases(&ids).await {
                            tracing::warn!(error = %e, "could not release abandoned deliveries; their leases will run out");
                        }
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox: cannot read due events"),
            }
            tokio::select! {
                () = state.outbox.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_far_from_now_is_refused_without_overflowing() {
        let body = b"{}";
        for t in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let header = format!("t={t},v1={}", mac("secret", 0, body));
            assert!(!verify("secret", &header, body, 1_700_000_000, 300), "{t}");
            assert!(!verify("secret", &header, body, i64::MIN, i64::MAX), "{t}");
        }
        let header = format!("t=-5,v1={}", mac("secret", -5, body));
        assert!(verify("secret", &header, body, 0, 10));
        assert!(
            !verify("secret", &header, body, 0, -10),
            "a negative tolerance admits nothing"
        );
        assert!(!verify("secret", &header, body, 0, i64::MIN));
    }

    #[test]
    fn signatures_verify_and_expire() {
        let h = sign("whsec", 1_700_000_000, b"{\"id\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify("whsec", &h, b"{\"id\":1}", 1_700_000_100, 300));
        assert!(
            !verify("whsec", &h, b"{\"id\":2}", 1_700_000_100, 300),
            "body tampered"
        );
        assert!(
            !verify("other", &h, b"{\"id\":1}", 1_700_000_100, 300),
            "wrong secret"
        );
        assert!(
            !verify("whsec", &h, b"{\"id\":1}", 1_700_001_000, 300),
            "too old"
        );
        assert!(!verify("whsec", "garbage", b"", 0, 300));
    }
}
