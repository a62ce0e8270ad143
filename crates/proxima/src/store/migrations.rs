//! Schema migrations, embedded in the binary and applied in order at start (and by
//! `proxima migrate`). A migration is never edited once released: a change is a new one.
//!
//! Each database has its own folder, `migrations/sqlite/` and `migrations/postgres/`, so
//! that a schema can use what one database has and the other lacks; both lists carry the
//! same versions, recorded in `proxima_migrations` as before the split.

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::{col, db_error, Pool, Row, Store};
use crate::clock::now_ms;
use crate::error::Result;

/// One migration: the version recorded once it is applied, and its SQL (any number of
/// statements).
struct Migration {
    version: i64,
    sql: &'static str,
}

/// SQLite's migrations, in order.
const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("migrations/sqlite/0002_conversations.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("migrations/sqlite/0003_files.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("migrations/sqlite/0004_vector_stores.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("migrations/sqlite/0005_cache.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("migrations/sqlite/0006_residency_pii.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("migrations/sqlite/0007_audit_retention.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("migrations/sqlite/0008_prompts.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("migrations/sqlite/0009_mcp_tools.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("migrations/sqlite/0010_conversation_vectors.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("migrations/sqlite/0011_term_postings.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("migrations/sqlite/0012_postings_text.sql"),
    },
];

/// PostgreSQL's migrations, in order: the same versions as [`SQLITE`].
const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("migrations/postgres/0002_conversations.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("migrations/postgres/0003_files.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("migrations/postgres/0004_vector_stores.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("migrations/postgres/0005_cache.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("migrations/postgres/0006_residency_pii.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("migrations/postgres/0007_audit_retention.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("migrations/postgres/0008_prompts.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("migrations/postgres/0009_mcp_tools.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("migrations/postgres/0010_conversation_vectors.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("migrations/postgres/0011_term_postings.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("migrations/postgres/0012_postings_text.sql"),
    },
];

/// PostgreSQL's advisory lock around applying migrations (any number, the same in every
/// release).
const LOCK: i64 = 7165334;

pub async fn apply(store: &Store) -> Result<Vec<i64>> {
    // Two replicas starting together must not both apply a migration: PostgreSQL takes an
    // advisory lock; SQLite's write lock (BEGIN IMMEDIATE) serialises them.
    match &store.pool {
        Pool::Sqlite { pool, .. } => {
            let mut conn = pool.acquire().await.map_err(db_error)?;
            apply_locked::<SqliteConnection>(&mut conn, SQLITE, "BEGIN IMMEDIATE").await
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await.map_err(db_error)?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(LOCK)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
            let result = apply_locked::<PgConnection>(&mut conn, POSTGRES, "BEGIN").await;
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK)
                .execute(&mut *conn)
                .await;
            result
        }
    }
}

/// Applies on `conn` the `migrations` it has not recorded yet, each in a transaction opened
/// with `begin`.
async fn apply_locked<C>(
    conn: &mut C,
    migrations: &[Migration],
    begin: &'static str,
) -> Result<Vec<i64>>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    <C::Database as sqlx::Database>::Row: Row,
    <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
    i64: for<'q> sqlx::Encode<'q, C::Database> + sqlx::Type<C::Database>,
{
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
    for migration in migrations {
        let version = migration.version;
        sqlx::query(begin)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let done = async {
            let row =
                sqlx::query("SELECT COUNT(*) AS n FROM proxima_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
            if col::<i64>(&row, "n")? > 0 {
                return Ok(false);
            }
            sqlx::raw_sql(migration.sql)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
            sqlx::query("INSERT INTO proxima_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
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
                    applied.push(version);
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
    use super::super::ledger::tests::row;
    use super::super::testing::{on_both, postgres_url, sqlite_url};
    use super::super::{Backend, LogFilter, SpendColumn};
    use super::*;

    /// Version 1 exactly as the release before the per-database folders applied it, through
    /// `sqlx::Any` with `{without_rowid}` filled in per database: what upgraded databases have.
    const PREVIOUS_RELEASE_V1: &[&str] = &[
        "CREATE TABLE IF NOT EXISTS proxima_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
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
        "INSERT INTO proxima_migrations (version, applied_at) VALUES (1, 1767225600000)",
        // What a user had in it: a key, and a request it made for 1,500 nano-dollars.
        "INSERT INTO keys (id, name, hash, prefix, team, budget_nanos, budget_period, metadata, \
         admin, created_at, updated_at) VALUES ('key_kept', 'kept', 'abc123', 'sk-px-abcdef...', \
         'platform', 5000000000, '1d', '{}', 0, 1767225600000, 1767225600000)",
        "INSERT INTO usage_ledger (id, request_id, at, key_id, model, input_tokens, \
         output_tokens, cached_tokens, cost_nanos, latency_ms, status, attempts, stream) VALUES \
         ('u_019b76daa80000000000000000000001', 'req-kept', 1767225600000, 'key_kept', 'fast', \
         10, 5, 0, 1500, 12, 200, 1, 0)",
    ];

    /// The schema of `store`'s database, one line per table, column or index, whitespace
    /// collapsed: equal for two databases whose tables, columns, types and indexes are.
    async fn schema(store: &Store) -> Vec<String> {
        let sql = match store.backend() {
            Backend::Sqlite => {
                "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') AS line \
                 FROM sqlite_master ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT line FROM (\
                 SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || \
                 is_nullable || ' ' || COALESCE(column_default, '') AS line \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 UNION ALL SELECT replace(indexdef, current_schema() || '.', '') \
                 FROM pg_indexes WHERE schemaname = current_schema()) AS s ORDER BY line"
            }
        };
        let lines: Vec<String> = on_pool!(store, |pool| {
            let rows = sqlx::query(sql).fetch_all(pool).await.unwrap();
            rows.iter().map(|r| col(r, "line").unwrap()).collect()
        });
        lines
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    on_both!(migrations_apply_once, |store: Store| async move {
        // `open` applied everything; a second run applies nothing and the tables answer.
        assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
        assert_eq!(store.count_usage().await.unwrap(), 0);
    });

    #[test]
    fn both_databases_have_the_same_versions_in_order() {
        let versions = |list: &[Migration]| list.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert!(versions(SQLITE).windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            versions(SQLITE)[0],
            1,
            "version 1 is what databases recorded so far"
        );
    }

    on_both!(
        each_database_runs_its_own_folder,
        |store: Store| async move {
            match &store.pool {
                Pool::Sqlite { pool, .. } => {
                    // Only SQLite's folder makes the ledger one tree.
                    let row =
                        sqlx::query("SELECT sql FROM sqlite_master WHERE name = 'usage_ledger'")
                            .fetch_one(pool)
                            .await
                            .unwrap();
                    assert!(col::<String>(&row, "sql")
                        .unwrap()
                        .ends_with(") WITHOUT ROWID"));
                }
                Pool::Postgres(_) => {
                    // SQLite's folder is not PostgreSQL's SQL: the store opened on its own.
                    let empty = Store::connect(&postgres_url().await).await.unwrap();
                    let error = on_pool!(empty, |pool| sqlx::raw_sql(SQLITE[0].sql)
                        .execute(pool)
                        .await
                        .map(drop))
                    .unwrap_err();
                    assert!(error.to_string().contains("syntax error"), "{error}");
                }
            }
        }
    );

    on_both!(
        a_database_of_the_previous_release_opens_with_its_rows,
        |fresh: Store| async move {
            let url = match fresh.backend() {
                Backend::Sqlite => sqlite_url(),
                Backend::Postgres => postgres_url().await,
            };
            let without_rowid = match fresh.backend() {
                Backend::Sqlite => " WITHOUT ROWID",
                Backend::Postgres => "",
            };
            let old = Store::connect(&url).await.unwrap();
            for statement in PREVIOUS_RELEASE_V1 {
                let statement =
                    sqlx::AssertSqlSafe(statement.replace("{without_rowid}", without_rowid));
                on_pool!(old, |pool| sqlx::raw_sql(statement)
                    .execute(pool)
                    .await
                    .map(drop))
                .unwrap();
            }
            old.close().await;

            // Opened by this release: nothing to apply, the same schema as a new database, and
            // the user's key and ledger as they were.
            for _reopen in 0..2 {
                let store = Store::open(&url).await.unwrap();
                assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
                assert_eq!(schema(&store).await, schema(&fresh).await);
                let key = store.get_key("key_kept").await.unwrap().unwrap();
                assert_eq!(
                    (key.name.as_str(), key.team.as_deref()),
                    ("kept", Some("platform"))
                );
                assert_eq!(key.budget.unwrap().usd, 5.0);
                assert_eq!(
                    store
                        .spent_since(SpendColumn::Key, "key_kept", 0)
                        .await
                        .unwrap(),
                    1_500
                );
                let log = store.logs(&LogFilter::default()).await.unwrap();
                assert_eq!(log.data[0].request_id.as_ref(), "req-kept");
                store.close().await;
            }
            // And the ledger takes new rows next to the old ones.
            let store = Store::open(&url).await.unwrap();
            store
                .insert_usage(&[row(1, "key_kept", None, "fast", 200)])
                .await
                .unwrap();
            assert_eq!(store.count_usage().await.unwrap(), 2);
        }
    );
}
