//! Prompt templates ([`crate::prompts`]): the list, a prompt's page with every version, forms
//! to save a prompt or a new version and to delete one, and a "try it" form that runs the
//! prompt with the variables filled in.
//!
//! Saving and deleting go through the admin API's own functions ([`crate::surface::prompts`])
//! with the JSON body that API takes, so a template is checked — and the audit log names the
//! signed-in admin — exactly as for `POST /admin/prompts`. A try-it run is
//! `POST /v1/prompts/{name}/run` itself, run as the signed-in admin like the playground's chat
//! ([`crate::server::call_as`]): the whole pipeline, its ledger row tagged with the prompt.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Request};
use axum::handler::Handler;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderValue, StatusCode, Uri};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    csrf_field, error_banner, error_page, filled, layout, read_form, urlencode, when, Nav, Session,
};
use crate::error::{Error, ErrorKind, Result};
use crate::prompts::Template;
use crate::server::call_as;
use crate::state::AppState;
use crate::store::PromptRecord;
use crate::surface::prompts;

/// What the prompt form sends: the template and parameters as written, turned into the admin
/// API's JSON by [`PromptForm::json`].
#[derive(Deserialize, Default)]
struct PromptForm {
    name: Option<String>,
    model: Option<String>,
    /// `text` (the template is one user message) or `messages` (a JSON list of them).
    kind: Option<String>,
    template: Option<String>,
    /// A JSON object, or empty for none.
    parameters: Option<String>,
}

impl PromptForm {
    /// The form filled with a saved version, to change into the next one.
    fn from_record(record: &PromptRecord) -> PromptForm {
        let (kind, template) = match &record.template {
            Template::Text(text) => ("text", text.clone()),
            Template::Messages(_) => (
                "messages",
                serde_json::to_string_pretty(&record.template).unwrap_or_default(),
            ),
        };
        PromptForm {
            name: Some(record.name.clone()),
            model: Some(record.model.clone()),
            kind: Some(kind.into()),
            template: Some(template),
            parameters: (!record.parameters.is_empty())
                .then(|| serde_json::to_string_pretty(&record.parameters).unwrap_or_default()),
        }
    }

    fn is_messages(&self) -> bool {
        self.kind.as_deref() == Some("messages")
    }

    /// The admin API's body for this form, saved as prompt `name`.
    fn json(&self, name: &str) -> Result<Value> {
        // Browsers send a textarea's line breaks as CRLF.
        let template = self
            .template
            .as_deref()
            .unwrap_or_default()
            .replace("\r\n", "\n");
        let template = if self.is_messages() {
            let example = r#"[{"role": "system", "content": "..."}, {"role": "user", "content": "{{question}}"}]"#;
            match serde_json::from_str::<Value>(&template) {
                Ok(list @ Value::Array(_)) => list,
                Ok(_) => {
                    return Err(Error::invalid_request(format!(
                        "a template of messages is a JSON list, like {example}"
                    ))
                    .with_param("template"))
                }
                Err(e) => {
                    return Err(Error::invalid_request(format!(
                        "the template is not valid JSON ({e}): write a list like {example}"
                    ))
                    .with_param("template"))
                }
            }
        } else {
            Value::String(template)
        };
        let parameters = match filled(&self.parameters) {
            None => Value::Object(Map::new()),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(object @ Value::Object(_)) => object,
                _ => {
                    return Err(Error::invalid_request(
                        r#"the parameters are not a JSON object: write them like {"temperature": 0.2, "max_tokens": 300}, or leave them empty"#,
                    )
                    .with_param("parameters"))
                }
            },
        };
        Ok(json!({
            "name": name,
            "model": filled(&self.model).unwrap_or_default(),
            "template": template,
            "parameters": parameters,
        }))
    }
}

/// The form saving a prompt (with a name field) or a new version of one (`action` names it).
fn prompt_form(
    state: &AppState,
    session: &Session,
    action: &str,
    with_name: bool,
    form: &PromptForm,
) -> Markup {
    let gateway = state.gateway();
    let models = gateway.router.public_names();
    html! {
        form.grid method="post" action=(action) {
            (csrf_field(session))
            @if with_name {
                label { "Name" input type="text" name="name" value=[filled(&form.name)] required placeholder="support-reply"; }
            }
            label { "Model"
                select name="model" {
                    @for model in &models {
                        option value=(model) selected[form.model.as_deref() == Some(*model)] { (model) }
                    }
                }
            }
            label { "Template is"
                select name="kind" {
                    option value="text" selected[!form.is_messages()] { "a text (one user message)" }
                    option value="messages" selected[form.is_messages()] { "a JSON list of messages" }
                }
            }
            label.wide { "Template " small { "{{name}} is a variable" }
                textarea name="template" rows="6" required placeholder=r#"Answer for {{product}} support, briefly: {{question}}"# { (form.template.as_deref().unwrap_or_default()) }
            }
            label.wide { "Parameters " small { "a JSON object of chat parameters; optional" }
                textarea name="parameters" rows="3" placeholder=r#"{"temperature": 0.2, "max_tokens": 300}"# { (form.parameters.as_deref().unwrap_or_default()) }
            }
            div.actions { button type="submit" { (if with_name { "Save prompt" } else { "Save new version" }) } }
        }
    }
}

