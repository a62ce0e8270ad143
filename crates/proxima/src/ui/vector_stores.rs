//! Vector stores, read-only: a team's or key's stores with their files' states, one store's
//! files, and a search box running the store's own search ([`crate::retrieval::search`]) as
//! a call of that tenant's, through [`crate::server::call_as`] — so its query embedding is a
//! metered call like any other.

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, Request};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::tenants;
use super::{error_banner, error_page, filled, layout, urlencode, when, Nav, Session};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RequestContext;
use crate::retrieval::{self, Hit, SearchRequest};
use crate::server::call_as;
use crate::state::AppState;
use crate::store::{FileListing, StoreFileRecord, VectorStoreRecord};

/// Stores and files listed at most.
const LISTED: usize = 100;

#[derive(Deserialize, Default)]
struct StoreQuery {
    tenant: Option<String>,
    /// A search of the store.
    q: Option<String>,
}

/// `GET /ui/vector-stores?tenant=team:NAME|key:ID`.
pub async fn list(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    match render_list(&state, raw.as_deref()).await {
        Ok(body) => layout(&session, Nav::VectorStores, "Vector stores", body),
        Err(e) => error_page(&session, Nav::VectorStores, &e),
    }
}

async fn render_list(state: &AppState, raw: Option<&str>) -> Result<Markup> {
    let query = crate::surface::query::<StoreQuery>(raw)?;
    let (tenants, tenant) = tenants::choose(state, &query.tenant).await?;
    let store = &state.services().store;
    let mut rows = Vec::new();
    if let Some(tenant) = &tenant {
        let (stores, _) = store.list_vector_stores(tenant, LISTED, true, None).await?;
        for record in stores {
            let counts = store.file_counts(&record.id, None).await?;
            rows.push((record, counts));
        }
    }
    let tenant_param = urlencode(tenant.as_deref().unwrap_or_default());
    Ok(html! {
        (tenants::picker("/ui/vector-stores", &tenants, tenant.as_deref()))
        section.card {
            table {
                thead { tr {
                    th { "Store" } th { "Name" } th { "Embedded with" } th.num { "Files ready" }
                    th.num { "In progress" } th.num { "Failed" } th.num { "Bytes" } th { "Last active" }
                } }
                tbody {
                    @for (record, counts) in &rows {
                        tr {
                            td { a href=(format!("/ui/vector-stores/{}?tenant={tenant_param}", urlencode(&record.id))) { code { (record.id) } } }
                            td { (record.name.as_deref().unwrap_or("–")) }
                            td { (record.embedding_model.as_deref().unwrap_or("words only")) }
                            td.num { (counts.completed) }
                            td.num { (counts.in_progress) }
                            td.num { (counts.failed) }
                            td.num { (counts.usage_bytes) }
                            td.small { (when(record.last_active_at)) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "No vector stores." } }
        }
    })
}

/// `GET /ui/vector-stores/{id}?tenant=&q=`: the store's files, and what a search finds.
pub async fn detail(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Response {
    let shown = async {
        let query = crate::surface::query::<StoreQuery>(raw.as_deref())?;
        let tenant = filled(&query.tenant).unwrap_or_default().to_owned();
        let store = &state.services().store;
        let record = store
            .get_vector_store(&id, &tenant)
            .await?
            .ok_or_else(|| retrieval::unknown_store(&id))?;
        let listing = FileListing {
            status: None,
            batch_id: None,
            limit: LISTED,
            descending: true,
            after: None,
        };
        let (files, _) = store.list_store_files(&id, &listing).await?;
        let searched = match filled(&query.q) {
            Some(q) => Some(search(&state, &session, &tenant, &id, q, req).await),
            None => None,
        };
        Ok::<_, Error>(render_detail(
            &record,
            &tenant,
            &files,
            query.q.as_deref(),
            searched,
        ))
    }
    .await;
    match shown {
        Ok(body) => layout(&session, Nav::VectorStores, "Vector store", body),
        Err(e) => error_page(&session, Nav::VectorStores, &e),
    }
}

/// Searches store `id` for `q` as a call of `tenant`'s (the admin in the team, or the key).
async fn search(
    state: &Arc<AppState>,
    session: &Session,
    tenant: &str,
    id: &str,
    q: &str,
    req: Request,
) -> Result<Vec<Hit>> {
    let caller = tenants::caller_for(state, &session.caller, tenant).await?;
    let trace = state.services().telemetry.start_trace(req.headers());
    let request = SearchRequest {
        query: q.to_owned(),
        max_num_results: retrieval::DEFAULT_RESULTS,
        filter: None,
        score_threshold: None,
    };
    let mut found = None;
    let slot = &mut found;
    let answer = call_as(
        state,
        state.gateway(),
        caller,
        trace,
        req,
        move |req| async move {
            let searched = match req.extensions().get::<Arc<RequestContext>>() {
                Some(cx) => retrieval::search(cx, &[id.to_owned()], &request).await,
                None => Err(Error::internal("the search had no request context")),
            };
            let mut response = Response::default();
            if let Err(e) = &searched {
                *response.status_mut() = e.kind.status();
            }
            *slot = Some(searched);
            response
        },
    )
    .await;
    // Refused before the search ran (bad metadata, say): the answer says why.
    found.unwrap_or_else(|| {
        Err(Error::new(
            ErrorKind::InvalidRequest,
            format!("the search was refused ({})", answer.status()),
        ))
    })
}

fn render_detail(
    record: &VectorStoreRecord,
    tenant: &str,
    files: &[StoreFileRecord],
    q: Option<&str>,
    searched: Option<Result<Vec<Hit>>>,
) -> Markup {
    html! {
        section.card {
            dl.facts {
                dt { "Id" } dd { code { (record.id) } }
                dt { "Name" } dd { (record.name.as_deref().unwrap_or("–")) }
                dt { "Owner" } dd { (record.owner) }
                dt { "Embedded with" } dd { (record.embedding_model.as_deref().unwrap_or("words only")) }
                dt { "Created" } dd { (when(record.created_at)) }
                dt { "Metadata" } dd { code { (record.metadata) } }
            }
        }
        section.card {
            h2 { "Search" }
            form.filters method="get" action=(format!("/ui/vector-stores/{}", urlencode(&record.id))) {
                input type="hidden" name="tenant" value=(tenant);
                label { "Query " input type="text" name="q" value=[q] required; }
                button type="submit" { "Search" }
            }
            @match &searched {
                None => {},
                Some(Err(e)) => (error_banner(Some(e))),
                Some(Ok(hits)) if hits.is_empty() => p.muted { "Nothing found." },
                Some(Ok(hits)) => {
                    table {
                        thead { tr { th.num { "Score" } th { "File" } th { "Passage" } } }
                        tbody {
                            @for hit in hits {
                                tr {
                                    td.num { (format!("{:.3}", hit.score)) }
                                    td { (hit.filename) }
                                    td { pre { (hit.text) } }
                                }
                            }
                        }
                    }
                },
            }
        }
        section.card {
            h2 { "Files" }
            table {
                thead { tr { th { "File" } th { "Name" } th { "Status" } th.num { "Bytes" } th { "Added" } th { "Error" } } }
                tbody {
                    @for file in files {
                        tr {
                            td { code { (file.file_id) } }
                            td { (file.filename) }
                            td {
                                @let class = match file.status.as_str() {
                                    "completed" => "pill breaker-closed",
                                    "failed" | "cancelled" => "pill breaker-open",
                                    _ => "pill breaker-half_open",
                                };
                                span class=(class) { (file.status) }
                            }
                            td.num { (file.usage_bytes) }
                            td.small { (when(file.created_at)) }
                            td.small { (file.last_error.as_ref().and_then(|e| e["message"].as_str()).unwrap_or("")) }
                        }
                    }
                }
            }
            @if files.is_empty() { p.muted { "No files." } }
        }
        p { a href=(format!("/ui/vector-stores?tenant={}", urlencode(tenant))) { "← All vector stores" } }
    }
}
