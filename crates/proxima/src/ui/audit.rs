//! The audit log page: admin actions newest first, filtered by actor, action and target as
//! `GET /admin/audit` filters them, paged.

use std::sync::Arc;

use axum::extract::{Extension, RawQuery};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::{error_page, filled, layout, urlencode, when, Nav, Session};
use crate::error::Result;
use crate::state::AppState;
use crate::store::AuditFilter;

#[derive(Deserialize, Default)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    after: Option<String>,
}

/// `GET /ui/audit?actor=&action=&target=&after=`.
pub async fn page(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    match render(&state, raw.as_deref().unwrap_or_default()).await {
        Ok(body) => layout(&session, Nav::Audit, "Audit log", body),
        Err(e) => error_page(&session, Nav::Audit, &e),
    }
}

async fn render(state: &AppState, raw: &str) -> Result<Markup> {
    let query: AuditQuery = crate::surface::query(Some(raw))?;
    let owned = |v: &Option<String>| filled(v).map(str::to_owned);
    let filter = AuditFilter {
        actor: owned(&query.actor),
        action: owned(&query.action),
        target: owned(&query.target),
        after: owned(&query.after),
        limit: Some(50),
        ..AuditFilter::default()
    };
    let page = state.services().store.audit_log(&filter).await?;
    let filters: String = [
        ("actor", &query.actor),
        ("action", &query.action),
        ("target", &query.target),
    ]
    .iter()
    .filter_map(|(name, value)| filled(value).map(|v| format!("{name}={}&", urlencode(v))))
    .collect();
    Ok(html! {
        form.filters method="get" action="/ui/audit" {
            label { "Actor " input type="text" name="actor" value=[filled(&query.actor)] placeholder="master, key id or name"; }
            label { "Action " input type="text" name="action" value=[filled(&query.action)] placeholder="key, key.create"; }
            label { "Target " input type="text" name="target" value=[filled(&query.target)]; }
            button type="submit" { "Filter" }
        }
        section.card {
            table {
                thead { tr { th { "Time" } th { "Actor" } th { "Action" } th { "Target" } th { "Outcome" } th { "Detail" } } }
                tbody {
                    @for entry in &page.data {
                        tr {
                            td.small { (when(entry.at)) }
                            td { (entry.actor_name) " " small.muted { (entry.actor_id) } }
                            td { code { (entry.action) } }
                            td { (entry.target.as_deref().unwrap_or("–")) }
                            td {
                                @let class = match entry.outcome.as_str() {
                                    "ok" => "pill breaker-closed",
                                    "error" => "pill breaker-open",
                                    _ => "pill breaker-half_open",
                                };
                                span class=(class) { (entry.outcome) }
                                @if let Some(code) = &entry.error_code { " " small { (code) } }
                            }
                            td.small { code { (entry.detail) } }
                        }
                    }
                }
            }
            @if page.data.is_empty() { p.muted { "No admin actions match." } }
            @if let Some(next) = &page.next {
                p { a href=(format!("/ui/audit?{filters}after={}", urlencode(next))) { "Older actions →" } }
            }
        }
    })
}
