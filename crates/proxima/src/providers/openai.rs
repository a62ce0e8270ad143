//! OpenAI and every server speaking its API (vLLM, Ollama, llama.cpp, Groq, Mistral, DeepSeek
//! ...), and, through [`Dialect::Azure`], Azure OpenAI.

mod error;
mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::azure::Azure;
use super::{HttpClient, ProviderApi};
use crate::canonical::{
    ChatRequest, ChatResponse, ChunkStream, EmbeddingsRequest, EmbeddingsResponse,
};
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::wire::openai::{
    ChatCompletion, ChatCompletionRequest, EmbeddingsRequestWire, EmbeddingsResponseWire,
};

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Where requests go and how they authenticate; the wire format is the same.
pub enum Dialect {
    OpenAi,
    Azure(Azure),
}

#[derive(Clone, Copy)]
pub enum Operation {
    Chat,
    Embeddings,
}

impl Operation {
    pub fn path(self) -> &'static str {
        match self {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
        }
    }
}

pub struct OpenAi {
    name: Arc<str>,
    http: Arc<HttpClient>,
    dialect: Dialect,
    base_url: String,
    /// The chat and embeddings URLs, parsed once: reqwest would otherwise parse a `String`
    /// URL on every request. `None` for Azure, whose URL depends on the deployment. Boxed to
    /// keep the provider enum small.
    chat_url: Option<Box<reqwest::Url>>,
    embeddings_url: Option<Box<reqwest::Url>>,
    /// Credentials and configured extra headers, sent on every request.
    headers: HeaderMap,
}

impl OpenAi {
    pub fn new(
        name: Arc<str>,
        config: &ProviderConfig,
        http: Arc<HttpClient>,
        dialect: Dialect,
    ) -> Result<OpenAi> {
        let base_url = config
            .base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
            .to_owned();
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.is_empty()) {
            let (name, value) = match &dialect {
                Dialect::OpenAi => (
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", key.expose()),
                ),
                Dialect::Azure(_) => (HeaderName::from_static("api-key"), key.expose().to_owned()),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                Error::internal(format!(
                    "provider `{name}`: the API key has characters not allowed in a header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let parsed = |op: Operation| match &dialect {
            Dialect::OpenAi => reqwest::Url::parse(&format!("{base_url}/{}", op.path()))
                .ok()
                .map(Box::new),
            Dialect::Azure(_) => None,
        };
        let (chat_url, embeddings_url) = (parsed(Operation::Chat), parsed(Operation::Embeddings));
        Ok(OpenAi {
            name,
            http,
            dialect,
            base_url,
            chat_url,
            embeddings_url,
            headers,
        })
    }

    fn url(&self, op: Operation, model: &str) -> Result<reqwest::Url> {
        let parsed = match op {
            Operation::Chat => &self.chat_url,
            Operation::Embeddings => &self.embeddings_url,
        };
        if let Some(url) = parsed {
            return Ok(url.as_ref().clone());
        }
        let url = match &self.dialect {
            Dialect::OpenAi => format!("{}/{}", self.base_url, op.path()),
            Dialect::Azure(azure) => azure.url(&self.base_url, op, model),
        };
        // An upstream error, as when reqwest parsed this URL itself and failed the request.
        reqwest::Url::parse(&url).map_err(|e| {
            Error::upstream(format!(
                "provider `{}`: `{url}` is not a valid URL: {e}",
                self.name
            ))
        })
    }

    /// Sends a JSON body; any non-success status becomes an error here.
    async fn post(&self, op: Operation, model: &str, body: Vec<u8>) -> Result<reqwest::Response> {
        let response = self
            .http
            .client()
            .post(self.url(op, model)?)
            .headers(self.headers.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| error::transport(&self.name, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        Err(error::from_status(&self.name, status, &headers, &body))
    }

    async fn read_body(&self, response: reqwest::Response) -> Result<Bytes> {
        response
            .bytes()
            .await
            .map_err(|e| error::transport(&self.name, e))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, body: &[u8], what: &str) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| {
            Error::upstream(format!(
                "provider `{}` returned something that is not {what}: {e}",
                self.name
            ))
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(crate::surface::JSON_CAPACITY);
    serde_json::to_writer(&mut body, value)
        .map_err(|e| Error::internal(format!("cannot encode the upstream request: {e}")))?;
    Ok(body)
}

impl ProviderApi for OpenAi {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let mut wire = ChatCompletionRequest::from_canonical(req, model);
        wire.stream = None;
        wire.stream_options = None;
        let response = self.post(Operation::Chat, model, to_json(&wire)?).await?;
        let body = self.read_body(response).await?;
        Ok(self
            .parse::<ChatCompletion>(&body, "a chat completion")?
            .into_canonical())
    }

    async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        let mut wire = ChatCompletionRequest::from_canonical(req, model);
        wire.stream = Some(true);
        let response = self.post(Operation::Chat, model, to_json(&wire)?).await?;
        Ok(stream::decode(self.name.clone(), response.bytes_stream()))
    }

    async fn embed(&self, req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsResponse> {
        let wire = EmbeddingsRequestWire::from_canonical(req, model);
        let response = self
            .post(Operation::Embeddings, model, to_json(&wire)?)
            .await?;
        let body = self.read_body(response).await?;
        Ok(self
            .parse::<EmbeddingsResponseWire>(&body, "an embeddings response")?
            .into_canonical())
    }
}
