//! Metadata and health. The statements are the same for SQLite and PostgreSQL; the macro is
//! expanded once per backend in `super`.

/// `impl Store for $name` (a pool field `pool`; `$kind` names the backend).
macro_rules! impl_meta {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl Store for $name {
            async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
                match row {
                    Some(r) => Ok(Some(r.try_get("value")?)),
                    None => Ok(None),
                }
            }

            async fn has_data(&self) -> Result<bool, StoreError> {
                let row = sqlx::query(
                    "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM push_events) \
                     THEN 1 ELSE 0 END AS BIGINT) AS any_data",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get::<i64, _>("any_data")? == 1)
            }

            async fn meta_get_or_insert(&self, key: &str, default: &str) -> Result<String, StoreError> {
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(default)
                    .execute(&self.pool)
                    .await?;
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_one(&self.pool).await?;
                Ok(row.try_get("value")?)
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn kind(&self) -> &'static str {
                $kind
            }

            async fn durable_commits(&self) -> Result<bool, StoreError> {
                if $kind == "sqlite" {
                    let row = sqlx::query("PRAGMA synchronous").fetch_one(&self.pool).await?;
                    // 2 = FULL, 3 = EXTRA.
                    Ok(row.try_get::<i64, _>(0)? >= 2)
                } else {
                    let row = sqlx::query("SHOW synchronous_commit").fetch_one(&self.pool).await?;
                    Ok(row.try_get::<String, _>(0)? != "off")
                }
            }

            async fn meta_cas(&self, key: &str, expected: Option<&str>, new: &str) -> Result<bool, StoreError> {
                let done = match expected {
                    None => sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                        .bind(key)
                        .bind(new)
                        .execute(&self.pool)
                        .await?,
                    Some(old) => sqlx::query("UPDATE meta SET value = $3 WHERE key = $1 AND value = $2")
                        .bind(key)
                        .bind(old)
                        .bind(new)
                        .execute(&self.pool)
                        .await?,
                };
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(super) use impl_meta;
