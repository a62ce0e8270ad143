//! The Responses event stream as a state machine: canonical chunks in, Responses events out.
//!
//! Chat-style chunks carry deltas of a whole turn at once; the Responses API instead streams
//! output items one after another, each opened (`output_item.added`), filled by deltas and
//! closed (`output_item.done`), numbered by `output_index`, with every event carrying a
//! `sequence_number`. One item is open at a time: a delta of another kind — text after
//! reasoning, a tool call with a new index — closes the open item and opens the next. That is
//! the order the API itself uses, and clients such as Codex rely on it.
//!
//! A response that ran the `file_search` tool opens with its `file_search_call` item (the search
//! is over before the model's first chunk), and each citation marker the text streams becomes a
//! `response.output_text.annotation.added` event as soon as the marker is whole.

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::canonical::{ChatChunk, FinishReason, ToolCallDelta, Usage};
use crate::error::Error;
use crate::sse;
use crate::surface::events::EventWriter;
use crate::wire::responses::{
    custom_input, function_call_item, item_id, message_item, reasoning_item, status_for,
    ContentPart, OutputItem, ResponseContext, ResponseErrorWire, ResponseObject, Status, ToolKind,
    UsageWire,
};

/// One event: its type (also the SSE `event:` name) and its JSON data, which repeats the type
/// and carries the sequence number.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
}

/// Writes events as SSE, `event:` line and `data:` line each.
pub fn encode(events: &[Event], out: &mut BytesMut) {
    for event in events {
        let data = serde_json::to_vec(&event.data).unwrap_or_default();
        sse::write_event(out, Some(event.kind), &data);
    }
}