/// `GET /ui/prompts`.
pub async fn list(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    show_list(&state, &session, &PromptForm::default(), None).await
}

/// The list, with the new prompt form (as filled, after a refused save) and its error.
async fn show_list(
    state: &AppState,
    session: &Session,
    form: &PromptForm,
    error: Option<&Error>,
) -> Response {
    let prompts = match state.services().store.list_prompts().await {
        Ok(prompts) => prompts,
        Err(e) => return error_page(session, Nav::Prompts, &e),
    };
    let body = html! {
        (error_banner(error))
        section.card {
            h2 { "Prompts" }
            table {
                thead { tr { th { "Name" } th.num { "Version" } th { "Model" } th { "Variables" } th { "Saved" } } }
                tbody {
                    @for prompt in &prompts {
                        tr {
                            td { a href=(format!("/ui/prompts/{}", urlencode(&prompt.name))) { (prompt.name) } }
                            td.num { (prompt.version) }
                            td { (prompt.model) }
                            td { (variables(&prompt.template)) }
                            td.small { (when(prompt.created_at)) }
                        }
                    }
                }
            }
            @if prompts.is_empty() { p.muted { "No prompts yet." } }
        }
        section.card {
            h2 { "New prompt" }
            p.muted { "Saving under a name that exists makes its next version." }
            (prompt_form(state, session, "/ui/prompts", true, form))
        }
    };
    let mut response = layout(session, Nav::Prompts, "Prompts", body);
    if let Some(e) = error {
        *response.status_mut() = e.kind.status();
    }
    response
}

fn variables(template: &Template) -> Markup {
    let names = template.variables();
    html! {
        @if names.is_empty() { span.muted { "none" } }
        @for (i, name) in names.iter().enumerate() {
            @if i > 0 { " " }
            code { (name) }
        }
    }
}

/// `POST /ui/prompts`: saves a prompt (a new version when the name exists).
pub async fn create(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let form: PromptForm = match read_form(&body) {
        Ok(form) => form,
        Err(e) => return show_list(&state, &session, &PromptForm::default(), Some(&e)).await,
    };
    let name = filled(&form.name).unwrap_or_default().to_owned();
    let saved = async { prompts::create_as(&state, &session.actor, form.json(&name)?).await }.await;
    match saved {
        Ok(_) => Redirect::to(&format!("/ui/prompts/{}", urlencode(&name))).into_response(),
        Err(e) => show_list(&state, &session, &form, Some(&e)).await,
    }
}

/// `GET /ui/prompts/{name}`: its versions, the try-it form, a new version, deleting.
pub async fn detail(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    show_prompt(&state, &session, &name, None, None).await
}

