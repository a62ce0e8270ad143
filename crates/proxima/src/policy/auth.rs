//! Authentication by static keys, and model permissions.
//!
//! Keys are held only as SHA-256 hashes (high-entropy keys need no slow KDF), so a lookup costs
//! one hash and one map probe, and no key is kept in memory in the clear.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

/// The authenticated caller of a request.
#[derive(Debug)]
pub struct Caller {
    /// The key's name (`master` for the master key, `anonymous` without keys).
    pub name: String,
    pub team: Option<String>,
    /// Public models allowed; `None` means all.
    pub models: Option<HashSet<String>>,
    pub admin: bool,
}

pub struct Auth {
    keys: HashMap<[u8; 32], Arc<Caller>>,
    /// Set when no key is configured at all (only allowed on loopback listeners).
    anonymous: Option<Arc<Caller>>,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Auth {
    pub fn from_config(config: &Config) -> Auth {
        let mut keys = HashMap::new();
        if let Some(master) = &config.server.master_key {
            keys.insert(
                hash(master.expose()),
                Arc::new(Caller {
                    name: "master".into(),
                    team: None,
                    models: None,
                    admin: true,
                }),
            );
        }
        for (name, key) in &config.keys {
            keys.insert(
                hash(key.key.expose()),
                Arc::new(Caller {
                    name: name.clone(),
                    team: key.team.clone(),
                    models: key.models.as_ref().map(|m| m.iter().cloned().collect()),
                    admin: false,
                }),
            );
        }
        let anonymous = keys.is_empty().then(|| {
            Arc::new(Caller {
                name: "anonymous".into(),
                team: None,
                models: None,
                admin: false,
            })
        });
        Auth { keys, anonymous }
    }

    /// The caller behind `Authorization: Bearer KEY` or `x-api-key: KEY`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>> {
        if let Some(anonymous) = &self.anonymous {
            // No keys configured: whatever key an SDK insists on sending is accepted.
            return Ok(anonymous.clone());
        }
        let key = presented_key(headers).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidApiKey,
                "no API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`",
            )
        })?;
        self.keys.get(&hash(key)).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidApiKey,
                "the API key is not valid: it is unknown, revoked or expired",
            )
        })
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        return (!token.is_empty()).then_some(token);
    }
    let value = headers.get("x-api-key")?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

impl Caller {
    /// Whether the caller may use `public` (or the wildcard model `pattern` it matched).
    pub fn authorize_model(&self, public: &str, pattern: &str) -> Result<()> {
        match &self.models {
            Some(allowed) if !allowed.contains(public) && !allowed.contains(pattern) => {
                Err(Error::new(
                    ErrorKind::ModelNotAllowed,
                    format!("this key may not use model `{public}`"),
                )
                .with_param("model"))
            }
            _ => Ok(()),
        }
    }
}
