//! The models page: each public model's targets with their breaker state, latency, error
//! rate and canary state — what `GET /admin/models` answers
//! ([`crate::surface::admin::model_health`]), drawn as a table per model.

use std::sync::Arc;

use axum::extract::Extension;
use axum::response::Response;
use maud::html;
use serde_json::Value;

use super::charts;
use super::{layout, Nav, Session};
use crate::state::AppState;
use crate::surface::admin::model_health;

/// `GET /ui/models`.
pub async fn page(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let models = model_health(&state);
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    };
    let body = html! {
        @if models.is_empty() {
            p.muted { "No models are configured." }
        }
        @for model in &models {
            section.card {
                h2 { (text(&model["name"])) }
                p.muted {
                    "strategy " (text(&model["strategy"])) " · retries " (text(&model["retries"]))
                    @if let Some(fallbacks) = model["fallbacks"].as_array().filter(|f| !f.is_empty()) {
                        " · fallbacks "
                        (fallbacks.iter().map(text).collect::<Vec<_>>().join(", "))
                    }
                }
                table.targets {
                    thead { tr {
                        th { "Provider" } th { "Upstream model" } th { "Weight" } th { "Breaker" }
                        th.num { "Latency" } th.num { "Error rate" } th.num { "Requests" }
                        th { "Canary" } th { "Last error" }
                    } }
                    tbody {
                        @for target in model["targets"].as_array().into_iter().flatten() {
                            @let health = &target["health"];
                            @let breaker = text(&health["breaker"]);
                            tr {
                                td { (text(&target["provider"])) }
                                td { code { (text(&target["model"])) } }
                                td { (text(&target["weight"])) }
                                td { span class=(format!("pill breaker-{breaker}")) { (breaker) } }
                                td.num { (health["latency_ms"].as_f64().map_or("–".into(), charts::millis)) }
                                td.num { (charts::percent(health["window_error_rate"].as_f64().unwrap_or(0.0))) }
                                td.num { (text(&health["requests"])) }
                                td {
                                    @if target["canary"].is_null() { "–" }
                                    @else if health["canary_rolled_back"] == Value::Bool(true) {
                                        span.pill.breaker-open { "rolled back" }
                                        " " (text(&health["canary_rollback_reason"]))
                                    } @else { span.pill.breaker-closed { "serving" } }
                                }
                                td.small { (text(&health["last_error"])) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&session, Nav::Models, "Models", body)
}