async fn show_prompt(
    state: &AppState,
    session: &Session,
    name: &str,
    form: Option<&PromptForm>,
    error: Option<&Error>,
) -> Response {
    let versions = match state.services().store.prompt_versions(name).await {
        Ok(versions) if !versions.is_empty() => versions,
        Ok(_) => {
            let e = Error::new(ErrorKind::NotFound, format!("there is no prompt `{name}`"));
            return error_page(session, Nav::Prompts, &e);
        }
        Err(e) => return error_page(session, Nav::Prompts, &e),
    };
    let Some(latest) = versions.last() else {
        return error_page(session, Nav::Prompts, &Error::internal("no versions"));
    };
    // Every variable any version uses, the latest's first: a run of an older version gets
    // the ones it needs, and the API ignores the rest.
    let mut names = latest.template.variables();
    for version in versions.iter().rev() {
        for variable in version.template.variables() {
            if !names.contains(&variable) {
                names.push(variable);
            }
        }
    }
    let path = format!("/ui/prompts/{}", urlencode(name));
    let filled_form = PromptForm::from_record(latest);
    let body = html! {
        (error_banner(error))
        section.card {
            dl.facts {
                dt { "Latest version" } dd { (latest.version) }
                dt { "Model" } dd { (latest.model) }
                dt { "Variables" } dd { (variables(&latest.template)) }
                dt { "Saved" } dd { (when(latest.created_at)) " UTC" }
                dt { "API" } dd { code { "POST /v1/prompts/" (name) "/run" } }
            }
        }
        section.card.playground {
            h2 { "Try it" }
            form #prompt-run data-action=(format!("{path}/run")) {
                div.row {
                    label { "Version "
                        select #pr-version {
                            @for version in versions.iter().rev() {
                                option value=(version.version) { (version.version) @if version.version == latest.version { " (latest)" } }
                            }
                        }
                    }
                }
                @for variable in &names {
                    label { (variable)
                        textarea rows="2" data-variable=(variable) {}
                    }
                }
                div #pr-answer.turn.assistant aria-live="polite" {}
                div.actions {
                    button #pr-send type="submit" { "Run" }
                    span #pr-status.muted {}
                }
            }
            p.muted { "Each run goes as " (session.actor.name) " through the whole pipeline and appears in the logs, tagged with the prompt." }
        }
        @for version in versions.iter().rev() {
            section.card {
                h2 { "Version " (version.version) }
                dl.facts {
                    dt { "Saved" } dd { (when(version.created_at)) " UTC" }
                    dt { "Model" } dd { (version.model) }
                    dt { "Template" } dd { (template(&version.template)) }
                    dt { "Parameters" } dd {
                        @if version.parameters.is_empty() { span.muted { "none" } }
                        @else { pre { (serde_json::to_string_pretty(&version.parameters).unwrap_or_default()) } }
                    }
                }
            }
        }
        section.card {
            h2 { "New version" }
            (prompt_form(state, session, &path, false, form.unwrap_or(&filled_form)))
        }
        section.card.danger {
            h2 { "Delete" }
            form method="post" action=(format!("{path}/delete")) data-confirm="Delete every version of this prompt? Runs of it stop working." {
                (csrf_field(session))
                p { "Deletes every version; runs of it answer 404. A prompt saved later under this name goes on from version " (latest.version + 1) "." }
                button.danger type="submit" { "Delete prompt" }
            }
        }
        p { a href="/ui/prompts" { "← All prompts" } }
    };
    let mut response = layout(session, Nav::Prompts, &format!("Prompt {name}"), body);
    if let Some(e) = error {
        *response.status_mut() = e.kind.status();
    }
    response
}

/// A template as text, or its messages each with its role.
fn template(template: &Template) -> Markup {
    html! {
        @match template {
            Template::Text(text) => pre { (text) },
            Template::Messages(messages) => {
                @for message in messages {
                    div.message {
                        span.pill { (message.role) }
                        pre { (message.content) }
                    }
                }
            },
        }
    }
}

/// `POST /ui/prompts/{name}`: saves the next version of prompt `name`.
pub async fn create_version(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let form: PromptForm = match read_form(&body) {
        Ok(form) => form,
        Err(e) => return show_prompt(&state, &session, &name, None, Some(&e)).await,
    };
    let saved = async { prompts::create_as(&state, &session.actor, form.json(&name)?).await }.await;
    match saved {
        Ok(_) => Redirect::to(&format!("/ui/prompts/{}", urlencode(&name))).into_response(),
        Err(e) => show_prompt(&state, &session, &name, Some(&form), Some(&e)).await,
    }
}

/// `POST /ui/prompts/{name}/delete`.
pub async fn delete(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    match prompts::delete_as(&state, &session.actor, &name).await {
        Ok(_) => Redirect::to("/ui/prompts").into_response(),
        Err(e) => show_prompt(&state, &session, &name, None, Some(&e)).await,
    }
}

/// `POST /ui/prompts/{name}/run`: a run of the prompt (`POST /v1/prompts/{name}/run`'s body,
/// streamed with `stream: true`) as the signed-in admin, tagged `{"ui": "prompts"}` in the
/// ledger beside the prompt's own tags.
pub async fn run(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    mut req: Request,
) -> Response {
    // Counted and traced as the prompt run it is; `{name}` stays the route's parameter.
    let uri = format!("/v1/prompts/{}/run", urlencode(&name));
    match uri.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    }
    req.headers_mut().insert(
        "x-proxima-metadata",
        HeaderValue::from_static(r#"{"ui":"prompts"}"#),
    );
    let trace = state.services().telemetry.start_trace(req.headers());
    let gateway = state.gateway();
    call_as(&state, gateway, session.caller.clone(), trace, req, |req| {
        prompts::run.call(req, ())
    })
    .await
}
