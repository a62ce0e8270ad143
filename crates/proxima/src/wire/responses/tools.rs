//! Responses tools → canonical function tools, and the map that turns calls back into the
//! client's tool kinds (function or custom, with their namespace).
//!
//! Clients such as Codex declare more than plain functions: `custom` tools that take free-form
//! text, `namespace` groups (MCP servers), and hosted tools only OpenAI can run. Every backend
//! understands function tools, so custom and namespaced tools become function tools under a
//! unique name, and hosted tools are dropped — a backend would refuse them. `file_search` is
//! the one hosted tool the gateway runs itself ([`super::file_search`]): it is kept aside, not
//! offered to the model.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::file_search::FileSearchTool;
use crate::canonical::{Tool, ToolChoice};
use crate::error::{Error, Result};

/// Tools OpenAI runs on its side (or that need a model trained for them); no other backend can.
const HOSTED: &[&str] = &[
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "code_interpreter",
    "computer",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "local_shell",
    "shell",
    "mcp",
    "apply_patch",
    "tool_search",
];

/// Joins a namespace and a tool name into one function name. `__` is what Codex itself uses
/// for MCP tools (`mcp__server__tool`), so models have seen such names.
fn join(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}__{name}"),
        None => name.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    Function,
    /// Free-form text input: the canonical tool takes `{"input": "..."}`.
    Custom,
}

/// Which client tool a canonical tool name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOrigin {
    pub kind: ToolKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// Canonical tool name → the client's tool. Names not in the map are plain functions.
#[derive(Debug, Clone, Default)]
pub struct ToolNames {
    by_canonical: HashMap<String, ToolOrigin>,
}

impl ToolNames {
    /// The client tool behind a canonical name the model called.
    pub fn origin(&self, canonical: &str) -> ToolOrigin {
        self.by_canonical
            .get(canonical)
            .cloned()
            .unwrap_or_else(|| ToolOrigin {
                kind: ToolKind::Function,
                namespace: None,
                name: canonical.to_owned(),
            })
    }

    /// The canonical name of a client tool, as used for calls in the input.
    pub fn canonical(namespace: Option<&str>, name: &str) -> String {
        join(namespace, name)
    }
}

#[derive(Deserialize)]
struct FunctionToolWire {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct CustomToolWire {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    format: Option<Value>,
}

#[derive(Deserialize)]
struct NamespaceToolWire {
    name: String,
    #[serde(default)]
    description: Option<String>,
    tools: Vec<Value>,
}

/// The tools offered to the model: canonical tools, the client's declarations of the same tools
/// (to echo back), the name map, and the file search the gateway runs.
pub struct Converted {
    pub tools: Vec<Tool>,
    pub declared: Vec<Value>,
    pub names: ToolNames,
    pub file_search: Option<FileSearchTool>,
}

pub fn convert(tools: Vec<Value>) -> Result<Converted> {
    let mut out = Converted {
        tools: Vec::new(),
        declared: Vec::new(),
        names: ToolNames::default(),
        file_search: None,
    };
    for (i, tool) in tools.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let kind = type_of(&tool, &at)?;
        match kind.as_str() {
            "function" | "custom" => {
                add(&mut out, &tool, None, None, &at)?;
                out.declared.push(tool);
            }
            "namespace" => {
                let ns: NamespaceToolWire = parse(tool.clone(), &at)?;
                for (j, child) in ns.tools.iter().enumerate() {
                    let at = format!("{at}.tools[{j}]");
                    match type_of(child, &at)?.as_str() {
                        "function" | "custom" => {
                            add(&mut out, child, Some(&ns.name), ns.description.as_deref(), &at)?
                        }
                        other => {
                            return Err(Error::invalid_request(format!(
                                "{at}.type `{other}` is not allowed in a namespace; use function or custom"
                            ))
                            .with_param(format!("{at}.type")))
                        }
                    }
                }
                out.declared.push(tool);
            }
            "file_search" => {
                if out.file_search.is_some() {
                    return Err(Error::invalid_request(format!(
                        "{at}: only one file_search tool may be given; list every vector store in its `vector_store_ids`"
                    ))
                    .with_param(at));
                }
                out.file_search = Some(FileSearchTool::parse(&tool, &at)?);
                out.declared.push(tool);
            }
            hosted if HOSTED.contains(&hosted) => {
                // The upstream would refuse it, and the gateway cannot run it: the model simply
                // does not get this tool.
                tracing::debug!(
                    tool = hosted,
                    "dropping a hosted Responses tool no backend here can run"
                );
            }
            other => {
                return Err(Error::invalid_request(format!(
                    "{at}.type `{other}` is not supported; use function, custom or namespace"
                ))
                .with_param(format!("{at}.type")))
            }
        }
    }
    Ok(out)
}

