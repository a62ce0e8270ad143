//! Phase 5, finish: the answer on its way out. Whole or streamed, it passes through the call's
//! [`Stage`]s in order, and each stage learns how the call ended — answered in full, failed, or
//! dropped because the client went away. Metering is the last stage of every call: it notes the
//! route and the usage, settles the limits, and writes the one ledger row.
//!
//! A stage that transforms text (unmasking, output guardrails) or keeps the answer (cache fill,
//! storing a conversation turn) is one more [`Stage`]: the stream adapters compose here, in one
//! place, for every surface. Each stage declares its [`Place`]: what keeps the upstream's answer
//! comes before what turns it into the client's, which comes before what sees or keeps the
//! client's — whatever order the phases add them in. A stage may refuse the answer
//! ([`Stage::refusal`]): a whole answer becomes that error, a stream is cut with it as its last
//! event. A stage that holds text back across chunks gives it up when the stream ends
//! ([`Stage::flush`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::time::Instant;

use super::{ChatOutput, Exchange};
use crate::canonical::{ChatChunk, ChatResponse, Collector, EmbeddingsResponse, Usage};
use crate::error::{Error, Result};
use crate::pricing::Price;
use crate::providers::ChunkStream;
use crate::router::Routed;
use crate::usage::{Meter, UsageRecord};

/// How a call ended, as its stages are told.
#[derive(Clone, Copy)]
pub enum Outcome<'e> {
    /// The whole answer reached the client.
    Complete,
    /// The call failed: before routing, in every attempt, or mid-stream.
    Failed(&'e Error),
    /// The client went away before the answer was complete.
    Dropped,
}

/// Where a stage sits on the answer's way out: stages run by place, and within one place in
/// the order they were added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// Sees the answer as the upstream gave it, and as a cache hit replays it: the cache fill,
    /// which must keep a masked answer masked (its key is the masked prompt).
    Upstream,
    /// Turns the upstream's answer into the client's: PII unmasking.
    Restore,
    /// Sees the answer as the client gets it (the default): output guardrails, storing a
    /// conversation turn or a response.
    #[default]
    Client,
}

/// How much of the answer a stage reads, which decides whether a same-API answer may go out
/// as the upstream wrote it ([`ChatResponse::raw`], [`ChatChunk::raw`]) and how much of it is
/// read then. The call's need is its greediest stage's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reads {
    /// Ids, model, finish reasons and usage: what the gateway reads of an answer it passes on.
    Outline,
    /// The whole answer, which it keeps but does not change (the cache fill, a stored turn).
    Whole,
    /// The whole answer, which it may change or refuse: the answer is written anew.
    Changes,
}

