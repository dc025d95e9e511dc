//! Users and sessions. The statements are the same for SQLite and PostgreSQL; the macro is
//! expanded once per backend in `super`.

/// `impl SessionStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_sessions {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl SessionStore for $name {
            async fn upsert_user(&self, appid: &str, openid: &str, unionid: Option<&str>, session_key_enc: &[u8], key_id: &str, now: i64) -> Result<UserRecord, StoreError> {
                let sql = format!(
                    "INSERT INTO users (appid, openid, unionid, session_key_enc, key_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (appid, openid) DO UPDATE SET \
                       unionid = COALESCE(excluded.unionid, users.unionid), \
                       session_key_enc = excluded.session_key_enc, \
                       key_id = excluded.key_id, \
                       updated_at = excluded.updated_at \
                     RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(appid)
                    .bind(openid)
                    .bind(unionid)
                    .bind(session_key_enc)
                    .bind(key_id)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(user_from(&row)?)
            }

            async fn create_session(&self, token_hash: &[u8], user_id: i64, now: i64, expires_at: i64) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $3)")
                    .bind(token_hash)
                    .bind(user_id)
                    .bind(now)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session_user(&self, token_hash: &[u8], now: i64, idle_ms: i64) -> Result<Option<SessionRecord>, StoreError> {
                let sql = format!(
                    "SELECT {}, s.expires_at AS session_expires_at, s.last_seen_at AS session_last_seen_at \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     WHERE s.token_hash = $1 AND s.expires_at > $2 AND ($3 = 0 OR s.last_seen_at > $2 - $3)",
                    USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
                );
                let row = sqlx::query(&sql).bind(token_hash).bind(now).bind(idle_ms).fetch_optional(&self.pool).await?;
                match row {
                    Some(r) => Ok(Some(SessionRecord {
                        user: user_from(&r)?,
                        expires_at: r.try_get("session_expires_at")?,
                        last_seen_at: r.try_get("session_last_seen_at")?,
                    })),
                    None => Ok(None),
                }
            }

            async fn session_exists(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
                let row = sqlx::query("SELECT 1 AS one FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2 AND last_seen_at < $1")
                    .bind(now)
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
                Ok(r.rows_affected() > 0)
            }

            async fn delete_user_sessions(&self, user_id: i64, audit: Option<&AuditRecord>) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                if let Some(a) = audit {
                    let a = AuditRecord { detail: serde_json::json!({"revoked": r.rows_affected()}).to_string(), ..a.clone() };
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn data_key_ids(&self) -> Result<Vec<Option<String>>, StoreError> {
                let rows = sqlx::query("SELECT DISTINCT key_id FROM users UNION SELECT DISTINCT key_id FROM managed_apps WHERE key_id IS NOT NULL UNION SELECT DISTINCT key_id FROM signing_keys UNION SELECT DISTINCT key_id FROM platform_tickets UNION SELECT DISTINCT key_id FROM platform_authorizers WHERE key_id IS NOT NULL UNION SELECT DISTINCT key_id FROM managed_platforms WHERE key_id IS NOT NULL UNION SELECT DISTINCT key_id FROM pay_merchants").fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(r.try_get("key_id")?)).collect()
            }

            async fn legacy_sealed(&self, limit: i64) -> Result<Vec<LegacySealed>, StoreError> {
                let rows = sqlx::query("SELECT id, appid, openid, session_key_enc FROM users WHERE key_id IS NULL ORDER BY id LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(LegacySealed {
                            id: r.try_get("id")?,
                            appid: r.try_get("appid")?,
                            openid: r.try_get("openid")?,
                            session_key_enc: r.try_get("session_key_enc")?,
                        })
                    })
                    .collect()
            }

            async fn reseal(&self, user_id: i64, sealed: &[u8], key_id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET session_key_enc = $1, key_id = $2 WHERE id = $3")
                    .bind(sealed)
                    .bind(key_id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_phone(&self, user_id: i64, phone: &str, pure: &str, country_code: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET phone_number = $1, pure_phone_number = $2, country_code = $3, updated_at = $4 WHERE id = $5")
                    .bind(phone)
                    .bind(pure)
                    .bind(country_code)
                    .bind(now)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn users_by_unionid(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query("SELECT appid, openid FROM users WHERE unionid = $1 ORDER BY appid")
                    .bind(unionid)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok((r.try_get("appid")?, r.try_get("openid")?))).collect()
            }

            async fn purge_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                Ok(r.rows_affected())
            }

            async fn record_logins(&self, logins: &[LoginWrite]) -> Result<Vec<LoginRecorded>, StoreError> {
                self.record_login_batch(logins).await
            }

            async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<UserRecord>, StoreError> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE appid = $1 AND openid = $2");
                let row = sqlx::query(&sql).bind(appid).bind(openid).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(user_from(&r)?)).transpose()
            }

            async fn count_sessions(&self, user_id: i64, now: i64) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1 AND expires_at > $2")
                    .bind(user_id)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("n")?)
            }
        }
    };
}

pub(super) use impl_sessions;
