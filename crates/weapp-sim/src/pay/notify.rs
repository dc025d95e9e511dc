//! Notifications (支付/退款结果通知) as WeChat Pay sends them: the envelope with its resource
//! encrypted under the merchant's APIv3 key, signed per attempt with the platform key the
//! merchant's mode calls for, POSTed to the `notify_url` with a 5-second timeout and retried on
//! WeChat's schedule (15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m ×3, 60 m, 3 h ×3, 6 h ×2 — 24 h
//! 4 m in all) on the simulator's clock until a 2xx; duplicates and probes (签名探测) on demand.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::keys;
use super::merchants::notification_signer;
use super::time::rfc3339;
use crate::error::{PayError, PayResult};
use crate::journal::Event;
use crate::random::{random_alnum, random_hex};
use crate::state::pay::{Notification, NotifyAttempt};
use crate::world::{Sim, World};

/// The waits between attempts after each failed one (seconds).
pub const RETRY_SCHEDULE_SECS: [i64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10_800, 10_800, 10_800, 21_600, 21_600,
];

/// How many notifications the simulator remembers (the oldest finished ones go first).
const KEEP: usize = 10_000;

/// A UUID-like notification id, as production's look.
fn event_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Queues a notification of `event_type` about `business_no` for `url`, its resource
/// (`original_type` `transaction` or `refund`) encrypted for the merchant. Lost at once when
/// the merchant's delivery is off. Returns its seq.
#[allow(clippy::too_many_arguments)]
pub(crate) fn enqueue(
    w: &mut World,
    now: i64,
    mchid: &str,
    event_type: &str,
    summary: &str,
    business_no: &str,
    url: &str,
    original_type: &str,
    resource: Value,
) -> Option<u64> {
    let m = w.pay.merchants.get(mchid)?;
    let nonce = random_alnum(12);
    let ciphertext = keys::aead_encrypt(
        &m.apiv3_key.0,
        &nonce,
        original_type,
        resource.to_string().as_bytes(),
    )?;
    let id = event_id();
    let body = json!({
        "id": id,
        "create_time": rfc3339(now),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": nonce,
        },
    })
    .to_string();
    let deliver = m.deliver;
    let seq = w.pay.next_seq;
    w.pay.next_seq += 1;
    w.pay.notifications.push(Notification {
        seq,
        id,
        mchid: mchid.to_owned(),
        event_type: event_type.to_owned(),
        business_no: business_no.to_owned(),
        url: url.to_owned(),
        body,
        resource,
        created_ms: now,
        duplicate_of: None,
        probe: false,
        attempts: Vec::new(),
        next_ms: deliver.then_some(now),
        in_flight: false,
        delivered: false,
        lost: !deliver,
    });
    if w.pay.notifications.len() > KEEP {
        if let Some(i) = w
            .pay
            .notifications
            .iter()
            .position(|n| n.next_ms.is_none() && !n.in_flight)
        {
            w.pay.notifications.remove(i);
        }
    }
    Some(seq)
}

/// Sends the latest notification about `business_no` of `mchid` again: the same `id` and
/// body (a duplicate, as production's retries after a lost ack), or as a probe — signed
/// `WECHATPAY/SIGNTEST/…`, tried once. Returns the new delivery's seq.
pub(crate) fn again(
    w: &mut World,
    now: i64,
    mchid: &str,
    business_no: &str,
    probe: bool,
) -> PayResult<u64> {
    let original = w
        .pay
        .notifications
        .iter()
        .rev()
        .find(|n| n.mchid == mchid && n.business_no == business_no && !n.probe)
        .cloned()
        .ok_or_else(|| {
            PayError::new(
                404,
                "RESOURCE_NOT_EXISTS",
                format!("no notification about {business_no} yet"),
            )
        })?;
    let deliver = w.pay.merchants.get(mchid).is_some_and(|m| m.deliver);
    let seq = w.pay.next_seq;
    w.pay.next_seq += 1;
    w.pay.notifications.push(Notification {
        seq,
        created_ms: now,
        duplicate_of: Some(original.duplicate_of.unwrap_or(original.seq)),
        probe,
        attempts: Vec::new(),
        next_ms: deliver.then_some(now),
        in_flight: false,
        delivered: false,
        lost: !deliver,
        ..original
    });
    Ok(seq)
}

