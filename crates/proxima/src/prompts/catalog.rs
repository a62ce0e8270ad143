//! The prompts runs are served from, held in memory: a run costs a map lookup, not a database
//! round trip.
//!
//! The catalog is read on the first run, and checked against the database again by a run that
//! comes more than `storage.sync_interval` after the last check: one query reads how many
//! versions the table holds and how many are deleted ([`Store::prompt_counts`]) — rows are only
//! ever added or marked deleted, so any save or deletion, on any replica, changes the pair — and
//! every prompt is read again only when it moved. So with replicas sharing PostgreSQL, a change
//! made on another one is served here within `sync_interval`; this replica's own admin writes
//! [`Catalog::invalidate`] it, and the next run sees them. With the database away, runs go on
//! with the prompts read last (checked again an interval later).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{PromptRecord, Store};

/// Live versions by prompt name, oldest first.
type Prompts = HashMap<String, Vec<Arc<PromptRecord>>>;

pub struct Catalog {
    store: Store,
    /// How long a check of the database holds.
    recheck: Duration,
    current: ArcSwap<Loaded>,
    /// Bumped by every admin write here: a check started before it is stale when it ends.
    generation: AtomicU64,
    /// One check at a time; runs that find the catalog stale meanwhile wait for its result.
    checking: tokio::sync::Mutex<()>,
}

/// The catalog as last read.
#[derive(Default)]
struct Loaded {
    prompts: Arc<Prompts>,
    /// The table's [`Store::prompt_counts`] when read; `None` before the first read.
    counts: Option<(i64, i64)>,
    /// When it was checked against the table, and the [`Catalog::generation`] then.
    checked: Option<(Instant, u64)>,
}

impl Catalog {
    pub fn new(store: Store, recheck: Duration) -> Catalog {
        Catalog {
            store,
            recheck,
            current: ArcSwap::from_pointee(Loaded::default()),
            generation: AtomicU64::new(0),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes the next run check the database: a prompt was saved or deleted here.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Version `version` of prompt `name`, or its latest: 404 `not_found` when there is none.
    pub async fn get(&self, name: &str, version: Option<i64>) -> Result<Arc<PromptRecord>> {
        let loaded = self.loaded().await?;
        let versions = loaded.prompts.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("there is no prompt `{name}`; GET /admin/prompts lists them"),
            )
        })?;
        let found = match version {
            None => versions.last(),
            Some(wanted) => versions.iter().find(|p| p.version == wanted),
        };
        found.cloned().ok_or_else(|| {
            let kept: Vec<String> = versions.iter().map(|p| p.version.to_string()).collect();
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "prompt `{name}` has no version {}: its versions are {}",
                    version.unwrap_or_default(),
                    kept.join(", ")
                ),
            )
            .with_param("version")
        })
    }

    /// The catalog, checked against the database if the last check is too old.
    async fn loaded(&self) -> Result<Arc<Loaded>> {
        let loaded = self.current.load_full();
        if self.is_fresh(&loaded) {
            return Ok(loaded);
        }
        let _turn = self.checking.lock().await;
        let loaded = self.current.load_full();
        if self.is_fresh(&loaded) {
            return Ok(loaded);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let next = match self.check(&loaded).await {
            Ok((prompts, counts)) => Loaded {
                prompts,
                counts: Some(counts),
                checked: Some((Instant::now(), generation)),
            },
            Err(e) if loaded.counts.is_some() => {
                tracing::warn!(error = %e.message, "cannot check the prompt templates in the database; runs use the ones read last");
                Loaded {
                    prompts: loaded.prompts.clone(),
                    counts: loaded.counts,
                    checked: Some((Instant::now(), generation)),
                }
            }
            Err(e) => return Err(e),
        };
        let next = Arc::new(next);
        self.current.store(next.clone());
        Ok(next)
    }

    fn is_fresh(&self, loaded: &Loaded) -> bool {
        loaded.checked.is_some_and(|(at, generation)| {
            generation == self.generation.load(Ordering::Acquire) && at.elapsed() < self.recheck
        })
    }

    /// The prompts as the database has them now: `loaded`'s if nothing was saved or deleted
    /// since it was read.
    async fn check(&self, loaded: &Loaded) -> Result<(Arc<Prompts>, (i64, i64))> {
        // Counted before reading: a write in between makes the next check read again, rather
        // than leave the counts of a newer table on older prompts.
        let counts = self.store.prompt_counts().await?;
        if loaded.counts == Some(counts) {
            return Ok((loaded.prompts.clone(), counts));
        }
        let mut prompts = Prompts::new();
        for prompt in self.store.live_prompts().await? {
            prompts
                .entry(prompt.name.clone())
                .or_default()
                .push(Arc::new(prompt));
        }
        Ok((Arc::new(prompts), counts))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::NewPrompt;
    use serde_json::json;

    fn new(name: &str, text: &str) -> NewPrompt {
        serde_json::from_value(json!({"name": name, "model": "chat", "template": text})).unwrap()
    }

    #[tokio::test]
    async fn runs_read_memory_and_see_writes_here_at_once_and_elsewhere_after_the_interval() {
        let store = crate::store::testing::sqlite().await;
        let catalog = Catalog::new(store.clone(), Duration::from_millis(300));
        let missing = catalog.get("greet", None).await.unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);

        store.create_prompt(&new("greet", "one")).await.unwrap();
        catalog.invalidate();
        assert_eq!(catalog.get("greet", None).await.unwrap().version, 1);

        // Saved by "another replica": not seen until the interval has passed.
        store.create_prompt(&new("greet", "two")).await.unwrap();
        assert_eq!(catalog.get("greet", None).await.unwrap().version, 1);
        let error = catalog.get("greet", Some(2)).await.unwrap_err();
        assert_eq!(error.param.as_deref(), Some("version"));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(catalog.get("greet", None).await.unwrap().version, 2);
        assert_eq!(
            catalog.get("greet", Some(1)).await.unwrap().template,
            crate::prompts::Template::Text("one".into())
        );

        // With the database gone, runs go on with what was read.
        store.close().await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(catalog.get("greet", None).await.unwrap().version, 2);
    }
}
