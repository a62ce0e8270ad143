//! Anthropic's Messages API.

mod stream;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde_json::Value;

use super::client::{
    base_url, parse_body, parse_url, post_json, provider_headers, read_body, to_json,
};
use super::ProviderApi;
use crate::canonical::{Api, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use crate::config::ProviderConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::http_client::HttpClient;
use crate::http_client::UpstreamResponse;
use crate::providers::ChunkStream;
use crate::wire::anthropic::{MessagesRequest, MessagesResponse};

const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";
const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    name: Arc<str>,
    http: Arc<HttpClient>,
    base_url: String,
    /// `messages`, parsed once (a request clones it); `None` if the base URL does not parse.
    messages_url: Option<Box<Uri>>,
    headers: HeaderMap,
}

impl Anthropic {
    pub fn new(
        name: Arc<str>,
        config: &ProviderConfig,
        http: Arc<HttpClient>,
    ) -> Result<Anthropic> {
        let base_url = base_url(config, DEFAULT_BASE_URL);
        let credential = config
            .api_key
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(|key| {
                (
                    HeaderName::from_static("x-api-key"),
                    key.expose().to_owned(),
                )
            });
        let mut headers = provider_headers(&name, config, credential)?;
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        let messages_url = format!("{base_url}/messages").parse().ok().map(Box::new);
        Ok(Anthropic {
            name,
            http,
            base_url,
            messages_url,
            headers,
        })
    }

    /// Headers for one request: ours, plus `anthropic-beta` when an Anthropic client sent it.
    fn headers_for(&self, req: &ChatRequest) -> HeaderMap {
        let mut headers = self.headers.clone();
        if req.passthrough.api == Some(Api::Anthropic) {
            for (name, value) in &req.passthrough.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        headers
    }

    async fn post(&self, path: &str, req: &ChatRequest, body: Vec<u8>) -> Result<UpstreamResponse> {
        let url = match &self.messages_url {
            Some(url) if path == "messages" => url.as_ref().clone(),
            _ => parse_url(&self.name, &format!("{}/{path}", self.base_url))?,
        };
        post_json(&self.http, &self.name, url, &self.headers_for(req), body).await
    }

    /// Asks Anthropic to count the prompt's tokens exactly.
    pub async fn count_tokens(&self, req: &ChatRequest, model: &str) -> Result<u64> {
        let wire = MessagesRequest::from_canonical(req, model)?;
        let mut body = serde_json::to_value(&wire).map_err(|e| Error::internal(e.to_string()))?;
        if let Some(object) = body.as_object_mut() {
            // count_tokens takes the prompt only.
            for field in [
                "max_tokens",
                "stream",
                "temperature",
                "top_p",
                "top_k",
                "stop_sequences",
                "metadata",
                "service_tier",
            ] {
                object.remove(field);
            }
        }
        let response = self
            .post("messages/count_tokens", req, to_json(&body)?)
            .await?;
        let body = read_body(&self.name, response).await?;
        let counted: Value = parse_body(&self.name, &body, "a token count")?;
        counted
            .get("input_tokens")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                Error::upstream(format!(
                    "provider `{}` returned a token count without input_tokens",
                    self.name
                ))
            })
    }
}

impl ProviderApi for Anthropic {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let mut wire = MessagesRequest::from_canonical(req, model)?;
        wire.stream = None;
        let response = self.post("messages", req, to_json(&wire)?).await?;
        let body = read_body(&self.name, response).await?;
        Ok(parse_body::<MessagesResponse>(&self.name, &body, "a message")?.into_canonical())
    }

    async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        let mut wire = MessagesRequest::from_canonical(req, model)?;
        wire.stream = Some(true);
        let response = self.post("messages", req, to_json(&wire)?).await?;
        Ok(stream::decode(self.name.clone(), response.bytes_stream()))
    }

    async fn embed(&self, _req: &EmbeddingsRequest, _model: &str) -> Result<EmbeddingsResponse> {
        Err(Error::new(
            ErrorKind::InvalidRequest,
            format!("provider `{}` (anthropic) has no embeddings API: route this model to an embeddings provider", self.name),
        )
        .with_param("model"))
    }
}