fn type_of(tool: &Value, at: &str) -> Result<String> {
    tool.get("type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::invalid_request(format!("{at} needs a string `type`")).with_param(at.to_owned())
        })
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, at: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::invalid_request(format!("invalid tool at {at}: {e}")).with_param(at.to_owned())
    })
}

/// Adds one function or custom tool, under its namespace if it has one.
fn add(
    out: &mut Converted,
    tool: &Value,
    namespace: Option<&str>,
    namespace_description: Option<&str>,
    at: &str,
) -> Result<()> {
    let custom = tool.get("type").and_then(Value::as_str) == Some("custom");
    let (name, description, parameters, strict) = if custom {
        let t: CustomToolWire = parse(tool.clone(), at)?;
        let parameters = custom_parameters(t.format.as_ref());
        (t.name, t.description, Some(parameters), None)
    } else {
        let t: FunctionToolWire = parse(tool.clone(), at)?;
        (t.name, t.description, t.parameters, t.strict)
    };
    let canonical = join(namespace, &name);
    if out.tools.iter().any(|t| t.name == canonical) {
        return Err(Error::invalid_request(format!(
            "{at}: more than one tool is named `{canonical}`"
        ))
        .with_param(at.to_owned()));
    }
    // The namespace's description says what the group is for; a flat function list has no
    // other place to say it.
    let description = match (namespace_description.filter(|d| !d.is_empty()), description) {
        (Some(group), Some(own)) if !own.is_empty() => Some(format!("{group}\n\n{own}")),
        (Some(group), _) => Some(group.to_owned()),
        (None, own) => own,
    };
    if custom || namespace.is_some() {
        out.names.by_canonical.insert(
            canonical.clone(),
            ToolOrigin {
                kind: if custom {
                    ToolKind::Custom
                } else {
                    ToolKind::Function
                },
                namespace: namespace.map(str::to_owned),
                name,
            },
        );
    }
    out.tools.push(Tool {
        name: canonical,
        description,
        parameters,
        strict,
        cache: None,
    });
    Ok(())
}

/// A custom tool as a function of one string, `input`. A grammar goes into the parameter's
/// description: backends cannot constrain decoding to it, but the model can follow it.
fn custom_parameters(format: Option<&Value>) -> Value {
    let grammar = format
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("grammar"))
        .and_then(|f| {
            // Both `{grammar: {syntax, definition}}` and the flat form are in use.
            let g = f.get("grammar").unwrap_or(f);
            let definition = g.get("definition").and_then(Value::as_str)?;
            let syntax = g.get("syntax").and_then(Value::as_str).unwrap_or("lark");
            Some((syntax.to_owned(), definition.to_owned()))
        });
    let description = match grammar {
        Some((syntax, definition)) => format!(
            "The raw tool input as text. It must match this {syntax} grammar:\n{definition}"
        ),
        None => "The raw tool input as text.".to_owned(),
    };
    json!({
        "type": "object",
        "properties": {"input": {"type": "string", "description": description}},
        "required": ["input"],
        "additionalProperties": false,
    })
}