/// Something a chat answer passes through on its way to the client.
pub trait Stage: Send {
    /// Where the stage sits; see [`Place`].
    fn place(&self) -> Place {
        Place::Client
    }
    /// How much of the answer the stage reads; see [`Reads`].
    fn reads(&self) -> Reads {
        Reads::Changes
    }
    /// A streamed chunk on its way out; the stage may change it.
    fn chunk(&mut self, chunk: &mut ChatChunk);
    /// A whole answer on its way out; the stage may change it.
    fn complete(&mut self, answer: &mut ChatResponse);
    /// The call ended. Called once, after the last chunk or the whole answer.
    fn end(&mut self, outcome: Outcome<'_>);
    /// Who answered, told before the answer passes (not called for a call never routed).
    fn routed(&mut self, _route: &Route<'_>) {}
    /// Asked after each chunk and after a whole answer: an error refuses the answer (an output
    /// guardrail). A refused answer goes no further: later stages do not see it (metering
    /// still notes its usage), the call ends with the error, and a stream is cut there — the
    /// chunk just passed does not go out.
    fn refusal(&mut self) -> Option<Error> {
        None
    }
    /// The stream ran out: what the stage held back goes into `last`, a chunk with the
    /// stream's id and model (empty, or holding what stages before it gave up), which the
    /// stages after it see and the client gets if a stage filled it. [`choice_in`] finds or
    /// adds a choice's delta there.
    fn flush(&mut self, _last: &mut ChatChunk) {}
}

/// The delta of choice `index` in `chunk`, added if it has none: where a stage's
/// [`flush`](Stage::flush) puts what it held back for that choice.
pub fn choice_in(chunk: &mut ChatChunk, index: u32) -> &mut crate::canonical::ChunkChoice {
    let at = match chunk.choices.iter().position(|c| c.index == index) {
        Some(at) => at,
        None => {
            chunk.choices.push(crate::canonical::ChunkChoice {
                index,
                ..Default::default()
            });
            chunk.choices.len() - 1
        }
    };
    &mut chunk.choices[at]
}

/// How a call was routed, as its stages are told.
pub struct Route<'r> {
    pub provider: Option<&'r Arc<str>>,
    pub upstream_model: Option<&'r str>,
    /// The price of the target that answered.
    pub price: Option<Price>,
}

/// A call's stages, in the order the answer passes through them (by [`Place`]), metering last.
#[derive(Default)]
pub struct Stages {
    stages: Vec<Box<dyn Stage>>,
    /// Every call has it, so it has its own place rather than a box in the list.
    metering: Option<Metering>,
    ended: bool,
}

impl Stages {
    pub fn new() -> Stages {
        Stages::default()
    }

    /// How much of the answer the stages read, together. Metering reads only the outline.
    pub fn reads(&self) -> Reads {
        self.stages
            .iter()
            .map(|stage| stage.reads())
            .max()
            .unwrap_or(Reads::Outline)
    }

    /// Adds a stage at its place, after the ones already there.
    pub fn push(&mut self, stage: impl Stage + 'static) {
        self.push_boxed(Box::new(stage));
    }

    /// Adds a boxed stage at its place, after the ones already there.
    pub fn push_boxed(&mut self, stage: Box<dyn Stage>) {
        let place = stage.place();
        let at = self.stages.partition_point(|s| s.place() <= place);
        self.stages.insert(at, stage);
    }

    fn routed(&mut self, route: &Route<'_>) {
        for stage in &mut self.stages {
            stage.routed(route);
        }
    }

    fn chunk(&mut self, chunk: &mut ChatChunk) -> Result<()> {
        let mut verdict = Ok(());
        for stage in &mut self.stages {
            stage.chunk(chunk);
            if let Some(refusal) = stage.refusal() {
                verdict = Err(refusal);
                break;
            }
        }
        if let Some(metering) = &mut self.metering {
            metering.chunk(chunk);
        }
        verdict
    }

    fn complete(&mut self, answer: &mut ChatResponse) -> Result<()> {
        let mut verdict = Ok(());
        for stage in &mut self.stages {
            stage.complete(answer);
            if let Some(refusal) = stage.refusal() {
                verdict = Err(refusal);
                break;
            }
        }
        if let Some(metering) = &mut self.metering {
            metering.complete(answer);
        }
        verdict
    }

    /// The end of a stream: each stage in turn sees what the ones before it gave up, then
    /// gives up its own.
    fn flush(&mut self, last: &mut ChatChunk) -> Result<()> {
        for stage in &mut self.stages {
            if !last.choices.is_empty() {
                stage.chunk(last);
            }
            stage.flush(last);
            if let Some(refusal) = stage.refusal() {
                return Err(refusal);
            }
        }
        if let Some(metering) = &mut self.metering {
            metering.chunk(last);
        }
        Ok(())
    }

    /// Tells every stage how the call ended, once.
    pub fn end(mut self, outcome: Result<(), &Error>) {
        self.end_with(match outcome {
            Ok(()) => Outcome::Complete,
            Err(e) => Outcome::Failed(e),
        });
    }

