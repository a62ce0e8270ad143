//! The call log: the ledger's rows newest first, filtered by model, key, team, status and
//! time as `GET /admin/logs` filters them, paged; and one request's detail.

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::{error_page, filled, layout, urlencode, when, Nav, Session};
use crate::error::{Error, ErrorKind, Result};
use crate::pricing;
use crate::state::AppState;
use crate::store::{LedgerRow, LogFilter};
use crate::surface::admin::optional_time;

#[derive(Deserialize, Default)]
struct LogsQuery {
    model: Option<String>,
    key: Option<String>,
    team: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<String>,
}

impl LogsQuery {
    /// The query string of these filters, without the page cursor.
    fn filters(&self) -> String {
        [
            ("model", &self.model),
            ("key", &self.key),
            ("team", &self.team),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter_map(|(name, value)| filled(value).map(|v| format!("{name}={}", urlencode(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// `GET /ui/logs?model=&key=&team=&status=&from=&to=&after=`.
pub async fn list(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    match render_list(&state, raw.as_deref().unwrap_or_default()).await {
        Ok(body) => layout(&session, Nav::Logs, "Logs", body),
        Err(e) => error_page(&session, Nav::Logs, &e),
    }
}

async fn render_list(state: &AppState, raw: &str) -> Result<Markup> {
    let query: LogsQuery = crate::surface::query(Some(raw))?;
    let owned = |v: &Option<String>| filled(v).map(str::to_owned);
    let filter = LogFilter {
        model: owned(&query.model),
        key: owned(&query.key),
        team: owned(&query.team),
        status: owned(&query.status),
        from: optional_time(filled(&query.from), "from")?,
        to: optional_time(filled(&query.to), "to")?,
        after: owned(&query.after),
        limit: Some(50),
        request_id: None,
    };
    let page = state.services().store.logs(&filter).await?;
    let gateway = state.gateway();
    let input = |name: &'static str, value: &Option<String>, hint: &'static str| {
        html! { label { (name) " " input type="text" name=(name.to_lowercase()) value=[filled(value)] placeholder=(hint); } }
    };
    Ok(html! {
        form.filters method="get" action="/ui/logs" {
            label { "Model "
                select name="model" {
                    option value="" { "all" }
                    @for model in gateway.router.public_names() {
                        option value=(model) selected[filter.model.as_deref() == Some(model)] { (model) }
                    }
                    option value="mcp:*" selected[filter.model.as_deref() == Some("mcp:*")] { "MCP tool calls" }
                }
            }
            (input("Key", &query.key, "key id"))
            (input("Team", &query.team, "team"))
            label { "Status "
                select name="status" {
                    @for (value, label) in [("", "all"), ("ok", "ok"), ("error", "errors"), ("429", "429")] {
                        option value=(value) selected[filter.status.as_deref().unwrap_or("") == value] { (label) }
                    }
                }
            }
            (input("From", &query.from, "24h, 2026-11-27"))
            (input("To", &query.to, "now"))
            button type="submit" { "Filter" }
        }
        section.card {
            table.log {
                thead { tr {
                    th { "Time" } th { "Request" } th { "Key" } th { "Team" } th { "Model" }
                    th { "Provider" } th { "Status" } th.num { "Latency" } th.num { "Tokens" }
                    th.num { "Cost" } th { "Cache" }
                } }
                tbody {
                    @for row in &page.data {
                        tr {
                            td.small { (when(row.at)) }
                            td.small { a href=(format!("/ui/logs/{}", urlencode(&row.request_id))) { (short(&row.request_id)) } }
                            td { (row.key_name.as_deref().or(row.key_id.as_deref()).unwrap_or("–")) }
                            td { (row.team.as_deref().unwrap_or("–")) }
                            td { (row.model) }
                            td { (row.provider.as_deref().unwrap_or("–")) }
                            td { (status(row)) }
                            td.num { (row.latency_ms) " ms" }
                            td.num { (row.input_tokens) " / " (row.output_tokens) }
                            td.num { (super::dollars(pricing::usd(row.cost_nanos))) }
                            td { (row.cache.as_deref().unwrap_or("–")) }
                        }
                    }
                }
            }
            @if page.data.is_empty() { p.muted { "No requests match." } }
            @if let Some(next) = &page.next {
                p { a href=(format!("/ui/logs?{}&after={}", query.filters(), urlencode(next))) { "Older requests →" } }
            }
        }
    })
}

/// A request id short enough for a table cell.
pub(super) fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// A row's status as a coloured pill.
pub(super) fn status(row: &LedgerRow) -> Markup {
    let class = if row.status < 400 {
        "pill breaker-closed"
    } else {
        "pill breaker-open"
    };
    html! { span class=(class) { (row.status) } }
}

/// `GET /ui/logs/{request_id}`: the request's ledger row: attempts, tokens, cost, cache,
/// metadata.
pub async fn detail(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(request_id): Path<String>,
) -> Response {
    let filter = LogFilter {
        request_id: Some(request_id.clone()),
        limit: Some(20),
        ..LogFilter::default()
    };
    let rows = match state.services().store.logs(&filter).await {
        Ok(page) if !page.data.is_empty() => page.data,
        Ok(_) => {
            let e = Error::new(
                ErrorKind::NotFound,
                format!("no request `{request_id}` in the log (yet: rows are written in batches)"),
            );
            return error_page(&session, Nav::Logs, &e);
        }
        Err(e) => return error_page(&session, Nav::Logs, &e),
    };
    let body = html! {
        @for row in &rows {
            section.card {
                dl.facts {
                    dt { "Request id" } dd { code { (row.request_id) } }
                    dt { "Time" } dd { (when(row.at)) " UTC" }
                    dt { "Status" } dd { (status(row)) @if let Some(code) = &row.error_code { " " code { (code) } } }
                    dt { "Key" } dd {
                        (row.key_name.as_deref().unwrap_or("–"))
                        @if let Some(id) = &row.key_id { " (" code { (id) } ")" }
                    }
                    dt { "Team" } dd { (row.team.as_deref().unwrap_or("–")) }
                    dt { "End user" } dd { (row.user.as_deref().unwrap_or("–")) }
                    dt { "Model" } dd { (row.model) }
                    dt { "Served by" } dd {
                        (row.provider.as_deref().unwrap_or("–")) " / "
                        (row.upstream_model.as_deref().unwrap_or("–"))
                    }
                    dt { "Attempts" } dd { (row.attempts) }
                    dt { "Stream" } dd { (if row.stream { "yes" } else { "no" }) }
                    dt { "Latency" } dd {
                        (row.latency_ms) " ms"
                        @if let Some(ttft) = row.ttft_ms { " (first token after " (ttft) " ms)" }
                    }
                    dt { "Tokens" } dd {
                        (row.input_tokens) " in (" (row.cached_tokens) " cached) · "
                        (row.output_tokens) " out"
                    }
                    dt { "Cost" } dd { (super::dollars(pricing::usd(row.cost_nanos))) }
                    dt { "Cache" } dd {
                        (row.cache.as_deref().unwrap_or("off"))
                        @if row.saved_nanos > 0 { " · saved " (super::dollars(pricing::usd(row.saved_nanos))) }
                    }
                    dt { "Metadata" } dd {
                        @match row.metadata.as_deref() {
                            Some(text) => pre { (pretty(text)) },
                            None => "–",
                        }
                    }
                }
            }
        }
        p { a href="/ui/logs" { "← All requests" } }
    };
    layout(&session, Nav::Logs, "Request", body)
}

/// JSON text indented for reading; as it is when it is not JSON.
fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}