impl EventWriter for ResponseEvents {
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut) -> bool {
        encode(&self.push(&chunk), out);
        !self.is_done()
    }

    fn fail(&mut self, error: &Error, out: &mut BytesMut) {
        encode(&ResponseEvents::fail(self, error), out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        encode(&ResponseEvents::finish(self), out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// The content part of a message being streamed.
struct OpenPart {
    kind: PartKind,
    text: String,
    /// The file citations found in the text so far.
    annotations: Vec<Value>,
    /// Where in `text` the search for citation markers goes on.
    scanned: usize,
}

impl OpenPart {
    fn new(kind: PartKind) -> OpenPart {
        OpenPart {
            kind,
            text: String::new(),
            annotations: Vec::new(),
            scanned: 0,
        }
    }

    fn finished(self) -> ContentPart {
        content_part(self.kind, self.text, self.annotations)
    }
}

/// The output item being streamed.
enum Open {
    Message {
        id: String,
        /// Finished content parts.
        content: Vec<ContentPart>,
        /// The part being streamed.
        part: Option<OpenPart>,
    },
    Reasoning {
        id: String,
        text: String,
    },
    Call {
        id: String,
        /// The canonical tool-call index the fragments carry.
        index: u32,
        call_id: String,
        name: String,
        arguments: String,
        /// Custom tools stream no argument deltas: their input is the `input` field of JSON
        /// arguments, known only when the call is complete.
        custom: bool,
    },
}

pub struct ResponseEvents {
    cx: ResponseContext,
    /// Set by the first event; `output` holds the finished items.
    response: Option<ResponseObject>,
    next_sequence: u64,
    open: Option<Open>,
    /// Tool-call indexes already streamed and closed.
    closed_calls: Vec<u32>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
    /// Gets the final response, as `response.completed` (or `.incomplete`) shows it, to store.
    completed: Option<oneshot::Sender<ResponseObject>>,
}

impl ResponseEvents {
    pub fn new(cx: ResponseContext) -> ResponseEvents {
        ResponseEvents {
            cx,
            response: None,
            next_sequence: 0,
            open: None,
            closed_calls: Vec::new(),
            finish: None,
            usage: None,
            done: false,
            completed: None,
        }
    }

    /// Hands the final response to `completed` when the stream ends whole: the object the
    /// client got, item ids and all, is the one stored. A failed or cut stream drops it unsent.
    pub fn on_completed(mut self, completed: Option<oneshot::Sender<ResponseObject>>) -> Self {
        self.completed = completed;
        self
    }

    /// Whether the stream has ended (completed, incomplete or failed); later input is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The events for one canonical chunk. Only choice 0 counts: this API has no `n`.
    pub fn push(&mut self, chunk: &ChatChunk) -> Vec<Event> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&chunk.model, chunk.created, &mut out);
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.reasoning.as_deref().filter(|d| !d.is_empty()) {
                self.reasoning_delta(delta, &mut out);
            }
            if let Some(delta) = choice.text.as_deref().filter(|d| !d.is_empty()) {
                self.message_delta(PartKind::Text, delta, &mut out);
            }
            if let Some(delta) = choice.refusal.as_deref().filter(|d| !d.is_empty()) {
                self.message_delta(PartKind::Refusal, delta, &mut out);
            }
            for call in &choice.tool_calls {
                if let Err(e) = self.call_delta(call, &mut out) {
                    out.extend(self.fail(&e));
                    return out;
                }
            }
            if let Some(finish) = &choice.finish_reason {
                let (status, _) = status_for(Some(finish));
                self.finish = Some(finish.clone());
                self.close(status, &mut out);
            }
        }
        out
    }

    /// The end of the upstream stream: closes the open item and sends `response.completed`,
    /// or `response.incomplete` when the output was cut short.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start("", 0, &mut out);
        let (status, incomplete) = status_for(self.finish.as_ref());
        self.close(status, &mut out);
        let usage = self.usage.as_ref().map(UsageWire::from);
        let Some(response) = self.response.as_mut() else {
            return out;
        };
        response.status = status;
        response.incomplete_details = incomplete;
        response.usage = usage;
        let kind = if status == Status::Incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let data = json!({ "response": response });
        if let Some(completed) = self.completed.take() {
            // No one waiting is no matter: then nothing is stored.
            let _ = completed.send(response.clone());
        }
        self.emit(&mut out, kind, data);
        self.done = true;
        out
    }

    /// The upstream failed mid-stream: `response.failed` with what was produced so far, and
    /// the end. Never a `response.completed` — the client must know the answer is not whole.
    pub fn fail(&mut self, error: &Error) -> Vec<Event> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start("", 0, &mut out);
        if let Some(open) = self.open.take() {
            // Shown as cut short, without the done events of a finished item.
            let item = self.item(open, Status::Incomplete);
            if let Some(response) = self.response.as_mut() {
                response.output.push(item);
            }
        }
        let usage = self.usage.as_ref().map(UsageWire::from);
        let Some(response) = self.response.as_mut() else {
            return out;
        };
        response.status = Status::Failed;
        response.error = Some(ResponseErrorWire::from(error));
        response.usage = usage;
        let data = json!({ "response": response });
        self.emit(&mut out, "response.failed", data);
        self.done = true;
        out
    }

    /// `response.created` and `response.in_progress`, once, before anything else.
    fn start(&mut self, model: &str, created: u64, out: &mut Vec<Event>) {
        if self.response.is_some() {
            return;
        }
        let created = if created == 0 {
            crate::clock::unix_now()
        } else {
            created
        };
        let response = ResponseObject::in_progress(&self.cx, model, created);
        let data = json!({ "response": &response });
        self.response = Some(response);
        self.emit(out, "response.created", data.clone());
        self.emit(out, "response.in_progress", data);
        self.file_search(out);
    }

    /// The `file_search_call` item, opened and closed at once: the gateway searched before the
    /// call, so the search is over when the stream begins.
    fn file_search(&mut self, out: &mut Vec<Event>) {
        let Some(search) = self.cx.file_search.clone() else {
            return;
        };
        let output_index = self.output_index();
        let added = json!({"output_index": output_index, "item": search.item(Status::InProgress)});
        self.emit(out, "response.output_item.added", added);
        for kind in [
            "response.file_search_call.in_progress",
            "response.file_search_call.searching",
            "response.file_search_call.completed",
        ] {
            let data = json!({"output_index": output_index, "item_id": search.id});
            self.emit(out, kind, data);
        }
        let item = search.item(Status::Completed);
        let done = json!({"output_index": output_index, "item": &item});
        self.emit(out, "response.output_item.done", done);
        if let Some(response) = self.response.as_mut() {
            response.output.push(item);
        }
    }

    fn emit(&mut self, out: &mut Vec<Event>, kind: &'static str, mut data: Value) {
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), kind.into());
            map.insert("sequence_number".into(), self.next_sequence.into());
        }
        self.next_sequence += 1;
        out.push(Event { kind, data });
    }

    /// Where the open (or next) item sits in `output`.
    fn output_index(&self) -> usize {
        self.response.as_ref().map_or(0, |r| r.output.len())
    }

    fn open_item(&mut self, open: Open, out: &mut Vec<Event>) {
        let item = self.item_snapshot(&open);
        let data = json!({ "output_index": self.output_index(), "item": item });
        self.emit(out, "response.output_item.added", data);
        self.open = Some(open);
    }

    /// The open item as `output_item.added` shows it: empty and in progress.
    fn item_snapshot(&self, open: &Open) -> OutputItem {
        match open {
            Open::Message { id, .. } => message_item(id.clone(), Vec::new(), Status::InProgress),
            Open::Reasoning { id, .. } => reasoning_item(id.clone(), String::new(), None, &self.cx),
            Open::Call {
                id, call_id, name, ..
            } => function_call_item(
                id.clone(),
                call_id.clone(),
                name,
                String::new(),
                Status::InProgress,
                &self.cx.tools,
            ),
        }
    }

    /// The finished item.
    fn item(&self, open: Open, status: Status) -> OutputItem {
        match open {
            Open::Message {
                id,
                mut content,
                part,
            } => {
                content.extend(part.map(OpenPart::finished));
                message_item(id, content, status)
            }
            Open::Reasoning { id, text } => reasoning_item(id, text, None, &self.cx),
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => function_call_item(id, call_id, &name, arguments, status, &self.cx.tools),
        }
    }

    fn reasoning_delta(&mut self, delta: &str, out: &mut Vec<Event>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(Status::Completed, out);
            let id = item_id("rs");
            self.open_item(
                Open::Reasoning {
                    id: id.clone(),
                    text: String::new(),
                },
                out,
            );
            let data = json!({
                "item_id": id,
                "output_index": self.output_index(),
                "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            });
            self.emit(out, "response.reasoning_summary_part.added", data);
        }
        let output_index = self.output_index();
        if let Some(Open::Reasoning { id, text }) = self.open.as_mut() {
            text.push_str(delta);
            let data = json!({
                "item_id": id,
                "output_index": output_index,
                "summary_index": 0,
                "delta": delta,
            });
            self.emit(out, "response.reasoning_summary_text.delta", data);
        }
    }

    fn message_delta(&mut self, kind: PartKind, delta: &str, out: &mut Vec<Event>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(Status::Completed, out);
            self.open_item(
                Open::Message {
                    id: item_id("msg"),
                    content: Vec::new(),
                    part: None,
                },
                out,
            );
        }
        let output_index = self.output_index();
        let mut events = Vec::new();
        if let Some(Open::Message { id, content, part }) = self.open.as_mut() {
            if part.as_ref().is_some_and(|p| p.kind != kind) {
                if let Some(done) = part.take() {
                    events.extend(part_done(id, output_index, content.len(), &done));
                    content.push(done.finished());
                }
            }
            let content_index = content.len();
            let open = part.get_or_insert_with(|| {
                let empty = content_part(kind, String::new(), Vec::new());
                events.push((
                    "response.content_part.added",
                    json!({
                        "item_id": id,
                        "output_index": output_index,
                        "content_index": content_index,
                        "part": empty,
                    }),
                ));
                OpenPart::new(kind)
            });
            open.text.push_str(delta);
            events.push(match kind {
                PartKind::Text => (
                    "response.output_text.delta",
                    json!({
                        "item_id": id,
                        "output_index": output_index,
                        "content_index": content_index,
                        "delta": delta,
                        "logprobs": [],
                    }),
                ),
                PartKind::Refusal => (
                    "response.refusal.delta",
                    json!({
                        "item_id": id,
                        "output_index": output_index,
                        "content_index": content_index,
                        "delta": delta,
                    }),
                ),
            });
            if let (Some(search), PartKind::Text) = (&self.cx.file_search, kind) {
                let (found, next) = search.citations(&open.text, open.scanned);
                open.scanned = next;
                for annotation in found {
                    events.push((
                        "response.output_text.annotation.added",
                        json!({
                            "item_id": id,
                            "output_index": output_index,
                            "content_index": content_index,
                            "annotation_index": open.annotations.len(),
                            "annotation": annotation,
                        }),
                    ));
                    open.annotations.push(annotation);
                }
            }
        }
        for (kind, data) in events {
            self.emit(out, kind, data);
        }
    }

    fn call_delta(&mut self, call: &ToolCallDelta, out: &mut Vec<Event>) -> Result<(), Error> {
        let continues =
            matches!(&self.open, Some(Open::Call { index, .. }) if *index == call.index);
        if !continues {
            if self.closed_calls.contains(&call.index) {
                // Empty trailing fragments are harmless; anything else would be lost.
                if call.arguments.is_empty() && call.id.is_none() && call.name.is_none() {
                    return Ok(());
                }
                return Err(Error::upstream(format!(
                    "the upstream sent more of tool call {} after the next one had begun; the call cannot be streamed whole",
                    call.index
                )));
            }
            self.close(Status::Completed, out);
            let name = call.name.clone().unwrap_or_default();
            let custom = self.cx.tools.origin(&name).kind == ToolKind::Custom;
            self.open_item(
                Open::Call {
                    id: item_id(if custom { "ctc" } else { "fc" }),
                    index: call.index,
                    call_id: call
                        .id
                        .clone()
                        .unwrap_or_else(|| format!("call_{:024x}", fastrand::u128(..))),
                    name,
                    arguments: String::new(),
                    custom,
                },
                out,
            );
        }
        let output_index = self.output_index();
        let mut delta_event = None;
        if let Some(Open::Call {
            id,
            call_id,
            name,
            arguments,
            custom,
            ..
        }) = self.open.as_mut()
        {
            // Some upstreams send the id or the name on a later fragment than the first.
            if continues {
                if let Some(late) = &call.id {
                    call_id.clone_from(late);
                }
                if let Some(late) = call.name.as_ref().filter(|_| name.is_empty()) {
                    name.clone_from(late);
                }
            }
            arguments.push_str(&call.arguments);
            if !*custom && !call.arguments.is_empty() {
                delta_event = Some(json!({
                    "item_id": id,
                    "output_index": output_index,
                    "delta": call.arguments,
                }));
            }
        }
        if let Some(data) = delta_event {
            self.emit(out, "response.function_call_arguments.delta", data);
        }
        Ok(())
    }

    /// Closes the open item, if any: its closing events, then `output_item.done`.
    fn close(&mut self, status: Status, out: &mut Vec<Event>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let output_index = self.output_index();
        let mut events: Vec<(&'static str, Value)> = Vec::new();
        match &open {
            Open::Message { id, content, part } => {
                if let Some(part) = part {
                    events.extend(part_done(id, output_index, content.len(), part));
                }
            }
            Open::Reasoning { id, text } => {
                events.push((
                    "response.reasoning_summary_text.done",
                    json!({
                        "item_id": id,
                        "output_index": output_index,
                        "summary_index": 0,
                        "text": text,
                    }),
                ));
                events.push((
                    "response.reasoning_summary_part.done",
                    json!({
                        "item_id": id,
                        "output_index": output_index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": text},
                    }),
                ));
            }
            Open::Call {
                id,
                index,
                name,
                arguments,
                custom,
                ..
            } => {
                self.closed_calls.push(*index);
                if *custom {
                    let input = custom_input(arguments);
                    events.push((
                        "response.custom_tool_call_input.delta",
                        json!({"item_id": id, "output_index": output_index, "delta": input}),
                    ));
                    events.push((
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": output_index, "input": input}),
                    ));
                } else {
                    let origin = self.cx.tools.origin(name);
                    events.push((
                        "response.function_call_arguments.done",
                        json!({
                            "item_id": id,
                            "output_index": output_index,
                            "name": origin.name,
                            "arguments": arguments,
                        }),
                    ));
                }
            }
        }
        let item = self.item(open, status);
        events.push((
            "response.output_item.done",
            json!({"output_index": output_index, "item": &item}),
        ));
        for (kind, data) in events {
            self.emit(out, kind, data);
        }
        if let Some(response) = self.response.as_mut() {
            response.output.push(item);
        }
    }
}

