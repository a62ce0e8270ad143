//! OpenAI and every server speaking its API (vLLM, Ollama, llama.cpp, Groq, Mistral, DeepSeek
//! ...), and, through [`Dialect::Azure`], Azure OpenAI.

mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Uri};

use super::azure::Azure;
use super::client::{
    base_url, parse_body, parse_url, post_json, provider_headers, read_body, to_json,
};
use super::{ProviderApi, SameApi, Verbatim};
use crate::canonical::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use crate::config::ProviderConfig;
use crate::error::Result;
use crate::http_client::HttpClient;
use crate::http_client::UpstreamResponse;
use crate::providers::ChunkStream;
use crate::wire::openai::{
    body_for_model, ChatCompletion, ChatCompletionRequest, CompletionOutline,
    EmbeddingsRequestWire, EmbeddingsResponseWire,
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
    /// The chat and embeddings URLs, parsed once (a request clones one). `None` for Azure,
    /// whose URL depends on the deployment, and for a base URL that does not parse. Boxed to
    /// keep the provider enum small.
    chat_url: Option<Box<Uri>>,
    embeddings_url: Option<Box<Uri>>,
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
        let base_url = base_url(config, DEFAULT_BASE_URL);
        let credential =
            config
                .api_key
                .as_ref()
                .filter(|k| !k.is_empty())
                .map(|key| match &dialect {
                    Dialect::OpenAi => (
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", key.expose()),
                    ),
                    Dialect::Azure(_) => {
                        (HeaderName::from_static("api-key"), key.expose().to_owned())
                    }
                });
        let headers = provider_headers(&name, config, credential)?;
        let parsed = |op: Operation| match &dialect {
            Dialect::OpenAi => format!("{base_url}/{}", op.path())
                .parse()
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

    fn url(&self, op: Operation, model: &str) -> Result<Uri> {
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
        parse_url(&self.name, &url)
    }

    async fn post(&self, op: Operation, model: &str, body: Vec<u8>) -> Result<UpstreamResponse> {
        post_json(
            &self.http,
            &self.name,
            self.url(op, model)?,
            &self.headers,
            body,
        )
        .await
    }

    /// The chat request's body for `model`: the client's own when it may go as it came (see
    /// [`SameApi::body`]), else written anew from the canonical request.
    fn chat_body(
        req: &ChatRequest,
        model: &str,
        stream: bool,
        client_body: Option<&Bytes>,
    ) -> Result<Vec<u8>> {
        let forwarded = client_body
            .filter(|_| req.stream == stream)
            .and_then(|body| body_for_model(body, model, stream, req.include_usage));
        if let Some(body) = forwarded {
            return Ok(body);
        }
        let mut wire = ChatCompletionRequest::from_canonical(req, model);
        if stream {
            wire.stream = Some(true);
        } else {
            wire.stream = None;
            wire.stream_options = None;
        }
        to_json(&wire)
    }

    /// The body of a complete (not streamed) chat answer.
    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        client_body: Option<&Bytes>,
    ) -> Result<Bytes> {
        let body = Self::chat_body(req, model, false, client_body)?;
        let response = self.post(Operation::Chat, model, body).await?;
        read_body(&self.name, response).await
    }

    /// A streamed chat answer. For a client of the same API, each chunk keeps its event data
    /// as `same_api.verbatim` allows ([`crate::canonical::ChatChunk::raw`]).
    pub async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        same_api: SameApi<'_>,
    ) -> Result<ChunkStream> {
        let body = Self::chat_body(req, model, true, same_api.body)?;
        let response = self.post(Operation::Chat, model, body).await?;
        Ok(stream::decode(
            self.name.clone(),
            response.bytes_stream(),
            same_api.verbatim,
        ))
    }

    /// A complete chat answer. For a client of the same API, as `same_api.verbatim` allows, it
    /// is kept as the upstream sent it ([`ChatResponse::raw`]), and only what the gateway reads
    /// of it is parsed.
    pub async fn chat_same_api(
        &self,
        req: &ChatRequest,
        model: &str,
        same_api: SameApi<'_>,
    ) -> Result<ChatResponse> {
        let body = self.complete(req, model, same_api.body).await?;
        if same_api.verbatim == Verbatim::Outline {
            let outline = parse_body::<CompletionOutline>(&self.name, &body, "a chat completion")?;
            return Ok(outline.into_canonical(body));
        }
        let mut answer =
            parse_body::<ChatCompletion>(&self.name, &body, "a chat completion")?.into_canonical();
        if same_api.verbatim == Verbatim::Whole {
            answer.raw = Some(body);
        }
        Ok(answer)
    }
}

impl ProviderApi for OpenAi {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        self.chat_same_api(req, model, SameApi::default()).await
    }

    async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        self.stream(req, model, SameApi::default()).await
    }

    async fn embed(&self, req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsResponse> {
        let wire = EmbeddingsRequestWire::from_canonical(req, model);
        let response = self
            .post(Operation::Embeddings, model, to_json(&wire)?)
            .await?;
        let body = read_body(&self.name, response).await?;
        Ok(
            parse_body::<EmbeddingsResponseWire>(&self.name, &body, "an embeddings response")?
                .into_canonical(),
        )
    }
}
