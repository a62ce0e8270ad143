//! Virtual keys and teams, held in memory so that authenticating a request costs one hash and
//! one map probe, never a database round trip.
//!
//! Each replica reads what changed in the database every `storage.sync_interval` (rows whose
//! `updated_at` moved), so a key revoked anywhere stops working everywhere within about that
//! long. Changes made through this replica's admin API apply at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
// Looked up on every request by digests and team names the store issued: no need for SipHash.
use foldhash::HashMap as FastMap;

use super::auth::Caller;
use crate::clock::now_ms;
use crate::error::Result;
use crate::store::{KeyRecord, Store, TeamRecord};

/// Rows changed this long before the newest change seen are read again: clocks of replicas
/// writing the database may disagree a little.
const CLOCK_SLACK_MS: i64 = 10_000;

pub struct Directory {
    /// Active virtual keys by the SHA-256 of their secret.
    keys: ArcSwap<FastMap<[u8; 32], Arc<Caller>>>,
    teams: ArcSwap<FastMap<String, Arc<TeamRecord>>>,
    store: Store,
}

/// Where a sync has got to: the newest change seen, and each row's version.
#[derive(Default)]
struct Watermark {
    newest: i64,
    key_versions: HashMap<String, i64>,
    team_versions: HashMap<String, i64>,
}

impl Directory {
    /// Reads every key and team, then keeps them current in the background.
    pub async fn start(store: Store, interval: Duration) -> Result<Arc<Directory>> {
        let directory = Arc::new(Directory {
            keys: ArcSwap::from_pointee(FastMap::default()),
            teams: ArcSwap::from_pointee(FastMap::default()),
            store,
        });
        let mut mark = Watermark::default();
        directory.sync(&mut mark).await?;
        let weak = Arc::downgrade(&directory);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(interval).await;
                let Some(directory) = weak.upgrade() else {
                    return;
                };
                match directory.sync(&mut mark).await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("key and team changes are read from the database again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e.message, "cannot read key and team changes; serving the keys known so far");
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(directory)
    }

    /// The caller behind a virtual key's hash, if the key is active now.
    pub fn key(&self, hash: &[u8; 32]) -> Option<Arc<Caller>> {
        let keys = self.keys.load();
        let caller = keys.get(hash)?;
        match caller.expires_at {
            Some(at) if at <= now_ms() => None,
            _ => Some(caller.clone()),
        }
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.load().is_empty()
    }

    pub fn team(&self, name: &str) -> Option<Arc<TeamRecord>> {
        self.teams.load().get(name).cloned()
    }

    /// Applies a key change made through this replica, before the next sync would.
    pub fn apply_key(&self, record: &KeyRecord) {
        self.apply_keys(std::slice::from_ref(record));
    }

    /// Applies a team change made through this replica, before the next sync would.
    pub fn apply_team(&self, record: &TeamRecord) {
        self.apply_teams(std::slice::from_ref(record));
    }

    fn apply_keys(&self, records: &[KeyRecord]) {
        if records.is_empty() {
            return;
        }
        let mut keys = FastMap::clone(&self.keys.load());
        for record in records {
            let Some(digest) = hex_digest(&record.hash) else {
                continue;
            };
            // Revoked keys leave the map; expired ones stay until revoked (checked per request).
            if record.revoked_at.is_some() {
                keys.remove(&digest);
            } else {
                keys.insert(digest, Arc::new(Caller::from_key(record)));
            }
        }
        self.keys.store(Arc::new(keys));
    }

    fn apply_teams(&self, records: &[TeamRecord]) {
        if records.is_empty() {
            return;
        }
        let mut teams = FastMap::clone(&self.teams.load());
        for record in records {
            if record.deleted_at.is_some() {
                teams.remove(&record.name);
            } else {
                teams.insert(record.name.clone(), Arc::new(record.clone()));
            }
        }
        self.teams.store(Arc::new(teams));
    }

    async fn sync(&self, mark: &mut Watermark) -> Result<()> {
        let since = if mark.newest == 0 {
            i64::MIN
        } else {
            mark.newest - CLOCK_SLACK_MS
        };
        let keys: Vec<KeyRecord> = self
            .store
            .keys_changed_since(since)
            .await?
            .into_iter()
            .filter(|k| mark.key_versions.get(&k.id) != Some(&k.updated_at))
            .collect();
        let teams: Vec<TeamRecord> = self
            .store
            .teams_changed_since(since)
            .await?
            .into_iter()
            .filter(|t| mark.team_versions.get(&t.name) != Some(&t.updated_at))
            .collect();
        for key in &keys {
            mark.newest = mark.newest.max(key.updated_at);
            mark.key_versions.insert(key.id.clone(), key.updated_at);
        }
        for team in &teams {
            mark.newest = mark.newest.max(team.updated_at);
            mark.team_versions
                .insert(team.name.clone(), team.updated_at);
        }
        self.apply_keys(&keys);
        self.apply_teams(&teams);
        Ok(())
    }
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::{secret_digest, NewKey};

    #[tokio::test]
    async fn a_key_revoked_elsewhere_stops_working_after_one_sync() {
        let store = crate::store::testing::sqlite().await;
        let (record, secret) = store
            .create_key(&NewKey {
                name: "a".into(),
                ..NewKey::default()
            })
            .await
            .unwrap();
        let directory = Directory::start(store.clone(), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(
            directory.key(&secret_digest(&secret)).unwrap().id.as_ref(),
            record.id
        );
        // Another replica (here: the store directly) makes a key and revokes this one.
        let (_, second) = store
            .create_key(&NewKey {
                name: "b".into(),
                expires_at: Some(now_ms() - 1),
                ..NewKey::default()
            })
            .await
            .unwrap();
        store.revoke_key(&record.id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(directory.key(&secret_digest(&secret)).is_none(), "revoked");
        assert!(directory.key(&secret_digest(&second)).is_none(), "expired");
        assert!(directory.has_keys());
    }
}