fn content_part(kind: PartKind, text: String, annotations: Vec<Value>) -> ContentPart {
    match kind {
        PartKind::Text => ContentPart::OutputText {
            text,
            annotations,
            logprobs: Vec::new(),
        },
        PartKind::Refusal => ContentPart::Refusal { refusal: text },
    }
}

/// The events that finish one content part of a message.
fn part_done(
    id: &str,
    output_index: usize,
    content_index: usize,
    part: &OpenPart,
) -> [(&'static str, Value); 2] {
    let text = &part.text;
    let done = match part.kind {
        PartKind::Text => (
            "response.output_text.done",
            json!({
                "item_id": id,
                "output_index": output_index,
                "content_index": content_index,
                "text": text,
                "logprobs": [],
            }),
        ),
        PartKind::Refusal => (
            "response.refusal.done",
            json!({
                "item_id": id,
                "output_index": output_index,
                "content_index": content_index,
                "refusal": text,
            }),
        ),
    };
    let part = content_part(part.kind, text.clone(), part.annotations.clone());
    [
        done,
        (
            "response.content_part.done",
            json!({
                "item_id": id,
                "output_index": output_index,
                "content_index": content_index,
                "part": part,
            }),
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::canonical::{ChunkChoice, Role};
    use crate::wire::responses::{FileSearchCall, FileSearchResult, ResponsesRequest};

    fn machine(body: Value) -> ResponseEvents {
        let req: ResponsesRequest = serde_json::from_value(body).unwrap();
        ResponseEvents::new(req.into_canonical().unwrap().context)
    }

    fn plain() -> ResponseEvents {
        machine(json!({"model": "fast", "input": "hi", "stream": true}))
    }

    fn chunk(choice: ChunkChoice) -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            model: "up-model".into(),
            created: 1_700_000_000,
            choices: vec![choice],
            ..ChatChunk::default()
        }
    }

    fn text(t: &str) -> ChatChunk {
        chunk(ChunkChoice {
            text: Some(t.into()),
            ..ChunkChoice::default()
        })
    }

    fn reasoning(t: &str) -> ChatChunk {
        chunk(ChunkChoice {
            reasoning: Some(t.into()),
            ..ChunkChoice::default()
        })
    }

    fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ChatChunk {
        chunk(ChunkChoice {
            tool_calls: vec![ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: args.into(),
            }],
            ..ChunkChoice::default()
        })
    }

    fn finish(reason: FinishReason) -> ChatChunk {
        chunk(ChunkChoice {
            finish_reason: Some(reason),
            ..ChunkChoice::default()
        })
    }

    fn usage() -> ChatChunk {
        ChatChunk {
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Usage::default()
            }),
            ..ChatChunk::default()
        }
    }

    /// Every event of a run, checking the invariants every event shares.
    fn run(mut m: ResponseEvents, input: Vec<Result<ChatChunk, Error>>) -> Vec<Event> {
        let mut events = Vec::new();
        for item in input {
            match item {
                Ok(c) => events.extend(m.push(&c)),
                Err(e) => events.extend(m.fail(&e)),
            }
        }
        events.extend(m.finish());
        assert!(m.is_done());
        assert!(m.finish().is_empty(), "nothing after the end");
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event.data["type"], event.kind);
            assert_eq!(event.data["sequence_number"], n as u64, "{}", event.kind);
        }
        events
    }

    fn kinds(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.kind).collect()
    }

    fn last_response(events: &[Event]) -> &Value {
        &events.last().unwrap().data["response"]
    }

    #[test]
    fn text_stream() {
        let first = chunk(ChunkChoice {
            role: Some(Role::Assistant),
            text: Some(String::new()),
            ..ChunkChoice::default()
        });
        let events = run(
            plain(),
            vec![
                Ok(first),
                Ok(text("Hel")),
                Ok(text("lo")),
                Ok(finish(FinishReason::Stop)),
                Ok(usage()),
            ],
        );
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let created = &events[0].data["response"];
        assert_eq!(created["status"], "in_progress");
        assert_eq!(created["output"], json!([]));
        assert_eq!(created["model"], "up-model");
        assert_eq!(created["usage"], Value::Null);
        let id = events[2].data["item"]["id"].as_str().unwrap();
        assert!(id.starts_with("msg_"));
        assert_eq!(events[2].data["item"]["status"], "in_progress");
        assert_eq!(events[2].data["output_index"], 0);
        for e in &events[3..9] {
            assert_eq!(e.data["item_id"].as_str().unwrap_or(id), id);
            assert_eq!(e.data["output_index"], 0);
        }
        assert_eq!(events[4].data["delta"], "Hel");
        assert_eq!(events[4].data["content_index"], 0);
        assert_eq!(events[6].data["text"], "Hello");
        assert_eq!(events[7].data["part"]["text"], "Hello");
        assert_eq!(events[8].data["item"]["status"], "completed");
        let done = last_response(&events);
        assert_eq!(done["id"], created["id"]);
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["usage"]["input_tokens"], 5);
        assert_eq!(done["usage"]["total_tokens"], 7);
    }

    /// A machine for a response whose file search gave the model two passages.
    fn searched(include_results: bool) -> ResponseEvents {
        let req: ResponsesRequest = serde_json::from_value(json!({
            "model": "m", "input": "holidays?", "stream": true,
            "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
        }))
        .unwrap();
        let mut cx = req.into_canonical().unwrap().context;
        let result = |file_id: &str, filename: &str| FileSearchResult {
            file_id: file_id.into(),
            filename: filename.into(),
            score: 0.5,
            attributes: Default::default(),
            text: format!("from {filename}"),
        };
        cx.file_search = Some(FileSearchCall {
            id: "fs_1".into(),
            query: "holidays?".into(),
            results: vec![result("file-a", "a.pdf"), result("file-b", "b.md")],
            include_results,
        });
        ResponseEvents::new(cx)
    }

    #[test]
    fn a_file_search_leads_the_stream_and_citations_are_annotated_as_they_close() {
        let events = run(
            searched(true),
            vec![
                Ok(text("Thirty [")),
                Ok(text("1] days")),
                Ok(text(", parking [2][9].")),
                Ok(finish(FinishReason::Stop)),
            ],
        );
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.file_search_call.in_progress",
                "response.file_search_call.searching",
                "response.file_search_call.completed",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.annotation.added",
                "response.output_text.delta",
                "response.output_text.annotation.added",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let added = &events[2].data;
        assert_eq!(added["output_index"], 0);
        assert_eq!(
            added["item"],
            json!({"type": "file_search_call", "id": "fs_1", "status": "in_progress", "queries": [], "results": null})
        );
        for e in &events[3..6] {
            assert_eq!(e.data["item_id"], "fs_1");
            assert_eq!(e.data["output_index"], 0);
        }
        let done = &events[6].data["item"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["queries"], json!(["holidays?"]));
        assert_eq!(done["results"][1]["filename"], "b.md");
        assert_eq!(done["results"][1]["text"], "from b.md");
        // The message follows, at output index 1.
        assert_eq!(events[7].data["output_index"], 1);
        let message_id = events[7].data["item"]["id"].as_str().unwrap();
        let first = &events[11].data;
        assert_eq!(first["item_id"], message_id);
        assert_eq!(first["output_index"], 1);
        assert_eq!(first["content_index"], 0);
        assert_eq!(first["annotation_index"], 0);
        assert_eq!(
            first["annotation"],
            json!({"type": "file_citation", "file_id": "file-a", "filename": "a.pdf", "index": 7})
        );
        assert_eq!(events[13].data["annotation_index"], 1);
        assert_eq!(events[13].data["annotation"]["file_id"], "file-b");
        let response = last_response(&events);
        assert_eq!(response["output"][0], *done);
        let part = &response["output"][1]["content"][0];
        assert_eq!(part["text"], "Thirty [1] days, parking [2][9].");
        assert_eq!(
            part["annotations"],
            json!([first["annotation"], events[13].data["annotation"]])
        );
        assert_eq!(events[15].data["part"]["annotations"], part["annotations"]);

        // Without `include`, the item shows no results.
        let events = run(searched(false), vec![Ok(text("ok"))]);
        assert_eq!(events[6].data["item"]["results"], Value::Null);
        assert_eq!(last_response(&events)["output"][0]["results"], Value::Null);
    }

    #[test]
    fn two_function_calls_with_split_arguments() {
        let m = machine(json!({
            "model": "m", "input": "hi",
            "tools": [{"type": "function", "name": "get_weather"}, {"type": "function", "name": "get_time"}],
        }));
        let events = run(
            m,
            vec![
                Ok(call(0, Some("call_a"), Some("get_weather"), "")),
                Ok(call(0, None, None, "{\"ci")),
                Ok(call(0, None, None, "ty\":\"Os")),
                Ok(call(0, None, None, "lo\"}")),
                Ok(call(1, Some("call_b"), Some("get_time"), "{\"tz\":")),
                Ok(call(1, None, None, "\"CET\"}")),
                Ok(call(1, None, None, "")),
                Ok(finish(FinishReason::ToolCalls)),
                Ok(usage()),
            ],
        );
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let added = &events[2].data;
        assert_eq!(added["output_index"], 0);
        assert_eq!(added["item"]["type"], "function_call");
        assert_eq!(added["item"]["call_id"], "call_a");
        assert_eq!(added["item"]["name"], "get_weather");
        assert_eq!(added["item"]["arguments"], "");
        assert_eq!(added["item"]["status"], "in_progress");
        let first_id = added["item"]["id"].as_str().unwrap();
        assert!(first_id.starts_with("fc_"));
        // The deltas reassemble exactly.
        let joined: String = events[3..6]
            .iter()
            .map(|e| e.data["delta"].as_str().unwrap())
            .collect();
        assert_eq!(joined, "{\"city\":\"Oslo\"}");
        assert_eq!(events[6].data["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(events[6].data["item_id"], first_id);
        assert_eq!(events[7].data["item"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(events[7].data["item"]["status"], "completed");
        // The second call is its own item.
        assert_eq!(events[8].data["output_index"], 1);
        let second_id = events[8].data["item"]["id"].as_str().unwrap();
        assert_ne!(second_id, first_id);
        for e in &events[9..13] {
            assert_eq!(e.data["output_index"], 1);
        }
        assert_eq!(events[11].data["arguments"], "{\"tz\":\"CET\"}");
        let done = last_response(&events);
        assert_eq!(done["status"], "completed");
        let output = done["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["call_id"], "call_a");
        assert_eq!(output[0]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(output[1]["call_id"], "call_b");
        assert_eq!(output[1]["name"], "get_time");
        assert_eq!(output[1]["arguments"], "{\"tz\":\"CET\"}");
    }

    #[test]
    fn reasoning_then_text() {
        let events = run(
            plain(),
            vec![
                Ok(reasoning("Think")),
                Ok(reasoning("ing.")),
                Ok(text("Answer")),
                Ok(finish(FinishReason::Stop)),
            ],
        );
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[2].data["item"]["type"], "reasoning");
        assert_eq!(events[2].data["item"]["summary"], json!([]));
        assert_eq!(events[3].data["summary_index"], 0);
        assert_eq!(events[4].data["summary_index"], 0);
        assert_eq!(events[6].data["text"], "Thinking.");
        assert_eq!(
            events[8].data["item"]["summary"],
            json!([{"type": "summary_text", "text": "Thinking."}])
        );
        assert_eq!(events[9].data["output_index"], 1);
        assert_eq!(events[9].data["item"]["type"], "message");
        let done = last_response(&events);
        assert_eq!(done["output"][0]["type"], "reasoning");
        assert_eq!(done["output"][1]["content"][0]["text"], "Answer");
        assert_eq!(done["usage"], Value::Null, "the upstream reported none");
    }

    #[test]
    fn upstream_failure_mid_stream_fails_the_response() {
        let events = run(
            plain(),
            vec![
                Ok(text("Hel")),
                Err(Error::upstream("connection reset by the upstream")),
                Ok(text("lo")),
            ],
        );
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.failed",
            ]
        );
        let failed = last_response(&events);
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["code"], "server_error");
        assert_eq!(
            failed["error"]["message"],
            "connection reset by the upstream"
        );
        assert_eq!(failed["output"][0]["status"], "incomplete");
        assert_eq!(failed["output"][0]["content"][0]["text"], "Hel");

        // Rate limits keep their code, which clients act on.
        let limited = Error::new(crate::error::ErrorKind::UpstreamRateLimited, "slow down");
        let events = run(plain(), vec![Ok(text("a")), Err(limited)]);
        assert_eq!(
            last_response(&events)["error"]["code"],
            "rate_limit_exceeded"
        );
    }

    #[test]
    fn length_limit_ends_incomplete() {
        let events = run(
            plain(),
            vec![Ok(text("cut")), Ok(finish(FinishReason::Length))],
        );
        assert_eq!(events.last().unwrap().kind, "response.incomplete");
        let r = last_response(&events);
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["output"][0]["status"], "incomplete");
    }

    #[test]
    fn custom_tool_calls_stream_their_input() {
        let m = machine(json!({
            "model": "m", "input": "hi",
            "tools": [{"type": "custom", "name": "apply_patch"}],
        }));
        let events = run(
            m,
            vec![
                Ok(text("Patching.")),
                Ok(call(0, Some("call_p"), Some("apply_patch"), "{\"input\":")),
                Ok(call(0, None, None, "\"*** Begin Patch\\n\"}")),
                Ok(finish(FinishReason::ToolCalls)),
            ],
        );
        let k = kinds(&events);
        assert_eq!(
            &k[8..],
            [
                "response.output_item.added",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[8].data["item"]["type"], "custom_tool_call");
        assert!(events[8].data["item"]["id"]
            .as_str()
            .unwrap()
            .starts_with("ctc_"));
        assert_eq!(events[10].data["input"], "*** Begin Patch\n");
        let item = &events[11].data["item"];
        assert_eq!(item["call_id"], "call_p");
        assert_eq!(item["name"], "apply_patch");
        assert_eq!(item["input"], "*** Begin Patch\n");
    }

    #[test]
    fn refusal_is_its_own_content_part() {
        let events = run(
            plain(),
            vec![
                Ok(text("Well")),
                Ok(chunk(ChunkChoice {
                    refusal: Some("No.".into()),
                    ..ChunkChoice::default()
                })),
                Ok(finish(FinishReason::Stop)),
            ],
        );
        assert_eq!(
            &kinds(&events)[5..11],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.content_part.added",
                "response.refusal.delta",
                "response.refusal.done",
                "response.content_part.done",
            ]
        );
        assert_eq!(events[7].data["content_index"], 1);
        let content = &last_response(&events)["output"][0]["content"];
        assert_eq!(content[0]["text"], "Well");
        assert_eq!(content[1], json!({"type": "refusal", "refusal": "No."}));
    }

    #[test]
    fn a_call_resumed_after_the_next_began_fails_instead_of_garbling() {
        let events = run(
            plain(),
            vec![
                Ok(call(0, Some("a"), Some("f"), "{")),
                Ok(call(1, Some("b"), Some("g"), "{}")),
                Ok(call(0, None, None, "}")),
            ],
        );
        assert_eq!(events.last().unwrap().kind, "response.failed");
        assert!(!kinds(&events).contains(&"response.completed"));
    }

    #[test]
    fn sse_encoding_names_each_event() {
        let events = run(plain(), vec![Ok(text("x"))]);
        let mut bytes = BytesMut::new();
        encode(&events[..1], &mut bytes);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("event: response.created\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert!(!text.contains("[DONE]"));
    }
}
