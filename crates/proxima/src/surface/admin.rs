//! The admin API (the master key or an admin key): virtual keys, teams, usage reports, the
//! call log, model health, config reload and the audit log (prompt templates are in
//! [`super::prompts`]). Errors are in OpenAI's shape.
//! Every change goes through [`audit::record`], which writes its audit entry.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::query;
use super::{json_response, parse_json, read_json};
use crate::audit::{self, Actor, Target};
use crate::canonical::Api;
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::state::AppState;
use crate::store::{
    AuditFilter, GroupBy, KeyPatch, KeyRecord, LedgerRow, LogFilter, NewKey, TeamPatch, TeamRecord,
};

/// Admin bodies are small; this bounds what an admin request may send.
const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// An admin answer: the value as JSON, or the error in OpenAI's shape.
pub(super) fn answer<T: serde::Serialize>(result: Result<T>) -> Response {
    match result {
        Ok(value) => json_response(&value),
        Err(e) => e.into_response(Api::OpenAiChat),
    }
}

pub(super) fn created<T: serde::Serialize>(result: Result<T>) -> Response {
    let mut response = answer(result);
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
    response
}

/// The query string as `T`; a bad one is a 400 in the API's shape, like every other error.
pub(super) fn not_found(what: &str, id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("there is no {what} `{id}`"))
}

/// An admin change's body, as `T` and as the JSON it was sent (for its audit entry's detail).
pub(super) async fn read_change<T: DeserializeOwned>(body: Body) -> Result<(T, Value)> {
    let asked: Value = read_json(body, ADMIN_BODY_LIMIT).await?;
    let change = parse_json(asked.to_string().as_bytes())?;
    Ok((change, asked))
}

/// Checks what a key or team may be given: known model names, regions some provider is in,
/// sane numbers.
fn check_limits(
    state: &AppState,
    models: Option<&Vec<String>>,
    budget: Option<&crate::config::BudgetConfig>,
    regions: Option<&Vec<String>>,
) -> Result<()> {
    let gateway = state.gateway();
    for model in models.into_iter().flatten() {
        check_model(&gateway, model, "models")?;
    }
    if let Some(problem) =
        regions.and_then(|r| crate::config::validate::regions_problem(&gateway.config, r))
    {
        return Err(Error::invalid_request(format!("regions {problem}")).with_param("regions"));
    }
    if let Some(budget) = budget {
        if !(budget.usd.is_finite() && budget.usd >= 0.0) {
            return Err(
                Error::invalid_request("budget.usd must be zero or more dollars")
                    .with_param("budget.usd"),
            );
        }
    }
    Ok(())
}

/// Checks that `model` names a configured public model (400 naming `param` if not).
pub(super) fn check_model(
    gateway: &crate::gateway::Gateway,
    model: &str,
    param: &str,
) -> Result<()> {
    if gateway.router.resolve(model).is_none() && !gateway.config.models.contains_key(model) {
        return Err(Error::invalid_request(format!(
            "no model named `{model}`; configured: {}",
            gateway.router.public_names().join(", ")
        ))
        .with_param(param));
    }
    Ok(())
}

/// `POST /admin/keys`: makes a virtual key. The answer holds the secret, this once.
pub async fn create_key(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: Body,
) -> Response {
    created(
        async {
            let asked = read_json(body, ADMIN_BODY_LIMIT).await?;
            create_key_as(&state, &actor, asked).await
        }
        .await,
    )
}

