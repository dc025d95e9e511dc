//! The keys service: the data keyring (sealing at rest) and the access-token signing keys —
//! their snapshot, re-sealing, rotation and clean-up.

use std::sync::{Arc, Mutex};

use super::error::SealError;
use super::seal::Keyring;
use crate::shared::Shared;

/// The keys every other domain seals with and signs with. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keys(Arc<KeysInner>);

/// The parts of [`Keys`].
#[derive(Debug)]
pub struct KeysInner {
    shared: Shared,
    /// Seals session_keys, secrets and signing keys at rest.
    pub keyring: Keyring,
    /// The access-token signing keys (a snapshot of the database's).
    signing: Mutex<Arc<super::jwt::SigningKeys>>,
}

crate::shared::service_handle!(Keys, KeysInner);

impl Keys {
    /// The keys service over an opened keyring (no signing key loaded yet: see
    /// [`Keys::reseal_signing_keys`] and [`Keys::signing_tick`]).
    pub fn new(shared: Shared, keyring: Keyring) -> Self {
        Keys(Arc::new(KeysInner {
            shared,
            keyring,
            signing: Mutex::new(Arc::new(super::jwt::SigningKeys::default())),
        }))
    }

    /// The access-token signing keys as last read.
    pub fn signing_keys(&self) -> Arc<super::jwt::SigningKeys> {
        self.signing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the signing keys from the database.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn reload_signing_keys(&self) -> Result<(), SealError> {
        let records = self.store.signing_keys().await?;
        let keys =
            super::jwt::SigningKeys::load(&records, |sealed, aad| self.keyring.open(sealed, aad));
        *self.signing.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Re-seals signing keys sealed under an older data key with the newest one (at start-up,
    /// so that a data-key rotation can drop the old key once users have logged in again, as for
    /// session keys).
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn reseal_signing_keys(&self) -> Result<(), SealError> {
        let current = self.keyring.current_id();
        let mut resealed = 0;
        for r in self.store.signing_keys().await? {
            if r.key_id == current {
                continue;
            }
            let aad = super::jwt::key_aad(&r.kid);
            if let Some(plain) = self.keyring.open(&r.sealed, &aad) {
                let sealed = self.keyring.seal(&plain, &aad);
                self.store
                    .reseal_signing_key(&r.kid, &sealed, &current)
                    .await?;
                resealed += 1;
            }
        }
        if resealed > 0 {
            tracing::info!(resealed, "signing keys re-sealed under the newest data key");
            self.reload_signing_keys().await?;
        }
        Ok(())
    }

    /// Adds a new signing key that signs from `not_before` (retiring the current one then),
    /// unless `guard` says another instance did already; reloads the keys. An administrator's
    /// rotation passes its `audit` row (its target becomes the new key's id), written with the
    /// key. Returns the new key's id when it was added.
    ///
    /// # Errors
    /// The database could not be written.
    pub async fn add_signing_key(
        &self,
        now: i64,
        not_before: i64,
        guard: crate::store::KeyGuard,
        audit: Option<crate::store::AuditRecord>,
    ) -> Result<Option<String>, SealError> {
        let record = super::jwt::generate(
            |plain, aad| self.keyring.seal(plain, aad),
            self.keyring.current_id(),
            now,
            not_before,
        );
        let added = self
            .store
            .add_signing_key(
                &record,
                guard,
                audit
                    .map(|a| crate::store::AuditRecord {
                        target: record.kid.clone(),
                        ..a
                    })
                    .as_ref(),
            )
            .await?;
        self.reload_signing_keys().await?;
        if added {
            tracing::info!(kid = %record.kid, not_before, "access-token signing key added");
        }
        Ok(added.then_some(record.kid))
    }

    /// Keeps the signing keys in shape (called at start-up and every registry poll): a first
    /// key when there is none that can sign, a rotation when the newest key is older than
    /// `signing_key_rotate_days` (published `signing_key_publish_ahead_secs` before it signs),
    /// and retired keys deleted once every token they signed has expired. Only a change
    /// touches the database.
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn signing_tick(&self, now: i64) -> Result<(), SealError> {
        use crate::store::KeyGuard;
        let keys = self.signing_keys();
        if !keys.can_sign(now) {
            if keys.has_pending(now) {
                // The signing key was removed while the next one waited its publish-ahead: the
                // next one signs now, rather than nothing for minutes.
                self.store.promote_signing_keys(now).await?;
                self.reload_signing_keys().await?;
            } else {
                // No key (a new database, or the signing key removed): one new key for the
                // whole fleet, however many instances get here together. A key that signs but
                // does not open here (sealed under a data key this instance lacks — refused at
                // start-up) is not replaced: that would retire the fleet's key.
                self.add_signing_key(now, now, KeyGuard::NoSignerAt(now), None)
                    .await?;
            }
            if !self.signing_keys().can_sign(now) {
                tracing::error!("no access-token signing key opens with this instance's data keys: logins of apps with access tokens answer 503");
            }
            return Ok(());
        }
        let rotate_ms = (self.config.signing_key_rotate_days as i64).saturating_mul(86_400_000);
        if rotate_ms > 0
            && keys
                .newest_created_at()
                .is_some_and(|t| t <= now - rotate_ms)
        {
            let ahead = (self.config.signing_key_publish_ahead_secs as i64).saturating_mul(1000);
            self.add_signing_key(
                now,
                now + ahead,
                KeyGuard::NoneCreatedSince(now - rotate_ms),
                None,
            )
            .await?;
        }
        // A retired key stays published while tokens it signed may live: the longest lifetime
        // any instance may be configured with (instances of a fleet may differ during a
        // change), plus a minute of leeway.
        let gone_before = now - crate::config::MAX_ACCESS_TOKEN_TTL_SECS * 1000 - 60_000;
        if keys.has_retired_before(gone_before) {
            let n = self
                .store
                .delete_signing_keys(None, now, gone_before, None)
                .await?;
            if n > 0 {
                tracing::info!(deleted = n, "retired signing keys unpublished");
            }
            self.reload_signing_keys().await?;
        }
        Ok(())
    }
}
