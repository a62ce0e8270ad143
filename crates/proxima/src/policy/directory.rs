//! Virtual keys and teams, held in memory so that authenticating a request costs one hash and
//! one map probe, never a database round trip.
//!
//! Each replica reads what changed in the database every `storage.sync_interval` (rows whose
//! `updated_at` moved), so a key revoked anywhere stops working everywhere within about that
//! long. Changes made through this replica's admin API apply at once.
//!
//! A key not in memory may have been made on another replica since the last sync: it is looked
//! up in the database once, then joins the directory. Hashes found nowhere are remembered for
//! [`UNKNOWN_KEY_TTL`], so a flood of bad keys costs the database at most one lookup per
//! distinct key per period, and at most [`UNKNOWN_KEYS_CAPACITY`] per period in all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
// Looked up on every request by digests and team names the store issued: no need for SipHash.
use foldhash::HashMap as FastMap;

use super::auth::Caller;
use crate::clock::now_ms;
use crate::error::Result;
use crate::store::{hex, KeyRecord, Store, TeamRecord};

/// Rows changed this long before the newest change seen are read again: clocks of replicas
/// writing the database may disagree a little.
const CLOCK_SLACK_MS: i64 = 10_000;

/// How long a hash found neither in memory nor in the database is refused without a lookup.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(3);
/// Unknown hashes remembered at most. While that many are fresh, other unknown keys are refused
/// without a lookup (the periodic sync still brings new keys in).
pub const UNKNOWN_KEYS_CAPACITY: usize = 4096;

pub struct Directory {
    /// Active virtual keys by the SHA-256 of their secret.
    keys: ArcSwap<FastMap<[u8; 32], Arc<Caller>>>,
    teams: ArcSwap<FastMap<String, Arc<TeamRecord>>>,
    /// Hashes the database did not know, with when each may be looked up again.
    unknown: Mutex<FastMap<[u8; 32], Instant>>,
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
            unknown: Mutex::default(),
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

    /// The caller behind a key hash that [`Directory::key`] does not know: a key made on
    /// another replica since the last sync is read from the database and joins the directory.
    /// Hashes the database does not know either are not looked up again for a while.
    pub async fn look_up_key(&self, hash: &[u8; 32]) -> Option<Arc<Caller>> {
        if self.keys.load().contains_key(hash) {
            // Known here, so expired: the database has nothing newer to say before a sync.
            return None;
        }
        let now = Instant::now();
        {
            let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
            if unknown.get(hash).is_some_and(|until| *until > now) {
                return None;
            }
            if unknown.len() >= UNKNOWN_KEYS_CAPACITY {
                unknown.retain(|_, until| *until > now);
                if unknown.len() >= UNKNOWN_KEYS_CAPACITY {
                    return None;
                }
            }
        }
        let found = match self.store.find_key_by_hash(&hex(hash)).await {
            Ok(found) => found.filter(|record| record.is_active(now_ms())),
            Err(e) => {
                // Remembered as unknown too: a database in trouble is not asked again per request.
                tracing::debug!(error = %e.message, "cannot look a key up in the database");
                None
            }
        };
        let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
        match found {
            Some(record) => {
                unknown.remove(hash);
                drop(unknown);
                self.apply_key(&record);
                self.key(hash)
            }
            None => {
                unknown.insert(*hash, Instant::now() + UNKNOWN_KEY_TTL);
                None
            }
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
        if records
            .iter()
            .any(|r| r.revoked_at.is_none() && (r.tpm.is_some() || r.budget.is_some()))
        {
            crate::tokenizer::warm_up();
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
        if records
            .iter()
            .any(|r| r.deleted_at.is_none() && (r.tpm.is_some() || r.budget.is_some()))
        {
            crate::tokenizer::warm_up();
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