    fn end_with(&mut self, outcome: Outcome<'_>) {
        if !self.ended {
            self.ended = true;
            for stage in &mut self.stages {
                stage.end(outcome);
            }
            if let Some(metering) = &mut self.metering {
                metering.end(outcome);
            }
        }
    }
}

impl Drop for Stages {
    /// Stages dropped before they were told an outcome belong to a call the client left.
    fn drop(&mut self) {
        self.end_with(Outcome::Dropped);
    }
}

/// The whole answer of a call as it passes a stage, streamed or not: for the stages that keep
/// it.
#[derive(Default)]
pub struct Gathered {
    collector: Option<Collector>,
    whole: Option<ChatResponse>,
}

impl Gathered {
    pub fn chunk(&mut self, chunk: &ChatChunk) {
        self.collector
            .get_or_insert_with(Collector::default)
            .push(chunk);
    }

    pub fn complete(&mut self, answer: &ChatResponse) {
        self.whole = Some(answer.clone());
    }

    /// The answer gathered, once.
    pub fn take(&mut self) -> Option<ChatResponse> {
        match (self.whole.take(), self.collector.take()) {
            (Some(whole), _) => Some(whole),
            (None, collector) => collector.map(Collector::finish),
        }
    }
}

/// A stage that keeps the whole answer, streamed or not, and hands it to `keep` once the call
/// completes: how a conversation turn or a response gets stored. A call that fails or is
/// dropped keeps nothing (`keep` is dropped unused), so a client's retry stores no duplicate.
pub struct Keep<F: FnOnce(ChatResponse) + Send> {
    gathered: Gathered,
    keep: Option<F>,
}

impl<F: FnOnce(ChatResponse) + Send> Keep<F> {
    pub fn new(keep: F) -> Keep<F> {
        Keep {
            gathered: Gathered::default(),
            keep: Some(keep),
        }
    }
}

impl<F: FnOnce(ChatResponse) + Send> Stage for Keep<F> {
    fn reads(&self) -> Reads {
        Reads::Whole
    }

    fn chunk(&mut self, chunk: &mut ChatChunk) {
        self.gathered.chunk(chunk);
    }

    fn complete(&mut self, answer: &mut ChatResponse) {
        self.gathered.complete(answer);
    }

    fn end(&mut self, outcome: Outcome<'_>) {
        let keep = self.keep.take();
        if let (Outcome::Complete, Some(keep)) = (outcome, keep) {
            if let Some(answer) = self.gathered.take() {
                keep(answer);
            }
        }
    }
}

/// The last stage of every call: notes usage and the first token on the call's record (and the
/// answering model and finish reasons for its trace span), and closes the meter (settling
/// limits, writing the ledger row, counting the call's metrics) when the call ends.
struct Metering(Option<Meter>);

impl Metering {
    /// The record, with the usage an answer or chunk reports noted on it.
    fn note_usage(&mut self, usage: Option<Usage>) -> Option<&mut UsageRecord> {
        let record = self.0.as_mut().and_then(Meter::record)?;
        if usage.is_some() {
            record.usage = usage;
        }
        Some(record)
    }
}

impl Stage for Metering {
    fn chunk(&mut self, chunk: &mut ChatChunk) {
        if let Some(record) = self.note_usage(chunk.usage) {
            record.telemetry.note_chunk(chunk);
        }
    }

    fn complete(&mut self, answer: &mut ChatResponse) {
        if let Some(record) = self.note_usage(answer.usage) {
            record.telemetry.note_answer(answer);
        }
    }

