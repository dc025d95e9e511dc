//! Proving a broker token dead: what keeps the WeChat-compatible mirror (and throttled broker
//! reports) from handing out a token WeChat no longer accepts.
//!
//! A naive client of the mirror (wechatpy, WxJava, EasyWeChat) never reports a dead token: on
//! 40001 it simply fetches again. So a fetch of the token this source was already given is a
//! suspicion, and so is `force_refresh: true`. A suspicion is settled with a cheap upstream
//! call ([`weapp::Client::check_token`]) — never by a refresh — and only a token proven dead
//! is replaced, by the token module's compare-and-swap. Hence:
//!
//! - **a suspicion is settled by a probe that began after it arrived**, so a token that died a
//!   moment after an earlier "alive" verdict is caught at the client's first refetch;
//! - **one refresh per dead token**, however many clients refetch: probes are single-flight per
//!   app (suspicions queued behind a probe that began after they arrived share its verdict),
//!   and the refresh that follows a "dead" verdict is the manager's (single-flight in the
//!   process, leased across the fleet). A probe runs detached from its caller, so a caller
//!   that goes away still leaves its verdict for the next;
//! - **no refresh of a live token, a bounded probe rate, a bounded wait**: probes of an app
//!   start at least [`PROBE_GAP`] apart on each instance, each is cut off after
//!   [`PROBE_TIMEOUT`] (no verdict: the token is handed out unproven), and they spend no token
//!   quota. A "dead" answer is confirmed by a second probe before it costs a token, and at
//!   most [`REPLACEMENTS_PER_HOUR`] tokens of an app are replaced on probes per instance (a
//!   flaky upstream that answers 40001 about live tokens cannot burn the daily quota);
//! - **a proven-dead token is never handed out again** by this instance (the manager keeps it
//!   among its rejected tokens, and the store's copy is removed); another instance of a fleet
//!   reads the store when a refetch reaches it, and hands out the replacement.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use weapp::token::StoredToken;
use weapp::{AccessToken, TokenCheck};

/// What a probe needs of the app it probes: the app's id, its SDK client and token manager,
/// and its current token ([`AppRuntime`](super::AppRuntime) is one).
pub trait ProbeSubject: Sync {
    /// The appid (for logs).
    fn appid(&self) -> &str;
    /// The client that asks WeChat (`openapi/quota/get`).
    fn client(&self) -> &weapp::Client;
    /// The token manager whose token is suspected.
    fn manager(&self) -> &weapp::TokenManager;
    /// The current token, as the broker hands it out.
    fn token(&self) -> impl std::future::Future<Output = weapp::Result<StoredToken>> + Send;
}

/// The least time between the starts of two probes of one app on one instance: a flood of
/// refetches costs at most one upstream check per gap.
pub const PROBE_GAP: Duration = Duration::from_secs(1);

/// How long a probe may take before its suspicion is settled without a verdict.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Tokens of one app replaced on probes' word per instance and hour, at most. Past it, a
/// "dead" verdict is logged as an error and the token kept: a safety valve for an upstream
/// that lies, far above what real deaths need (each needs a foreign refresh of the token).
pub const REPLACEMENTS_PER_HOUR: usize = 30;

/// Sources remembered per app (which token each was last handed). When full, an arbitrary
/// entry makes room: the worst that does is one refetch not recognised as one (the next is).
const SOURCES_CAP: usize = 4096;

/// The digest a token is remembered by (never the token itself).
pub fn digest(token: &AccessToken) -> [u8; 32] {
    Sha256::digest(token.expose().as_bytes()).into()
}

/// What a probe of a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// WeChat accepts it.
    Alive,
    /// WeChat refuses it (40001/40014/42001), twice in a row.
    Dead,
    /// The probe proved nothing (WeChat unreachable or slow, -1, 45009, 45011, not WeChat's
    /// answer).
    Unknown,
}

