//! Teams: the list, a form to make one, a page to change its limits and budget, and
//! deleting — through the admin API's functions, audited under the signed-in admin's name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use maud::html;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::keys::{grant_inputs, grants_summary, GrantsForm};
use super::{
    csrf_field, error_banner, error_page, filled, layout, read_form, urlencode, when, Nav, Session,
};
use crate::error::{Error, ErrorKind, Result};
use crate::state::AppState;
use crate::surface::admin;

/// `GET /ui/teams`.
pub async fn list(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    show_list(&state, &session, None).await
}

async fn show_list(state: &AppState, session: &Session, error: Option<&Error>) -> Response {
    let teams = match state.services().store.list_teams().await {
        Ok(teams) => teams,
        Err(e) => return error_page(session, Nav::Teams, &e),
    };
    let body = html! {
        (error_banner(error))
        section.card {
            h2 { "New team" }
            form.grid method="post" action="/ui/teams" {
                (csrf_field(session))
                label { "Name" input type="text" name="name" required; }
                (grant_inputs(None, None, None, None))
                div.actions { button type="submit" { "Create team" } }
            }
        }
        section.card {
            h2 { "Teams" }
            table {
                thead { tr { th { "Name" } th { "Limits" } th { "Created" } th {} } }
                tbody {
                    @for team in teams.iter().filter(|t| t.deleted_at.is_none()) {
                        tr {
                            td { a href=(format!("/ui/teams/{}", urlencode(&team.name))) { (team.name) } }
                            td.small { (grants_summary(team.models.as_ref(), team.rpm, team.tpm, team.budget.as_ref())) }
                            td.small { (when(team.created_at)) }
                            td { a href=(format!("/ui/logs?team={}", urlencode(&team.name))) { "logs" } }
                        }
                    }
                }
            }
            @if teams.iter().all(|t| t.deleted_at.is_some()) { p.muted { "No teams yet." } }
        }
    };
    let mut response = layout(session, Nav::Teams, "Teams", body);
    if let Some(e) = error {
        *response.status_mut() = e.kind.status();
    }
    response
}

#[derive(Deserialize)]
struct TeamForm {
    name: Option<String>,
    #[serde(flatten)]
    grants: GrantsForm,
}

impl TeamForm {
    fn json(&self, with_name: bool) -> Result<Value> {
        let mut fields = Map::new();
        if with_name {
            fields.insert("name".into(), json!(filled(&self.name).unwrap_or_default()));
        }
        self.grants.json(&mut fields)?;
        Ok(Value::Object(fields))
    }
}

/// `POST /ui/teams`.
pub async fn create(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let made = async {
        let form: TeamForm = read_form(&body)?;
        admin::create_team_as(&state, &session.actor, form.json(true)?).await
    }
    .await;
    match made {
        Ok(team) => {
            let mut response =
                Redirect::to(&format!("/ui/teams/{}", urlencode(&team.name))).into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
        }
        Err(e) => show_list(&state, &session, Some(&e)).await,
    }
}

/// `GET /ui/teams/{name}`.
pub async fn edit(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    show_team(&state, &session, &name, None).await
}

async fn show_team(
    state: &AppState,
    session: &Session,
    name: &str,
    error: Option<&Error>,
) -> Response {
    let team = match state.services().store.get_team(name).await {
        Ok(Some(team)) if team.deleted_at.is_none() => team,
        Ok(_) => {
            let e = Error::new(ErrorKind::NotFound, format!("there is no team `{name}`"));
            return error_page(session, Nav::Teams, &e);
        }
        Err(e) => return error_page(session, Nav::Teams, &e),
    };
    let path = format!("/ui/teams/{}", urlencode(&team.name));
    let body = html! {
        (error_banner(error))
        section.card {
            h2 { "Limits and budget" }
            form.grid method="post" action=(path) {
                (csrf_field(session))
                (grant_inputs(team.models.as_ref(), team.rpm, team.tpm, team.budget.as_ref()))
                div.actions { button type="submit" { "Save" } }
            }
        }
        section.card.danger {
            h2 { "Delete" }
            form method="post" action=(format!("{path}/delete")) data-confirm="Delete this team? Its keys keep working, without its limits." {
                (csrf_field(session))
                p { "The team's keys keep working, without its limits." }
                button.danger type="submit" { "Delete team" }
            }
        }
    };
    let mut response = layout(session, Nav::Teams, &format!("Team {}", team.name), body);
    if let Some(e) = error {
        *response.status_mut() = e.kind.status();
    }
    response
}

/// `POST /ui/teams/{name}`.
pub async fn update(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let changed = async {
        let form: TeamForm = read_form(&body)?;
        admin::update_team_as(&state, &session.actor, &name, form.json(false)?).await
    }
    .await;
    match changed {
        Ok(_) => Redirect::to(&format!("/ui/teams/{}", urlencode(&name))).into_response(),
        Err(e) => show_team(&state, &session, &name, Some(&e)).await,
    }
}

/// `POST /ui/teams/{name}/delete`.
pub async fn delete(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    match admin::delete_team_as(&state, &session.actor, &name).await {
        Ok(_) => Redirect::to("/ui/teams").into_response(),
        Err(e) => show_team(&state, &session, &name, Some(&e)).await,
    }
}
