//! Google's Gemini API: `models/{model}:generateContent`, `:streamGenerateContent?alt=sse` and
//! `:batchEmbedContents`, authenticated with an `x-goog-api-key` header.

mod error;
mod stream;

use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use super::client::{
    base_url, parse_body, parse_url, post_json, provider_headers, read_body, to_json,
};
use super::ProviderApi;
use crate::canonical::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use crate::clock::unix_now;
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::http_client::HttpClient;
use crate::http_client::UpstreamResponse;
use crate::providers::ChunkStream;
use crate::wire::gemini::{
    model_resource, BatchEmbedContentsRequest, BatchEmbedContentsResponse, GenerateContentRequest,
    GenerateContentResponse,
};

const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

pub struct Gemini {
    name: Arc<str>,
    http: Arc<HttpClient>,
    base_url: String,
    /// Credentials and configured extra headers, sent on every request.
    headers: HeaderMap,
}

impl Gemini {
    pub fn new(name: Arc<str>, config: &ProviderConfig, http: Arc<HttpClient>) -> Result<Gemini> {
        let base_url = base_url(config, DEFAULT_BASE_URL);
        // The header rather than `?key=`: URLs end up in logs, headers do not.
        let credential = config
            .api_key
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(|key| {
                (
                    HeaderName::from_static("x-goog-api-key"),
                    key.expose().to_owned(),
                )
            });
        let headers = provider_headers(&name, config, credential)?;
        Ok(Gemini {
            name,
            http,
            base_url,
            headers,
        })
    }

    /// `{base}/models/{model}:{method}`. The model name may come from the client (wildcard
    /// models), so it is checked before it goes into a URL.
    fn url(&self, model: &str, method: &str) -> Result<String> {
        let valid = !model.is_empty()
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'))
            && model
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if !valid {
            return Err(Error::invalid_request(format!(
                "`{model}` is not a valid Gemini model name"
            ))
            .with_param("model"));
        }
        Ok(format!(
            "{}/{}:{method}",
            self.base_url,
            model_resource(model)
        ))
    }

    async fn post(&self, url: String, body: Vec<u8>) -> Result<UpstreamResponse> {
        let url = parse_url(&self.name, &url)?;
        post_json(&self.http, &self.name, url, &self.headers, body).await
    }
}

/// An id for answers Gemini sent without a `responseId`.
fn response_id() -> String {
    format!("gemini-{:016x}", fastrand::u64(..))
}

impl ProviderApi for Gemini {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let wire = GenerateContentRequest::from_canonical(req, model)?;
        let url = self.url(model, "generateContent")?;
        let response = self.post(url, to_json(&wire)?).await?;
        let body = read_body(&self.name, response).await?;
        let answer: GenerateContentResponse =
            parse_body(&self.name, &body, "a GenerateContentResponse")?;
        if let Some(reason) = answer.prompt_blocked() {
            return Err(error::prompt_blocked(&self.name, &reason));
        }
        Ok(answer.into_canonical(response_id(), model, unix_now()))
    }

    async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        let wire = GenerateContentRequest::from_canonical(req, model)?;
        // Without `alt=sse` Gemini streams one JSON array, which is much harder to read
        // incrementally.
        let url = format!("{}?alt=sse", self.url(model, "streamGenerateContent")?);
        let response = self.post(url, to_json(&wire)?).await?;
        Ok(stream::decode(
            self.name.clone(),
            model.to_owned(),
            unix_now(),
            response.bytes_stream(),
        ))
    }

    async fn embed(&self, req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsResponse> {
        let wire = BatchEmbedContentsRequest::from_canonical(req, model)?;
        let url = self.url(model, "batchEmbedContents")?;
        let response = self.post(url, to_json(&wire)?).await?;
        let body = read_body(&self.name, response).await?;
        let answer: BatchEmbedContentsResponse =
            parse_body(&self.name, &body, "a BatchEmbedContentsResponse")?;
        if answer.embeddings.len() != wire.requests.len() {
            return Err(Error::upstream(format!(
                "provider `{}` returned {} embeddings for {} inputs",
                self.name,
                answer.embeddings.len(),
                wire.requests.len()
            )));
        }
        Ok(answer.into_canonical(model, req.wants_base64()))
    }
}

