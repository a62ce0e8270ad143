//! Prompt templates over HTTP ([`crate::prompts`]): `/admin/prompts` keeps them in versions
//! (the master key or an admin key; every change audited), and `POST /v1/prompts/{name}/run`
//! renders one into a chat completions request, served by [`super::openai::complete`] like any
//! other — model permissions, limits, cache, routing, ledger — and answered in the same shape,
//! whole or streamed. The call's ledger row names the prompt and version
//! ([`crate::prompts::PROMPT_TAG`], [`crate::prompts::VERSION_TAG`] in its `metadata`).
//!
//! A run's body is `{"variables": {...}, "version": N, ...}`: `version` defaults to the latest,
//! and every other field is a chat completions parameter (`stream`, `temperature`,
//! `max_tokens`, ...) over the prompt's own. The model and messages are the prompt's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path};
use axum::response::Response;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::{answer, check_model, created, not_found, read_change};
use super::{openai, parse_json, read_json};
use crate::audit::{self, Actor, Target};
use crate::canonical::Api;
use crate::error::{Error, Result};
use crate::pipeline::RequestContext;
use crate::prompts::{Template, PROMPT_TAG, VERSION_TAG};
use crate::state::AppState;
use crate::store::{NewPrompt, PromptRecord};
use crate::wire::openai::ChatCompletionRequest;

/// Longest prompt name: names are path segments and ledger tags.
const MAX_NAME: usize = 64;

/// Fields of a chat request that belong to the prompt, not to a run or its parameters.
const FIXED: &[&str] = &["model", "messages"];

/// `POST /admin/prompts`: saves a prompt, as version 1 of a new name or the next version of
/// an existing one.
pub async fn create(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: Body,
) -> Response {
    created(
        async {
            let (_, asked): (Value, Value) = read_change(body).await?;
            create_as(&state, &actor, asked).await
        }
        .await,
    )
}

/// Saves the prompt `asked` for (`POST /admin/prompts`'s body) as `actor`, audited: the admin
/// API and the admin UI both save prompts here. The answer is the version made.
pub async fn create_as(state: &AppState, actor: &Actor, asked: Value) -> Result<Value> {
    let new: NewPrompt = parse_json(asked.to_string().as_bytes())?;
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "prompt.create",
        Target::Known(&new.name),
        audit::detail(&asked),
        async {
            check(state, &new)?;
            let record = services.store.create_prompt(&new).await?;
            services.prompts.invalidate();
            Ok(prompt_json(&record))
        },
    )
    .await
}

/// `GET /admin/prompts`: the latest version of every prompt.
pub async fn list(Extension(state): Extension<Arc<AppState>>) -> Response {
    answer(state.services().store.list_prompts().await.map(|prompts| {
        json!({"object": "list", "data": prompts.iter().map(prompt_json).collect::<Vec<_>>()})
    }))
}

/// `GET /admin/prompts/{name}`: the latest version, with every version under `versions`
/// (oldest first).
pub async fn get(Extension(state): Extension<Arc<AppState>>, Path(name): Path<String>) -> Response {
    answer(
        async {
            let versions = state.services().store.prompt_versions(&name).await?;
            let latest = versions.last().ok_or_else(|| not_found("prompt", &name))?;
            let mut value = prompt_json(latest);
            value["versions"] = versions.iter().map(prompt_json).collect();
            Ok(value)
        }
        .await,
    )
}

