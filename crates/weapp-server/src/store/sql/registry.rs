//! Managed apps, clients and platforms, and the audit log. The statements are the same for SQLite and PostgreSQL; the macro is
//! expanded once per backend in `super`.

/// `impl RegistryStore for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_registry {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl RegistryStore for $name {
            async fn registry_rev(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT rev FROM registry WHERE id = 1").fetch_one(&self.pool).await?;
                Ok(row.try_get("rev")?)
            }

            async fn managed_apps_after(&self, rev: i64, limit: i64) -> Result<Vec<ManagedAppRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_APP_COLUMNS} FROM managed_apps WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(managed_app_from(r)?)).collect()
            }

            async fn managed_clients_after(&self, rev: i64, limit: i64) -> Result<Vec<ManagedClientRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_CLIENT_COLUMNS} FROM managed_clients WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(managed_client_from(r)?)).collect()
            }

            async fn managed_client(&self, name: &str) -> Result<Option<ManagedClientRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_CLIENT_COLUMNS} FROM managed_clients WHERE name = $1");
                let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(managed_client_from(&r)?)).transpose()
            }

            async fn managed_app(&self, appid: &str) -> Result<Option<ManagedAppRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_APP_COLUMNS} FROM managed_apps WHERE appid = $1");
                let row = sqlx::query(&sql).bind(appid).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(managed_app_from(&r)?)).transpose()
            }

            async fn put_managed_app(&self, app: &ManagedAppRecord, create: bool, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.put_managed_row("managed_apps", "appid", app, create, audit, true).await
            }

            async fn delete_managed_app(&self, appid: &str, now: i64, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.delete_managed_row("managed_apps", "appid", appid, now, audit, true).await
            }

            async fn managed_platforms_after(&self, rev: i64, limit: i64) -> Result<Vec<ManagedPlatformRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_PLATFORM_COLUMNS} FROM managed_platforms WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(managed_app_from(r)?)).collect()
            }

            async fn managed_platform(&self, component_appid: &str) -> Result<Option<ManagedPlatformRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_PLATFORM_COLUMNS} FROM managed_platforms WHERE component_appid = $1");
                let row = sqlx::query(&sql).bind(component_appid).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(managed_app_from(&r)?)).transpose()
            }

            async fn put_managed_platform(&self, platform: &ManagedPlatformRecord, create: bool, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.put_managed_row("managed_platforms", "component_appid", platform, create, audit, false).await
            }

            async fn delete_managed_platform(&self, component_appid: &str, now: i64, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.delete_managed_row("managed_platforms", "component_appid", component_appid, now, audit, false).await
            }

            async fn reseal_managed(&self, platform: bool, appid: &str, old: &[u8], sealed: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let sql = if platform {
                    "UPDATE managed_platforms SET sealed = $3, key_id = $4 WHERE component_appid = $1 AND sealed = $2"
                } else {
                    "UPDATE managed_apps SET sealed = $3, key_id = $4 WHERE appid = $1 AND sealed = $2"
                };
                let done = sqlx::query(sql).bind(appid).bind(old).bind(sealed).bind(key_id).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn put_managed_client(&self, client: &ManagedClientRecord, create: bool, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let sql = if create {
                    "INSERT INTO managed_clients (name, key_sha256, apps, scopes, enabled, deleted, rev, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7) \
                     ON CONFLICT (name) DO UPDATE SET key_sha256 = excluded.key_sha256, apps = excluded.apps, \
                       scopes = excluded.scopes, enabled = excluded.enabled, deleted = 0, rev = excluded.rev, \
                       created_at = excluded.created_at, updated_at = excluded.updated_at \
                     WHERE managed_clients.deleted = 1"
                } else {
                    "UPDATE managed_clients SET key_sha256 = COALESCE($2, key_sha256), apps = $3, scopes = $4, enabled = $5, rev = $6, updated_at = $7 \
                     WHERE name = $1 AND deleted = 0 AND rev = $8"
                };
                let done = sqlx::query(sql)
                    .bind(&client.name)
                    .bind(client.key_sha256.as_deref())
                    .bind(&client.apps)
                    .bind(&client.scopes)
                    .bind(i64::from(client.enabled))
                    .bind(rev)
                    .bind(client.updated_at)
                    .bind(client.rev)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }

            async fn delete_managed_client(&self, name: &str, now: i64, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let done = sqlx::query("UPDATE managed_clients SET deleted = 1, enabled = 0, key_sha256 = NULL, rev = $2, updated_at = $3 WHERE name = $1 AND deleted = 0")
                    .bind(name)
                    .bind(rev)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }

            async fn audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
                insert_audit!(&self.pool, r);
                Ok(())
            }

            async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = sqlx::query("SELECT id, at, admin, action, target, source, detail FROM admin_audit WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditRecord {
                            id: r.try_get("id")?,
                            at: r.try_get("at")?,
                            admin: r.try_get("admin")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            source: r.try_get("source")?,
                            detail: r.try_get("detail")?,
                        })
                    })
                    .collect()
            }
        }

        impl $name {
            /// `put_managed_*` for the table `table` keyed by `key`. With `app_sessions`, a
            /// creation that revives a tombstone first ends the sessions of the id's users: any
            /// left are an earlier registration's (logins an instance took before it learned of
            /// the deletion), and must not come back with the new one.
            async fn put_managed_row(&self, table: &str, key: &str, rec: &ManagedAppRecord, create: bool, audit: &AuditRecord, app_sessions: bool) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                if create && app_sessions {
                    let sql = format!("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE appid = $1) AND EXISTS (SELECT 1 FROM {table} WHERE {key} = $1 AND deleted = 1)");
                    sqlx::query(&sql).bind(&rec.appid).execute(&mut *tx).await?;
                }
                let sql = if create {
                    format!(
                        "INSERT INTO {table} ({key}, settings, sealed, key_id, enabled, deleted, rev, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7) \
                         ON CONFLICT ({key}) DO UPDATE SET settings = excluded.settings, sealed = excluded.sealed, \
                           key_id = excluded.key_id, enabled = excluded.enabled, deleted = 0, rev = excluded.rev, \
                           created_at = excluded.created_at, updated_at = excluded.updated_at \
                         WHERE {table}.deleted = 1"
                    )
                } else {
                    format!(
                        "UPDATE {table} SET settings = $2, sealed = $3, key_id = $4, enabled = $5, rev = $6, updated_at = $7 \
                         WHERE {key} = $1 AND deleted = 0 AND rev = $8"
                    )
                };
                let done = sqlx::query(&sql)
                    .bind(&rec.appid)
                    .bind(&rec.settings)
                    .bind(rec.sealed.as_deref())
                    .bind(rec.key_id.as_deref())
                    .bind(i64::from(rec.enabled))
                    .bind(rev)
                    .bind(rec.updated_at)
                    .bind(rec.rev)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }

            /// `delete_managed_*` for the table `table` keyed by `key`. With `app_sessions`, every
            /// session of the id's users ends in the same transaction, and the audit row's detail
            /// gains `sessions_ended`.
            async fn delete_managed_row(&self, table: &str, key: &str, id: &str, now: i64, audit: &AuditRecord, app_sessions: bool) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let sql = format!("UPDATE {table} SET deleted = 1, enabled = 0, sealed = NULL, key_id = NULL, rev = $2, updated_at = $3 WHERE {key} = $1 AND deleted = 0");
                let done = sqlx::query(&sql).bind(id).bind(rev).bind(now).execute(&mut *tx).await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let mut audit = Cow::Borrowed(audit);
                if app_sessions {
                    let ended = sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE appid = $1)")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    let mut detail: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&audit.detail).unwrap_or_default();
                    detail.insert("sessions_ended".into(), ended.into());
                    audit.to_mut().detail = serde_json::Value::Object(detail).to_string();
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }
        }
    };
}

pub(super) use impl_registry;
