//! JWT / OIDC bearer tokens: signature checked against the identity provider's keys (a JWKS
//! fetched over HTTP, or one PEM public key), standard claims validated, and the caller read from
//! claims.
//!
//! Verification costs a public-key operation, so a verified token is remembered (by its SHA-256,
//! never in the clear) until it expires. The JWKS is refetched on a timer and when a token names a
//! key we do not know (the IdP rotated its keys), but at most once per [`UNKNOWN_KID_GAP`] for
//! unknown keys, so tokens with made-up `kid`s cannot make the gateway hammer the IdP.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::JwtConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::http_client::{source_chain, HttpClient, HttpError};
use crate::store::secret_digest;

/// Longer bearer values are refused before any parsing: real tokens are a few KiB at most.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Verified tokens remembered at most; beyond that the cache is pruned (or cleared).
const CACHE_CAPACITY: usize = 10_000;
/// Least time between two JWKS fetches caused by unknown `kid`s.
const UNKNOWN_KID_GAP: Duration = Duration::from_secs(10);
/// A failed periodic fetch is tried again this soon (or at `jwks_refresh`, if shorter).
const RETRY_FAILED_FETCH: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS is a few KiB; a larger answer is not one.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The `sub` claim.
    pub subject: String,
    /// The configured team claim, when present.
    pub team: Option<String>,
    /// Public models allowed; `None` (claim absent) means all.
    pub models: Option<Vec<String>>,
    /// The token's `exp`, in seconds since the epoch.
    pub expires_at: i64,
}

/// One verification key and the algorithms it may verify.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The keys of one JWKS fetch.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// The key for tokens without a `kid`: only when the set holds exactly one key.
    only: Option<Arc<Key>>,
    len: usize,
    /// Bumped by every successful fetch (0: never fetched), so a request that waited for a
    /// fetch can tell whether one happened meanwhile.
    generation: u64,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => self.only.clone(),
        }
    }
}

enum Source {
    Pem(Arc<Key>),
    Jwks(Jwks),
}

struct Jwks {
    uri: Uri,
    http: Arc<HttpClient>,
    refresh_every: Duration,
    keys: ArcSwap<KeySet>,
    /// Held for the whole of a fetch: concurrent requests for unknown keys share one fetch.
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// The last fetch started for an unknown `kid`, successful or not.
    last_on_demand: Option<Instant>,
    last_success: Option<Instant>,
}

/// Verifies bearer JWTs for one configured issuer.
pub struct JwtVerifier {
    source: Source,
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    team_claim: String,
    models_claim: String,
    leeway: u64,
    /// SHA-256 of a verified token → who it is; entries hold until the token's `exp`.
    verified: RwLock<HashMap<[u8; 32], JwtIdentity>>,
    /// For the background refresher, which must not keep the verifier alive.
    me: Weak<JwtVerifier>,
    refresher_started: AtomicBool,
}

fn rejected(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidApiKey, message)
}

fn config_error(message: impl Into<String>) -> Error {
    Error::internal(message)
}

impl JwtVerifier {
    /// Builds from config; with a `jwks_url`, fetches the JWKS once in the background (does not
    /// block startup on it; a failure is logged and retried on first use) and again every
    /// `jwks_refresh`.
    pub fn new(config: &JwtConfig, http: Arc<HttpClient>) -> Result<Arc<JwtVerifier>> {
        if config.issuer.trim().is_empty() {
            return Err(config_error("`auth.jwt.issuer` must not be empty"));
        }
        if config.audience.trim().is_empty() {
            return Err(config_error("`auth.jwt.audience` must not be empty"));
        }
        let algorithms = parse_algorithms(&config.algorithms)?;
        let source = match (&config.jwks_url, &config.public_key) {
            (Some(_), Some(_)) => {
                return Err(config_error(
                    "`auth.jwt` has both `jwks_url` and `public_key`: set only one",
                ))
            }
            (None, None) => {
                return Err(config_error(
                    "`auth.jwt` needs `jwks_url` (the identity provider's key set) or `public_key` (a PEM)",
                ))
            }
            (Some(url), None) => {
                let uri = url.parse::<Uri>().map_err(|e| {
                    config_error(format!("`auth.jwt.jwks_url` is not a URL: {e}"))
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(config_error(
                        "`auth.jwt.jwks_url` must be an http:// or https:// URL",
                    ));
                }
                Source::Jwks(Jwks {
                    uri,
                    http,
                    // A zero interval would spin the refresher.
                    refresh_every: config.jwks_refresh.0.max(Duration::from_secs(1)),
                    keys: ArcSwap::from_pointee(KeySet::default()),
                    fetch: tokio::sync::Mutex::new(FetchState::default()),
                })
            }
            (None, Some(pem)) => Source::Pem(Arc::new(key_from_pem(pem, &algorithms)?)),
        };
        let verifier = Arc::new_cyclic(|me| JwtVerifier {
            source,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            algorithms,
            team_claim: config.team_claim.clone(),
            models_claim: config.models_claim.clone(),
            leeway: config.leeway.0.as_secs(),
            verified: RwLock::new(HashMap::new()),
            me: me.clone(),
            refresher_started: AtomicBool::new(false),
        });
        verifier.start_refresher();
        Ok(verifier)
    }

    /// Cheap syntactic test: three base64url segments whose header decodes to JSON with `alg`,
    /// so opaque API keys are never sent to [`JwtVerifier::verify`].
    pub fn looks_like_jwt(token: &str) -> bool {
        if token.len() > MAX_TOKEN_BYTES || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return false;
        }
        let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        if !token.bytes().all(base64url) || token.split('.').any(str::is_empty) {
            return false;
        }
        jsonwebtoken::decode_header(token).is_ok()
    }