    fn end(&mut self, outcome: Outcome<'_>) {
        let Some(meter) = self.0.take() else { return };
        match outcome {
            Outcome::Complete => meter.close(Ok(())),
            Outcome::Failed(e) => meter.close(Err(e)),
            // The meter records the client leaving (499) when it drops.
            Outcome::Dropped => drop(meter),
        }
    }
}

/// Notes how the call was routed on its meter, and puts the phases' headers on the answer.
fn note_route<T>(exchange: &mut Exchange<'_>, routed: &mut Routed<T>) {
    if let Some(record) = exchange.meter.record() {
        record.provider = routed.provider.clone();
        record.upstream_model = routed.upstream_model.clone();
        record.attempts = routed.attempts;
        record.price = routed.price;
    }
    routed.limit_headers = std::mem::take(&mut exchange.headers);
}

/// A routed chat call, finished: a whole answer through every stage, or a stream that passes
/// each chunk through them as it goes.
pub fn chat(mut exchange: Exchange<'_>, mut routed: Routed<ChatOutput>) -> Routed<ChatOutput> {
    note_route(&mut exchange, &mut routed);
    let Exchange {
        mut meter,
        mut stages,
        ..
    } = exchange;
    if let Ok(ChatOutput::Stream(_)) = &routed.result {
        if let Some(record) = meter.record() {
            record.first_token = Some(Instant::now());
        }
    }
    stages.routed(&Route {
        provider: routed.provider.as_ref(),
        upstream_model: routed.upstream_model.as_deref(),
        price: routed.price,
    });
    stages.metering = Some(Metering(Some(meter)));
    routed.result = match routed.result {
        Ok(ChatOutput::Stream(inner)) => Ok(ChatOutput::Stream(Box::pin(Finished {
            inner,
            stages: Some(stages),
            last: None,
        }))),
        Ok(ChatOutput::Complete(mut answer)) => match stages.complete(&mut answer) {
            Ok(()) => {
                stages.end(Ok(()));
                Ok(ChatOutput::Complete(answer))
            }
            Err(refusal) => {
                stages.end(Err(&refusal));
                Err(refusal)
            }
        },
        Err(e) => {
            stages.end(Err(&e));
            Err(e)
        }
    };
    routed
}

/// A routed embeddings call, finished: its usage metered.
pub fn embeddings(
    mut exchange: Exchange<'_>,
    mut routed: Routed<EmbeddingsResponse>,
) -> Routed<EmbeddingsResponse> {
    note_route(&mut exchange, &mut routed);
    let mut meter = exchange.meter;
    match &routed.result {
        Ok(response) => {
            if let Some(record) = meter.record() {
                record.usage = Some(response.usage);
                record.telemetry.note_model(&response.model);
            }
            meter.close(Ok(()));
        }
        Err(e) => meter.close(Err(e)),
    }
    routed
}

/// A stream passing through the call's stages, which are told how it ended: it ran out, an
/// upstream error or a stage's refusal cut it, or it was dropped because the client went away.
/// It ends after the first error.
struct Finished {
    inner: ChunkStream,
    /// `None` once the stream ended.
    stages: Option<Stages>,
    /// The empty chunk the stages fill when the stream runs out: the first chunk's id and model.
    last: Option<ChatChunk>,
}

impl Stream for Finished {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stages.is_none() {
            return Poll::Ready(None);
        }
        let mut item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        let this = &mut *self;
        let Some(stages) = this.stages.as_mut() else {
            return Poll::Ready(None);
        };
        // The chunk is passed on where it lies: a chunk is large, and each move of it out of
        // the item and back in is a copy, for every chunk of every stream.
        let result = match &mut item {
            Some(result) => result,
            None => {
                let mut last = this.last.take().unwrap_or_default();
                let flushed = stages.flush(&mut last);
                if let Some(stages) = this.stages.take() {
                    stages.end(flushed.as_ref().map(|_| ()));
                }
                return Poll::Ready(match flushed {
                    Ok(()) if last.choices.is_empty() => None,
                    Ok(()) => Some(Ok(last)),
                    Err(e) => Some(Err(e)),
                });
            }
        };
        if let Ok(chunk) = result {
            if this.last.is_none() {
                this.last = Some(ChatChunk {
                    id: chunk.id.clone(),
                    model: chunk.model.clone(),
                    created: chunk.created,
                    ..ChatChunk::default()
                });
            }
            if let Err(refusal) = stages.chunk(chunk) {
                *result = Err(refusal);
            }
        }
        if let Err(e) = result {
            if let Some(stages) = this.stages.take() {
                stages.end(Err(e));
            }
        }
        Poll::Ready(item)
    }
}