/// `DELETE /admin/prompts/{name}`: deletes every version. Its numbers are not used again: a
/// prompt saved later under the name goes on from the last one.
pub async fn delete(
    Extension(state): Extension<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Response {
    answer(delete_as(&state, &actor, &name).await)
}

/// Deletes every version of prompt `name` as `actor`, audited (the admin API and the UI).
pub async fn delete_as(state: &AppState, actor: &Actor, name: &str) -> Result<Value> {
    let services = state.services();
    audit::record(
        &services.store,
        actor,
        "prompt.delete",
        Target::Known(name),
        json!({}),
        async {
            let versions = services.store.delete_prompt(name).await?;
            if versions == 0 {
                return Err(not_found("prompt", name));
            }
            services.prompts.invalidate();
            Ok(json!({"object": "prompt", "name": name, "deleted": true, "versions": versions}))
        },
    )
    .await
}

/// A prompt version as the admin API shows it, with the variables its template uses.
fn prompt_json(prompt: &PromptRecord) -> Value {
    json!({
        "object": "prompt",
        "name": prompt.name,
        "version": prompt.version,
        "model": prompt.model,
        "template": prompt.template,
        "parameters": prompt.parameters,
        "variables": prompt.template.variables(),
        "created_at": prompt.created_at,
    })
}

/// What a prompt must be to be saved: a name fit for a URL, a configured model, a well-formed
/// template, and parameters that make a valid chat request with it.
fn check(state: &AppState, new: &NewPrompt) -> Result<()> {
    let name_ok = new.name.len() <= MAX_NAME
        && new.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && new
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(Error::invalid_request(format!(
            "prompt name `{}` is not allowed: use up to {MAX_NAME} letters, digits, `-`, `_` and `.`, starting with a letter or digit",
            new.name
        ))
        .with_param("name"));
    }
    check_model(&state.gateway(), &new.model, "model")?;
    new.template.check()?;
    for field in FIXED.iter().chain(&["stream"]) {
        if new.parameters.contains_key(*field) {
            return Err(Error::invalid_request(format!(
                "`parameters` may not set `{field}`: {}",
                if *field == "stream" {
                    "each run chooses whether it streams"
                } else {
                    "a prompt's model and messages are its `model` and `template`"
                }
            ))
            .with_param(format!("parameters.{field}")));
        }
    }
    // The parameters as a run sends them, with every variable empty.
    let blanks: Map<String, Value> = new
        .template
        .variables()
        .into_iter()
        .map(|name| (name, Value::String(String::new())))
        .collect();
    chat_request(
        &new.model,
        &new.template,
        &new.parameters,
        &blanks,
        Map::new(),
    )
    .and_then(ChatCompletionRequest::into_canonical)
    .map(drop)
    .map_err(|e| {
        let param = e.param.map(|p| format!("parameters.{p}"));
        Error {
            message: format!(
                "`parameters` do not make a valid chat request: {}",
                e.message
            ),
            param,
            ..e
        }
    })
}

/// The body of `POST /v1/prompts/{name}/run`.
#[derive(Deserialize)]
struct RunRequest {
    #[serde(default)]
    variables: Map<String, Value>,
    #[serde(default)]
    version: Option<i64>,
    /// Chat parameters over the prompt's own (`stream`, `temperature`, ...).
    #[serde(flatten)]
    overrides: Map<String, Value>,
}

/// `POST /v1/prompts/{name}/run`: renders the prompt with the run's variables and serves the
/// chat request it makes, answering as `/v1/chat/completions` does.
pub async fn run(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = cx.gateway.config.server.max_body_bytes;
    let made = async {
        let asked: RunRequest = read_json(body, limit).await?;
        if let Some(field) = FIXED.iter().find(|f| asked.overrides.contains_key(**f)) {
            return Err(Error::invalid_request(format!(
                "a prompt run may not set `{field}`: the prompt fixes its model and messages; send `variables`"
            ))
            .with_param(*field));
        }
        let prompt = cx.services.prompts.get(&name, asked.version).await?;
        let request = chat_request(
            &prompt.model,
            &prompt.template,
            &prompt.parameters,
            &asked.variables,
            asked.overrides,
        )?;
        Ok((prompt, request))
    }
    .await;
    match made {
        Ok((prompt, request)) => {
            let tags = vec![
                (PROMPT_TAG, Value::String(prompt.name.clone())),
                (VERSION_TAG, Value::from(prompt.version)),
            ];
            openai::complete(&cx, &headers, request, tags, None).await
        }
        Err(e) => e.into_response(Api::OpenAiChat),
    }
}

/// The chat completions request a run makes: the prompt's parameters, the run's `overrides`
/// over them (`null` drops one), the prompt's model, and its template rendered with `values`.
fn chat_request(
    model: &str,
    template: &Template,
    parameters: &Map<String, Value>,
    values: &Map<String, Value>,
    overrides: Map<String, Value>,
) -> Result<ChatCompletionRequest> {
    let messages = template.render(values)?;
    let mut body = parameters.clone();
    body.extend(overrides);
    body.insert("model".into(), Value::String(model.to_owned()));
    body.insert("messages".into(), Value::Array(messages));
    // Read as a client's body is, so that a bad override is named like a bad field.
    parse_json(Value::Object(body).to_string().as_bytes())
}