    /// Verifies the signature (only with the configured algorithms), `iss`, `aud`, `exp`
    /// (required) and `nbf` with the configured leeway, and maps the claims to an identity.
    /// Errors never contain the token.
    pub async fn verify(&self, token: &str) -> Result<JwtIdentity> {
        // Requests may arrive before anything started the refresher (no runtime at `new`).
        self.start_refresher();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(rejected("the token is too long to be a JWT"));
        }
        let digest = secret_digest(token);
        let now = now_secs();
        if let Some(identity) = self.cached(&digest) {
            if now > identity.expires_at.saturating_add(self.leeway as i64) {
                return Err(rejected("the token has expired"));
            }
            return Ok(identity);
        }

        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| rejected("the token is malformed: it is not a signed JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(rejected(format!(
                "the token is signed with {:?}, which is not accepted (accepted: {})",
                header.alg,
                algorithm_names(&self.algorithms)
            )));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        if !key.algorithms.contains(&header.alg) {
            return Err(rejected(format!(
                "the token's algorithm {:?} does not match its signing key",
                header.alg
            )));
        }

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| self.reason(e.kind()))?;
        let identity = self.identity(&data.claims)?;
        self.remember(digest, identity.clone(), now);
        Ok(identity)
    }

    /// Why `jsonwebtoken` refused a token, in words for the caller.
    fn reason(&self, kind: &JwtErrorKind) -> Error {
        match kind {
            JwtErrorKind::ExpiredSignature => rejected("the token has expired"),
            JwtErrorKind::ImmatureSignature => {
                rejected("the token is not valid yet: its `nbf` is in the future")
            }
            JwtErrorKind::InvalidAudience => rejected(format!(
                "the token is for another audience: `aud` must contain `{}`",
                self.audience
            )),
            JwtErrorKind::InvalidIssuer => rejected(format!(
                "wrong issuer: the token was not issued by `{}`",
                self.issuer
            )),
            JwtErrorKind::InvalidSignature => {
                rejected("bad signature: the token was not signed by the identity provider's key")
            }
            JwtErrorKind::MissingRequiredClaim(claim) => {
                rejected(format!("the token has no `{claim}` claim"))
            }
            JwtErrorKind::InvalidAlgorithm => {
                rejected("the token's algorithm does not match its signing key")
            }
            JwtErrorKind::InvalidToken
            | JwtErrorKind::Base64(_)
            | JwtErrorKind::Json(_)
            | JwtErrorKind::Utf8(_) => rejected("the token is malformed: it is not a signed JWT"),
            // A key the IdP published but ring cannot use, or the like: say so without detail.
            _ => rejected("the token cannot be verified with the identity provider's key"),
        }
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<JwtIdentity> {
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(rejected("the token's `sub` claim is empty or not a string")),
        };
        let team = match claim(claims, &self.team_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(team)) if team.is_empty() => None,
            Some(Value::String(team)) => Some(team.clone()),
            Some(_) => {
                return Err(rejected(format!(
                    "the token's `{}` claim (the team) is not a string",
                    self.team_claim
                )))
            }
        };
        let not_models = || {
            rejected(format!(
                "the token's `{}` claim (the allowed models) is not a list of model names",
                self.models_claim
            ))
        };
        let models = match claim(claims, &self.models_claim) {
            None | Some(Value::Null) => None,
            // Some IdPs can only emit strings: "fast smart" or "fast,smart".
            Some(Value::String(list)) => Some(
                list.split([' ', ','])
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|m| m.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(not_models)?,
            ),
            Some(_) => return Err(not_models()),
        };
        // `decode` checked `exp` is a number; fractional seconds are allowed by the RFC.
        let expires_at = claims
            .get("exp")
            .and_then(|exp| exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64)))
            .ok_or_else(|| rejected("the token's `exp` claim is not a number"))?;
        Ok(JwtIdentity {
            subject,
            team,
            models,
            expires_at,
        })
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<JwtIdentity> {
        let verified = self.verified.read().unwrap_or_else(|e| e.into_inner());
        verified.get(digest).cloned()
    }

    fn remember(&self, digest: [u8; 32], identity: JwtIdentity, now: i64) {
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_CAPACITY {
            let leeway = self.leeway as i64;
            verified.retain(|_, id| id.expires_at.saturating_add(leeway) >= now);
            // Still mostly full: clear rather than prune on every insert.
            if verified.len() >= CACHE_CAPACITY * 3 / 4 {
                verified.clear();
            }
        }
        verified.insert(digest, identity);
    }

    fn forget_verified(&self) {
        self.verified
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The key that signed a token with this `kid`; an unknown one refreshes the JWKS first.
    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<Key>> {
        let jwks = match &self.source {
            Source::Pem(key) => return Ok(key.clone()),
            Source::Jwks(jwks) => jwks,
        };
        let seen = {
            let keys = jwks.keys.load();
            if let Some(key) = keys.find(kid) {
                return Ok(key);
            }
            keys.generation
        };
        self.refresh_for_unknown_kid(jwks, seen).await;
        let keys = jwks.keys.load();
        if let Some(key) = keys.find(kid) {
            return Ok(key);
        }
        if keys.generation == 0 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "cannot verify the token now: the identity provider's signing keys (JWKS) could not be fetched; try again shortly",
            )
            .with_retry_after(Some(UNKNOWN_KID_GAP)));
        }
        Err(match kid {
            Some(kid) => rejected(format!(
                "the token's signing key `{}` is unknown",
                printable(kid)
            )),
            None => rejected(format!(
                "the token has no `kid` and the identity provider publishes {} keys, so its signing key cannot be chosen",
                keys.len
            )),
        })
    }

    /// Fetches the JWKS for a `kid` not in the set loaded at generation `seen`, unless a fetch
    /// finished meanwhile or one for an unknown `kid` started less than [`UNKNOWN_KID_GAP`] ago.
    async fn refresh_for_unknown_kid(&self, jwks: &Jwks, seen: u64) {
        let mut state = jwks.fetch.lock().await;
        if jwks.keys.load().generation != seen {
            return;
        }
        let now = Instant::now();
        if state
            .last_on_demand
            .is_some_and(|at| now.duration_since(at) < UNKNOWN_KID_GAP)
        {
            return;
        }
        state.last_on_demand = Some(now);
        self.fetch_and_store(jwks, &mut state).await;
    }

    /// The timer's refresh; returns when the next is due.
    async fn periodic_refresh(&self, jwks: &Jwks) -> Instant {
        let mut state = jwks.fetch.lock().await;
        // An on-demand fetch may just have happened (at startup, the first request's).
        if let Some(at) = state.last_success {
            if at.elapsed() < jwks.refresh_every {
                return at + jwks.refresh_every;
            }
        }
        if self.fetch_and_store(jwks, &mut state).await {
            Instant::now() + jwks.refresh_every
        } else {
            Instant::now() + jwks.refresh_every.min(RETRY_FAILED_FETCH)
        }
    }

    /// One fetch, with the fetch lock held (`state` is its guard). Keeps the old keys on failure.
    async fn fetch_and_store(&self, jwks: &Jwks, state: &mut FetchState) -> bool {
        match fetch_jwks(jwks, &self.algorithms).await {
            Ok(mut fresh) => {
                let old = jwks.keys.load_full();
                fresh.generation = old.generation + 1;
                let removed = old.by_kid.keys().any(|kid| !fresh.by_kid.contains_key(kid));
                if fresh.len == 0 {
                    tracing::warn!(url = %jwks.uri, accepted = %algorithm_names(&self.algorithms), "the JWKS has no key for the accepted algorithms");
                } else {
                    tracing::debug!(url = %jwks.uri, keys = fresh.len, "JWKS fetched");
                }
                jwks.keys.store(Arc::new(fresh));
                state.last_success = Some(Instant::now());
                if removed {
                    // A key the IdP withdrew must stop working now, not when its tokens expire.
                    self.forget_verified();
                }
                true
            }
            Err(error) => {
                tracing::warn!(url = %jwks.uri, %error, "cannot fetch the JWKS; keeping the keys we have");
                false
            }
        }
    }

    fn start_refresher(&self) {
        if !matches!(self.source, Source::Jwks(_)) || self.refresher_started.load(Ordering::Relaxed)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(refresh_loop(self.me.clone()));
    }

    #[cfg(test)]
    fn generation(&self) -> u64 {
        match &self.source {
            Source::Jwks(jwks) => jwks.keys.load().generation,
            Source::Pem(_) => 0,
        }
    }
}

