//! The admin web UI at `/ui`: pages rendered on the server from typed templates ([`maud`]:
//! checked at compile time, every value escaped unless marked otherwise), charts drawn as SVG
//! on the server ([`charts`]), one embedded stylesheet and one small script (the copy button
//! and the streamed answers of the playground and of a prompt's try-it form). Nothing is fetched from elsewhere: it works offline, and
//! building it needs nothing but `cargo build`.
//!
//! Sign in with the master key or an admin key ([`session`]: a signed cookie; the key never
//! appears in a URL or the cookie). The pages read what the admin API reads and change things
//! through the same functions ([`crate::surface::admin`]), so the audit log names the
//! signed-in admin for changes made here just as for the API. Each page is its own module.
//! Like the admin API, the UI is off without `server.master_key`.

mod audit;
mod charts;
mod conversations;
mod dashboard;
mod keys;
mod logs;
mod mcp;
mod models;
mod playground;
mod prompts;
pub mod session;
mod sign_in;
mod teams;
mod tenants;
mod vector_stores;

use std::sync::Arc;

use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{header, HeaderValue, StatusCode};
use maud::{html, Markup, DOCTYPE};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::state::AppState;
use session::Session;

const STYLESHEET: &str = include_str!("ui/assets/ui.css");
const SCRIPT: &str = include_str!("ui/assets/ui.js");

/// The UI's routes: sign-in and the assets open, every other page behind a session.
pub fn routes(state: Arc<AppState>) -> axum::Router<Arc<AppState>> {
    let pages = axum::Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/dashboard") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/dashboard") }))
        .route("/ui/sign-out", post(sign_in::sign_out))
        .route("/ui/dashboard", get(dashboard::page))
        .route("/ui/models", get(models::page))
        .route("/ui/keys", get(keys::list).post(keys::create))
        .route("/ui/keys/{id}", get(keys::edit).post(keys::update))
        .route("/ui/keys/{id}/revoke", post(keys::revoke))
        .route("/ui/teams", get(teams::list).post(teams::create))
        .route("/ui/teams/{name}", get(teams::edit).post(teams::update))
        .route("/ui/teams/{name}/delete", post(teams::delete))
        .route("/ui/logs", get(logs::list))
        .route("/ui/logs/{request_id}", get(logs::detail))
        .route("/ui/audit", get(audit::page))
        .route("/ui/conversations", get(conversations::list))
        .route("/ui/conversations/{id}", get(conversations::detail))
        .route("/ui/vector-stores", get(vector_stores::list))
        .route("/ui/vector-stores/{id}", get(vector_stores::detail))
        .route("/ui/prompts", get(prompts::list).post(prompts::create))
        .route(
            "/ui/prompts/{name}",
            get(prompts::detail).post(prompts::create_version),
        )
        .route("/ui/prompts/{name}/delete", post(prompts::delete))
        .route("/ui/prompts/{name}/run", post(prompts::run))
        .route("/ui/mcp", get(mcp::page))
        .route("/ui/playground", get(playground::page))
        .route("/ui/playground/chat", post(playground::chat))
        .route_layer(middleware::from_fn_with_state(state, session::require));
    axum::Router::new()
        .route("/ui/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/ui/assets/ui.css", get(stylesheet))
        .route("/ui/assets/ui.js", get(script))
        .merge(pages)
}

async fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The pages of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Models,
    Keys,
    Teams,
    Logs,
    Audit,
    Conversations,
    VectorStores,
    Prompts,
    Mcp,
    Playground,
}

const NAV: [(Nav, &str, &str); 11] = [
    (Nav::Dashboard, "/ui/dashboard", "Dashboard"),
    (Nav::Models, "/ui/models", "Models"),
    (Nav::Keys, "/ui/keys", "Keys"),
    (Nav::Teams, "/ui/teams", "Teams"),
    (Nav::Logs, "/ui/logs", "Logs"),
    (Nav::Audit, "/ui/audit", "Audit log"),
    (Nav::Conversations, "/ui/conversations", "Conversations"),
    (Nav::VectorStores, "/ui/vector-stores", "Vector stores"),
    (Nav::Prompts, "/ui/prompts", "Prompts"),
    (Nav::Mcp, "/ui/mcp", "MCP"),
    (Nav::Playground, "/ui/playground", "Playground"),
];

/// A whole page: the document around `body`, with the navigation bar.
pub fn layout(session: &Session, active: Nav, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(session.csrf);
                title { (title) " · Proxima" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                // No icon: the browser asks for none.
                link rel="icon" href="data:,";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                header.topbar {
                    a.brand href="/ui/dashboard" { "Proxima" }
                    nav {
                        @for (nav, href, label) in NAV {
                            a href=(href) class=[(nav == active).then_some("active")] { (label) }
                        }
                    }
                    form.signout method="post" action="/ui/sign-out" {
                        (csrf_field(session))
                        span.who { (session.actor.name) }
                        button.link type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// A page's HTML with the UI's security headers: no framing, scripts and styles from the
/// gateway only, never cached (pages show secrets once and live data).
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, Html(markup.into_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A failure shown as a banner above the page's content.
pub fn error_banner(error: Option<&Error>) -> Markup {
    html! {
        @if let Some(e) = error {
            p.banner.error role="alert" { (e.message) }
        }
    }
}

/// A page that could not be made: its error, in the layout, with the error's status.
pub fn error_page(session: &Session, active: Nav, e: &Error) -> Response {
    let mut response = layout(
        session,
        active,
        "Something went wrong",
        error_banner(Some(e)),
    );
    *response.status_mut() = e.kind.status();
    response
}

/// A URL-encoded form as `T`; a bad one is a 400 naming the problem.
pub fn read_form<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| Error::invalid_request(format!("the form is not valid: {e}")))
}

/// A form field: `None` when left empty.
pub fn filled(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Epoch ms as people read it, in UTC.
pub fn when(ms: i64) -> String {
    let text = crate::clock::rfc3339(ms);
    // `2026-11-27T10:00:00.123Z` → `2026-11-27 10:00:00`
    text.get(..19).unwrap_or(&text).replacen('T', " ", 1)
}

/// Dollars as people read them: cents, or more digits for small sums.
pub fn dollars(usd: f64) -> String {
    if usd == 0.0 {
        "$0".into()
    } else if usd.abs() < 0.01 {
        format!("${usd:.6}")
    } else {
        format!("${usd:.2}")
    }
}

/// A path or query segment with everything but letters, digits and `-_.~` percent-encoded.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