/// `tool_choice` in canonical form, and the tools it leaves (`allowed_tools` narrows them).
/// Choosing `file_search` when it is offered leaves the model free (`auto`): the gateway has
/// searched before the call.
pub fn tool_choice(choice: &Value, tools: &mut Vec<Tool>, file_search: bool) -> Result<ToolChoice> {
    let invalid = |message: String| Error::invalid_request(message).with_param("tool_choice");
    if let Some(mode) = choice.as_str() {
        return match mode {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(format!(
                "tool_choice `{other}` is not one of none, auto, required"
            ))),
        };
    }
    let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
    let name = || -> Result<String> {
        choice
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("tool_choice of type {kind} needs a string `name`")))
    };
    match kind {
        "function" | "custom" => {
            let name = name()?;
            // A bare name may refer to a tool inside a namespace; match it when unambiguous.
            let name = if tools.iter().any(|t| t.name == name) {
                name
            } else {
                let suffix = format!("__{name}");
                let mut matches = tools.iter().filter(|t| t.name.ends_with(&suffix));
                match (matches.next(), matches.next()) {
                    (Some(t), None) => t.name.clone(),
                    _ => name,
                }
            };
            Ok(ToolChoice::Tool { name })
        }
        "allowed_tools" => {
            let mode = choice.get("mode").and_then(Value::as_str).unwrap_or("auto");
            let allowed: Vec<String> = choice
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let name = t.get("name").and_then(Value::as_str)?;
                    let namespace = t.get("namespace").and_then(Value::as_str);
                    Some(join(namespace, name))
                })
                .collect();
            // Offering only the allowed tools is exactly the restriction, on every backend.
            tools.retain(|t| allowed.contains(&t.name));
            match mode {
                "required" => Ok(ToolChoice::Required),
                "auto" => Ok(ToolChoice::Auto),
                other => Err(invalid(format!(
                    "tool_choice.mode `{other}` is not one of auto, required"
                ))),
            }
        }
        "" => Err(invalid(
            "tool_choice must be \"none\", \"auto\", \"required\" or an object with a `type`"
                .into(),
        )),
        "file_search" if file_search => Ok(ToolChoice::Auto),
        hosted => Err(invalid(format!(
            "tool_choice `{hosted}` requires a hosted tool, which this gateway cannot run; use a function tool"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_flatten_and_map_back() {
        let converted = convert(vec![json!({
            "type": "namespace",
            "name": "mcp__docs",
            "description": "Project documentation.",
            "tools": [
                {"type": "function", "name": "search", "description": "Search the docs.",
                 "parameters": {"type": "object", "properties": {}}},
                {"type": "custom", "name": "patch"},
            ],
        })])
        .unwrap();
        let names: Vec<&str> = converted.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["mcp__docs__search", "mcp__docs__patch"]);
        assert_eq!(
            converted.tools[0].description.as_deref(),
            Some("Project documentation.\n\nSearch the docs.")
        );
        let origin = converted.names.origin("mcp__docs__patch");
        assert_eq!(origin.kind, ToolKind::Custom);
        assert_eq!(origin.namespace.as_deref(), Some("mcp__docs"));
        assert_eq!(origin.name, "patch");
        assert_eq!(converted.names.origin("other").kind, ToolKind::Function);
    }

    #[test]
    fn unknown_tool_types_are_refused_by_index() {
        let err = convert(vec![
            json!({"type": "function", "name": "a"}),
            json!({"type": "teleport"}),
        ])
        .err()
        .unwrap();
        assert_eq!(err.param.as_deref(), Some("tools[1].type"));
        assert!(err.message.contains("teleport"), "{}", err.message);
    }

    #[test]
    fn file_search_is_kept_aside_not_offered_to_the_model() {
        let converted = convert(vec![
            json!({"type": "function", "name": "a"}),
            json!({"type": "file_search", "vector_store_ids": ["vs_1"], "max_num_results": 2}),
        ])
        .unwrap();
        assert_eq!(converted.tools.len(), 1);
        assert_eq!(converted.declared.len(), 2, "echoed as declared");
        let search = converted.file_search.unwrap();
        assert_eq!(search.vector_store_ids, ["vs_1"]);
        assert_eq!(search.max_num_results, 2);

        let err = convert(vec![
            json!({"type": "file_search", "vector_store_ids": ["vs_1"]}),
            json!({"type": "file_search", "vector_store_ids": ["vs_2"]}),
        ])
        .err()
        .unwrap();
        assert_eq!(err.param.as_deref(), Some("tools[1]"));

        let choice = json!({"type": "file_search"});
        assert_eq!(
            tool_choice(&choice, &mut Vec::new(), true).unwrap(),
            ToolChoice::Auto
        );
        let err = tool_choice(&choice, &mut Vec::new(), false).err().unwrap();
        assert!(err.message.contains("hosted tool"), "{}", err.message);
    }

    #[test]
    fn allowed_tools_narrow_the_offer() {
        let mut tools = convert(vec![
            json!({"type": "function", "name": "a"}),
            json!({"type": "function", "name": "b"}),
        ])
        .unwrap()
        .tools;
        let choice = tool_choice(
            &json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}),
            &mut tools,
            false,
        )
        .unwrap();
        assert_eq!(choice, ToolChoice::Required);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].name, "b");
    }
}