/// Fetches the JWKS now and every `jwks_refresh`; ends once the verifier is dropped.
async fn refresh_loop(verifier: Weak<JwtVerifier>) {
    loop {
        let next = {
            let Some(verifier) = verifier.upgrade() else {
                return;
            };
            let Source::Jwks(jwks) = &verifier.source else {
                return;
            };
            verifier.periodic_refresh(jwks).await
        };
        tokio::time::sleep_until(next).await;
    }
}

async fn fetch_jwks(jwks: &Jwks, accepted: &[Algorithm]) -> std::result::Result<KeySet, String> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, read_jwks(jwks))
        .await
        .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
    parse_jwks(&body, accepted)
}

/// The JWKS document's bytes, refused once larger than [`MAX_JWKS_BYTES`].
async fn read_jwks(jwks: &Jwks) -> std::result::Result<Vec<u8>, String> {
    let failed = |e: HttpError| source_chain(&e);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    let response = jwks
        .http
        .get(jwks.uri.clone(), headers)
        .await
        .map_err(failed)?;
    if !response.status.is_success() {
        return Err(format!("the JWKS URL answered {}", response.status));
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(failed)?;
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Only what key selection needs; other members are ignored.
#[derive(Deserialize)]
struct JwkSetDocument {
    keys: Vec<Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The usable signing keys of a JWKS document. Keys we cannot use (encryption keys, other
/// curves, algorithms not accepted) are skipped, not fatal: IdPs publish such keys too.
fn parse_jwks(body: &[u8], accepted: &[Algorithm]) -> std::result::Result<KeySet, String> {
    let document: JwkSetDocument =
        serde_json::from_slice(body).map_err(|e| format!("the JWKS is not a JWK set: {e}"))?;
    let mut set = KeySet::default();
    let mut kidless = Vec::new();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if jwk.usage.as_deref().is_some_and(|usage| usage != "sig") {
            continue;
        }
        let key = match key_from_jwk(&jwk, accepted) {
            Ok(Some(key)) => Arc::new(key),
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(kid = ?jwk.kid, %error, "skipping a JWKS key");
                continue;
            }
        };
        set.len += 1;
        match jwk.kid {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => kidless.push(key),
        }
    }
    if set.len == 1 {
        set.only = kidless
            .pop()
            .or_else(|| set.by_kid.values().next().cloned());
    }
    Ok(set)
}

/// A verification key from a JWK; `None` for kinds we do not verify with.
fn key_from_jwk(jwk: &Jwk, accepted: &[Algorithm]) -> std::result::Result<Option<Key>, String> {
    let (decoding, family): (DecodingKey, &[Algorithm]) =
        match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => (
                DecodingKey::from_rsa_components(
                    member(jwk, &jwk.n, "n")?,
                    member(jwk, &jwk.e, "e")?,
                )
                .map_err(|e| e.to_string())?,
                RSA_ALGORITHMS,
            ),
            ("EC", Some(curve @ ("P-256" | "P-384"))) => {
                let (size, algorithms) = if curve == "P-256" {
                    (32, &[Algorithm::ES256][..])
                } else {
                    (48, &[Algorithm::ES384][..])
                };
                (
                    DecodingKey::from_ec_components(
                        coordinate(jwk, &jwk.x, "x", size)?,
                        coordinate(jwk, &jwk.y, "y", size)?,
                    )
                    .map_err(|e| e.to_string())?,
                    algorithms,
                )
            }
            ("OKP", Some("Ed25519")) => (
                DecodingKey::from_ed_components(coordinate(jwk, &jwk.x, "x", 32)?)
                    .map_err(|e| e.to_string())?,
                &[Algorithm::EdDSA][..],
            ),
            _ => return Ok(None),
        };
    let mut algorithms: Vec<Algorithm> = family
        .iter()
        .copied()
        .filter(|alg| accepted.contains(alg))
        .collect();
    // A key published for one algorithm verifies only that one.
    if let Some(alg) = &jwk.alg {
        match Algorithm::from_str(alg) {
            Ok(alg) => algorithms.retain(|a| *a == alg),
            Err(_) => algorithms.clear(),
        }
    }
    Ok((!algorithms.is_empty()).then_some(Key {
        decoding,
        algorithms,
    }))
}

fn member<'a>(
    jwk: &Jwk,
    value: &'a Option<String>,
    name: &str,
) -> std::result::Result<&'a str, String> {
    value
        .as_deref()
        .ok_or_else(|| format!("{} key without `{name}`", jwk.kty))
}

