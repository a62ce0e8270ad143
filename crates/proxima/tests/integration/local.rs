//! The built-in `local` provider: all-MiniLM-L6-v2 served in-process on /v1/embeddings, checked
//! against the vectors sentence-transformers makes (tests/data/minilm_reference.json, written by
//! scripts/minilm-reference.py).
//!
//! The weights come from scripts/fetch-minilm, in $PROXIMA_MINILM_DIR (default
//! models/all-minilm-l6-v2). Without them these tests are skipped, saying so, except under
//! CI=true, where they fail.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::harness::*;

/// The model folder, or None (after saying why) when the weights are not there.
fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PROXIMA_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-minilm-l6-v2")
        });
    let missing: Vec<&str> = proxima::providers::local::missing_files(&dir);
    if missing.is_empty() {
        return Some(dir);
    }
    let reason = format!(
        "all-MiniLM-L6-v2 is not in {} (missing {}): run scripts/fetch-minilm",
        dir.display(),
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    eprintln!("skipped: {reason}");
    None
}

/// A gateway serving the model as the public model `embed`.
async fn minilm_gateway() -> Option<Gateway> {
    let dir = minilm_dir()?;
    Some(
        Gateway::start(Conf::new().section(&format!(
            "[providers.minilm]\nkind = \"local\"\npath = \"{}\"\n\n\
             [models.embed]\ntargets = [{{ provider = \"minilm\", model = \"all-minilm-l6-v2\" }}]\n",
            dir.display()
        )))
        .await,
    )
}

struct Reference {
    text: String,
    tokens: u64,
    vector: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let text = include_str!("../data/minilm_reference.json");
    let data: Value = serde_json::from_str(text).unwrap();
    data["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Reference {
            text: s["text"].as_str().unwrap().to_owned(),
            tokens: s["tokens"].as_u64().unwrap(),
            vector: floats(&s["vector"]),
        })
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a float vector: {value}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Little-endian f32s from OpenAI's base64 embedding form.
fn base64_floats(text: &str) -> Vec<f32> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        acc = acc << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
    }
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

async fn embed(gw: &Gateway, body: Value) -> Value {
    let answer = gw.post_json("/v1/embeddings", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            floats(&d["embedding"])
        })
        .collect()
}

#[tokio::test]
async fn local_vectors_match_sentence_transformers_in_floats_and_base64() {
    let Some(gw) = minilm_gateway().await else {
        return;
    };
    let reference = reference();
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let answer = embed(&gw, json!({"model": "embed", "input": texts})).await;
    assert_eq!(answer["model"], "all-minilm-l6-v2");
    let got = vectors(&answer);
    assert_eq!(got.len(), reference.len());
    for (r, v) in reference.iter().zip(&got) {
        assert_eq!(v.len(), 384);
        let similarity = cosine(v, &r.vector);
        assert!(similarity >= 0.999, "cosine {similarity} for {:?}", r.text);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // Word pieces as the model's own tokenizer counts them, the long text cut at 256.
    let tokens: u64 = reference.iter().map(|r| r.tokens).sum();
    assert_eq!(
        answer["usage"]["prompt_tokens"], tokens,
        "{}",
        answer["usage"]
    );
    assert_eq!(answer["usage"]["total_tokens"], tokens);

    // One text alone (no padding) gives the vector it got in the batch.
    let single = embed(
        &gw,
        json!({"model": "embed", "input": texts[1], "dimensions": 384}),
    )
    .await;
    assert!(cosine(&vectors(&single)[0], &got[1]) > 0.99999);

    let packed = embed(
        &gw,
        json!({"model": "embed", "input": texts, "encoding_format": "base64"}),
    )
    .await;
    for (d, v) in packed["data"].as_array().unwrap().iter().zip(&got) {
        assert_eq!(&base64_floats(d["embedding"].as_str().unwrap()), v);
    }
}

#[tokio::test]
async fn local_vectors_carry_meaning() {
    let Some(gw) = minilm_gateway().await else {
        return;
    };
    let answer = embed(
        &gw,
        json!({"model": "embed", "input": [
            "How do I reset my password?",
            "Steps to recover account access",
            "The weather in Paris is sunny",
        ]}),
    )
    .await;
    let v = vectors(&answer);
    let related = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!(
        related > unrelated + 0.2,
        "related {related}, unrelated {unrelated}"
    );
}

#[tokio::test]
async fn local_batches_concurrent_requests_without_mixing_them_up() {
    let Some(gw) = minilm_gateway().await else {
        return;
    };
    let texts: Vec<String> = (0..12)
        .map(|i| format!("request {i}: {}", "token ".repeat(i * 9)))
        .collect();
    let alone = vectors(&embed(&gw, json!({"model": "embed", "input": texts})).await);
    // Six requests of two texts each, sent at once: the worker packs them into shared batches.
    let answers = futures_util::future::join_all(texts.chunks(2).map(|pair| {
        let gw = &gw;
        async move { vectors(&embed(gw, json!({"model": "embed", "input": pair})).await) }
    }))
    .await;
    for (i, v) in answers.iter().flatten().enumerate() {
        assert!(cosine(v, &alone[i]) > 0.99999, "text {i}");
    }
}

#[tokio::test]
async fn local_refuses_what_it_cannot_serve() {
    let Some(gw) = minilm_gateway().await else {
        return;
    };
    let error = gw
        .chat(chat_body("embed", "hi"))
        .await
        .assert_error(400, "invalid_request");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("only serves embeddings"), "{error}");
    gw.chat(stream_body("embed", "hi"))
        .await
        .assert_error(400, "invalid_request");

    for (body, param) in [
        (
            json!({"model": "embed", "input": "x", "dimensions": 256}),
            "dimensions",
        ),
        (
            json!({"model": "embed", "input": [101, 7592, 102]}),
            "input",
        ),
        (json!({"model": "embed", "input": [[101, 102]]}), "input"),
        (json!({"model": "embed", "input": []}), "input"),
    ] {
        let answer = gw.post_json("/v1/embeddings", &body).await;
        let error = answer.assert_error(400, "invalid_request");
        assert_eq!(error["param"], param, "{body}: {error}");
    }
}