/// Makes the key `asked` for (`POST /admin/keys`'s body) as `actor`, audited: the admin API
/// and the admin UI both make keys here. The answer holds the secret, this once.
pub async fn create_key_as(state: &AppState, actor: &Actor, asked: Value) -> Result<Value> {
    let new: NewKey = parse_json(asked.to_string().as_bytes())?;
    let services = state.services();
    let made_id = |key: &Value| key["id"].as_str().unwrap_or_default().to_owned();
    audit::record(
        &services.store,
        actor,
        "key.create",
        Target::Made(made_id),
        audit::detail(&asked),
        async {
            if new.name.trim().is_empty() {
                return Err(Error::invalid_request("a key needs a `name`").with_param("name"));
            }
            check_limits(
                state,
                new.models.as_ref(),
                new.budget.as_ref(),
                new.regions.as_ref(),
            )?;
            let (record, secret) = services.store.create_key(&new).await?;
            services.directory.apply_key(&record);
            let mut value = serde_json::to_value(&record).unwrap_or_default();
            value["key"] = secret.into();
            Ok(value)
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyListQuery {
    #[serde(default)]
    include_revoked: bool,
}

/// `GET /admin/keys`: every key, without secrets.
pub async fn list_keys(
    Extension(state): Extension<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    answer(
        async {
            let query: KeyListQuery = query(raw.as_deref())?;
            let keys = state
                .services()
                .store
                .list_keys(query.include_revoked)
                .await?;
            Ok(json!({"object": "list", "data": keys}))
        }
        .await,
    )
}

/// `GET /admin/keys/{id}`.
pub async fn get_key(
    Extension(state): Extension<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            state
                .services()
                .store
                .get_key(&id)
                .await?
                .ok_or_else(|| not_found("key", &id))
        }
        .await,
    )
}

/// `PATCH /admin/keys/{id}`: changes limits, models, team, budget, expiry or metadata.
pub async fn update_key(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    answer(
        async {
            let asked = read_json(body, ADMIN_BODY_LIMIT).await?;
            update_key_as(&state, &actor, &id, asked).await
        }
        .await,
    )
}

/// Changes key `id` as `asked` (`PATCH /admin/keys/{id}`'s body) as `actor`, audited.
pub async fn update_key_as(
    state: &AppState,
    actor: &Actor,
    id: &str,
    asked: Value,
) -> Result<KeyRecord> {
    let patch: KeyPatch = parse_json(asked.to_string().as_bytes())?;
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "key.update",
        Target::Known(id),
        audit::detail(&asked),
        async {
            check_limits(
                state,
                patch.models.as_ref().and_then(Option::as_ref),
                patch.budget.as_ref().and_then(Option::as_ref),
                patch.regions.as_ref().and_then(Option::as_ref),
            )?;
            let record = services
                .store
                .update_key(id, &patch)
                .await?
                .ok_or_else(|| not_found("key", id))?;
            services.directory.apply_key(&record);
            Ok(record)
        },
    )
    .await
}

/// `DELETE /admin/keys/{id}`: revokes the key on every replica within `sync_interval`.
pub async fn revoke_key(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    answer(revoke_key_as(&state, &actor, &id).await)
}

/// Revokes key `id` as `actor`, audited.
pub async fn revoke_key_as(state: &AppState, actor: &Actor, id: &str) -> Result<KeyRecord> {
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "key.revoke",
        Target::Known(id),
        json!({}),
        async {
            let record = services
                .store
                .revoke_key(id)
                .await?
                .ok_or_else(|| not_found("key", id))?;
            services.directory.apply_key(&record);
            Ok(record)
        },
    )
    .await
}

/// `POST /admin/teams`.
pub async fn create_team(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: Body,
) -> Response {
    created(
        async {
            let asked = read_json(body, ADMIN_BODY_LIMIT).await?;
            create_team_as(&state, &actor, asked).await
        }
        .await,
    )
}

/// Makes the team `asked` for (`POST /admin/teams`'s body) as `actor`, audited.
pub async fn create_team_as(state: &AppState, actor: &Actor, asked: Value) -> Result<TeamRecord> {
    let team: TeamRecord = parse_json(asked.to_string().as_bytes())?;
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "team.create",
        Target::Known(&team.name),
        audit::detail(&asked),
        async {
            if team.name.trim().is_empty() {
                return Err(Error::invalid_request("a team needs a `name`").with_param("name"));
            }
            check_limits(
                state,
                team.models.as_ref(),
                team.budget.as_ref(),
                team.regions.as_ref(),
            )?;
            let record = services.store.create_team(&team).await?.ok_or_else(|| {
                Error::invalid_request(format!("a team named `{}` exists already", team.name))
                    .with_param("name")
            })?;
            services.directory.apply_team(&record);
            Ok(record)
        },
    )
    .await
}

/// `GET /admin/teams`.
pub async fn list_teams(Extension(state): Extension<Arc<AppState>>) -> Response {
    answer(
        state
            .services()
            .store
            .list_teams()
            .await
            .map(|teams| json!({"object": "list", "data": teams})),
    )
}

