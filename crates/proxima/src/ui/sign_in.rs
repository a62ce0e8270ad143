//! Signing in and out: the key is posted in a form body (never a URL), checked like any API
//! key, and only the master key or an admin key gets a session.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{header, HeaderMap, StatusCode};
use maud::{html, DOCTYPE};
use serde::Deserialize;

use super::session;
use super::{html_response, read_form};
use crate::state::AppState;

/// The sign-in page, with `problem` shown when the last try failed.
fn page(problem: Option<&str>, status: StatusCode) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Proxima" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                // No icon: the browser asks for none.
                link rel="icon" href="data:,";
            }
            body.signin {
                form.card.signin-card method="post" action="/ui/sign-in" {
                    h1 { "Proxima" }
                    p.muted { "Sign in with the master key or an admin key." }
                    @if let Some(problem) = problem {
                        p.banner.error role="alert" { (problem) }
                    }
                    label for="key" { "Key" }
                    input #key type="password" name="key" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        }
    };
    html_response(status, markup)
}

/// `GET /ui/sign-in`.
pub async fn form(State(state): State<Arc<AppState>>) -> Response {
    if state.gateway().config.server.master_key.is_none() {
        return page(
            Some("The admin UI is off: set server.master_key to use it."),
            StatusCode::NOT_FOUND,
        );
    }
    page(None, StatusCode::OK)
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

/// `POST /ui/sign-in`: a session for the master key or an admin key; a user key is refused.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gateway = state.gateway();
    let Some(master) = gateway.config.server.master_key.as_ref() else {
        return page(
            Some("The admin UI is off: set server.master_key to use it."),
            StatusCode::NOT_FOUND,
        );
    };
    // No session yet, hence no CSRF token: a form posted from another site is refused by
    // its Origin instead.
    if !same_origin(&headers) {
        return page(Some("Sign in from this page."), StatusCode::FORBIDDEN);
    }
    let Ok(SignIn { key }) = read_form(&body) else {
        return page(Some("Enter a key."), StatusCode::BAD_REQUEST);
    };
    let mut presented = HeaderMap::new();
    let Ok(bearer) = format!("Bearer {}", key.trim()).parse() else {
        return page(Some("That key is not valid."), StatusCode::UNAUTHORIZED);
    };
    presented.insert(header::AUTHORIZATION, bearer);
    match gateway
        .auth
        .authenticate(&presented, &state.services().directory)
        .await
    {
        Ok(caller) if caller.admin => {
            let value = session::issue(master.expose(), &caller.id);
            let mut response = Redirect::to("/ui/dashboard").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session::cookie(&value, &headers));
            response
        }
        Ok(_) => page(
            Some("This key is not an admin key: sign in with the master key or an admin key."),
            StatusCode::FORBIDDEN,
        ),
        Err(_) => page(
            Some("That key is not valid: it is unknown, revoked or expired."),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

/// Whether a form came from a page of this gateway: its `Origin`, when the browser sends
/// one, names the host it was posted to (`Host`, or `X-Forwarded-Host` behind a proxy).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some((_, origin_host)) = origin.split_once("://") else {
        return false;
    };
    [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}

/// `POST /ui/sign-out` (behind the session, so with its CSRF token): forgets the session in
/// this browser.
pub async fn sign_out(headers: HeaderMap) -> Response {
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::cookie("", &headers));
    response
}
