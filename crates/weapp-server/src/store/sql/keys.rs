//! The access-token signing keys. The statements are the same for SQLite and PostgreSQL; the macro is
//! expanded once per backend in `super`.

/// `impl KeyStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_keys {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl KeyStore for $name {
            async fn signing_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
                let rows = sqlx::query("SELECT kid, sealed, key_id, public_jwk, created_at, not_before, retired_at FROM signing_keys ORDER BY created_at, kid")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(KeyRecord {
                            kid: r.try_get("kid")?,
                            sealed: r.try_get("sealed")?,
                            key_id: r.try_get("key_id")?,
                            public_jwk: r.try_get("public_jwk")?,
                            created_at: r.try_get("created_at")?,
                            not_before: r.try_get("not_before")?,
                            retired_at: r.try_get("retired_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError)
            }

            async fn add_signing_key(&self, key: &KeyRecord, guard: KeyGuard, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                // The registry row is the lock: concurrent rotations (or first keys) queue here.
                sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                let blocking = match guard {
                    KeyGuard::Always => None,
                    KeyGuard::NoneCreatedSince(t) => Some((
                        "SELECT COUNT(*) AS n FROM signing_keys WHERE retired_at IS NULL AND created_at >= $1",
                        t,
                    )),
                    KeyGuard::NoSignerAt(t) => Some((
                        "SELECT COUNT(*) AS n FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1",
                        t,
                    )),
                };
                if let Some((sql, t)) = blocking {
                    let any: i64 = sqlx::query(sql)
                        .bind(t)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("n")?;
                    if any > 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                }
                // Every key still signing stops when this one starts.
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(key.not_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO signing_keys (kid, sealed, key_id, public_jwk, created_at, not_before, retired_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)")
                    .bind(&key.kid)
                    .bind(&key.sealed)
                    .bind(&key.key_id)
                    .bind(&key.public_jwk)
                    .bind(key.created_at)
                    .bind(key.not_before)
                    .execute(&mut *tx)
                    .await?;
                if let Some(a) = audit {
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_signing_keys(&self, kid: Option<&str>, now: i64, retired_before: i64, audit: Option<&AuditRecord>) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = match kid {
                    Some(kid) => {
                        // A key removed before it started signing retires nothing: the keys it
                        // was to replace go on signing.
                        sqlx::query("UPDATE signing_keys SET retired_at = NULL WHERE retired_at = (SELECT not_before FROM signing_keys WHERE kid = $1 AND not_before > $2) AND kid <> $1")
                            .bind(kid)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid).execute(&mut *tx).await?
                    }
                    None => sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                        .bind(retired_before)
                        .execute(&mut *tx)
                        .await?,
                };
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(0);
                }
                sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                if let Some(a) = audit {
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn reseal_signing_key(&self, kid: &str, sealed: &[u8], key_id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE signing_keys SET sealed = $2, key_id = $3 WHERE kid = $1")
                    .bind(kid)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn promote_signing_keys(&self, now: i64) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("UPDATE signing_keys SET not_before = $1 WHERE retired_at IS NULL AND not_before > $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(0);
                }
                // What the promoted key was to retire at its start retires now.
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at > $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(super) use impl_keys;
