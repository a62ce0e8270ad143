//! Schema migrations, embedded in the binary and applied in order at start (and by
//! `proxima migrate`). A migration is never edited once released: a change is a new one.

use super::{col, db_error, Backend, Store};
use crate::clock::now_ms;
use crate::error::Result;

/// `(version, statements)`, in order. The SQL is the same for SQLite and PostgreSQL.
const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE teams (
            name TEXT PRIMARY KEY,
            models TEXT,
            rpm BIGINT,
            tpm BIGINT,
            budget_nanos BIGINT,
            budget_period TEXT,
            metadata TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            deleted_at BIGINT
        )",
        "CREATE INDEX teams_updated ON teams (updated_at)",
        "CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            team TEXT,
            models TEXT,
            rpm BIGINT,
            tpm BIGINT,
            budget_nanos BIGINT,
            budget_period TEXT,
            expires_at BIGINT,
            metadata TEXT NOT NULL,
            admin BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            revoked_at BIGINT
        )",
        "CREATE INDEX keys_updated ON keys (updated_at)",
        "CREATE TABLE usage_ledger (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            at BIGINT NOT NULL,
            key_id TEXT,
            key_name TEXT,
            team TEXT,
            end_user TEXT,
            model TEXT NOT NULL,
            provider TEXT,
            upstream_model TEXT,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cached_tokens BIGINT NOT NULL,
            cost_nanos BIGINT NOT NULL,
            latency_ms BIGINT NOT NULL,
            ttft_ms BIGINT,
            status BIGINT NOT NULL,
            error_code TEXT,
            cache TEXT,
            attempts BIGINT NOT NULL,
            stream BIGINT NOT NULL,
            metadata TEXT
        ){without_rowid}",
        // No other index: ids begin with the time, so the time ranges that reports, the log
        // and budget seeds read are primary-key ranges, and each of the thousands of rows a
        // second updates one tree.
    ],
)];

pub async fn apply(store: &Store) -> Result<Vec<i64>> {
    let mut conn = store.pool.acquire().await.map_err(db_error)?;
    // Two replicas starting together must not both apply a migration: PostgreSQL takes an
    // advisory lock; SQLite's write lock (BEGIN IMMEDIATE) serialises them.
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock(7165334)")
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    let result = apply_locked(store, &mut conn).await;
    if store.backend == Backend::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock(7165334)")
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn apply_locked(store: &Store, conn: &mut sqlx::AnyConnection) -> Result<Vec<i64>> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS proxima_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    let mut applied = Vec::new();
    for (version, statements) in MIGRATIONS {
        let begin = match store.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        sqlx::query(begin)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let done = async {
            let row =
                sqlx::query("SELECT COUNT(*) AS n FROM proxima_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
            if col::<i64>(&row, "n")? > 0 {
                return Ok(false);
            }
            for statement in *statements {
                // SQLite keeps a table with a text key as two trees unless told otherwise; the
                // ledger's ids grow with time, so one tree ordered by them only appends.
                let without_rowid = match store.backend {
                    Backend::Sqlite => " WITHOUT ROWID",
                    Backend::Postgres => "",
                };
                let statement = statement.replace("{without_rowid}", without_rowid);
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
            }
            sqlx::query("INSERT INTO proxima_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
            Ok(true)
        }
        .await;
        match done {
            Ok(newly) => {
                sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                if newly {
                    tracing::info!(version, "database migration applied");
                    applied.push(*version);
                }
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testing::on_both;
    use super::*;

    on_both!(migrations_apply_once, |store: Store| async move {
        // `open` applied everything; a second run applies nothing and the tables answer.
        assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
        let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_ledger")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(col::<i64>(&row, "n").unwrap(), 0);
    });
}
