//! Admin UI sessions: who is signed in, kept in a signed cookie, and the CSRF check of every
//! form.
//!
//! The cookie holds `actor.expiry.nonce.mac`: the signed-in actor's id (`master` or an admin
//! key's id, never a secret), when the session ends, a random nonce, and an HMAC-SHA256 of
//! those under a secret derived from the master key. Deriving the secret from the master key
//! rather than making one per process means every replica behind a load balancer accepts the
//! same sessions, a restart keeps people signed in, and changing the master key signs
//! everyone out; no session table is needed. An admin key's session is checked against the
//! key on every page (one lookup: the UI is not the hot path), so revoking the key, or taking
//! its admin right, ends its sessions at once.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it) and scoped to `Path=/ui`; `Secure` when the request came over HTTPS. Every POST
//! also carries the session's CSRF token — an HMAC of its nonce — in a form field `csrf` or
//! the header `x-csrf-token`, checked by [`require`] before any handler runs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use ring::hmac;

use crate::audit::Actor;
use crate::clock;
use crate::policy::Caller;
use crate::server::RequestId;
use crate::state::AppState;
use crate::store::hex;

/// The session cookie's name.
pub const COOKIE: &str = "proxima_session";
/// How long a session lasts.
const LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// The most a UI form may send.
pub const FORM_LIMIT: usize = 1 << 20;

/// The signed-in admin, as an extension of every page's request.
#[derive(Clone)]
pub struct Session {
    /// The caller the UI acts as: the master key's or the admin key's.
    pub caller: Arc<Caller>,
    /// Who the audit log names for changes made in this request.
    pub actor: Actor,
    /// The token forms send back.
    pub csrf: String,
}

/// The signing key of sessions: derived from the master key, so that replicas agree.
fn signing_key(master: &str) -> hmac::Key {
    let derive = hmac::Key::new(hmac::HMAC_SHA256, master.as_bytes());
    let secret = hmac::sign(&derive, b"proxima admin UI session key v1");
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref())
}

fn mac(key: &hmac::Key, text: &str) -> String {
    hex(hmac::sign(key, text.as_bytes()).as_ref())
}

fn csrf_token(key: &hmac::Key, nonce: &str) -> String {
    mac(key, &format!("csrf:{nonce}"))
}

/// A new session's cookie value for the caller `actor_id`, signed with `master`'s key.
pub fn issue(master: &str, actor_id: &str) -> String {
    let expiry = clock::now_ms() + LIFETIME_MS;
    let nonce = format!("{:032x}", fastrand::u128(..));
    let body = format!("{}.{expiry}.{nonce}", hex(actor_id.as_bytes()));
    format!("{body}.{}", mac(&signing_key(master), &body))
}

/// A cookie value's actor id and CSRF token, when its signature holds and it has not
/// expired.
fn verify(master: &str, value: &str) -> Option<(String, String)> {
    let (body, signature) = value.rsplit_once('.')?;
    let key = signing_key(master);
    let expected = from_hex(signature)?;
    hmac::verify(&key, body.as_bytes(), &expected).ok()?;
    let mut parts = body.split('.');
    let actor = String::from_utf8(from_hex(parts.next()?)?).ok()?;
    let expiry: i64 = parts.next()?.parse().ok()?;
    let nonce = parts.next()?;
    (expiry > clock::now_ms()).then(|| (actor, csrf_token(&key, nonce)))
}

/// Hex text back to bytes (the store's [`hex`] writes it).
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `Set-Cookie` value of `value`; an empty value with `Max-Age=0` signs out.
pub fn cookie(value: &str, headers: &HeaderMap) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let max_age = if value.is_empty() {
        0
    } else {
        LIFETIME_MS / 1000
    };
    let text = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session cookie's value in a request.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The signed-in caller behind a request's cookie: the master, or an admin key still active
/// and still admin.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(Arc<Caller>, String)> {
    let gateway = state.gateway();
    let master = gateway.config.server.master_key.as_ref()?;
    let (actor, csrf) = verify(master.expose(), cookie_value(headers)?)?;
    if actor == "master" {
        return Some((Arc::new(Caller::master()), csrf));
    }
    let record = state.services().store.get_key(&actor).await.ok()??;
    (record.admin && record.is_active(clock::now_ms()))
        .then(|| (Arc::new(Caller::from_key(&record)), csrf))
}

/// Every UI page but sign-in: the session's [`Session`] is put in the request, or the browser
/// is sent to sign in. A POST must carry the session's CSRF token; it is checked here, before
/// any handler runs, so no form can forget it.
pub async fn require(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some((caller, csrf)) = signed_in(&state, req.headers()).await else {
        return if req.method() == Method::GET {
            Redirect::to("/ui/sign-in").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "sign in first: /ui/sign-in").into_response()
        };
    };
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.to_string())
        .unwrap_or_default();
    let session = Session {
        actor: Actor::caller(&caller, &request_id),
        caller,
        csrf,
    };
    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::POST {
        let bytes = match http_body_util::Limited::new(body, FORM_LIMIT)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response()
            }
        };
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| form_field(&bytes, "csrf"));
        if !sent.is_some_and(|t| constant_time_eq(t.as_bytes(), session.csrf.as_bytes())) {
            return (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or stale: reload the page and try again",
            )
                .into_response();
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(session);
    parts.extensions.insert(state);
    next.run(Request::from_parts(parts, body)).await
}

/// One field of a URL-encoded form.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sessions_verify_only_under_their_master_key() {
        let value = issue("master-one", "key_abc");
        let (actor, csrf) = verify("master-one", &value).unwrap();
        assert_eq!(actor, "key_abc");
        assert_eq!(csrf.len(), 64);
        assert!(verify("master-two", &value).is_none());
        // A changed actor breaks the signature.
        let forged = value.replacen(&hex("key_abc".as_bytes()), &hex(b"master"), 1);
        assert!(verify("master-one", &forged).is_none());
        assert!(verify("master-one", "garbage").is_none());
        // Two sessions of one actor have different CSRF tokens.
        let (_, other) = verify("master-one", &issue("master-one", "key_abc")).unwrap();
        assert_ne!(csrf, other);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; proxima_session=xyz; b=2"),
        );
        assert_eq!(cookie_value(&headers), Some("xyz"));
        let set = cookie("xyz", &headers);
        let set = set.to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(set.contains("Path=/ui") && !set.contains("Secure"));
    }
}
