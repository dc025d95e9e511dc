//! Platforms' tickets, refresh tokens and authorizations. The statements are the same for SQLite and PostgreSQL; the macro is
//! expanded once per backend in `super`.

/// `impl PlatformStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_platforms {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl PlatformStore for $name {
            async fn platform_ticket(&self, component_appid: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT ticket_sealed FROM platform_tickets WHERE component_appid = $1")
                    .bind(component_appid)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| Ok(r.try_get("ticket_sealed")?)).transpose()
            }

            async fn put_platform_ticket(&self, component_appid: &str, sealed: &[u8], key_id: &str, now: i64, pushed_at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("INSERT INTO platform_tickets (component_appid, ticket_sealed, key_id, updated_at, pushed_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (component_appid) DO UPDATE SET ticket_sealed = excluded.ticket_sealed, key_id = excluded.key_id, updated_at = excluded.updated_at, pushed_at = excluded.pushed_at \
                             WHERE excluded.pushed_at = 0 OR excluded.pushed_at >= platform_tickets.pushed_at OR platform_tickets.pushed_at > $6")
                    .bind(component_appid)
                    .bind(sealed)
                    .bind(key_id)
                    .bind(now)
                    .bind(pushed_at)
                    // A kept time ahead of this clock is not trusted (see TicketStore::save_pushed).
                    .bind(now.div_euclid(1000) + weapp::open_platform::TICKET_TIME_SLACK_SECS)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn platform_refresh(&self, component_appid: &str, authorizer_appid: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT refresh_sealed FROM platform_authorizers WHERE component_appid = $1 AND authorizer_appid = $2")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get::<Option<Vec<u8>>, _>("refresh_sealed")).transpose()?.flatten())
            }

            async fn put_platform_authorizer(&self, rec: &PlatformAuthorizer) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                // Every instance reloads its platforms' merchants at the next registry poll.
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                sqlx::query("INSERT INTO platform_authorizers (component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                             ON CONFLICT (component_appid, authorizer_appid) DO UPDATE SET \
                               refresh_sealed = COALESCE(excluded.refresh_sealed, platform_authorizers.refresh_sealed), \
                               key_id = COALESCE(excluded.key_id, platform_authorizers.key_id), \
                               authorized = excluded.authorized, func_ids = excluded.func_ids, \
                               auth_time = CASE WHEN excluded.auth_time > platform_authorizers.auth_time THEN excluded.auth_time ELSE platform_authorizers.auth_time END, \
                               updated_at = excluded.updated_at, rev = excluded.rev")
                    .bind(&rec.component_appid)
                    .bind(&rec.authorizer_appid)
                    .bind(rec.refresh_sealed.as_deref())
                    .bind(rec.key_id.as_deref())
                    .bind(i64::from(rec.authorized))
                    .bind(&rec.func_ids)
                    .bind(rec.auth_time)
                    .bind(rec.updated_at)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn save_platform_refresh(&self, component_appid: &str, authorizer_appid: &str, sealed: &[u8], key_id: &str, now: i64) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                // Every instance reloads its platforms' merchants at the next registry poll.
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                sqlx::query("INSERT INTO platform_authorizers (component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev) \
                             VALUES ($1, $2, $3, $4, 1, '[]', $6, $5, $7) \
                             ON CONFLICT (component_appid, authorizer_appid) DO UPDATE SET \
                               refresh_sealed = excluded.refresh_sealed, key_id = excluded.key_id, updated_at = excluded.updated_at, rev = excluded.rev")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(sealed)
                    .bind(key_id)
                    .bind(now)
                    // The authorization's time is WeChat's (its event's CreateTime, set with the
                    // event); a row made here first does not know it: 0, never this clock.
                    .bind(0i64)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            #[allow(clippy::too_many_arguments)]

            async fn restore_platform_authorizer_if(&self, component_appid: &str, authorizer_appid: &str, sealed: &[u8], key_id: &str, auth_time: i64, changed_before: i64, now: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let updated = sqlx::query("UPDATE platform_authorizers SET authorized = 1, refresh_sealed = $3, key_id = $4, \
                                             auth_time = CASE WHEN $5 > auth_time THEN $5 ELSE auth_time END, updated_at = $7, rev = $8 \
                                           WHERE component_appid = $1 AND authorizer_appid = $2 AND updated_at < $6")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(sealed)
                    .bind(key_id)
                    .bind(auth_time)
                    .bind(changed_before)
                    .bind(now)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let inserted = if updated == 0 {
                    sqlx::query("INSERT INTO platform_authorizers (component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev) \
                                 VALUES ($1, $2, $3, $4, 1, '[]', $5, $6, $7) ON CONFLICT (component_appid, authorizer_appid) DO NOTHING")
                        .bind(component_appid)
                        .bind(authorizer_appid)
                        .bind(sealed)
                        .bind(key_id)
                        .bind(auth_time)
                        .bind(now)
                        .bind(rev)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                } else {
                    0
                };
                tx.commit().await?;
                Ok(updated + inserted > 0)
            }

            async fn deauthorize_platform_authorizer_if(&self, component_appid: &str, authorizer_appid: &str, auth_time_at_most: i64, changed_before: i64, now: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let done = sqlx::query("UPDATE platform_authorizers SET authorized = 0, refresh_sealed = NULL, key_id = NULL, updated_at = $3, rev = $4 \
                                        WHERE component_appid = $1 AND authorizer_appid = $2 AND auth_time <= $5 AND updated_at < $6")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(now)
                    .bind(rev)
                    .bind(auth_time_at_most)
                    .bind(changed_before)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn platform_authorizers(&self, component_appid: &str) -> Result<Vec<PlatformAuthorizer>, StoreError> {
                let sql = format!("SELECT {AUTHORIZER_COLUMNS} FROM platform_authorizers WHERE component_appid = $1 ORDER BY authorizer_appid");
                let rows = sqlx::query(&sql).bind(component_appid).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(authorizer_from(r)?)).collect()
            }

            async fn count_authorized(&self, component_appid: &str) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM platform_authorizers WHERE component_appid = $1 AND authorized <> 0")
                    .bind(component_appid)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("n")?)
            }

            async fn platform_authorizers_after(&self, rev: i64, limit: i64) -> Result<Vec<PlatformAuthorizer>, StoreError> {
                let sql = format!("SELECT {AUTHORIZER_COLUMNS} FROM platform_authorizers WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(authorizer_from(r)?)).collect()
            }

            async fn authorizations_of(&self, authorizer_appid: &str) -> Result<Vec<PlatformAuthorizer>, StoreError> {
                let sql = format!("SELECT {AUTHORIZER_COLUMNS} FROM platform_authorizers WHERE authorizer_appid = $1 ORDER BY component_appid");
                let rows = sqlx::query(&sql).bind(authorizer_appid).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(authorizer_from(r)?)).collect()
            }

            async fn reseal_platform_ticket(&self, component_appid: &str, old: &[u8], sealed: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE platform_tickets SET ticket_sealed = $3, key_id = $4 WHERE component_appid = $1 AND ticket_sealed = $2")
                    .bind(component_appid)
                    .bind(old)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn reseal_platform_refresh(&self, component_appid: &str, authorizer_appid: &str, old: &[u8], sealed: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE platform_authorizers SET refresh_sealed = $4, key_id = $5 WHERE component_appid = $1 AND authorizer_appid = $2 AND refresh_sealed = $3")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(old)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(super) use impl_platforms;
