//! MCP sessions: opened by `initialize` (`Mcp-Session-Id` on the answer), ended by `DELETE
//! /mcp` or after an hour unused.
//!
//! A session only remembers the protocol revision agreed and who opened it: every request
//! still authenticates with its key, and a session id presented with another key is unknown
//! (404), so an id is no credential. Sessions live in the replica that made them and survive
//! config reloads; behind a load balancer, route `/mcp` by `Mcp-Session-Id` (a client told 404
//! initializes again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A session unused this long is forgotten.
const IDLE: Duration = Duration::from_secs(3600);
/// Sessions kept at most; past that the longest unused goes first.
const CAPACITY: usize = 10_000;

struct Session {
    /// The caller that opened it (its key id).
    owner: Arc<str>,
    version: &'static str,
    used: Instant,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for `owner` speaking `version`; returns its id.
    pub fn open(&self, owner: Arc<str>, version: &'static str) -> String {
        let id = format!("mcp-{:032x}", fastrand::u128(..));
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= CAPACITY {
            open.retain(|_, s| now.duration_since(s.used) < IDLE);
        }
        if open.len() >= CAPACITY {
            let oldest = open
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        open.insert(
            id.clone(),
            Session {
                owner,
                version,
                used: now,
            },
        );
        id
    }

    /// The protocol revision of session `id` when `owner` opened it and it is still open.
    pub fn resume(&self, id: &str, owner: &str) -> Option<&'static str> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let session = open.get_mut(id)?;
        if now.duration_since(session.used) >= IDLE {
            open.remove(id);
            return None;
        }
        if &*session.owner != owner {
            return None;
        }
        session.used = now;
        Some(session.version)
    }

    /// Ends session `id` of `owner`; `false` when there was none.
    pub fn close(&self, id: &str, owner: &str) -> bool {
        if self.resume(id, owner).is_none() {
            return false;
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_its_caller_until_closed() {
        let sessions = Sessions::default();
        let id = sessions.open(Arc::from("key_a"), "2025-06-18");
        assert_eq!(sessions.resume(&id, "key_a"), Some("2025-06-18"));
        assert_eq!(sessions.resume(&id, "key_b"), None, "another key");
        assert!(!sessions.close(&id, "key_b"));
        assert!(sessions.close(&id, "key_a"));
        assert_eq!(sessions.resume(&id, "key_a"), None, "closed");
        assert!(!sessions.close(&id, "key_a"));
    }
}
