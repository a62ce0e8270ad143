//! The built-in `mock` provider: answers without any network, deterministically.
//!
//! It echoes the last user message (streamed word by word), reports usage by counting words,
//! and embeds text into stable vectors. It serves demos, the default config, users' CI and the
//! benchmark; `latency` delays the answer and each streamed chunk.

use std::time::Duration;

use futures_util::stream;

use super::ProviderApi;
use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, EmbeddingInput, EmbeddingVector,
    EmbeddingsRequest, EmbeddingsResponse, FinishReason, Message, Role, Usage,
};
use crate::clock::unix_now;
use crate::error::Result;
use crate::providers::ChunkStream;

const DEFAULT_DIMENSIONS: usize = 16;

pub struct Mock {
    latency: Duration,
}

impl Mock {
    pub fn new(latency: Duration) -> Mock {
        Mock { latency }
    }

    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn reply_and_usage(req: &ChatRequest) -> (String, Usage) {
    let reply = req.last_user_text().unwrap_or_default();
    let input = req
        .messages
        .iter()
        .map(|m| words(&m.joined_text()) + 1)
        .sum();
    let choices = u64::from(req.n.unwrap_or(1));
    let usage = Usage {
        input_tokens: input,
        output_tokens: words(&reply) * choices,
        ..Usage::default()
    };
    (reply, usage)
}

fn completion_id() -> String {
    format!("chatcmpl-mock-{:016x}", fastrand::u64(..))
}

impl ProviderApi for Mock {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse> {
        self.wait().await;
        let (reply, usage) = reply_and_usage(req);
        Ok(ChatResponse {
            id: completion_id(),
            model: model.to_owned(),
            created: unix_now(),
            choices: (0..req.n.unwrap_or(1))
                .map(|index| Choice {
                    index,
                    message: Message::text(Role::Assistant, reply.clone()),
                    finish_reason: Some(FinishReason::Stop),
                    extra: Default::default(),
                })
                .collect(),
            usage: Some(usage),
            extra: Default::default(),
            extra_api: None,
            raw: None,
        })
    }

    async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream> {
        self.wait().await;
        let (reply, usage) = reply_and_usage(req);
        let base = ChatChunk {
            id: completion_id(),
            model: model.to_owned(),
            created: unix_now(),
            ..ChatChunk::default()
        };
        let n = req.n.unwrap_or(1);
        // Each piece keeps its leading space, so the pieces concatenate to the reply.
        let mut pieces: Vec<String> = Vec::new();
        for (i, word) in reply.split(' ').enumerate() {
            pieces.push(if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        let mut chunks = Vec::with_capacity(pieces.len() + 3);
        let chunk = |choices: Vec<ChunkChoice>| ChatChunk {
            choices,
            ..base.clone()
        };
        chunks.push(chunk(
            (0..n)
                .map(|index| ChunkChoice {
                    index,
                    role: Some(Role::Assistant),
                    text: Some(String::new()),
                    ..ChunkChoice::default()
                })
                .collect(),
        ));
        for piece in pieces {
            chunks.push(chunk(
                (0..n)
                    .map(|index| ChunkChoice {
                        index,
                        text: Some(piece.clone()),
                        ..ChunkChoice::default()
                    })
                    .collect(),
            ));
        }
        chunks.push(chunk(
            (0..n)
                .map(|index| ChunkChoice {
                    index,
                    finish_reason: Some(FinishReason::Stop),
                    ..ChunkChoice::default()
                })
                .collect(),
        ));
        chunks.push(ChatChunk {
            usage: Some(usage),
            ..base.clone()
        });
        let latency = self.latency;
        Ok(Box::pin(stream::unfold(
            (chunks.into_iter(), true),
            move |(mut rest, first)| async move {
                let chunk = rest.next()?;
                if !first && !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                Some((Ok(chunk), (rest, false)))
            },
        )))
    }

    async fn embed(&self, req: &EmbeddingsRequest, model: &str) -> Result<EmbeddingsResponse> {
        self.wait().await;
        let texts: Vec<String> = match &req.input {
            EmbeddingInput::Text(t) => vec![t.clone()],
            EmbeddingInput::Texts(ts) => ts.clone(),
            EmbeddingInput::Tokens(ts) => vec![format!("{ts:?}")],
            EmbeddingInput::TokenLists(lists) => lists.iter().map(|ts| format!("{ts:?}")).collect(),
        };
        let dims = req
            .dimensions
            .map_or(DEFAULT_DIMENSIONS, |d| d.max(1) as usize);
        let base64 = req.wants_base64();
        let data = texts
            .iter()
            .map(|t| EmbeddingVector::encode(embed_text(t, dims), base64))
            .collect();
        Ok(EmbeddingsResponse {
            model: model.to_owned(),
            data,
            usage: Usage {
                input_tokens: texts.iter().map(|t| words(t)).sum(),
                ..Usage::default()
            },
            extra: Default::default(),
        })
    }
}

/// A unit vector that depends only on the text's words: the sum of one fixed random
/// direction per word, so that texts sharing words are near each other, as with a real
/// embedding model (without its grasp of synonyms). A text without words gets the direction
/// of its whole self.
fn embed_text(text: &str, dims: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dims];
    let mut words = 0;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let direction = direction(&word.to_lowercase(), dims);
        sum.iter_mut().zip(direction).for_each(|(s, d)| *s += d);
        words += 1;
    }
    if words == 0 {
        return direction(text, dims);
    }
    unit(sum)
}

/// A unit vector that depends only on the text: FNV-1a of the text, spread over the
/// dimensions by the splitmix64 finaliser.
fn direction(text: &str, dims: usize) -> Vec<f32> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        seed ^= u64::from(byte);
        seed = seed.wrapping_mul(0x0100_0000_01b3);
    }
    let vector: Vec<f32> = (0..dims as u64)
        .map(|d| {
            let mut z = seed.wrapping_add(d.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    unit(vector)
}

fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_stable_unit_vectors() {
        let a = embed_text("hello", 8);
        assert_eq!(a, embed_text("hello", 8));
        assert_ne!(a, embed_text("world", 8));
        // Dimensions must differ from each other, not repeat one value.
        assert!(a.iter().any(|x| (x - a[0]).abs() > 0.05), "{a:?}");
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn texts_sharing_words_are_near() {
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let dims = 256;
        let question = embed_text("where is the archive key", dims);
        let answer = embed_text("The archive key is in the blue box.", dims);
        let other = embed_text("Bake the bread at 230 degrees.", dims);
        assert!(cos(&question, &answer) > cos(&question, &other) + 0.3);
    }
}
