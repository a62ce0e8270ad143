//! What outlives a config reload: the database, the key directory, the shared rate-limit and
//! budget counters, the ledger writer, the conversations in flight, the response cache, the MCP
//! sessions and the telemetry. Built once at start from `[storage]` and `[telemetry]`; a change
//! to either takes effect at the next restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::cache::Cache;
use crate::config::StorageConfig;
use crate::context::Conversations;
use crate::error::Result;
use crate::policy::limits::{Limiter, RedisStatus, Scope, SpendLookup};
use crate::policy::Directory;
use crate::prompts::catalog::Catalog;
use crate::retrieval::index::Indexes;
use crate::store::{SpendColumn, Store};
use crate::telemetry::Telemetry;
use crate::usage::Ledger;

pub struct Services {
    pub store: Store,
    pub directory: Arc<Directory>,
    pub limiter: Arc<Limiter>,
    pub ledger: Arc<Ledger>,
    /// Conversation turns in flight and summaries being written.
    pub conversations: Arc<Conversations>,
    /// The in-memory indexes of the vector stores searched here.
    pub indexes: Arc<Indexes>,
    /// Turns for files being added to vector stores.
    pub ingestion: Arc<Semaphore>,
    /// The response cache's entries: in Redis with the limits when configured, else here.
    pub cache: Arc<Cache>,
    /// The prompt templates runs are served from.
    pub prompts: Arc<Catalog>,
    /// Metrics and the trace exporter (from `[telemetry]`, also kept until restart).
    pub telemetry: Arc<Telemetry>,
    /// The sessions of `/mcp` clients.
    pub mcp_sessions: crate::mcp::Sessions,
    /// What these were built from, to tell when a reload asks for something else.
    pub storage: StorageConfig,
}

impl Services {
    pub async fn start(
        storage: &StorageConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Services>> {
        let store = Store::open(storage.database.expose()).await?;
        let directory = Directory::start(store.clone(), storage.sync_interval.0).await?;
        let spend: SpendLookup = {
            let store = store.clone();
            Arc::new(move |scope: Scope, from: i64| {
                let store = store.clone();
                Box::pin(async move {
                    let (column, name) = match &scope {
                        Scope::Key(name) => (SpendColumn::Key, name),
                        Scope::Team(name) => (SpendColumn::Team, name),
                        Scope::Model(name) => (SpendColumn::Model, name),
                    };
                    store.spent_since(column, name, from).await
                })
            })
        };
        let limiter = Limiter::new(storage.redis.as_ref().map(|r| r.expose()), spend).await;
        let cache = Arc::new(Cache::new(limiter.shared_redis()));
        let ledger = Ledger::start(store.clone(), &storage.ledger, spill_path(storage));
        let prompts = Arc::new(Catalog::new(store.clone(), storage.sync_interval.0));
        Ok(Arc::new(Services {
            store,
            directory,
            limiter,
            ledger,
            conversations: Arc::default(),
            indexes: Arc::new(Indexes::new(storage.sync_interval.0)),
            ingestion: Arc::new(Semaphore::new(crate::retrieval::ingest::CONCURRENT_FILES)),
            cache,
            prompts,
            telemetry,
            mcp_sessions: crate::mcp::Sessions::default(),
            storage: storage.clone(),
        }))
    }

    /// Writes out the usage records still queued (to the spill file if the database is away)
    /// and exports the spans still queued.
    pub async fn shutdown(&self, deadline: Duration) {
        tokio::join!(
            self.ledger.shutdown(deadline),
            self.telemetry.flush(deadline)
        );
        self.store.close().await;
    }

    /// Problems `/health/ready` reports: the database refusing writes, Redis away.
    pub fn health(&self) -> serde_json::Value {
        let ledger = self.ledger.status();
        let redis = match self.limiter.redis_status() {
            RedisStatus::NotConfigured => serde_json::Value::Null,
            RedisStatus::Connected => "ok".into(),
            RedisStatus::Degraded(reason) => {
                format!("unreachable, limits are enforced per replica: {reason}").into()
            }
        };
        serde_json::json!({
            "database": if ledger.database_reachable { "ok" } else { "unreachable" },
            "redis": redis,
            "usage_records_queued": ledger.queued,
            "usage_records_spilled": ledger.spilled,
        })
    }
}

/// The spill file: configured, else beside an SQLite database, else in the working directory.
fn spill_path(storage: &StorageConfig) -> PathBuf {
    if let Some(path) = &storage.ledger.spill_file {
        return path.clone();
    }
    let database = storage.database.expose();
    match database.strip_prefix("sqlite://") {
        Some(file) if !file.contains(":memory:") => {
            let file = file.split('?').next().unwrap_or(file);
            PathBuf::from(format!("{file}.ledger.spill"))
        }
        _ => PathBuf::from("proxima-ledger.spill"),
    }
}