#[tokio::test]
async fn local_model_is_loaded_once_per_folder_while_in_use() {
    let Some(dir) = minilm_dir() else {
        return;
    };
    use proxima::providers::local::Embedder;
    let first = Embedder::shared(&dir).unwrap();
    // The same folder by another path, as a reloaded config may name it.
    let again = Embedder::shared(&dir.join("..").join(dir.file_name().unwrap())).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert_eq!(first.dimensions(), 384);
}

#[tokio::test]
async fn local_model_that_does_not_load_stops_the_start_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("proxima-bad-minilm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::fs::write(dir.join(file), "not a model").unwrap();
    }
    let text = format!(
        "[providers.minilm]\nkind = \"local\"\npath = \"{}\"\n\n\
         [models.embed]\ntargets = [{{ provider = \"minilm\", model = \"all-minilm-l6-v2\" }}]\n",
        dir.display()
    );
    let mut config = proxima::config::Config::parse(&text, "test.toml", &|_| None).unwrap();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.storage.database = proxima::config::Secret::new("sqlite::memory:");
    let error = proxima::server::Server::bind(config, None)
        .await
        .err()
        .expect("a broken model folder must not start");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        error.message.contains("cannot load the local model")
            && error.message.contains("config.json"),
        "{}",
        error.message
    );
}

/// A chat turn on `conversation`; the answer's status must be 200.
async fn say(gw: &Gateway, conversation: &str, text: &str) {
    let body = json!({"model": "chat", "conversation": conversation,
                      "messages": [{"role": "user", "content": text}]});
    let answer = gw.post_json("/v1/chat/completions", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn recall_by_meaning_brings_back_a_turn_that_shares_no_word_with_the_question() {
    let Some(dir) = minilm_dir() else { return };
    for embeddings in [true, false] {
        let mock = mock_upstream::MockUpstream::start().await.unwrap();
        let context = if embeddings {
            "[context]\nrecall = 2\nembedding_model = \"embed\"\n"
        } else {
            "[context]\nrecall = 2\n"
        };
        let gw = Gateway::start(
            chat_on("openai", &mock, "context_window = 1400").section(&format!(
                "[providers.minilm]\nkind = \"local\"\npath = \"{}\"\n\n\
                 [models.embed]\ntargets = [{{ provider = \"minilm\", model = \"all-minilm-l6-v2\" }}]\n\n{context}",
                dir.display()
            )),
        )
        .await;
        say(&gw, "family", "My daughter Aurora turns seven in May.").await;
        for n in 0..30 {
            say(
                &gw,
                "family",
                &format!("Note {n}: the quarterly invoice totals went up because shipping got more expensive."),
            )
            .await;
        }
        say(&gw, "family", "What is the name of my kid?").await;
        let prompt = mock.received().last().unwrap().json().to_string();
        assert!(prompt.contains("Note 29"), "the window is sent: {prompt}");
        assert!(!prompt.contains("Note 3:"), "older notes are not: {prompt}");
        assert_eq!(
            prompt.contains("Aurora"),
            embeddings,
            "embeddings {embeddings}: {prompt}"
        );
        gw.shutdown().await;
    }
}