/// `GET /admin/teams/{name}`.
pub async fn get_team(
    Extension(state): Extension<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    answer(
        async {
            state
                .services()
                .store
                .get_team(&name)
                .await?
                .filter(|t| t.deleted_at.is_none())
                .ok_or_else(|| not_found("team", &name))
        }
        .await,
    )
}

/// `PATCH /admin/teams/{name}`.
pub async fn update_team(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    answer(
        async {
            let asked = read_json(body, ADMIN_BODY_LIMIT).await?;
            update_team_as(&state, &actor, &name, asked).await
        }
        .await,
    )
}

/// Changes team `name` as `asked` (`PATCH /admin/teams/{name}`'s body) as `actor`, audited.
pub async fn update_team_as(
    state: &AppState,
    actor: &Actor,
    name: &str,
    asked: Value,
) -> Result<TeamRecord> {
    let patch: TeamPatch = parse_json(asked.to_string().as_bytes())?;
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "team.update",
        Target::Known(name),
        audit::detail(&asked),
        async {
            check_limits(
                state,
                patch.models.as_ref().and_then(Option::as_ref),
                patch.budget.as_ref().and_then(Option::as_ref),
                patch.regions.as_ref().and_then(Option::as_ref),
            )?;
            let record = services
                .store
                .update_team(name, &patch)
                .await?
                .ok_or_else(|| not_found("team", name))?;
            services.directory.apply_team(&record);
            Ok(record)
        },
    )
    .await
}

