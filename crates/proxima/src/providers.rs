//! Provider adapters: one module per provider, all behind [`ProviderApi`], dispatched by enum.
//!
//! An adapter knows one upstream API: it turns the canonical request into that API's request,
//! sends it, and turns the answer (or the stream, or the error) back into canonical form.
//! What every adapter shares is here: the attempt timeout and the stream idle timeout.

mod anthropic;
mod azure;
mod client;
mod events;
mod gemini;
pub mod local;
mod mock;
mod openai;
mod upstream_error;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use pin_project_lite::pin_project;

use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse,
};
use crate::config::{ProviderConfig, ProviderKind};
use crate::error::{Error, ErrorKind, Result};
use crate::http_client::HttpClient;
use crate::sse::SilenceTimer;

/// A stream of chunks from a provider. An `Err` item ends it: the upstream failed mid-stream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;

/// What every provider adapter does. `model` is the upstream model name.
pub trait ProviderApi {
    fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> impl Future<Output = Result<ChatResponse>> + Send;

    /// Resolves once the upstream has accepted the request; chunks follow on the stream.
    fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> impl Future<Output = Result<ChunkStream>> + Send;

    fn embed(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
    ) -> impl Future<Output = Result<EmbeddingsResponse>> + Send;
}

/// What a chat attempt may reuse when its upstream speaks the client's API (OpenAI's chat
/// completions): both save the gateway writing out again what it only passes on.
#[derive(Clone, Copy, Default)]
pub struct SameApi<'a> {
    /// Whether the answer may go back as the upstream sent it, and how much of it is read.
    pub verbatim: Verbatim,
    /// The client's body, which still says exactly what the request does: it goes upstream
    /// with only its model changed ([`crate::wire::openai::body_for_model`]).
    pub body: Option<&'a bytes::Bytes>,
}

/// Whether an answer to a client of the same API may go back as the upstream sent it
/// ([`ChatResponse::raw`], [`ChatChunk::raw`]), and how much of it the gateway reads then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verbatim {
    /// No: something on the way out may change the answer, which is read whole and written
    /// anew.
    #[default]
    No,
    /// Yes, reading only its outline (ids, finish reasons, usage): nothing on the way out
    /// reads more.
    Outline,
    /// Yes, and it is read whole too, for a stage that keeps it (the cache fill, a stored
    /// conversation turn): reading it costs the same, writing it anew is saved.
    Whole,
}

enum Adapter {
    Anthropic(anthropic::Anthropic),
    /// OpenAI and compatible servers, and Azure OpenAI (same wire format, other URLs and auth).
    OpenAi(openai::OpenAi),
    /// Google's Gemini API (`generateContent`).
    Gemini(gemini::Gemini),
    Mock(mock::Mock),
    /// The built-in sentence embedder, run in-process.
    Local(local::Local),
}

/// A configured provider: its adapter plus the limits every call to it obeys.
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub region: Option<String>,
    timeout: Duration,
    adapter: Adapter,
}

impl Provider {
    pub fn from_config(
        name: &str,
        config: &ProviderConfig,
        http: &Arc<HttpClient>,
    ) -> Result<Provider> {
        let name: Arc<str> = Arc::from(name);
        let adapter = match config.kind {
            ProviderKind::Anthropic => Adapter::Anthropic(anthropic::Anthropic::new(
                name.clone(),
                config,
                http.clone(),
            )?),
            ProviderKind::Openai => Adapter::OpenAi(openai::OpenAi::new(
                name.clone(),
                config,
                http.clone(),
                openai::Dialect::OpenAi,
            )?),
            ProviderKind::AzureOpenai => Adapter::OpenAi(openai::OpenAi::new(
                name.clone(),
                config,
                http.clone(),
                openai::Dialect::Azure(azure::Azure::from_config(config)?),
            )?),
            ProviderKind::Gemini => {
                Adapter::Gemini(gemini::Gemini::new(name.clone(), config, http.clone())?)
            }
            ProviderKind::Mock => Adapter::Mock(mock::Mock::new(
                config.latency.map(|l| l.0).unwrap_or_default(),
            )),
            ProviderKind::Local => Adapter::Local(local::Local::new(&name, config)?),
        };
        Ok(Provider {
            name,
            kind: config.kind,
            region: config.region.clone(),
            timeout: config.timeout.0,
            adapter,
        })
    }