impl Verdict {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Alive => "alive",
            Verdict::Dead => "dead",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One probe: the token it is about, when it began, and its verdict once it has one.
#[derive(Debug, Clone)]
struct Probe {
    digest: [u8; 32],
    began: Instant,
    verdict: watch::Receiver<Option<Verdict>>,
}

/// One app's probe memory: which token each source was handed, the last probe, and the
/// replacements made on probes.
#[derive(Debug, Default)]
pub struct TokenProbe {
    /// Source (an IPv4 address, an IPv6 /64) → digest of the token it was last handed.
    handed: Mutex<HashMap<u128, [u8; 32]>>,
    /// Held by the suspicion being settled, so concurrent ones share one probe and one refresh.
    gate: tokio::sync::Mutex<()>,
    /// The last probe (perhaps still running, its caller gone).
    last: Mutex<Option<Probe>>,
    /// When, and of which token, the replacements of the last hour were made.
    replaced: Mutex<VecDeque<(Instant, [u8; 32])>>,
}

/// What [`TokenProbe::settle`] decided.
#[derive(Debug)]
pub struct Settled {
    /// The token to hand out.
    pub token: StoredToken,
    /// The verdict of the probe this suspicion ran (`None`: it shared another's, or the store
    /// held a newer token).
    pub probed: Option<Verdict>,
    /// The verdict the suspicion was settled by (`None`: the store held a newer token).
    pub verdict: Option<Verdict>,
    /// Whether the suspected token was proven dead and replaced.
    pub replaced: bool,
}

impl TokenProbe {
    /// Notes that `source` is handed `token`, and tells whether it was handed the same token
    /// last time (a refetch of the same token is how a naive client says it got 40001).
    pub fn swap_handed(&self, source: Option<IpAddr>, token: &AccessToken) -> bool {
        let Some(ip) = source else { return false };
        let key = crate::net::ip_key(ip);
        let d = digest(token);
        let mut map = self.handed.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SOURCES_CAP && !map.contains_key(&key) {
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        map.insert(key, d) == Some(d)
    }

    /// Settles a suspicion about `suspect` (a token the caller is about to hand out again):
    /// a probe that began after this suspicion arrived answers it; else, after the gap, the
    /// store is read (another instance may have replaced the token already) and the token
    /// probed. A "dead" verdict invalidates it (compare-and-swap) and takes the token that
    /// replaces it; otherwise the manager's current token is handed out.
    ///
    /// # Errors
    /// As [`weapp::TokenManager::current`], when no token can be had: a dead token is not
    /// handed out instead.
    pub async fn settle(
        &self,
        app: &impl ProbeSubject,
        suspect: StoredToken,
    ) -> weapp::Result<Settled> {
        let arrived = Instant::now();
        let d = digest(&suspect.access_token);
        let _gate = self.gate.lock().await;
        let prior = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut shared = None;
        if let Some(p) = prior {
            // A probe whose caller went away may still be running: its verdict stands for
            // those who arrived before it began, and the gap counts from its start.
            let verdict = wait(p.verdict).await;
            if p.digest == d && p.began >= arrived {
                shared = Some(verdict);
            } else {
                tokio::time::sleep_until((p.began + PROBE_GAP).into()).await;
            }
        }
        let (verdict, probed) = match shared {
            Some(v) => (v, None),
            None => {
                if let Some(newer) = app.manager().peek_store().await.filter(|t| {
                    t.version > suspect.version
                        && !t.access_token.ct_eq(suspect.access_token.expose())
                }) {
                    return Ok(Settled {
                        token: newer,
                        probed: None,
                        verdict: None,
                        replaced: false,
                    });
                }
                let mut v = self.probe(app, &suspect.access_token, d).await;
                if v == Verdict::Dead {
                    // One 40001 from a flaky upstream must not cost a token: ask again.
                    v = self.probe(app, &suspect.access_token, d).await;
                }
                (v, Some(v))
            }
        };
        if verdict != Verdict::Dead {
            return Ok(Settled {
                token: app.token().await?,
                probed,
                verdict: Some(verdict),
                replaced: false,
            });
        }
        if !self.may_replace(&d) {
            tracing::error!(appid = %app.appid(), limit = REPLACEMENTS_PER_HOUR, "WeChat keeps answering that the broker's tokens are dead; not replacing another this hour (is another machine refreshing this app's token?)");
            return Ok(Settled {
                token: app.token().await?,
                probed,
                verdict: Some(verdict),
                replaced: false,
            });
        }
        tracing::warn!(appid = %app.appid(), "the broker's token is proven dead upstream; replacing it");
        weapp::TokenSource::invalidate(app.manager(), &suspect.access_token).await?;
        let token = app.token().await?;
        Ok(Settled {
            replaced: !token.access_token.ct_eq(suspect.access_token.expose()),
            token,
            probed,
            verdict: Some(verdict),
        })
    }

    /// Runs one probe of `token`, detached from the caller (its verdict is recorded even if
    /// the caller goes away), and waits for its verdict.
    async fn probe(&self, app: &impl ProbeSubject, token: &AccessToken, d: [u8; 32]) -> Verdict {
        let (tx, rx) = watch::channel(None);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Probe {
            digest: d,
            began: Instant::now(),
            verdict: rx.clone(),
        });
        let (client, token, appid) = (app.client().clone(), token.clone(), app.appid().to_owned());
        tokio::spawn(async move {
            let verdict = match tokio::time::timeout(PROBE_TIMEOUT, client.check_token(&token))
                .await
            {
                Ok(Ok(TokenCheck::Alive)) => Verdict::Alive,
                Ok(Ok(TokenCheck::Dead(_))) => Verdict::Dead,
                Ok(Ok(_)) => Verdict::Unknown,
                Ok(Err(e)) => {
                    tracing::warn!(%appid, error = %e, "could not probe the broker's token; handing it out unproven");
                    Verdict::Unknown
                }
                Err(_) => {
                    tracing::warn!(%appid, timeout_ms = PROBE_TIMEOUT.as_millis() as u64, "probing the broker's token timed out; handing it out unproven");
                    Verdict::Unknown
                }
            };
            let _ = tx.send(Some(verdict));
        });
        wait(rx).await
    }

