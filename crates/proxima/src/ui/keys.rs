//! Virtual keys: the list, a form to make one (its secret shown once, with a copy button),
//! a page to change a key's limits and budget, and revoking. Every change is made by the
//! admin API's own functions, with the JSON body that API takes, so it is checked and
//! audited the same way, under the signed-in admin's name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    csrf_field, error_banner, error_page, filled, layout, read_form, urlencode, when, Nav, Session,
};
use crate::config::BudgetConfig;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::{KeyRecord, TeamRecord};
use crate::surface::admin;

/// The fields shared by the key and team forms: models, limits and budget.
#[derive(Deserialize, Default)]
pub struct GrantsForm {
    /// Public model names separated by commas; empty: all.
    models: Option<String>,
    rpm: Option<String>,
    tpm: Option<String>,
    budget_usd: Option<String>,
    budget_period: Option<String>,
}

impl GrantsForm {
    /// The form's grants as the admin API's JSON fields; an empty field is `null` (none).
    pub fn json(&self, fields: &mut Map<String, Value>) -> Result<()> {
        let models: Option<Vec<&str>> = filled(&self.models).map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect()
        });
        fields.insert("models".into(), json!(models));
        for (name, value) in [("rpm", &self.rpm), ("tpm", &self.tpm)] {
            let number = filled(value)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        Error::invalid_request(format!("{name} must be a whole number"))
                    })
                })
                .transpose()?;
            fields.insert(name.into(), json!(number));
        }
        let budget = filled(&self.budget_usd)
            .map(|usd| {
                let usd: f64 = usd.parse().map_err(|_| {
                    Error::invalid_request("the budget must be a number of dollars")
                })?;
                Ok::<_, Error>(
                    json!({"usd": usd, "period": filled(&self.budget_period).unwrap_or("total")}),
                )
            })
            .transpose()?;
        fields.insert("budget".into(), json!(budget));
        Ok(())
    }
}

/// The grant inputs, filled with what a key or team has.
pub fn grant_inputs(
    models: Option<&Vec<String>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget: Option<&BudgetConfig>,
) -> Markup {
    let period = budget.map(|b| serde_json::to_value(b.period).unwrap_or_default());
    let period = period.as_ref().and_then(Value::as_str).unwrap_or("total");
    html! {
        label { "Models"
            input type="text" name="models" value=[models.map(|m| m.join(", "))] placeholder="all; or names, comma-separated";
        }
        label { "Requests a minute" input type="number" min="0" name="rpm" value=[rpm]; }
        label { "Tokens a minute" input type="number" min="0" name="tpm" value=[tpm]; }
        label { "Budget (USD)" input type="number" min="0" step="any" name="budget_usd" value=[budget.map(|b| b.usd)]; }
        label { "Budget period"
            select name="budget_period" {
                @for (value, label) in [("total", "total"), ("1d", "daily"), ("1w", "weekly"), ("1mo", "monthly")] {
                    option value=(value) selected[value == period] { (label) }
                }
            }
        }
    }
}

