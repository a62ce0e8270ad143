//! OpenAI and every server speaking its API (vLLM, Ollama, llama.cpp, Groq, Mistral, DeepSeek
//! ...), and, through [`Dialect::Azure`], Azure OpenAI.

mod stream;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Uri};

use super::azure::Azure;
use super::client::{
    base_url, parse_body, parse_url, post_json, provider_headers, read_body, to_json,
};
use super::ProviderApi;
use crate::canonical::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use crate::config::ProviderConfig;
use crate::error::Result;
use crate::http_client::HttpClient;
use crate::http_client::UpstreamResponse;
use crate::providers::ChunkStream;
use crate::wire::openai::{
    ChatCompletion, ChatCompletionRequest, CompletionOutline, EmbeddingsRequestWire,
    EmbeddingsResponseWire,
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

    /// The body of a complete (not streamed) chat answer.
    async fn complete(&self, req: &ChatRequest, model: &str) -> Result<bytes::Bytes> {
        let mut wire = ChatCompletionRequest::from_canonical(req, model);
        wire.stream = None;
        wire.stream_options = None;
        let response = self.post(Operation::Chat, model, to_json(&wire)?).await?;
        read_body(&self.name, response).await
    }

    /// A streamed chat answer; `verbatim`: each chunk keeps its event data, for a client of the
    /// same API ([`crate::canonical::ChatChunk::raw`]).
    pub async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        verbatim: bool,
    ) -> Result<ChunkStream> {
        let mut wire = ChatCompletionRequest::from_canonical(req, model);
        wire.stream = Some(true);
        let response = self.post(Operation::Chat, model, to_json(&wire)?).await?;
        Ok(stream::decode(
            self.name.clone(),
            response.bytes_stream(),
            verbatim,
        ))
    }

    /// A complete chat answer kept as the upstream sent it, for a client of the same API
    /// ([`ChatResponse::raw`]): only what the gateway reads of it is parsed.
    pub async fn chat_verbatim(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let body = self.complete(req, model).await?;
        let outline = parse_body::<CompletionOutline>(&self.name, &body, "a chat completion")?;
        Ok(outline.into_canonical(body))
    }
}

impl ProviderApi for OpenAi {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let body = self.complete(req, model).await?;
        Ok(parse_body::<ChatCompletion>(&self.name, &body, "a chat completion")?.into_canonical())
    }

    async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        self.stream(req, model, false).await
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