    /// One attempt at a complete answer, within the provider's timeout. An upstream of the
    /// client's API may take and give what `same_api` allows.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
        same_api: SameApi<'_>,
    ) -> Result<ChatResponse> {
        let call = async {
            match &self.adapter {
                Adapter::Anthropic(p) => p.chat(req, model).await,
                Adapter::OpenAi(p) => p.chat_same_api(req, model, same_api).await,
                Adapter::Gemini(p) => p.chat(req, model).await,
                Adapter::Mock(p) => p.chat(req, model).await,
                Adapter::Local(p) => p.chat(req, model).await,
            }
        };
        // Pinned where it is: moved into the timeout, kilobytes would be copied twice more.
        tokio::time::timeout(self.timeout, std::pin::pin!(call))
            .await
            .unwrap_or_else(|_| Err(self.timeout_error("answer")))
    }

    /// One attempt at a stream. The provider's timeout applies to the upstream accepting the
    /// request, to the first chunk, and to every silence between chunks. `same_api` as for
    /// [`Provider::chat`].
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
        same_api: SameApi<'_>,
    ) -> Result<ChunkStream> {
        let call = async {
            match &self.adapter {
                Adapter::Anthropic(p) => p.chat_stream(req, model).await,
                Adapter::OpenAi(p) => p.stream(req, model, same_api).await,
                Adapter::Gemini(p) => p.chat_stream(req, model).await,
                Adapter::Mock(p) => p.chat_stream(req, model).await,
                Adapter::Local(p) => p.chat_stream(req, model).await,
            }
        };
        let stream = tokio::time::timeout(self.timeout, std::pin::pin!(call))
            .await
            .unwrap_or_else(|_| Err(self.timeout_error("response headers")))?;
        Ok(Box::pin(IdleTimeout {
            inner: stream,
            silence: SilenceTimer::new(self.timeout),
            provider: Some(self.name.clone()),
            limit: self.timeout,
        }))
    }

    pub async fn embed(&self, req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsResponse> {
        let call = async {
            match &self.adapter {
                Adapter::Anthropic(p) => p.embed(req, model).await,
                Adapter::OpenAi(p) => p.embed(req, model).await,
                Adapter::Gemini(p) => p.embed(req, model).await,
                Adapter::Mock(p) => p.embed(req, model).await,
                Adapter::Local(p) => p.embed(req, model).await,
            }
        };
        // Pinned where it is: moved into the timeout, kilobytes would be copied twice more.
        tokio::time::timeout(self.timeout, std::pin::pin!(call))
            .await
            .unwrap_or_else(|_| Err(self.timeout_error("answer")))
    }

    /// Input tokens of the request as `model` would count them: exact where the provider can
    /// count (Anthropic), else estimated.
    pub async fn count_tokens(&self, req: &ChatRequest, model: &str) -> Result<u64> {
        match &self.adapter {
            Adapter::Anthropic(p) => tokio::time::timeout(self.timeout, p.count_tokens(req, model))
                .await
                .unwrap_or_else(|_| Err(self.timeout_error("token count"))),
            Adapter::OpenAi(_) | Adapter::Gemini(_) | Adapter::Mock(_) | Adapter::Local(_) => {
                Ok(crate::tokenizer::prompt_tokens(req))
            }
        }
    }

    fn timeout_error(&self, waiting_for: &str) -> Error {
        timeout_error(&self.name, self.timeout, waiting_for)
    }
}

fn timeout_error(provider: &str, limit: Duration, waiting_for: &str) -> Error {
    Error::new(
        ErrorKind::UpstreamTimeout,
        format!("provider `{provider}` sent no {waiting_for} within its timeout of {limit:?}"),
    )
}

pin_project! {
    /// Ends a stream with a timeout error when the upstream stays silent too long.
    struct IdleTimeout {
        inner: ChunkStream,
        #[pin]
        silence: SilenceTimer,
        // The provider's name, for the error; `None` once the stream timed out.
        provider: Option<Arc<str>>,
        limit: Duration,
    }
}

impl Stream for IdleTimeout {
    type Item = Result<ChatChunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if this.provider.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(item) => {
                this.silence.heard();
                Poll::Ready(item)
            }
            Poll::Pending => match this.silence.poll_silent(cx) {
                // The error is written only now: most streams never need it.
                Poll::Ready(()) => Poll::Ready(this.provider.take().map(|provider| {
                    Err(timeout_error(&provider, *this.limit, "next stream chunk"))
                })),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