/// A key's limits in one line.
pub fn grants_summary(
    models: Option<&Vec<String>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget: Option<&BudgetConfig>,
) -> String {
    let mut parts = Vec::new();
    if let Some(models) = models {
        parts.push(format!("models: {}", models.join(", ")));
    }
    if let Some(rpm) = rpm {
        parts.push(format!("{rpm} rpm"));
    }
    if let Some(tpm) = tpm {
        parts.push(format!("{tpm} tpm"));
    }
    if let Some(budget) = budget {
        let period = serde_json::to_value(budget.period).unwrap_or_default();
        parts.push(format!(
            "${} {}",
            budget.usd,
            period.as_str().unwrap_or_default()
        ));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(" · ")
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    revoked: Option<String>,
}

/// `GET /ui/keys[?revoked=1]`.
pub async fn list(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query: ListQuery = crate::surface::query(raw.as_deref()).unwrap_or_default();
    show_list(&state, &session, query.revoked.is_some(), None, None).await
}

/// The keys page, with a new key's secret or a failed change's error above the list.
async fn show_list(
    state: &AppState,
    session: &Session,
    include_revoked: bool,
    made: Option<&Value>,
    error: Option<&Error>,
) -> Response {
    let store = &state.services().store;
    let (keys, teams) = match (
        store.list_keys(include_revoked).await,
        store.list_teams().await,
    ) {
        (Ok(keys), Ok(teams)) => (keys, teams),
        (Err(e), _) | (_, Err(e)) => return error_page(session, Nav::Keys, &e),
    };
    let body = html! {
        (error_banner(error))
        @if let Some(made) = made {
            div.banner.ok role="status" {
                p { "Key " strong { (made["name"].as_str().unwrap_or_default()) } " made. Copy its secret now: it is not shown again." }
                div.secret {
                    code #new-secret { (made["key"].as_str().unwrap_or_default()) }
                    button.copy type="button" data-copy="new-secret" { "Copy" }
                }
            }
        }
        section.card {
            h2 { "New key" }
            form.grid method="post" action="/ui/keys" {
                (csrf_field(session))
                label { "Name" input type="text" name="name" required; }
                (team_select(&teams, None))
                (grant_inputs(None, None, None, None))
                label.check { input type="checkbox" name="admin" value="true"; " Admin (may use the admin API and this UI)" }
                div.actions { button type="submit" { "Create key" } }
            }
        }
        section.card {
            h2 { "Keys" }
            p {
                @if include_revoked { a href="/ui/keys" { "Hide revoked keys" } }
                @else { a href="/ui/keys?revoked=1" { "Show revoked keys" } }
            }
            table {
                thead { tr { th { "Name" } th { "Key" } th { "Team" } th { "Limits" } th { "Created" } th { "State" } th {} } }
                tbody {
                    @for key in &keys { (key_row(key)) }
                }
            }
            @if keys.is_empty() { p.muted { "No keys yet." } }
        }
    };
    let mut response = layout(session, Nav::Keys, "Keys", body);
    if let Some(e) = error {
        *response.status_mut() = e.kind.status();
    }
    response
}

fn key_row(key: &KeyRecord) -> Markup {
    html! {
        tr {
            td { a href=(format!("/ui/keys/{}", urlencode(&key.id))) { (key.name) } }
            td { code { (key.prefix) } }
            td { (key.team.as_deref().unwrap_or("–")) }
            td.small { (grants_summary(key.models.as_ref(), key.rpm, key.tpm, key.budget.as_ref())) }
            td.small { (when(key.created_at)) }
            td {
                @if key.revoked_at.is_some() { span.pill.breaker-open { "revoked" } }
                @else if key.admin { span.pill.admin { "admin" } }
                @else { span.pill.breaker-closed { "active" } }
            }
            td { a href=(format!("/ui/logs?key={}", urlencode(&key.id))) { "logs" } }
        }
    }
}

/// A select of the teams, `current` chosen.
pub fn team_select(teams: &[TeamRecord], current: Option<&str>) -> Markup {
    html! {
        label { "Team"
            select name="team" {
                option value="" { "none" }
                @for team in teams.iter().filter(|t| t.deleted_at.is_none()) {
                    option value=(team.name) selected[current == Some(team.name.as_str())] { (team.name) }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct KeyForm {
    name: Option<String>,
    team: Option<String>,
    admin: Option<String>,
    #[serde(flatten)]
    grants: GrantsForm,
}

impl KeyForm {
    /// The admin API's body for this form.
    fn json(&self) -> Result<Value> {
        let mut fields = Map::new();
        fields.insert("name".into(), json!(filled(&self.name).unwrap_or_default()));
        fields.insert("team".into(), json!(filled(&self.team)));
        fields.insert("admin".into(), json!(self.admin.is_some()));
        self.grants.json(&mut fields)?;
        Ok(Value::Object(fields))
    }
}

/// `POST /ui/keys`: makes a key and shows its secret, this once.
pub async fn create(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let made = async {
        let form: KeyForm = read_form(&body)?;
        admin::create_key_as(&state, &session.actor, form.json()?).await
    }
    .await;
    match made {
        Ok(made) => {
            let mut response = show_list(&state, &session, false, Some(&made), None).await;
            *response.status_mut() = StatusCode::CREATED;
            response
        }
        Err(e) => show_list(&state, &session, false, None, Some(&e)).await,
    }
}

/// `GET /ui/keys/{id}`: the key's details and its limits to change.
pub async fn edit(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    show_key(&state, &session, &id, None).await
}

async fn show_key(
    state: &AppState,
    session: &Session,
    id: &str,
    error: Option<&Error>,
) -> Response {
    let store = &state.services().store;
    let found = async {
        let key = store.get_key(id).await?.ok_or_else(|| {
            Error::new(
                crate::error::ErrorKind::NotFound,
                format!("there is no key `{id}`"),
            )
        })?;
        Ok::<_, Error>((key, store.list_teams().await?))
    }
    .await;
    let (key, teams) = match found {
        Ok(found) => found,
        Err(e) => return error_page(session, Nav::Keys, &e),
    };
    let body = html! {
        (error_banner(error))
        section.card {
            dl.facts {
                dt { "Id" } dd { code { (key.id) } }
                dt { "Secret" } dd { code { (key.prefix) } }
                dt { "Created" } dd { (when(key.created_at)) }
                dt { "Admin" } dd { (if key.admin { "yes" } else { "no" }) }
                @if let Some(revoked) = key.revoked_at { dt { "Revoked" } dd { (when(revoked)) } }
                @if let Some(expires) = key.expires_at { dt { "Expires" } dd { (when(expires)) } }
            }
        }
        @if key.revoked_at.is_none() {
            section.card {
                h2 { "Limits and budget" }
                form.grid method="post" action=(format!("/ui/keys/{}", urlencode(&key.id))) {
                    (csrf_field(session))
                    label { "Name" input type="text" name="name" value=(key.name) required; }
                    (team_select(&teams, key.team.as_deref()))
                    (grant_inputs(key.models.as_ref(), key.rpm, key.tpm, key.budget.as_ref()))
                    label.check { input type="checkbox" name="admin" value="true" checked[key.admin]; " Admin" }
                    div.actions { button type="submit" { "Save" } }
                }
            }
            section.card.danger {
                h2 { "Revoke" }
                form method="post" action=(format!("/ui/keys/{}/revoke", urlencode(&key.id))) data-confirm="Revoke this key? Requests with it stop working." {
                    (csrf_field(session))
                    p { "Requests with this key stop working on every replica within the sync interval." }
                    button.danger type="submit" { "Revoke key" }
                }
            }
        }
    };
    let mut response = layout(session, Nav::Keys, &format!("Key {}", key.name), body);
    if let Some(e) = error {
        *response.status_mut() = e.kind.status();
    }
    response
}

/// `POST /ui/keys/{id}`: changes the key's name, team, limits and budget.
pub async fn update(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let changed = async {
        let form: KeyForm = read_form(&body)?;
        admin::update_key_as(&state, &session.actor, &id, form.json()?).await
    }
    .await;
    match changed {
        Ok(_) => Redirect::to(&format!("/ui/keys/{}", urlencode(&id))).into_response(),
        Err(e) => show_key(&state, &session, &id, Some(&e)).await,
    }
}

/// `POST /ui/keys/{id}/revoke`.
pub async fn revoke(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match admin::revoke_key_as(&state, &session.actor, &id).await {
        Ok(_) => Redirect::to("/ui/keys").into_response(),
        Err(e) => show_key(&state, &session, &id, Some(&e)).await,
    }
}
