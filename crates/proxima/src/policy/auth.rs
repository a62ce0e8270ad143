//! Authentication — static keys from the config, virtual keys from the database (through the
//! [`Directory`]), JWTs from an identity provider — and model permissions.
//!
//! Keys are held only as SHA-256 hashes (high-entropy keys need no slow KDF), so a lookup costs
//! one hash and one map probe, and no key is kept in memory in the clear.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::HeaderMap;

use super::directory::Directory;
use super::jwt::JwtVerifier;
use crate::config::{BudgetConfig, Config, KeyConfig, PiiOverride};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{secret_digest, KeyRecord, TeamRecord};

/// The authenticated caller of a request.
#[derive(Debug, Default)]
pub struct Caller {
    /// What the ledger records as the key: a virtual key's id, a static key's name, `master`,
    /// `anonymous`, or `jwt:SUBJECT`.
    pub id: Arc<str>,
    /// The key's name.
    pub name: Arc<str>,
    pub team: Option<Arc<str>>,
    /// Public models allowed; `None` means all.
    pub models: Option<HashSet<String>>,
    pub admin: bool,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<BudgetConfig>,
    /// Epoch milliseconds after which the key no longer works.
    pub expires_at: Option<i64>,
    /// Regions whose providers may serve the key; `None` means any.
    pub regions: Option<Vec<String>>,
    /// The key's own PII policy.
    pub pii: Option<PiiOverride>,
    /// Globs over the tool names of `/mcp` the key may list and call; `None` means all.
    pub mcp_tools: Option<Vec<String>>,
}

impl Caller {
    fn named(name: &str, admin: bool) -> Caller {
        let name: Arc<str> = Arc::from(name);
        Caller {
            id: name.clone(),
            name,
            admin,
            ..Caller::default()
        }
    }

    /// The master key's caller.
    pub fn master() -> Caller {
        Caller::named("master", true)
    }

    fn from_static(name: &str, key: &KeyConfig) -> Caller {
        Caller {
            team: key.team.as_deref().map(Arc::from),
            models: key.models.as_ref().map(|m| m.iter().cloned().collect()),
            rpm: key.rpm,
            tpm: key.tpm,
            budget: key.budget,
            regions: key.regions.clone(),
            pii: key.pii.clone(),
            mcp_tools: key.mcp_tools.clone(),
            ..Caller::named(name, false)
        }
    }

    pub fn from_key(record: &KeyRecord) -> Caller {
        Caller {
            id: Arc::from(record.id.as_str()),
            name: Arc::from(record.name.as_str()),
            team: record.team.as_deref().map(Arc::from),
            models: record.models.as_ref().map(|m| m.iter().cloned().collect()),
            admin: record.admin,
            rpm: record.rpm,
            tpm: record.tpm,
            budget: record.budget,
            expires_at: record.expires_at,
            regions: record.regions.clone(),
            pii: record.pii.clone(),
            mcp_tools: record.mcp_tools.clone(),
        }
    }

    fn from_jwt(identity: super::jwt::JwtIdentity) -> Caller {
        Caller {
            id: Arc::from(format!("jwt:{}", identity.subject)),
            team: identity.team.map(Arc::from),
            models: identity.models.map(|m| m.into_iter().collect()),
            expires_at: Some(identity.expires_at.saturating_mul(1000)),
            ..Caller::named(&identity.subject, false)
        }
    }
}

const VIRTUAL_KEYS_EXIST: &str = "the database holds virtual keys";

/// The credentials a config defines: rebuilt with the gateway on every reload.
pub struct Auth {
    keys: foldhash::HashMap<[u8; 32], Arc<Caller>>,
    jwt: Option<Arc<JwtVerifier>>,
    /// Set when no key is configured at all (only allowed on loopback listeners).
    anonymous: Option<Arc<Caller>>,
    /// Why every request needs a key whatever the database holds; `None` with `anonymous`.
    keys_required_because: Option<&'static str>,
    /// Whether the end of anonymous access (the first virtual key) has been logged.
    told_anonymous_ended: AtomicBool,
}

impl Auth {
    pub fn from_config(config: &Config, jwt: Option<Arc<JwtVerifier>>) -> Auth {
        let mut keys = foldhash::HashMap::default();
        if let Some(master) = &config.server.master_key {
            keys.insert(secret_digest(master.expose()), Arc::new(Caller::master()));
        }
        for (name, key) in &config.keys {
            keys.insert(
                secret_digest(key.key.expose()),
                Arc::new(Caller::from_static(name, key)),
            );
        }
        let keys_required_because = if config.server.master_key.is_some() {
            Some("`server.master_key` is set")
        } else if !config.keys.is_empty() {
            Some("static keys are configured in [keys]")
        } else if jwt.is_some() {
            Some("[auth.jwt] is configured")
        } else {
            None
        };
        let anonymous = keys_required_because
            .is_none()
            .then(|| Arc::new(Caller::named("anonymous", false)));
        Auth {
            keys,
            jwt,
            anonymous,
            keys_required_because,
            told_anonymous_ended: AtomicBool::new(false),
        }
    }