    /// Whether another token (`d`) may be replaced on a probe's word this hour; counts it.
    fn may_replace(&self, d: &[u8; 32]) -> bool {
        let mut replaced = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        while replaced
            .front()
            .is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(3600))
        {
            replaced.pop_front();
        }
        if replaced.iter().any(|(_, r)| r == d) {
            return true;
        }
        if replaced.len() >= REPLACEMENTS_PER_HOUR {
            return false;
        }
        replaced.push_back((Instant::now(), *d));
        true
    }
}

/// The verdict of a probe, once it has one (`Unknown` if its task died without one).
async fn wait(mut rx: watch::Receiver<Option<Verdict>>) -> Verdict {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.unwrap_or(Verdict::Unknown),
        Err(_) => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_remembered_with_the_token_it_was_handed() {
        let p = TokenProbe::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = AccessToken::new("token-a".to_owned());
        let b = AccessToken::new("token-b".to_owned());
        assert!(!p.swap_handed(Some(ip), &a));
        assert!(p.swap_handed(Some(ip), &a));
        assert!(!p.swap_handed(Some("203.0.113.8".parse().unwrap()), &a));
        assert!(!p.swap_handed(Some(ip), &b));
        assert!(!p.swap_handed(Some(ip), &a));
        // An IPv6 source is its /64.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!p.swap_handed(Some(v6), &a));
        assert!(p.swap_handed(Some("2001:db8::beef".parse().unwrap()), &a));
        // No address, no memory.
        assert!(!p.swap_handed(None, &a));
        assert!(!p.swap_handed(None, &a));
    }

    #[test]
    fn a_full_source_map_makes_room_rather_than_grow_or_forget_everyone() {
        let p = TokenProbe::default();
        let a = AccessToken::new("token-a".to_owned());
        for i in 0..SOURCES_CAP as u32 + 10 {
            p.swap_handed(Some(IpAddr::from(i.to_be_bytes())), &a);
        }
        let map = p.handed.lock().unwrap();
        assert_eq!(map.len(), SOURCES_CAP);
        let last = crate::net::ip_key(IpAddr::from((SOURCES_CAP as u32 + 9).to_be_bytes()));
        assert!(map.contains_key(&last));
    }

    #[test]
    fn replacements_on_probes_are_capped_per_hour_and_counted_once_per_token() {
        let p = TokenProbe::default();
        for i in 0..REPLACEMENTS_PER_HOUR as u8 {
            assert!(p.may_replace(&[i; 32]));
            assert!(
                p.may_replace(&[i; 32]),
                "the same token again is the same replacement"
            );
        }
        assert!(!p.may_replace(&[0xff; 32]));
    }
}