/// An EC or OKP coordinate: base64url without padding of the curve's size.
fn coordinate<'a>(
    jwk: &Jwk,
    value: &'a Option<String>,
    name: &str,
    bytes: usize,
) -> std::result::Result<&'a str, String> {
    let text = member(jwk, value, name)?;
    if text.len() != (bytes * 4).div_ceil(3) {
        return Err(format!("`{name}` is not a {bytes}-byte coordinate"));
    }
    Ok(text)
}

/// `auth.jwt.public_key`: an RSA, EC or Ed25519 public key in PEM.
fn key_from_pem(pem: &str, accepted: &[Algorithm]) -> Result<Key> {
    if pem.contains("PRIVATE KEY") {
        return Err(config_error(
            "`auth.jwt.public_key` is a private key: give the identity provider's public key",
        ));
    }
    let pem = pem.trim().as_bytes();
    let (decoding, kind, family): (DecodingKey, &str, &[Algorithm]) =
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, "an RSA", RSA_ALGORITHMS)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, "an EC", &[Algorithm::ES256, Algorithm::ES384])
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, "an Ed25519", &[Algorithm::EdDSA])
        } else {
            return Err(config_error(
                "`auth.jwt.public_key` is not a PEM public key (RSA, EC or Ed25519)",
            ));
        };
    let algorithms: Vec<Algorithm> = family
        .iter()
        .copied()
        .filter(|alg| accepted.contains(alg))
        .collect();
    if algorithms.is_empty() {
        return Err(config_error(format!(
            "`auth.jwt.public_key` is {kind} key, but none of `auth.jwt.algorithms` ({}) can use it",
            algorithm_names(accepted)
        )));
    }
    Ok(Key {
        decoding,
        algorithms,
    })
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>> {
    if names.is_empty() {
        return Err(config_error("`auth.jwt.algorithms` must not be empty"));
    }
    names
        .iter()
        .map(|name| {
            let alg = Algorithm::from_str(name).map_err(|_| {
                config_error(format!(
                    "`auth.jwt.algorithms`: unknown algorithm `{name}` (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)"
                ))
            })?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(config_error(format!(
                    "`auth.jwt.algorithms`: {name} needs a shared secret; tokens must be signed with a public-key algorithm"
                )));
            }
            Ok(alg)
        })
        .collect()
}

