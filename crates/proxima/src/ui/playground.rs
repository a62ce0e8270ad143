//! The playground: pick a model and chat with it, the answer streamed as it comes.
//!
//! The page's script posts a chat completion body to `/ui/playground/chat`, which runs it as
//! `/v1/chat/completions` — the same handler, the whole pipeline, limits and ledger row — as
//! the signed-in admin ([`crate::server::call_as`]). So the page needs no API key: none is
//! ever put in its source. The session cookie and the CSRF header authorise the call.

use std::sync::Arc;

use axum::extract::{Extension, Request};
use axum::handler::Handler;
use axum::response::Response;
use http::{HeaderValue, Uri};
use maud::html;

use super::{layout, Nav, Session};
use crate::server::call_as;
use crate::state::AppState;
use crate::surface::openai::chat_completions;

/// `GET /ui/playground`.
pub async fn page(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let gateway = state.gateway();
    let body = html! {
        section.card.playground {
            form #playground {
                div.row {
                    label { "Model "
                        select #pg-model name="model" {
                            @for model in gateway.router.public_names() { option value=(model) { (model) } }
                        }
                    }
                    label { "Temperature " input #pg-temperature type="number" min="0" max="2" step="0.1" value="1"; }
                    button #pg-clear type="button" .link { "New chat" }
                }
                label { "System prompt" textarea #pg-system rows="2" placeholder="optional" {} }
                div #pg-transcript aria-live="polite" {}
                label { "Message" textarea #pg-message rows="3" required placeholder="Say something…" {} }
                div.actions {
                    button #pg-send type="submit" { "Send" }
                    span #pg-status.muted {}
                }
            }
        }
        p.muted { "Calls run as " (session.actor.name) " through the whole pipeline and appear in the logs." }
    };
    layout(&session, Nav::Playground, "Playground", body)
}

/// `POST /ui/playground/chat`: a chat completion (streamed with `stream: true`) as the
/// signed-in admin, tagged `{"ui": "playground"}` in the ledger.
pub async fn chat(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    mut req: Request,
) -> Response {
    // Counted and traced as the chat completion it is.
    *req.uri_mut() = Uri::from_static("/v1/chat/completions");
    req.headers_mut().insert(
        "x-proxima-metadata",
        HeaderValue::from_static(r#"{"ui":"playground"}"#),
    );
    let trace = state.services().telemetry.start_trace(req.headers());
    let gateway = state.gateway();
    call_as(&state, gateway, session.caller.clone(), trace, req, |req| {
        chat_completions.call(req, ())
    })
    .await
}
