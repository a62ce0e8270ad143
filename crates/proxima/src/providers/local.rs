//! The built-in `local` provider: a sentence-transformers BERT model (all-MiniLM-L6-v2) run
//! in-process with candle, serving `/v1/embeddings` without any network.
//!
//! [`model`] loads the folder and runs the forward pass; [`worker`] runs it off the async
//! workers, batching the texts of concurrent requests. This adapter checks what the model
//! cannot serve (chat, token-id input, other `dimensions`) and shapes the answer.

mod model;
mod worker;

use std::sync::Arc;

use super::{ChunkStream, ProviderApi};
use crate::canonical::{
    ChatRequest, ChatResponse, EmbeddingInput, EmbeddingVector, EmbeddingsRequest,
    EmbeddingsResponse, Usage,
};
use crate::config::ProviderConfig;
use crate::error::{Error, ErrorKind, Result};

pub use model::{missing_files, REQUIRED_FILES};
pub use worker::{Embedded, Embedder, BATCH};

pub struct Local {
    embedder: Arc<Embedder>,
}

impl Local {
    /// Loads the model of the provider's `path`, or takes the one this process already runs.
    pub fn new(name: &str, config: &ProviderConfig) -> Result<Local> {
        let Some(path) = &config.path else {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("provider `{name}` of kind `local` needs a `path`"),
            ));
        };
        Ok(Local {
            embedder: Embedder::shared(path)?,
        })
    }
}

fn embeddings_only(model: &str) -> Error {
    Error::new(
        ErrorKind::InvalidRequest,
        format!("model `{model}` only serves embeddings: call /v1/embeddings"),
    )
}

fn invalid(param: &str, message: String) -> Error {
    let mut error = Error::new(ErrorKind::InvalidRequest, message);
    error.param = Some(param.into());
    error
}

impl ProviderApi for Local {
    async fn chat(&self, _req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        Err(embeddings_only(model))
    }

    async fn chat_stream(&self, _req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        Err(embeddings_only(model))
    }

    async fn embed(&self, req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsResponse> {
        let dimensions = self.embedder.dimensions();
        if let Some(asked) = req.dimensions {
            if usize::try_from(asked).ok() != Some(dimensions) {
                return Err(invalid(
                    "dimensions",
                    format!("model `{model}` makes vectors of {dimensions} dimensions only, not {asked}"),
                ));
            }
        }
        let texts = match &req.input {
            EmbeddingInput::Text(text) => vec![text.clone()],
            EmbeddingInput::Texts(texts) if texts.is_empty() => {
                return Err(invalid(
                    "input",
                    "`input` is an empty list: give at least one text".into(),
                ));
            }
            EmbeddingInput::Texts(texts) => texts.clone(),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
                return Err(invalid(
                    "input",
                    format!("model `{model}` embeds text only: token ids are another tokenizer's and mean nothing to it"),
                ));
            }
        };
        let embedded = self.embedder.embed(texts).await?;
        let base64 = req.wants_base64();
        Ok(EmbeddingsResponse {
            model: model.to_owned(),
            data: embedded
                .vectors
                .into_iter()
                .map(|vector| EmbeddingVector::encode(vector, base64))
                .collect(),
            usage: Usage {
                input_tokens: embedded.tokens,
                ..Usage::default()
            },
            extra: Default::default(),
        })
    }
}