    /// Why a request without a valid key is refused; `None` while requests are served
    /// anonymously (no key configured and no virtual key in the database).
    pub fn keys_required_because(&self, directory: &Directory) -> Option<&'static str> {
        self.keys_required_because
            .or_else(|| directory.has_keys().then_some(VIRTUAL_KEYS_EXIST))
    }

    /// Logs whether requests need a key, and why: a client that gets 401 where it expected
    /// anonymous access finds the reason in the log.
    pub fn log_access(&self, directory: &Directory) {
        match self.keys_required_because(directory) {
            Some(why) => {
                self.told_anonymous_ended.store(true, Ordering::Relaxed);
                tracing::info!("anonymous access is off: every request needs an API key, because {why}");
            }
            None => tracing::info!(
                "anonymous access is on: requests need no API key, because no key is configured and the database holds no virtual key"
            ),
        }
    }

    /// The caller behind `Authorization: Bearer KEY` or `x-api-key: KEY`: a static key, a
    /// virtual key from `directory`, or a JWT.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        directory: &Directory,
    ) -> Result<Arc<Caller>> {
        match self.authenticate_now(headers, directory) {
            Some(known) => known,
            None => self.authenticate_later(headers, directory).await,
        }
    }

    /// The rest of [`Auth::authenticate`], for a request [`Auth::authenticate_now`] could not
    /// tell without waiting: a JWT to verify, or a key to look up in the database.
    pub async fn authenticate_later(
        &self,
        headers: &HeaderMap,
        directory: &Directory,
    ) -> Result<Arc<Caller>> {
        // `authenticate_now` answers for a request without a key.
        let key = presented_key(headers).unwrap_or_default();
        if let Some(jwt) = &self.jwt {
            if JwtVerifier::looks_like_jwt(key) {
                return jwt
                    .verify(key)
                    .await
                    .map(|id| Arc::new(Caller::from_jwt(id)));
            }
        }
        // Made on another replica since the last sync?
        if let Some(caller) = directory.look_up_key(&secret_digest(key)).await {
            return Ok(caller);
        }
        Err(Error::new(
            ErrorKind::InvalidApiKey,
            "the API key is not valid: it is unknown, revoked or expired",
        ))
    }

    /// [`Auth::authenticate`] as far as it goes without waiting: no key needed, a missing key,
    /// a static key, a virtual key in memory. `None` when the answer takes a wait: a JWT to
    /// verify, or a key to look up in the database.
    pub fn authenticate_now(
        &self,
        headers: &HeaderMap,
        directory: &Directory,
    ) -> Option<Result<Arc<Caller>>> {
        if let Some(anonymous) = &self.anonymous {
            if !directory.has_keys() {
                // No keys anywhere: whatever key an SDK insists on sending is accepted.
                return Some(Ok(anonymous.clone()));
            }
            if !self.told_anonymous_ended.load(Ordering::Relaxed)
                && !self.told_anonymous_ended.swap(true, Ordering::Relaxed)
            {
                tracing::warn!("anonymous access is off from now on: every request needs an API key, because {VIRTUAL_KEYS_EXIST}");
            }
        }
        let Some(key) = presented_key(headers) else {
            return Some(Err(Error::new(
                ErrorKind::InvalidApiKey,
                "no API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`",
            )));
        };
        let digest = secret_digest(key);
        if let Some(caller) = self.keys.get(&digest) {
            return Some(Ok(caller.clone()));
        }
        directory.key(&digest).map(Ok)
    }
}

/// Anthropic's header for the API key, which its SDK sends instead of `authorization`.
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

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
    let value = headers.get(X_API_KEY)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

impl Caller {
    /// Whether the caller, and its team, may use `public` (or the wildcard model `pattern` it
    /// matched).
    pub fn authorize_model(
        &self,
        public: &str,
        pattern: &str,
        team: Option<&TeamRecord>,
    ) -> Result<()> {
        let refuse = |who: String| {
            Err(Error::new(
                ErrorKind::ModelNotAllowed,
                format!("{who} may not use model `{public}`"),
            )
            .with_param("model"))
        };
        if let Some(allowed) = &self.models {
            if !allowed.contains(public) && !allowed.contains(pattern) {
                return refuse("this key".into());
            }
        }
        if let Some(team) = team {
            if let Some(allowed) = &team.models {
                if !allowed.iter().any(|m| m == public || m == pattern) {
                    return refuse(format!("team `{}`", team.name));
                }
            }
        }
        Ok(())
    }
}
