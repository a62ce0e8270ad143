//! One sentence-transformers BERT model in memory: its tokenizer and weights, and the forward
//! pass that turns a batch of token ids into normalised sentence vectors.
//!
//! It does what sentence-transformers does for all-MiniLM-L6-v2 (Transformer, mean Pooling,
//! Normalize): texts are cut to `max_seq_length` word pieces ([CLS] and [SEP] included), the
//! last hidden states are averaged over the attention mask, and the mean is scaled to unit
//! length.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, ErrorKind, Result};

/// The files a model folder must hold.
pub const REQUIRED_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// The required files missing from `dir` (all of them when it is not a folder).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    REQUIRED_FILES
        .into_iter()
        .filter(|file| !dir.join(file).is_file())
        .collect()
}

/// sentence-transformers' own settings for the Transformer module (`sentence_bert_config.json`).
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

pub struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    /// Length of the vectors (the model's hidden size).
    pub dimensions: usize,
    pad_id: u32,
}

impl Model {
    /// Reads the folder: a missing file, or one that does not parse, is an error that names it.
    pub fn load(dir: &Path) -> Result<Model> {
        let missing = missing_files(dir);
        if !missing.is_empty() {
            return Err(load_error(
                dir,
                format!("the folder lacks {}", missing.join(", ")),
            ));
        }
        let config: BertConfig = read_json(dir, "config.json")?;
        // Without sentence_bert_config.json, sentence-transformers takes the model's limit.
        let max_seq_length = if dir.join("sentence_bert_config.json").is_file() {
            read_json::<SentenceBertConfig>(dir, "sentence_bert_config.json")?.max_seq_length
        } else {
            None
        }
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_error(dir, format!("tokenizer.json: {e}")))?;
        // tokenizer.json carries the Hugging Face defaults (all-MiniLM's: cut at 128, pad to
        // 128); sentence-transformers overrides both, and so do we: padding is per batch.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| load_error(dir, format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);

        let device = Device::Cpu;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device)
            .map_err(|e| load_error(dir, format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(
            VarBuilder::from_tensors(weights, DType::F32, &device),
            &config,
        )
        .map_err(|e| {
            load_error(
                dir,
                format!(
                    "model.safetensors does not hold the BERT model config.json describes: {e}"
                ),
            )
        })?;
        Ok(Model {
            bert,
            tokenizer,
            dimensions: config.hidden_size,
            pad_id: u32::try_from(config.pad_token_id).unwrap_or(0),
        })
    }

    /// The word-piece ids the model sees for `text`, [CLS] and [SEP] included, truncated.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode_fast(text, true).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("the local model's tokenizer failed: {e}"),
            )
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Unit-length sentence vectors of a batch of tokenized texts, in order.
    pub fn embed(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.forward(batch).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("the local model's forward pass failed: {e}"),
            )
        })
    }

    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * width);
        let mut mask = Vec::with_capacity(batch.len() * width);
        for row in batch {
            let padding = width - row.len();
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, padding));
            mask.extend(std::iter::repeat_n(1f32, row.len()));
            mask.extend(std::iter::repeat_n(0f32, padding));
        }
        let shape = (batch.len(), width);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        let hidden = self.bert.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        // Mean over the real tokens only: padding positions are weighted zero.
        let mask = mask.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?.clamp(1e-9, f32::MAX)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, file: &str) -> Result<T> {
    let text = std::fs::read_to_string(dir.join(file))
        .map_err(|e| load_error(dir, format!("cannot read {file}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| load_error(dir, format!("{file}: {e}")))
}

fn load_error(dir: &Path, problem: String) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!(
            "cannot load the local model from {}: {problem}",
            dir.display()
        ),
    )
}