fn algorithm_names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A claim by name; a dotted name not present as such is looked up as a path
/// (`realm_access.team`). The exact name wins, since claim names are often URLs with dots.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// A `kid` from an untrusted header, fit to quote in a message.
fn printable(kid: &str) -> String {
    kid.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

fn now_secs() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    use serde_json::json;

    use super::*;
    use crate::config::ConfigDuration;

    const ISSUER: &str = "https://idp.test";
    const AUDIENCE: &str = "proxima";
    /// A test-only key, made with `openssl genpkey -algorithm RSA`; its JWK beside it.
    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt_rsa_test_key.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt_rsa_test_key.pub.pem");
    const RSA_JWK: &str = include_str!("../../tests/fixtures/jwt_rsa_test_key.jwk.json");

    fn b64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let n = (b(0) << 16) | (b(1) << 8) | b(2);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// A private key that signs tokens, and its public JWK.
    struct Signer {
        kid: Option<String>,
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
    }

    impl Signer {
        fn ec(kid: &str) -> Signer {
            let mut signer = Signer::ec_on(
                kid,
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                Algorithm::ES256,
                "P-256",
            );
            // One curve's keys say what they are for, the other's do not: both must work.
            signer.jwk["use"] = json!("sig");
            signer
        }

        fn ec384(kid: &str) -> Signer {
            Signer::ec_on(
                kid,
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                Algorithm::ES384,
                "P-384",
            )
        }

        /// A fresh key pair on `curve`, its public point split into the JWK's `x` and `y`.
        fn ec_on(
            kid: &str,
            curve: &'static ring::signature::EcdsaSigningAlgorithm,
            alg: Algorithm,
            crv: &str,
        ) -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(curve, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(curve, pkcs8.as_ref(), &rng).unwrap();
            // Uncompressed point: 0x04, then x and y of equal length.
            let point = pair.public_key().as_ref();
            let (x, y) = point[1..].split_at((point.len() - 1) / 2);
            Signer {
                kid: Some(kid.into()),
                alg,
                encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
                jwk: json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64url(x), "y": b64url(y)}),
            }
        }

        fn ed(kid: &str) -> Signer {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            Signer {
                kid: Some(kid.into()),
                alg: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": b64url(pair.public_key().as_ref())}),
            }
        }

        fn rsa(kid: &str) -> Signer {
            let mut jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
            jwk["kid"] = json!(kid);
            jwk["alg"] = json!("RS256");
            Signer {
                kid: Some(kid.into()),
                alg: Algorithm::RS256,
                encoding: EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
                jwk,
            }
        }

        fn without_kid(mut self) -> Signer {
            self.kid = None;
            self.jwk.as_object_mut().unwrap().remove("kid");
            self
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(self.alg);
            header.kid = self.kid.clone();
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }

        fn token(&self) -> String {
            self.sign(&claims())
        }
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "exp": now_secs() + 600,
            "team": "platform",
            "models": ["fast", "smart"],
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value;
        }
        claims
    }

    /// A JWKS endpoint that counts its requests; its keys can change between them.
    struct IdP {
        url: String,
        hits: Arc<AtomicUsize>,
        keys: Arc<Mutex<Vec<Value>>>,
    }

    impl IdP {
        async fn start(keys: Vec<Value>) -> IdP {
            let hits = Arc::new(AtomicUsize::new(0));
            let keys = Arc::new(Mutex::new(keys));
            let (counter, published) = (hits.clone(), keys.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = json!({ "keys": *published.lock().unwrap() }).to_string();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            IdP { url, hits, keys }
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn publish(&self, keys: Vec<Value>) {
            *self.keys.lock().unwrap() = keys;
        }
    }

    fn config(jwks_url: Option<&str>, public_key: Option<&str>) -> JwtConfig {
        JwtConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: jwks_url.map(str::to_owned),
            public_key: public_key.map(str::to_owned),
            algorithms: ["RS256", "ES256", "ES384", "EdDSA"]
                .map(String::from)
                .to_vec(),
            team_claim: "team".into(),
            models_claim: "models".into(),
            leeway: ConfigDuration::secs(5),
            jwks_refresh: ConfigDuration::secs(600),
        }
    }

    fn http() -> Arc<HttpClient> {
        Arc::new(HttpClient::with_proxy(None).unwrap())
    }

    /// A verifier on `idp` whose startup fetch is done (so request counts are exact).
    async fn verifier_for(idp: &IdP) -> Arc<JwtVerifier> {
        let verifier = JwtVerifier::new(&config(Some(&idp.url), None), http()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while verifier.generation() == 0 {
            assert!(
                Instant::now() < deadline,
                "the startup JWKS fetch never finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(idp.hits(), 1);
        verifier
    }

    /// The refusal's message, checked to be a 401 that does not echo the token.
    async fn refusal(verifier: &JwtVerifier, token: &str) -> String {
        let error = verifier.verify(token).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidApiKey, "{}", error.message);
        assert!(!error.message.contains(token));
        error.message
    }

    #[tokio::test]
    async fn valid_tokens_map_to_identities() {
        let (rsa, ec) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"));
        let idp = IdP::start(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;

        let identity = verifier.verify(&rsa.token()).await.unwrap();
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.team.as_deref(), Some("platform"));
        assert_eq!(
            identity.models,
            Some(vec!["fast".to_string(), "smart".to_string()])
        );
        assert!(identity.expires_at > now_secs());

        // A space/comma separated string of models, no team, and an absent models claim.
        let listed = with(claims(), "models", json!("fast, smart  other"));
        let identity = verifier
            .verify(&ec.sign(&with(listed, "team", Value::Null)))
            .await
            .unwrap();
        assert_eq!(identity.team, None);
        assert_eq!(
            identity.models,
            Some(["fast", "smart", "other"].map(String::from).to_vec())
        );
        let identity = verifier
            .verify(&ec.sign(&with(claims(), "models", Value::Null)))
            .await
            .unwrap();
        assert_eq!(identity.models, None);

        // `aud` may be a list that contains ours.
        let several = with(claims(), "aud", json!(["other", AUDIENCE]));
        verifier.verify(&ec.sign(&several)).await.unwrap();
        assert_eq!(idp.hits(), 1);
    }

    #[tokio::test]
    async fn every_key_type_verifies() {
        let signers = [
            Signer::rsa("rsa"),
            Signer::ec("p256"),
            Signer::ec384("p384"),
            Signer::ed("ed25519"),
        ];
        let idp = IdP::start(signers.iter().map(|s| s.jwk.clone()).collect()).await;
        let verifier = verifier_for(&idp).await;
        for signer in &signers {
            let identity = verifier.verify(&signer.token()).await.unwrap();
            assert_eq!(identity.subject, "alice", "{:?}", signer.alg);
        }
    }

    #[tokio::test]
    async fn claims_are_checked() {
        let ec = Signer::ec("k1");
        let idp = IdP::start(vec![ec.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;

        // Past `exp` beyond the leeway.
        let expired = ec.sign(&with(claims(), "exp", json!(now_secs() - 60)));
        assert!(refusal(&verifier, &expired)
            .await
            .contains("the token has expired"));
        // Within the leeway it still passes.
        verifier
            .verify(&ec.sign(&with(claims(), "exp", json!(now_secs() - 2))))
            .await
            .unwrap();
        let no_exp = ec.sign(&with(claims(), "exp", Value::Null));
        assert!(refusal(&verifier, &no_exp).await.contains("no `exp` claim"));

        let audience = ec.sign(&with(claims(), "aud", json!("someone-else")));
        assert!(refusal(&verifier, &audience)
            .await
            .contains("the token is for another audience"));
        let issuer = ec.sign(&with(claims(), "iss", json!("https://evil.test")));
        assert!(refusal(&verifier, &issuer).await.contains("wrong issuer"));
        let early = ec.sign(&with(claims(), "nbf", json!(now_secs() + 600)));
        assert!(refusal(&verifier, &early).await.contains("not valid yet"));
        let no_sub = ec.sign(&with(claims(), "sub", Value::Null));
        assert!(refusal(&verifier, &no_sub).await.contains("`sub`"));
        let bad_models = ec.sign(&with(claims(), "models", json!([1, 2])));
        assert!(refusal(&verifier, &bad_models).await.contains("`models`"));
    }

    #[tokio::test]
    async fn forged_and_unaccepted_tokens_are_refused() {
        let ec = Signer::ec("k1");
        let idp = IdP::start(vec![ec.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;

        // Another key claiming the published key's `kid`.
        let forged = Signer::ec("k1").token();
        assert!(refusal(&verifier, &forged).await.contains("bad signature"));
        // A valid token with its payload swapped.
        let token = ec.token();
        let other = ec.sign(&with(claims(), "sub", json!("mallory")));
        let parts: Vec<&str> = token.split('.').collect();
        let spliced = format!(
            "{}.{}.{}",
            parts[0],
            other.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert!(refusal(&verifier, &spliced).await.contains("bad signature"));

        // An algorithm not in the config (a shared secret), with a published `kid`.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hmac =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"x")).unwrap();
        assert!(refusal(&verifier, &hmac).await.contains("not accepted"));
        // An accepted algorithm, but not the one of the key with that `kid`.
        assert!(refusal(&verifier, &Signer::rsa("k1").token())
            .await
            .contains("does not match its signing key"));
        assert!(refusal(&verifier, "not.a.jwt").await.contains("malformed"));
        assert_eq!(idp.hits(), 1);
    }

    #[tokio::test]
    async fn rotation_refetches_once_for_an_unknown_kid() {
        let (old, new) = (Signer::ec("old"), Signer::ec("new"));
        let idp = IdP::start(vec![old.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;
        let old_token = old.token();
        verifier.verify(&old_token).await.unwrap();

        // The IdP rotates: the new key in, the old one out.
        idp.publish(vec![new.jwk.clone()]);
        let new_token = new.token();
        let results =
            futures_util::future::join_all((0..20).map(|_| verifier.verify(&new_token))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(idp.hits(), 2, "concurrent requests share one fetch");

        // The withdrawn key stops working at once, even for a token verified before.
        assert!(refusal(&verifier, &old_token)
            .await
            .contains("the token's signing key `old` is unknown"));
        assert_eq!(idp.hits(), 2, "no second fetch within the gap");
    }

    #[tokio::test]
    async fn unknown_kids_cannot_hammer_the_idp() {
        let ec = Signer::ec("k1");
        let idp = IdP::start(vec![ec.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;

        let garbage = Signer::ec("garbage-1").token();
        assert!(refusal(&verifier, &garbage)
            .await
            .contains("the token's signing key `garbage-1` is unknown"));
        assert_eq!(idp.hits(), 2);
        for i in 2..50 {
            let token = Signer::ec(&format!("garbage-{i}")).token();
            refusal(&verifier, &token).await;
        }
        assert_eq!(idp.hits(), 2);
        // Known keys keep working meanwhile.
        verifier.verify(&ec.token()).await.unwrap();
    }

    #[tokio::test]
    async fn tokens_without_kid_need_a_single_key() {
        let only = Signer::ec("k1").without_kid();
        let idp = IdP::start(vec![only.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;
        verifier.verify(&only.token()).await.unwrap();

        let second = Signer::ec("k2");
        let idp = IdP::start(vec![only.jwk.clone(), second.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;
        assert!(refusal(&verifier, &only.token())
            .await
            .contains("has no `kid`"));
        verifier.verify(&second.token()).await.unwrap();
    }

    #[tokio::test]
    async fn public_key_pem_mode() {
        let verifier = JwtVerifier::new(&config(None, Some(RSA_PUBLIC)), http()).unwrap();
        let rsa = Signer::rsa("whatever");
        assert_eq!(
            verifier.verify(&rsa.token()).await.unwrap().subject,
            "alice"
        );
        assert_eq!(
            verifier
                .verify(&rsa.without_kid().token())
                .await
                .unwrap()
                .subject,
            "alice"
        );
        let ec = Signer::ec("k1");
        assert!(refusal(&verifier, &ec.token())
            .await
            .contains("does not match its signing key"));

        let private = JwtVerifier::new(&config(None, Some(RSA_PRIVATE)), http());
        assert!(private.err().unwrap().message.contains("private key"));
        let mut es_only = config(None, Some(RSA_PUBLIC));
        es_only.algorithms = vec!["ES256".into()];
        let error = JwtVerifier::new(&es_only, http()).err().unwrap();
        assert!(error.message.contains("RSA"), "{}", error.message);
    }

    #[tokio::test]
    async fn config_mistakes_are_refused() {
        let message = |config: JwtConfig| JwtVerifier::new(&config, http()).err().unwrap().message;
        assert!(message(config(None, None)).contains("needs `jwks_url`"));
        assert!(message(config(Some("http://idp/jwks"), Some(RSA_PUBLIC))).contains("only one"));
        assert!(message(config(Some("not a url"), None)).contains("not a URL"));
        let mut hmac = config(Some("http://idp/jwks"), None);
        hmac.algorithms = vec!["HS256".into()];
        assert!(message(hmac).contains("shared secret"));
        let mut unknown = config(Some("http://idp/jwks"), None);
        unknown.algorithms = vec!["RS257".into()];
        assert!(message(unknown).contains("unknown algorithm `RS257`"));
    }

    #[tokio::test]
    async fn an_unreachable_idp_is_retried_on_use() {
        // A port nothing listens on once the listener is dropped.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let verifier = JwtVerifier::new(&config(Some(&url), None), http()).unwrap();
        let error = verifier
            .verify(&Signer::ec("k1").token())
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.retry_after.is_some());
    }

    #[tokio::test]
    async fn verified_tokens_are_cached_until_exp() {
        let ec = Signer::ec("k1");
        let idp = IdP::start(vec![ec.jwk.clone()]).await;
        let verifier = verifier_for(&idp).await;
        let token = ec.token();
        let first = verifier.verify(&token).await.unwrap();
        let digest = secret_digest(&token);
        assert_eq!(verifier.cached(&digest), Some(first.clone()));

        // A hit is served from the cache (the token is no longer checked) ...
        verifier
            .verified
            .write()
            .unwrap()
            .get_mut(&digest)
            .unwrap()
            .subject = "cached".into();
        assert_eq!(verifier.verify(&token).await.unwrap().subject, "cached");
        // ... but its expiry still is.
        verifier
            .verified
            .write()
            .unwrap()
            .get_mut(&digest)
            .unwrap()
            .expires_at = now_secs() - 60;
        assert!(refusal(&verifier, &token).await.contains("expired"));

        // Bounded.
        for i in 0..(CACHE_CAPACITY as u32 + 10) {
            let mut digest = [0u8; 32];
            digest[..4].copy_from_slice(&i.to_be_bytes());
            verifier.remember(digest, first.clone(), now_secs());
        }
        assert!(verifier.verified.read().unwrap().len() <= CACHE_CAPACITY);
    }

    #[test]
    fn looks_like_jwt_only_for_jwts() {
        let token = Signer::ec("k1").token();
        assert!(JwtVerifier::looks_like_jwt(&token));
        for not_jwt in [
            "sk-proxima-0123456789abcdef",
            "sk-ant-api03-abc.def",
            "",
            "a.b.c",
            "eyJhbGciOiJFUzI1NiJ9..c2ln",
            &format!("{token}.extra"),
            &format!("{token} "),
            // A JSON header without `alg`.
            &format!("{}.e30.c2ln", b64url(br#"{"typ":"JWT"}"#)),
        ] {
            assert!(!JwtVerifier::looks_like_jwt(not_jwt), "{not_jwt}");
        }
    }

    #[test]
    fn claims_by_name_or_path() {
        let claims = json!({
            "https://example.com/team": "a",
            "org": { "team": "b" },
        });
        let claims = claims.as_object().unwrap();
        assert_eq!(claim(claims, "https://example.com/team"), Some(&json!("a")));
        assert_eq!(claim(claims, "org.team"), Some(&json!("b")));
        assert_eq!(claim(claims, "org.none"), None);
        assert_eq!(claim(claims, "team"), None);
    }
}