/// `DELETE /admin/teams/{name}`: the team's keys keep working, without its limits.
pub async fn delete_team(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Response {
    answer(delete_team_as(&state, &actor, &name).await)
}

/// Deletes team `name` as `actor`, audited.
pub async fn delete_team_as(state: &AppState, actor: &Actor, name: &str) -> Result<Value> {
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "team.delete",
        Target::Known(name),
        json!({}),
        async {
            if !services.store.delete_team(name).await? {
                return Err(not_found("team", name));
            }
            if let Some(record) = services.store.get_team(name).await? {
                services.directory.apply_team(&record);
            }
            Ok(json!({"name": name, "deleted": true}))
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    by: Option<GroupBy>,
    from: Option<String>,
    to: Option<String>,
}

/// A `from`/`to` query value as epoch ms.
pub(crate) fn time_param(value: Option<&str>, name: &str, default: i64) -> Result<i64> {
    match value {
        None => Ok(default),
        Some(text) => clock::parse_time(text, clock::now_ms())
            .map_err(|e| Error::invalid_request(e).with_param(name)),
    }
}

/// `GET /admin/usage?by=key|team|model|day&from=&to=`: requests, errors, tokens and dollars,
/// and the response cache's hits with the dollars they saved, from the ledger (and its daily
/// rollups for days purged by `log_retention`). `from` defaults to 30 days ago, `to` to now.
pub async fn usage(
    Extension(state): Extension<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    answer(
        async {
            let query: UsageQuery = query(raw.as_deref())?;
            let now = clock::now_ms();
            let from = time_param(query.from.as_deref(), "from", now - 30 * 86_400_000)?;
            let to = time_param(query.to.as_deref(), "to", now + 1)?;
            let by = query.by.unwrap_or(GroupBy::Model);
            let store = &state.services().store;
            let groups = store.usage_report(by, from, to).await?;
            let rolled_up_before = store.purged_before().await?.map(clock::day);
            let total_nanos: i64 = groups.iter().map(|g| g.cost_nanos).sum();
            let saved_nanos: i64 = groups.iter().map(|g| g.saved_nanos).sum();
            Ok(json!({
                "object": "usage_report",
                "by": by,
                "from": clock::rfc3339(from),
                "to": clock::rfc3339(to),
                // Days before this one are read from daily rollups: they count whole.
                "rolled_up_before": rolled_up_before,
                "total": {
                    "requests": groups.iter().map(|g| g.requests).sum::<i64>(),
                    "errors": groups.iter().map(|g| g.errors).sum::<i64>(),
                    "input_tokens": groups.iter().map(|g| g.input_tokens).sum::<i64>(),
                    "output_tokens": groups.iter().map(|g| g.output_tokens).sum::<i64>(),
                    "cost_usd": crate::pricing::usd(total_nanos),
                    "cache_hits": groups.iter().map(|g| g.cache_hits).sum::<i64>(),
                    "saved_usd": crate::pricing::usd(saved_nanos),
                },
                "data": groups,
            }))
        }
        .await,
    )
}

/// An optional `from`/`to` query value as epoch ms.
pub(crate) fn optional_time(value: Option<&str>, name: &str) -> Result<Option<i64>> {
    value.map(|t| time_param(Some(t), name, 0)).transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    key: Option<String>,
    team: Option<String>,
    model: Option<String>,
    status: Option<String>,
    request_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /admin/logs`: the call log, newest first, filtered by key, team, model, status
/// (`429`, `ok`, `error`), request id and time; `next` pages on.
pub async fn logs(Extension(state): Extension<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    answer(
        async {
            let query: LogsQuery = query(raw.as_deref())?;
            let filter = LogFilter {
                from: optional_time(query.from.as_deref(), "from")?,
                to: optional_time(query.to.as_deref(), "to")?,
                key: query.key,
                team: query.team,
                model: query.model,
                status: query.status,
                request_id: query.request_id,
                limit: query.limit,
                after: query.after,
            };
            let page = state.services().store.logs(&filter).await?;
            let data: Vec<Value> = page.data.iter().map(log_entry).collect::<Result<_>>()?;
            Ok(json!({"object": "list", "data": data, "next": page.next}))
        }
        .await,
    )
}

/// A ledger row as `/admin/logs` shows it: its cost (and a cache hit's saving) in dollars
/// (`cost_usd`, `saved_usd`), as peers show it; the exact nano-dollars stay in the store.
fn log_entry(row: &LedgerRow) -> Result<Value> {
    let mut entry = serde_json::to_value(row)
        .map_err(|e| Error::internal(format!("cannot show a ledger row: {e}")))?;
    if let Some(fields) = entry.as_object_mut() {
        fields.remove("cost_nanos");
        fields.insert(
            "cost_usd".into(),
            json!(crate::pricing::usd(row.cost_nanos)),
        );
        fields.remove("saved_nanos");
        fields.insert(
            "saved_usd".into(),
            json!(crate::pricing::usd(row.saved_nanos)),
        );
    }
    Ok(entry)
}

/// `GET /admin/models`: every public model with its targets' breaker state, latency and
/// error figures, and canary status.
pub async fn models(Extension(state): Extension<Arc<AppState>>) -> Response {
    json_response(&json!({ "object": "list", "data": model_health(&state) }))
}

/// Every public model, by name, with its targets' breaker state, latency and error figures,
/// and canary status: what `/admin/models` answers and the admin UI shows.
pub fn model_health(state: &AppState) -> Vec<Value> {
    let gateway = state.gateway();
    let mut models: Vec<Value> = gateway
        .router
        .all_models()
        .map(|m| {
            let config = gateway.config.models.get(&*m.name);
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
    models
}

/// `POST /admin/config/reload`: 200 when the new config is in force, 400 with its problems
/// (and the old one still running) when it is invalid.
pub async fn reload(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> Response {
    answer(
        state
            .reload(&actor)
            .await
            .map(|()| json!({ "status": "reloaded" })),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    #[serde(alias = "since")]
    from: Option<String>,
    #[serde(alias = "until")]
    to: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /admin/audit`: admin actions, newest first, filtered by actor (id or name), action
/// (`key.create`, or `key` for every key action), target and time (`from`/`since`,
/// `to`/`until`, written as for `/admin/logs`); `next` pages on.
pub async fn audit(
    Extension(state): Extension<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    answer(
        async {
            let query: AuditQuery = query(raw.as_deref())?;
            let filter = AuditFilter {
                from: optional_time(query.from.as_deref(), "from")?,
                to: optional_time(query.to.as_deref(), "to")?,
                actor: query.actor,
                action: query.action,
                target: query.target,
                limit: query.limit,
                after: query.after,
            };
            let page = state.services().store.audit_log(&filter).await?;
            Ok(json!({"object": "list", "data": page.data, "next": page.next}))
        }
        .await,
    )
}
