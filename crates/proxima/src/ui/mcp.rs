//! The MCP gateway ([`crate::mcp`]): each configured `[mcp.servers.NAME]` with whether it
//! answers (its tools counted, or why it could not be listed), every tool `/mcp` serves — the
//! gateway's own and `NAME__TOOL` — and the latest tool calls, read from the call log as
//! `/admin/logs?model=mcp:*` reads them.
//!
//! The page asks a server for its tools again when the list kept is stale, as `/mcp` would,
//! so opening it checks the servers (and starts a local command that is not running).

use std::sync::Arc;

use axum::extract::Extension;
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;

use super::logs::{short, status};
use super::{error_page, layout, urlencode, when, Nav, Session};
use crate::config::McpServerConfig;
use crate::error::Result;
use crate::mcp::{tools, upstream};
use crate::state::AppState;
use crate::store::LogFilter;

/// The model prefix of tool calls' ledger rows.
const CALLS: &str = "mcp:*";

/// `GET /ui/mcp`.
pub async fn page(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    match render(&state).await {
        Ok(body) => layout(&session, Nav::Mcp, "MCP", body),
        Err(e) => error_page(&session, Nav::Mcp, &e),
    }
}

async fn render(state: &AppState) -> Result<Markup> {
    let gateway = state.gateway();
    let (servers, upstream_tools) = tokio::join!(gateway.mcp.status(), gateway.mcp.tools());
    let calls = state
        .services()
        .store
        .logs(&LogFilter {
            model: Some(CALLS.into()),
            limit: Some(50),
            ..LogFilter::default()
        })
        .await?;
    let own = tools::definitions();
    let listed: Vec<(&str, &Value)> = own
        .iter()
        .map(|tool| ("proxima", tool))
        .chain(upstream_tools.iter().map(|tool| {
            let name = tool["name"].as_str().unwrap_or_default();
            let server = name.split_once(upstream::SEPARATOR).map_or("", |(s, _)| s);
            (server, tool)
        }))
        .collect();
    Ok(html! {
        section.card {
            h2 { "Servers" }
            @if servers.is_empty() {
                p.muted { "No " code { "[mcp.servers]" } " configured: " code { "/mcp" } " serves the gateway's own tools." }
            } @else {
                table {
                    thead { tr { th { "Server" } th { "Address" } th { "Status" } th.num { "Tools" } th { "Last error" } } }
                    tbody {
                        @for server in &servers {
                            tr {
                                td { (server.name) }
                                td.small { code { (address(gateway.config.mcp.servers.get(&server.name))) } }
                                td {
                                    @if server.error.is_some() { span.pill.breaker-open { "unreachable" } }
                                    @else { span.pill.breaker-closed { "reachable" } }
                                }
                                td.num { (server.tools) }
                                td.small { (server.error.as_deref().unwrap_or("–")) }
                            }
                        }
                    }
                }
                p.muted.small { "A server that cannot be listed is left out of " code { "/mcp" } " and asked again within seconds." }
            }
        }
        section.card {
            h2 { "Tools" }
            table.tools {
                thead { tr { th { "Tool" } th { "Server" } th { "Description" } } }
                tbody {
                    @for (server, tool) in &listed {
                        tr {
                            td { code { (tool["name"].as_str().unwrap_or_default()) } }
                            td { (server) }
                            td.small { (tool["description"].as_str().or(tool["title"].as_str()).unwrap_or("–")) }
                        }
                    }
                }
            }
            p.muted.small { "Every tool " code { "/mcp" } " serves; a key's or team's " code { "mcp_tools" } " may let it see fewer." }
        }
        section.card {
            h2 { "Recent tool calls" }
            table.log {
                thead { tr {
                    th { "Time" } th { "Request" } th { "Caller" } th { "Team" } th { "Server" }
                    th { "Tool" } th { "Status" } th.num { "Latency" }
                } }
                tbody {
                    @for row in &calls.data {
                        tr {
                            td.small { (when(row.at)) }
                            td.small { a href=(format!("/ui/logs/{}", urlencode(&row.request_id))) { (short(&row.request_id)) } }
                            td { (row.key_name.as_deref().or(row.key_id.as_deref()).unwrap_or("–")) }
                            td { (row.team.as_deref().unwrap_or("–")) }
                            td { (row.provider.as_deref().unwrap_or("–")) }
                            td { code { (row.model.strip_prefix("mcp:").unwrap_or(&row.model)) } }
                            td { (status(row)) @if let Some(code) = &row.error_code { " " small { (code) } } }
                            td.num { (row.latency_ms) " ms" }
                        }
                    }
                }
            }
            @if calls.data.is_empty() { p.muted { "No tool calls yet." } }
            p { a href=(format!("/ui/logs?model={}", urlencode(CALLS))) { "All tool calls in the logs →" } }
        }
    })
}

/// Where a server is, for people: its URL without query or credentials, or its program (its
/// arguments may hold secrets).
fn address(config: Option<&McpServerConfig>) -> String {
    let Some(config) = config else {
        return String::new();
    };
    if let Some(url) = &config.url {
        return match url.parse::<http::Uri>() {
            Ok(uri) => {
                format!(
                    "{}://{}{}",
                    uri.scheme_str().unwrap_or("http"),
                    uri.host().unwrap_or_default(),
                    uri.port().map(|p| format!(":{p}")).unwrap_or_default()
                ) + uri.path()
            }
            Err(_) => String::new(),
        };
    }
    config
        .command
        .as_deref()
        .map(|c| format!("command: {c}"))
        .unwrap_or_default()
}