/// End to end against the in-repo mock, which speaks Gemini's wire format and refuses what the
/// real API refuses (unknown fields, JSON-Schema-only keys, misplaced function responses).
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt;
    use mock_upstream::{MockUpstream, Reply};
    use serde_json::{json, Value};

    use crate::canonical::{
        ChatChunk, ChatRequest, EmbeddingInput, EmbeddingVector, EmbeddingsRequest, FinishReason,
        Message, Part, Reasoning, Role, Sampling, Tool, ToolChoice,
    };
    use crate::config::{ProviderConfig, ProviderKind, Secret};
    use crate::error::ErrorKind;
    use crate::http_client::HttpClient;
    use crate::providers::{Provider, SameApi};

    const MODEL: &str = "gemini-2.5-flash";

    async fn start() -> (MockUpstream, Provider) {
        let mock = MockUpstream::start().await.expect("mock starts");
        let mut config = ProviderConfig::new(ProviderKind::Gemini);
        config.base_url = Some(format!("{}/v1beta/", mock.url()));
        config.api_key = Some(Secret::new("gm-key"));
        let http = Arc::new(HttpClient::new().expect("http client"));
        let provider = Provider::from_config("gem", &config, &http).expect("provider builds");
        (mock, provider)
    }

    fn user(text: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text(Role::User, text)],
            ..ChatRequest::default()
        }
    }

    fn tools() -> Vec<Tool> {
        // JSON-Schema-only keys the mock (like Gemini) refuses unless the provider strips them.
        let parameters = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": false
        });
        ["get_weather", "get_time"]
            .into_iter()
            .map(|name| Tool {
                name: name.into(),
                description: None,
                parameters: Some(parameters.clone()),
                strict: Some(true),
                cache: None,
            })
            .collect()
    }

    async fn collect(provider: &Provider, req: &ChatRequest) -> Vec<ChatChunk> {
        let stream = provider
            .chat_stream(req, MODEL, SameApi::default())
            .await
            .expect("stream starts");
        stream
            .map(|item| item.expect("no error item"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn chat() {
        let (mock, provider) = start().await;
        let mut req = user("hello there big world");
        req.messages
            .insert(0, Message::text(Role::System, "be brief"));
        req.sampling = Sampling {
            max_tokens: Some(3),
            ..Sampling::default()
        };
        let answer = provider
            .chat(&req, MODEL, SameApi::default())
            .await
            .expect("chat answers");
        assert_eq!(answer.model, MODEL);
        assert!(answer.id.starts_with("mock-gemini-"), "{}", answer.id);
        let choice = &answer.choices[0];
        assert_eq!(choice.message.joined_text(), "hello there big");
        assert_eq!(choice.finish_reason, Some(FinishReason::Length));
        let usage = answer.usage.expect("usage");
        assert_eq!((usage.input_tokens, usage.output_tokens), (8, 3));

        let sent = &mock.received()[0];
        assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(sent.header("x-goog-api-key"), Some("gm-key"));
        assert_eq!(sent.header("authorization"), None);
        assert_eq!(
            sent.json()["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
    }

    #[tokio::test]
    async fn stream_with_thoughts_and_usage() {
        let (mock, provider) = start().await;
        let mut req = user("one two three");
        req.reasoning = Some(Reasoning {
            effort: Some("low".into()),
            budget_tokens: None,
        });
        let chunks = collect(&provider, &req).await;
        assert_eq!(mock.received()[0].query.as_deref(), Some("alt=sse"));
        assert!(mock.received()[0].path.ends_with(":streamGenerateContent"));
        assert_eq!(chunks[0].choices[0].role, Some(Role::Assistant));
        let text: String = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.text.as_deref())
            .collect();
        let reasoning: String = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.reasoning.as_deref())
            .collect();
        assert_eq!(text, "one two three");
        assert_eq!(reasoning, "Thinking about: one two three");
        // thought, three words, then usage on its own.
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[3].choices[0].finish_reason, Some(FinishReason::Stop));
        let usage = chunks[4].usage.expect("usage at the end");
        assert_eq!(usage.reasoning_tokens, Some(5));
        assert_eq!(usage.output_tokens, 3 + 5);
        assert!(chunks[..4].iter().all(|c| c.usage.is_none()));
    }

    #[tokio::test]
    async fn tools_calls_and_results() {
        let (_mock, provider) = start().await;
        let mut req = user("weather and time, in parallel");
        req.tools = tools();
        let answer = provider
            .chat(&req, MODEL, SameApi::default())
            .await
            .expect("chat answers");
        let choice = &answer.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        let calls: Vec<(String, String, Value)> = choice
            .message
            .content
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => Some((
                    id.clone(),
                    name.clone(),
                    serde_json::from_str(arguments).expect("arguments are JSON"),
                )),
                _ => None,
            })
            .collect();
        let args = |tool: &str| json!({"text": "weather and time, in parallel", "tool": tool});
        // Gemini sent no ids: they are numbered after a stem drawn for the answer.
        let stem = calls[0].0.strip_suffix("_0").expect("numbered from 0");
        assert!(stem.starts_with("call_"), "{stem}");
        assert_eq!(
            calls,
            [
                (
                    format!("{stem}_0"),
                    "get_weather".into(),
                    args("get_weather")
                ),
                (format!("{stem}_1"), "get_time".into(), args("get_time")),
            ]
        );

        // The same calls streamed: whole, with ids, names and arguments in one delta each. The
        // ids are this answer's own: no two answers repeat an id.
        let mut streaming = req.clone();
        streaming.stream = true;
        let chunks = collect(&provider, &streaming).await;
        let deltas: Vec<_> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .flat_map(|c| &c.tool_calls)
            .collect();
        assert_eq!(deltas.len(), 2);
        for (i, (delta, (id, name, arguments))) in deltas.iter().zip(&calls).enumerate() {
            assert_eq!(delta.index, i as u32);
            let streamed_id = delta.id.as_deref().expect("an id");
            assert!(streamed_id.starts_with("call_") && streamed_id.ends_with(&format!("_{i}")));
            assert_ne!(streamed_id, id);
            assert_eq!(delta.name.as_deref(), Some(name.as_str()));
            let streamed: Value = serde_json::from_str(&delta.arguments).expect("JSON");
            assert_eq!(&streamed, arguments);
        }
        let finish = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .find_map(|c| c.finish_reason.clone());
        assert_eq!(finish, Some(FinishReason::ToolCalls));

        // Results go back as one user turn of function responses, found by name: the mock
        // refuses them unless they answer the calls of the turn just before.
        let mut follow_up = req.clone();
        follow_up.messages.push(choice.message.clone());
        for (id, _, _) in &calls {
            follow_up.messages.push(Message {
                role: Role::Tool,
                content: vec![Part::ToolResult {
                    call_id: id.clone(),
                    content: vec![Part::text(format!("result of {id}"))],
                    is_error: false,
                    cache: None,
                }],
                name: None,
                extra: Default::default(),
            });
        }
        let answer = provider
            .chat(&follow_up, MODEL, SameApi::default())
            .await
            .expect("results accepted");
        assert_eq!(
            answer.choices[0].message.joined_text(),
            format!(
                r#"tool result: {{"output":"result of {stem}_0"}}; {{"output":"result of {stem}_1"}}"#
            )
        );
        assert_eq!(answer.choices[0].finish_reason, Some(FinishReason::Stop));

        // A named tool is the only one allowed; `none` turns tools off.
        req.tool_choice = Some(ToolChoice::Tool {
            name: "get_time".into(),
        });
        let answer = provider
            .chat(&req, MODEL, SameApi::default())
            .await
            .expect("chat answers");
        assert!(matches!(
            &answer.choices[0].message.content[..],
            [Part::ToolCall { name, .. }] if name == "get_time"
        ));
        req.tool_choice = Some(ToolChoice::None);
        let answer = provider
            .chat(&req, MODEL, SameApi::default())
            .await
            .expect("chat answers");
        assert_eq!(
            answer.choices[0].message.joined_text(),
            "weather and time, in parallel"
        );
    }

    #[tokio::test]
    async fn embeddings() {
        let (mock, provider) = start().await;
        let mut req = EmbeddingsRequest {
            model: "embed".into(),
            input: EmbeddingInput::Texts(vec!["a".into(), "b c".into()]),
            dimensions: Some(4),
            encoding_format: None,
            user: None,
            passthrough: Default::default(),
        };
        let floats = provider
            .embed(&req, "gemini-embedding-001")
            .await
            .expect("embeddings");
        assert_eq!(floats.data.len(), 2);
        let EmbeddingVector::Float(first) = &floats.data[0] else {
            panic!("floats were asked for")
        };
        assert_eq!(first.len(), 4);
        assert_eq!(
            mock.received()[0].path,
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );

        req.encoding_format = Some("base64".into());
        let encoded = provider
            .embed(&req, "gemini-embedding-001")
            .await
            .expect("embeddings");
        let EmbeddingVector::Base64(text) = &encoded.data[0] else {
            panic!("base64 was asked for")
        };
        assert!(matches!(
            EmbeddingVector::encode(first.clone(), true),
            EmbeddingVector::Base64(expected) if &expected == text
        ));
    }

    #[tokio::test]
    async fn failures() {
        let (mock, provider) = start().await;
        mock.enqueue(
            Reply::gemini_error(429, "Resource has been exhausted").header("retry-after", "3"),
        );
        let e = provider
            .chat(&user("hi"), MODEL, SameApi::default())
            .await
            .expect_err("429");
        assert_eq!(e.kind, ErrorKind::UpstreamRateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert!(e.message.contains("RESOURCE_EXHAUSTED"), "{}", e.message);

        mock.enqueue(Reply::json(
            200,
            json!({"promptFeedback": {"blockReason": "SAFETY"}}),
        ));
        let e = provider
            .chat(&user("hi"), MODEL, SameApi::default())
            .await
            .expect_err("blocked");
        assert_eq!(e.kind, ErrorKind::UpstreamRejected(400));

        // A stream cut before the finish reason ends with an error, not a clean end.
        mock.enqueue(Reply::default_behaviour().cut_after(1));
        let mut stream = provider
            .chat_stream(&user("a b c d"), MODEL, SameApi::default())
            .await
            .expect("stream starts");
        assert!(matches!(stream.next().await, Some(Ok(_))));
        let last = stream.next().await;
        assert!(
            matches!(last, Some(Err(ref e)) if e.kind == ErrorKind::Upstream),
            "{last:?}"
        );
        assert!(stream.next().await.is_none());

        // A model name that would change the URL never leaves the gateway.
        let before = mock.request_count();
        let e = provider
            .chat(&user("hi"), "../files", SameApi::default())
            .await
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert_eq!(mock.request_count(), before);
    }
}
