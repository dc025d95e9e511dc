//! The background tasks the composition root starts besides each domain's own (the fleet,
//! the outbox): the registry poller, the platforms' reconciler and the session purger.

use crate::admin::AdminApi;
use crate::platforms::Platforms;
use crate::shared::{now_ms, Shared};

/// Keeps the registry current: the revision every `registry_poll_ms`, everything every
/// `registry_reconcile_secs`.
pub(super) fn spawn_registry_poller(
    state: AdminApi,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let poll = std::time::Duration::from_millis(state.config.registry_poll_ms);
        let reconcile = std::time::Duration::from_secs(state.config.registry_reconcile_secs);
        let mut last_full = std::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => break,
            }
            let full = last_full.elapsed() >= reconcile;
            match state.sync_registry(full).await {
                Ok(_) if full => last_full = std::time::Instant::now(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "registry: cannot read the managed apps and clients")
                }
            }
            if let Err(e) = state.keys.signing_tick(now_ms()).await {
                tracing::warn!(error = %e, "signing keys: cannot rotate or clean up");
            }
        }
    })
}

/// Reconciles every platform's merchants with WeChat's authorizer list once every
/// `platform_reconcile_secs` (0: never), looking every minute (or every period, if shorter)
/// whether a run is due. One instance of the fleet does it per platform and period: it claims
/// the run in the database (a compare-and-set of the last run's time), so a fleet of any size
/// lists each platform once; a failed run releases its claim.
pub(super) fn spawn_platform_reconciler(
    state: Platforms,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.config.platform_reconcile_secs;
        if every == 0 {
            return;
        }
        let tick = std::time::Duration::from_secs(60.min(every));
        let mut wait = tick;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            wait = tick;
            for platform in state.platforms() {
                let component_appid = &platform.config.component_appid;
                let (key, claimed, previous) = match claim_reconciliation(
                    &state,
                    component_appid,
                    every,
                )
                .await
                {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(platform = %component_appid, error = %e, "platform reconciliation not claimed; next time");
                        continue;
                    }
                };
                match state.reconcile_platform(component_appid).await {
                    Ok(r) => {
                        tracing::info!(platform = %component_appid, restored = r.restored, deauthorized = r.deauthorized, "platform reconciled with the authorizer list")
                    }
                    Err(e) => {
                        // Released: the fleet tries again at its next tick, not a period later.
                        tracing::warn!(platform = %component_appid, error = %e, "platform reconciliation failed; it is retried at the next tick");
                        let released = match &previous {
                            Some(p) => state.store.meta_cas(&key, Some(&claimed), p).await,
                            None => state.store.meta_cas(&key, Some(&claimed), "0").await,
                        };
                        if let Err(e) = released {
                            tracing::warn!(platform = %component_appid, error = %e, "reconciliation claim not released; retried a period later");
                        }
                    }
                }
            }
        }
    })
}

/// Claims this period's reconciliation of a platform for this instance when it is due (none
/// for `every` seconds) and no other instance claimed it first: the meta key, the value written
/// and the one it replaced (to release the claim if the run fails). A claim time further in
/// the future than a period (a clock that was wrong) does not block the fleet.
async fn claim_reconciliation(
    state: &Platforms,
    component_appid: &str,
    every: u64,
) -> Result<Option<(String, String, Option<String>)>, crate::store::StoreError> {
    let key = format!("platform_reconciled:{component_appid}");
    let last = state.store.meta_get(&key).await?;
    let now = now_ms();
    let every_ms = i64::try_from(every.saturating_mul(1000)).unwrap_or(i64::MAX);
    let due = last
        .as_deref()
        .and_then(|v| v.parse::<i64>().ok())
        .is_none_or(|t| now - t >= every_ms || t - now > every_ms);
    if !due {
        return Ok(None);
    }
    let claimed = now.to_string();
    let won = state
        .store
        .meta_cas(&key, last.as_deref(), &claimed)
        .await?;
    Ok(won.then_some((key, claimed, last)))
}

/// Deletes expired sessions every ten minutes.
pub(super) fn spawn_session_purger(
    state: Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match state.store.purge_expired_sessions(now_ms()).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired sessions deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
                _ = stop.changed() => break,
            }
        }
    })
}

/// How often the payments inbox is swept, and how old an unapplied row must be to be taken
/// (older than any store-then-apply takes: a live request is not raced, and racing one would
/// change nothing — applying is idempotent).
const PAY_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies payment notifications stored but never applied (the instance that acknowledged
/// them died in between, or the database failed after the inbox write). Every instance
/// sweeps; applying twice changes nothing.
pub(super) fn spawn_pay_inbox_sweeper(
    payments: crate::payments::Payments,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !payments.has_merchants() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(PAY_SWEEP) => {}
                _ = stop.changed() => break,
            }
            let grace = i64::try_from(PAY_SWEEP.as_millis()).unwrap_or(i64::MAX);
            match crate::payments::inbox::apply_unapplied(&payments, grace).await {
                Ok(n) if n > 0 => {
                    tracing::info!(applied = n, "unapplied payment notifications applied")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "payment inbox sweep failed"),
            }
        }
    })
}

/// How often every instance looks for orders and refunds whose query is due (one indexed
/// query; each due row is claimed before WeChat is asked).
const PAY_QUERY_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The query fallback (补单): orders without a notification and PROCESSING refunds asked about
/// at WeChat on their schedule (`payments::fallback`). Every instance runs it; a query is
/// claimed in the database first, so no two ask about the same row at once.
pub(super) fn spawn_pay_query_fallback(
    payments: crate::payments::Payments,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !payments.has_merchants() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(PAY_QUERY_TICK) => {}
                _ = stop.changed() => break,
            }
            match crate::payments::fallback::tick(&payments).await {
                Ok(n) if n > 0 => tracing::debug!(queried = n, "payment queries made"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "payment query fallback failed"),
            }
        }
    })
}
