//! Proving a broker token dead: what keeps the WeChat-compatible mirror (and throttled broker
//! reports) from handing out a token WeChat no longer accepts.
//!
//! A naive client of the mirror (wechatpy, WxJava, EasyWeChat) never reports a dead token: on
//! 40001 it simply fetches again. So a fetch of the token this source was already given is a
//! suspicion, and so is `force_refresh: true`. A suspicion is settled with one cheap upstream
//! call ([`weapp::Client::check_token`]) — never by a refresh — and only a token proven dead
//! is replaced, by the token module's compare-and-swap. Hence:
//!
//! - **a suspicion is settled by a probe that began after it arrived**, so a token that died a
//!   moment after an earlier "alive" verdict is caught at the client's first refetch;
//! - **one refresh per dead token**, however many clients refetch: probes are single-flight per
//!   app (suspicions that arrived before a probe began share its verdict), a "dead" verdict is
//!   remembered, and the refresh that follows it is the manager's (single-flight in the
//!   process, leased across the fleet);
//! - **no refresh of a live token, and a bounded probe rate**: probes of an app start at least
//!   [`PROBE_GAP`] apart on each instance (a suspicion waits for the gap rather than be answered
//!   from an older verdict), and spend no token quota;
//! - **a proven-dead token is never handed out again** by this instance (the manager keeps it
//!   among its rejected tokens, and the store's copy is removed); another instance of a fleet
//!   may still hold it in its local cache, and the first refetch there proves it again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use weapp::token::StoredToken;
use weapp::{AccessToken, TokenCheck};

/// The least time between the starts of two probes of one app on one instance: a flood of
/// refetches costs at most one upstream call per gap, and a suspicion that arrives within the
/// gap waits for it (at most this long) rather than be answered from an older verdict.
pub const PROBE_GAP: Duration = Duration::from_secs(1);

/// Sources remembered per app (which token each was last handed). A full map is cleared: the
/// worst that does is one refetch not recognised as one (the next is).
const SOURCES_CAP: usize = 4096;

/// The digest a token is remembered by (never the token itself).
fn digest(token: &AccessToken) -> [u8; 32] {
    Sha256::digest(token.expose().as_bytes()).into()
}

/// What a probe of a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// WeChat accepts it.
    Alive,
    /// WeChat refuses it (40001/40014/42001).
    Dead,
    /// The probe proved nothing (WeChat unreachable, -1, 45011).
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

/// One app's probe memory: which token each source was handed, and the last verdict.
#[derive(Debug, Default)]
pub struct TokenProbe {
    /// Source address → digest of the token it was last handed by the mirror.
    handed: Mutex<HashMap<IpAddr, [u8; 32]>>,
    /// The last verdict: the digest it is about, when its probe began, and what. Held across
    /// the probe and the refresh that follows a "dead" verdict, so concurrent suspicions share
    /// one of each.
    last: tokio::sync::Mutex<Option<([u8; 32], Instant, Verdict)>>,
}

/// What [`TokenProbe::settle`] decided.
#[derive(Debug)]
pub struct Settled {
    /// The token to hand out.
    pub token: StoredToken,
    /// The verdict on the suspected token (`None`: answered from memory or from the store).
    pub probed: Option<Verdict>,
    /// Whether the suspected token was proven dead and replaced.
    pub replaced: bool,
}

impl TokenProbe {
    /// Whether `source` was already handed `token` by the mirror (a refetch of the same token
    /// is how a naive client says it got 40001).
    pub fn handed_before(&self, source: Option<IpAddr>, token: &AccessToken) -> bool {
        let Some(ip) = source else { return false };
        let map = self.handed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).is_some_and(|d| *d == digest(token))
    }

    /// Remembers that `source` was handed `token`.
    pub fn note_handed(&self, source: Option<IpAddr>, token: &AccessToken) {
        let Some(ip) = source else { return };
        let mut map = self.handed.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SOURCES_CAP && !map.contains_key(&ip) {
            map.clear();
        }
        map.insert(ip, digest(token));
    }

    /// Settles a suspicion about `suspect` (a token the caller is about to hand out again):
    /// first the store is read again (another instance may have replaced it already); then
    /// one probe, unless one that began after this suspicion arrived has answered already; a
    /// "dead" verdict invalidates the token (compare-and-swap) and takes the token that
    /// replaces it. Concurrent suspicions about one app share one probe and one refresh.
    ///
    /// # Errors
    /// As [`weapp::TokenManager::current`], when the replacement cannot be had: the dead token
    /// is not handed out instead.
    pub async fn settle(
        &self,
        app: &crate::state::AppRuntime,
        suspect: StoredToken,
    ) -> weapp::Result<Settled> {
        let arrived = Instant::now();
        let d = digest(&suspect.access_token);
        let mut last = self.last.lock().await;
        // What another suspicion settled while this one waited.
        match *last {
            Some((ld, _, Verdict::Dead)) if ld == d => {
                return Ok(Settled {
                    token: app.token().await?,
                    probed: None,
                    replaced: false,
                });
            }
            Some((ld, began, Verdict::Alive)) if ld == d && began >= arrived => {
                return Ok(Settled {
                    token: suspect,
                    probed: None,
                    replaced: false,
                });
            }
            _ => {}
        }
        if let Some((_, began, _)) = *last {
            tokio::time::sleep_until((began + PROBE_GAP).into()).await;
        }
        // The store may hold a newer token already (another instance replaced it).
        app.manager.drop_local(&suspect.access_token);
        let current = app.token().await?;
        if !current.access_token.ct_eq(suspect.access_token.expose()) {
            return Ok(Settled {
                token: current,
                probed: None,
                replaced: false,
            });
        }
        let began = Instant::now();
        let verdict = match app.client.check_token(&suspect.access_token).await {
            Ok(TokenCheck::Alive) => Verdict::Alive,
            Ok(TokenCheck::Dead(_)) => Verdict::Dead,
            Ok(_) => Verdict::Unknown,
            Err(e) => {
                tracing::warn!(appid = %app.appid, error = %e, "could not probe the broker's token; handing it out unproven");
                Verdict::Unknown
            }
        };
        *last = Some((d, began, verdict));
        if verdict != Verdict::Dead {
            return Ok(Settled {
                token: suspect,
                probed: Some(verdict),
                replaced: false,
            });
        }
        tracing::warn!(appid = %app.appid, "the broker's token is proven dead upstream; replacing it");
        weapp::TokenSource::invalidate(&app.manager, &suspect.access_token).await?;
        let token = app.token().await?;
        Ok(Settled {
            replaced: !token.access_token.ct_eq(suspect.access_token.expose()),
            token,
            probed: Some(verdict),
        })
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
        assert!(!p.handed_before(Some(ip), &a));
        p.note_handed(Some(ip), &a);
        assert!(p.handed_before(Some(ip), &a));
        assert!(!p.handed_before(Some(ip), &b));
        assert!(!p.handed_before(Some("203.0.113.8".parse().unwrap()), &a));
        p.note_handed(Some(ip), &b);
        assert!(!p.handed_before(Some(ip), &a));
        // No address, no memory.
        p.note_handed(None, &a);
        assert!(!p.handed_before(None, &a));
    }

    #[test]
    fn a_full_source_map_starts_again_rather_than_grow() {
        let p = TokenProbe::default();
        let a = AccessToken::new("token-a".to_owned());
        for i in 0..SOURCES_CAP as u32 + 10 {
            p.note_handed(Some(IpAddr::from(i.to_be_bytes())), &a);
        }
        assert!(p.handed.lock().unwrap().len() <= SOURCES_CAP);
    }
}
