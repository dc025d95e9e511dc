//! The event log and the outbox. The statements are the same for SQLite and PostgreSQL; the macro is
//! expanded once per backend in `super`.

/// `impl EventStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_events {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl EventStore for $name {
            async fn insert_event(&self, appid: &str, dedup_key: &str, kind: &str, payload: &str, now: i64, next_attempt_at: i64) -> Result<(i64, bool), StoreError> {
                let row = sqlx::query(
                    "INSERT INTO push_events (appid, dedup_key, kind, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (appid, dedup_key) DO NOTHING RETURNING id",
                )
                .bind(appid)
                .bind(dedup_key)
                .bind(kind)
                .bind(payload)
                .bind(now)
                .bind(next_attempt_at)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(r) = row {
                    return Ok((r.try_get("id")?, true));
                }
                let r = sqlx::query("SELECT id FROM push_events WHERE appid = $1 AND dedup_key = $2")
                    .bind(appid)
                    .bind(dedup_key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((r.try_get("id")?, false))
            }

            async fn claim_due_events(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
                let ids = sqlx::query(
                    "SELECT id FROM push_events WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
                     AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut claimed = Vec::with_capacity(ids.len());
                for r in ids {
                    let id: i64 = r.try_get("id")?;
                    // Conditional update: of several instances racing for one event, one wins.
                    let sql = format!(
                        "UPDATE push_events SET lease_until = $1 WHERE id = $2 AND delivered_at IS NULL AND dead_at IS NULL \
                         AND (lease_until IS NULL OR lease_until < $3) RETURNING {EVENT_COLUMNS}"
                    );
                    if let Some(row) = sqlx::query(&sql).bind(lease_until).bind(id).bind(now).fetch_optional(&self.pool).await? {
                        claimed.push(event_from(&row)?);
                    }
                }
                Ok(claimed)
            }

            async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError> {
                for id in ids {
                    sqlx::query("UPDATE push_events SET lease_until = NULL WHERE id = $1 AND delivered_at IS NULL")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn mark_delivered(&self, id: i64, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE push_events SET delivered_at = $1, attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn mark_failed(&self, id: i64, next_attempt_at: i64, error: &str, dead_at: Option<i64>) -> Result<(), StoreError> {
                sqlx::query("UPDATE push_events SET attempts = attempts + 1, next_attempt_at = $1, lease_until = NULL, last_error = $2, dead_at = $3 WHERE id = $4")
                    .bind(next_attempt_at)
                    .bind(error)
                    .bind(dead_at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redeliver(&self, appid: &str, id: i64, now: i64, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query(
                    "UPDATE push_events SET dead_at = NULL, attempts = 0, next_attempt_at = $1, lease_until = NULL \
                     WHERE id = $2 AND appid = $3 AND delivered_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .bind(appid)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 0 {
                    // Dropped, the transaction rolls back: a 404 stays a 404.
                    return Ok(false);
                }
                if let Some(a) = audit {
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
                let never = NEVER;
                let row = sqlx::query(
                    "SELECT \
                       (SELECT COUNT(*) FROM push_events WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at < $1) AS backlog, \
                       (SELECT MIN(created_at) FROM push_events WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at < $1) AS oldest, \
                       (SELECT COUNT(*) FROM push_events WHERE dead_at IS NOT NULL AND delivered_at IS NULL) AS dead",
                )
                .bind(never)
                .fetch_one(&self.pool)
                .await?;
                Ok(OutboxStats {
                    backlog: row.try_get("backlog")?,
                    oldest_created_at: row.try_get("oldest")?,
                    dead: row.try_get("dead")?,
                })
            }

            async fn events_after(&self, appid: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
                let sql = format!("SELECT {EVENT_COLUMNS} FROM push_events WHERE appid = $1 AND id > $2 ORDER BY id LIMIT $3");
                let rows = sqlx::query(&sql).bind(appid).bind(after).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(event_from(r)?)).collect()
            }
        }
    };
}

pub(super) use impl_events;
