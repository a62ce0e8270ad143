//! The admin API (master key only): model health and config reload.

use std::sync::Arc;

use axum::extract::Extension;
use axum::response::Response;
use serde_json::{json, Value};

use super::json_response;
use crate::canonical::Api;
use crate::error::Error;
use crate::server::AppState;

/// `GET /admin/models`: every public model with its targets' breaker state, latency and
/// error figures, and canary status.
pub async fn models(Extension(state): Extension<Arc<AppState>>) -> Response {
    let gateway = state.gateway();
    let mut models: Vec<Value> = gateway
        .router
        .all_models()
        .map(|m| {
            let config = gateway.config.models.get(&m.name);
            json!({
                "name": m.name,
                "strategy": m.strategy,
                "retries": m.retries,
                "fallbacks": m.fallbacks,
                "targets": m.targets.iter().enumerate().map(|(i, t)| json!({
                    "provider": &*t.provider.name,
                    "model": t.model,
                    "weight": t.weight,
                    "canary": config.and_then(|c| c.targets.get(i)).and_then(|c| c.canary.as_ref()),
                    "health": t.health.view(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    models.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json_response(&json!({ "object": "list", "data": models }))
}

/// `POST /admin/config/reload`: 200 when the new config is in force, 400 with its problems
/// (and the old one still running) when it is invalid.
pub async fn reload(Extension(state): Extension<Arc<AppState>>) -> Response {
    match state.reload().await {
        Ok(()) => json_response(&json!({ "status": "reloaded" })),
        Err(problems) => Error::invalid_request(format!(
            "the new config was refused, the running one stays: {}",
            problems.join("; ")
        ))
        .into_response(Api::OpenAiChat),
    }
}
