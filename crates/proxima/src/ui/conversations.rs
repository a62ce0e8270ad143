//! Conversations, read-only: a team's or key's conversations, the most recently used first,
//! and one conversation's items as the Conversations API shows them
//! ([`crate::wire::conversations::item`]).

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::tenants;
use super::{error_page, filled, layout, urlencode, when, Nav, Session};
use crate::error::{Error, ErrorKind, Result};
use crate::state::AppState;
use crate::store::Order;
use crate::wire::conversations::item;

/// Conversations listed at most, and items shown at most.
const LISTED: i64 = 100;
const ITEMS: u32 = 500;

#[derive(Deserialize, Default)]
struct TenantQuery {
    tenant: Option<String>,
}

/// `GET /ui/conversations?tenant=team:NAME|key:ID`.
pub async fn list(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    match render_list(&state, raw.as_deref()).await {
        Ok(body) => layout(&session, Nav::Conversations, "Conversations", body),
        Err(e) => error_page(&session, Nav::Conversations, &e),
    }
}

async fn render_list(state: &AppState, raw: Option<&str>) -> Result<Markup> {
    let query = crate::surface::query::<TenantQuery>(raw)?;
    let (tenants, tenant) = tenants::choose(state, &query.tenant).await?;
    let conversations = match &tenant {
        Some(tenant) => {
            state
                .services()
                .store
                .list_conversations(tenant, LISTED)
                .await?
        }
        None => Vec::new(),
    };
    Ok(html! {
        (tenants::picker("/ui/conversations", &tenants, tenant.as_deref()))
        section.card {
            table {
                thead { tr { th { "Conversation" } th { "Created" } th { "Last used" } th { "Metadata" } } }
                tbody {
                    @for conversation in &conversations {
                        tr {
                            td { a href=(format!("/ui/conversations/{}?tenant={}", urlencode(&conversation.id), urlencode(tenant.as_deref().unwrap_or_default()))) { code { (conversation.id) } } }
                            td.small { (when(conversation.created_at)) }
                            td.small { (when(conversation.used_at)) }
                            td.small { code { (conversation.metadata) } }
                        }
                    }
                }
            }
            @if conversations.is_empty() { p.muted { "No conversations." } }
        }
    })
}

/// `GET /ui/conversations/{id}?tenant=`: the conversation's items, oldest first.
pub async fn detail(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    match render_detail(&state, &id, raw.as_deref()).await {
        Ok(body) => layout(&session, Nav::Conversations, "Conversation", body),
        Err(e) => error_page(&session, Nav::Conversations, &e),
    }
}

async fn render_detail(state: &AppState, id: &str, raw: Option<&str>) -> Result<Markup> {
    let query = crate::surface::query::<TenantQuery>(raw)?;
    let tenant = filled(&query.tenant).unwrap_or_default();
    let store = &state.services().store;
    let conversation = store.get_conversation(id, tenant).await?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("{tenant} has no conversation `{id}`"),
        )
    })?;
    let items = store.list_items(id, None, Order::Asc, ITEMS).await?;
    Ok(html! {
        section.card {
            dl.facts {
                dt { "Id" } dd { code { (conversation.id) } }
                dt { "Owner" } dd { (conversation.owner) }
                dt { "Created" } dd { (when(conversation.created_at)) }
                dt { "Last used" } dd { (when(conversation.used_at)) }
                dt { "Metadata" } dd { code { (conversation.metadata) } }
            }
        }
        section.card {
            h2 { "Items" }
            table {
                thead { tr { th { "Type" } th { "Role" } th { "Content" } th.num { "Tokens" } th { "Added" } } }
                tbody {
                    @for record in &items {
                        @let shown = item(record);
                        tr {
                            td { code { (shown["type"].as_str().unwrap_or(&record.kind)) } }
                            td { (shown["role"].as_str().unwrap_or("–")) }
                            td { pre { (content(&shown)) } }
                            td.num { (record.tokens) }
                            td.small { (when(record.created_at)) }
                        }
                    }
                }
            }
            @if items.is_empty() { p.muted { "No items." } }
        }
        p { a href=(format!("/ui/conversations?tenant={}", urlencode(tenant))) { "← All conversations" } }
    })
}

/// An item's content as text: a message's texts, a call's name and arguments, a call's
/// output; else its JSON.
fn content(shown: &Value) -> String {
    if let Some(parts) = shown["content"].as_array() {
        return parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
    }
    if let (Some(name), Some(arguments)) = (shown["name"].as_str(), shown["arguments"].as_str()) {
        return format!("{name}({arguments})");
    }
    if let Some(output) = shown["output"].as_str() {
        return output.to_owned();
    }
    shown.to_string()
}