/// A notification as the control API and the console show it.
pub(crate) fn view(n: &Notification) -> Value {
    json!({
        "seq": n.seq,
        "id": n.id,
        "mchid": n.mchid,
        "event_type": n.event_type,
        "business_no": n.business_no,
        "url": n.url,
        "created": n.created_ms,
        "duplicate_of": n.duplicate_of,
        "probe": n.probe,
        "delivered": n.delivered,
        "lost": n.lost,
        "gave_up": !n.delivered && !n.lost && n.next_ms.is_none() && !n.in_flight && !n.probe,
        "next_attempt_at": n.next_ms,
        "attempts": n.attempts,
        "resource": n.resource,
    })
}

/// Starts every attempt that is due (each in a task of its own, so a slow receiver delays no
/// one else).
pub(crate) fn deliver_due(sim: &Sim) {
    let due: Vec<u64> = {
        let mut w = sim.world();
        let now = sim.now_in(&w);
        let mut due = Vec::new();
        for n in &mut w.pay.notifications {
            if !n.in_flight && n.next_ms.is_some_and(|t| t <= now) {
                n.in_flight = true;
                due.push(n.seq);
            }
        }
        due
    };
    for seq in due {
        let sim = sim.clone();
        tokio::spawn(async move { attempt(&sim, seq).await });
    }
}

/// One attempt: sign now, POST, record, schedule the next or stop.
async fn attempt(sim: &Sim, seq: u64) {
    let prepared = {
        let mut w = sim.world();
        let now = sim.now_in(&w);
        let Some(n) = w.pay.notifications.iter().find(|n| n.seq == seq).cloned() else {
            return;
        };
        let signer = w
            .pay
            .merchants
            .get(&n.mchid)
            .and_then(|m| notification_signer(m, now));
        match signer {
            Some((serial, key)) => {
                let ts = (now / 1000).to_string();
                let nonce = random_alnum(32);
                let signature = if n.probe {
                    let noise: [u8; 32] = rand::random();
                    format!(
                        "WECHATPAY/SIGNTEST/{}",
                        base64::engine::general_purpose::STANDARD.encode(noise)
                    )
                } else {
                    keys::sign(&key, format!("{ts}\n{nonce}\n{}\n", n.body).as_bytes())
                };
                Some((n, now, ts, nonce, serial, signature))
            }
            None => {
                // No key (cannot happen for an issued merchant): stop trying.
                if let Some(n) = w.pay.notifications.iter_mut().find(|n| n.seq == seq) {
                    n.in_flight = false;
                    n.next_ms = None;
                }
                None
            }
        }
    };
    let Some((n, now, ts, nonce, serial, signature)) = prepared else {
        return;
    };
    let started = Instant::now();
    let result = sim
        .http()
        .post(&n.url)
        .header("Accept", "*/*")
        .header("Content-Type", "application/json")
        .header("Pragma", "no-cache")
        .header("User-Agent", "Mozilla/4.0")
        .header("Request-ID", random_hex(16).to_ascii_uppercase())
        .header("Wechatpay-Nonce", &nonce)
        .header("Wechatpay-Serial", &serial)
        .header("Wechatpay-Signature", &signature)
        .header("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
        .header("Wechatpay-Timestamp", &ts)
        .body(n.body.clone())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let (status, body, error) = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                Some(status),
                Some(text.chars().take(1024).collect::<String>()),
                None,
            )
        }
        Err(e) => (
            None,
            None,
            Some(if e.is_timeout() {
                "timed out after 5 s".to_owned()
            } else {
                e.without_url().to_string()
            }),
        ),
    };
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let record = NotifyAttempt {
        due: n.next_ms.unwrap_or(now),
        at: now,
        serial: serial.clone(),
        probe: n.probe,
        status,
        body,
        error,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let number = {
        let mut w = sim.world();
        let Some(stored) = w.pay.notifications.iter_mut().find(|x| x.seq == seq) else {
            return;
        };
        stored.attempts.push(record.clone());
        stored.in_flight = false;
        let tries = stored.attempts.len();
        stored.delivered = ok;
        stored.next_ms = if ok || stored.probe {
            None
        } else {
            RETRY_SCHEDULE_SECS
                .get(tries - 1)
                .map(|wait| record.due + wait * 1000)
        };
        tries
    };
    sim.record(Event::new("pay_notify").detail(json!({
        "mchid": n.mchid,
        "id": n.id,
        "event_type": n.event_type,
        "business_no": n.business_no,
        "url": n.url,
        "attempt": number,
        "serial": serial,
        "probe": n.probe,
        "status": record.status,
        "error": record.error,
        "delivered": ok,
    })));
}
