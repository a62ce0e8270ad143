//! The embedding worker: one OS thread per loaded model that owns it, takes jobs from a
//! channel, and answers each through a oneshot, so no model work runs on the async workers.
//!
//! Texts of concurrent requests are batched together: the worker takes the oldest pending
//! texts (up to [`WINDOW`]), sorts them by length so that texts of one batch pad little, and
//! runs them in batches of up to [`BATCH`]; requests are served in the order they came. The
//! matrix products run on rayon's global pool (a thread per CPU, or `RAYON_NUM_THREADS`),
//! which every model shares: the worker waits while they run, so the CPUs are not
//! oversubscribed however many models run.
//!
//! A model is loaded once per folder per process: [`Embedder::shared`] hands out the one
//! already running for that folder while any provider still uses it, so a config reload that
//! keeps the provider does not load it again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::oneshot;

use super::model::Model;
use crate::error::{Error, ErrorKind, Result};

/// Most texts run through the model in one forward pass.
pub const BATCH: usize = 32;
/// Most texts sorted by length together before they are cut into batches.
const WINDOW: usize = 4 * BATCH;

/// The vectors of one request's texts, in order, and the word pieces the model read.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embedded>>,
}

/// A running model: send it texts, get vectors back.
pub struct Embedder {
    jobs: mpsc::Sender<Job>,
    dimensions: usize,
    dir: PathBuf,
}

/// The models running in this process, by canonical folder. Weak: a model no provider uses
/// any more is dropped, and its worker ends.
static RUNNING: Mutex<BTreeMap<PathBuf, Weak<Embedder>>> = Mutex::new(BTreeMap::new());

impl Embedder {
    /// The model of `dir`: the one already running, or loaded now (a clear error when the
    /// folder is not a usable model).
    pub fn shared(dir: &Path) -> Result<Arc<Embedder>> {
        let dir = dir.canonicalize().map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot load the local model from {}: {e}", dir.display()),
            )
        })?;
        // Held while loading, so that two providers on one folder load it once.
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(embedder) = running.get(&dir).and_then(Weak::upgrade) {
            return Ok(embedder);
        }
        let started = tokio::time::Instant::now();
        let embedder = Arc::new(Embedder::start(Model::load(&dir)?, dir.clone())?);
        tracing::info!(
            path = %dir.display(),
            took_ms = started.elapsed().as_millis() as u64,
            "local model loaded"
        );
        running.retain(|_, e| e.strong_count() > 0);
        running.insert(dir, Arc::downgrade(&embedder));
        Ok(embedder)
    }

    fn start(model: Model, dir: PathBuf) -> Result<Embedder> {
        let (jobs, queue) = mpsc::channel();
        let dimensions = model.dimensions;
        std::thread::Builder::new()
            .name("proxima-embedder".into())
            .spawn(move || work(&model, &queue))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot start the embedding worker: {e}"),
                )
            })?;
        Ok(Embedder {
            jobs,
            dimensions,
            dir,
        })
    }

    /// Length of the vectors.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The vectors of `texts`, in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            Error::new(
                ErrorKind::Internal,
                format!(
                    "the embedding worker of {} stopped; restart proxima",
                    self.dir.display()
                ),
            )
        };
        self.jobs
            .send(Job { texts, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One text waiting for the model.
struct Pending {
    job: u64,
    index: usize,
    ids: Vec<u32>,
}

/// A request whose texts are not all embedded yet.
struct Open {
    reply: oneshot::Sender<Result<Embedded>>,
    vectors: Vec<Vec<f32>>,
    left: usize,
    tokens: u64,
}

/// The worker's loop; ends when every [`Embedder`] handle is gone.
fn work(model: &Model, queue: &mpsc::Receiver<Job>) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut next_job = 0u64;
    loop {
        if pending.is_empty() {
            let Ok(job) = queue.recv() else { return };
            admit(model, job, next_job, &mut open, &mut pending);
            next_job += 1;
        }
        while let Ok(job) = queue.try_recv() {
            admit(model, job, next_job, &mut open, &mut pending);
            next_job += 1;
        }
        // A request whose caller went away (timeout, disconnect) is not worth computing.
        open.retain(|_, o| !o.reply.is_closed());
        let mut window: Vec<Pending> = Vec::with_capacity(WINDOW);
        while window.len() < WINDOW {
            let Some(text) = pending.pop_front() else {
                break;
            };
            if open.contains_key(&text.job) {
                window.push(text);
            }
        }
        window.sort_by_key(|text| text.ids.len());
        for batch in window.chunks(BATCH) {
            // A job failed by an earlier batch of this window needs no more work.
            let batch: Vec<&Pending> = batch
                .iter()
                .filter(|text| open.contains_key(&text.job))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let ids: Vec<&[u32]> = batch.iter().map(|text| text.ids.as_slice()).collect();
            // A panic inside candle would end the worker, and with it the provider, for good.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.embed(&ids)))
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Internal,
                        "the local model's forward pass panicked",
                    ))
                });
            match outcome {
                Ok(vectors) => {
                    for (text, vector) in batch.iter().zip(vectors) {
                        deliver(&mut open, text, vector);
                    }
                }
                Err(error) => {
                    for text in &batch {
                        if let Some(job) = open.remove(&text.job) {
                            let _ = job.reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        }
    }
}

/// Tokenizes a new request's texts into the queue; one without texts is answered at once.
fn admit(
    model: &Model,
    job: Job,
    id: u64,
    open: &mut HashMap<u64, Open>,
    pending: &mut VecDeque<Pending>,
) {
    let tokenized: Result<Vec<Vec<u32>>> = job.texts.iter().map(|t| model.tokenize(t)).collect();
    let tokenized = match tokenized {
        Ok(tokenized) => tokenized,
        Err(error) => {
            let _ = job.reply.send(Err(error));
            return;
        }
    };
    let tokens = tokenized.iter().map(|ids| ids.len() as u64).sum();
    if tokenized.is_empty() {
        let _ = job.reply.send(Ok(Embedded {
            vectors: Vec::new(),
            tokens,
        }));
        return;
    }
    open.insert(
        id,
        Open {
            reply: job.reply,
            vectors: vec![Vec::new(); tokenized.len()],
            left: tokenized.len(),
            tokens,
        },
    );
    pending.extend(
        tokenized
            .into_iter()
            .enumerate()
            .map(|(index, ids)| Pending {
                job: id,
                index,
                ids,
            }),
    );
}

/// Files one vector; the request is answered with its last.
fn deliver(open: &mut HashMap<u64, Open>, text: &Pending, vector: Vec<f32>) {
    let Some(job) = open.get_mut(&text.job) else {
        return;
    };
    job.vectors[text.index] = vector;
    job.left -= 1;
    if job.left == 0 {
        if let Some(job) = open.remove(&text.job) {
            let _ = job.reply.send(Ok(Embedded {
                vectors: job.vectors,
                tokens: job.tokens,
            }));
        }
    }
}
