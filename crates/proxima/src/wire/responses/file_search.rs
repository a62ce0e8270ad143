//! The `file_search` tool, run by the gateway for every backend: the tool as a request declares
//! it, the `file_search_call` output item, and the `file_citation` annotations of the answer.
//!
//! The gateway searches the caller's vector stores with the user's new input before the call
//! and gives the model the passages found, numbered, asking it to cite them as `[1]`, `[2]`
//! (see [`crate::context::passages`]); the tool itself is never sent upstream. Every such
//! marker in the answer's text — `[N]`, or a list like `[1, 3]` — whose number is a passage
//! the model was given becomes a `file_citation` annotation of that passage's file, whose
//! `index` is the marker's position in the text (in characters). The markers stay in the text.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::response::{OutputItem, Status};
use crate::error::{Error, Result};
use crate::retrieval::{self, Filter, Hit};

/// `{"type": "file_search", ...}` as a request declares it.
#[derive(Debug, Clone)]
pub struct FileSearchTool {
    pub vector_store_ids: Vec<String>,
    /// 1 to [`retrieval::MAX_RESULTS`]; unset: [`retrieval::DEFAULT_RESULTS`].
    pub max_num_results: usize,
    pub filter: Option<Filter>,
    /// `ranking_options.score_threshold`, 0 to 1.
    pub score_threshold: Option<f32>,
}

impl FileSearchTool {
    /// Reads the tool declared at `at` (`tools[i]`), naming the field at fault.
    pub fn parse(tool: &Value, at: &str) -> Result<FileSearchTool> {
        let invalid = |field: &str, what: &str| {
            let param = format!("{at}.{field}");
            Error::invalid_request(format!("`{param}` {what}")).with_param(param)
        };
        let ids = tool
            .get("vector_store_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                invalid(
                    "vector_store_ids",
                    "is required: the vector stores to search",
                )
            })?;
        let vector_store_ids = ids
            .iter()
            .map(|id| id.as_str().filter(|id| !id.is_empty()).map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .filter(|ids| !ids.is_empty())
            .ok_or_else(|| {
                invalid(
                    "vector_store_ids",
                    "must be a list of one or more vector store ids",
                )
            })?;
        let max_num_results = match tool.get("max_num_results") {
            None | Some(Value::Null) => retrieval::DEFAULT_RESULTS,
            Some(n) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=retrieval::MAX_RESULTS).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "max_num_results",
                        &format!(
                            "must be a whole number from 1 to {}",
                            retrieval::MAX_RESULTS
                        ),
                    )
                })?,
        };
        let filter = match tool.get("filters") {
            None | Some(Value::Null) => None,
            Some(filters) => Some(Filter::parse(filters, &format!("{at}.filters"))?),
        };
        let score_threshold = match tool.pointer("/ranking_options/score_threshold") {
            None | Some(Value::Null) => None,
            Some(threshold) => Some(
                threshold
                    .as_f64()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        invalid(
                            "ranking_options.score_threshold",
                            "must be a number from 0 to 1",
                        )
                    })? as f32,
            ),
        };
        Ok(FileSearchTool {
            vector_store_ids,
            max_num_results,
            filter,
            score_threshold,
        })
    }
}

/// One result of a file search, as `file_search_call.results` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileSearchResult {
    pub file_id: String,
    pub filename: String,
    /// [`Hit::wire_score`]: the answer and the stored response print the same number.
    pub score: f64,
    pub attributes: Map<String, Value>,
    pub text: String,
}

impl From<Hit> for FileSearchResult {
    fn from(hit: Hit) -> FileSearchResult {
        let score = hit.wire_score();
        FileSearchResult {
            file_id: hit.file_id,
            filename: hit.filename,
            score,
            attributes: hit.attributes,
            text: hit.text,
        }
    }
}

/// The search the gateway made for a response.
#[derive(Debug, Clone)]
pub struct FileSearchCall {
    pub id: String,
    pub query: String,
    /// The passages the model was given, by number (the first is `[1]`).
    pub results: Vec<FileSearchResult>,
    /// `include: ["file_search_call.results"]`: the item shows the results.
    pub include_results: bool,
}

impl FileSearchCall {
    /// The `file_search_call` output item: in progress (no query shown yet), or completed.
    pub fn item(&self, status: Status) -> OutputItem {
        let done = status == Status::Completed;
        OutputItem::FileSearchCall {
            id: self.id.clone(),
            status,
            queries: if done {
                vec![self.query.clone()]
            } else {
                Vec::new()
            },
            results: (done && self.include_results).then(|| self.results.clone()),
        }
    }

    /// The citations of the passages in `text[from..]`, as annotations, and where the next
    /// scan of the same (growing) text must start: at a marker not yet closed, else the end.
    pub fn citations(&self, text: &str, from: usize) -> (Vec<Value>, usize) {
        let (markers, next) = markers(text, from);
        let annotations = markers
            .into_iter()
            .filter_map(|(at, number)| {
                let cited = self.results.get(number.checked_sub(1)?)?;
                Some(json!({
                    "type": "file_citation",
                    "file_id": cited.file_id,
                    "filename": cited.filename,
                    "index": text[..at].chars().count(),
                }))
            })
            .collect();
        (annotations, next)
    }
}

/// A citation marker's numbers have at most this many digits.
const MAX_DIGITS: usize = 3;

/// What a `[` starts.
enum Marker {
    /// A whole marker ending before `end`, with its numbers.
    Complete { end: usize, numbers: Vec<usize> },
    /// The text ends inside what may still become a marker.
    Open,
    /// Not a marker.
    Not,
}

/// The marker starting at `text[start]`, a `[`: `[N]` or `[N, M, ...]`.
fn marker_at(text: &str, start: usize) -> Marker {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    let mut numbers = Vec::new();
    loop {
        let digits = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() && i - digits <= MAX_DIGITS {
            i += 1;
        }
        if i == bytes.len() {
            return Marker::Open;
        }
        if i == digits || i - digits > MAX_DIGITS {
            return Marker::Not;
        }
        // At most three ASCII digits: always a number.
        numbers.push(text[digits..i].parse().unwrap_or(0));
        match bytes[i] {
            b']' => {
                return Marker::Complete {
                    end: i + 1,
                    numbers,
                }
            }
            b',' => {
                i += 1;
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
            }
            _ => return Marker::Not,
        }
    }
}

/// The citation markers whole in `text[from..]` as (byte offset of the marker, number), and
/// where a later scan must start.
fn markers(text: &str, from: usize) -> (Vec<(usize, usize)>, usize) {
    let mut found = Vec::new();
    let mut at = from.min(text.len());
    while let Some(offset) = text.get(at..).and_then(|rest| rest.find('[')) {
        let start = at + offset;
        match marker_at(text, start) {
            Marker::Complete { end, numbers } => {
                found.extend(numbers.into_iter().map(|n| (start, n)));
                at = end;
            }
            Marker::Open => return (found, start),
            Marker::Not => at = start + 1,
        }
    }
    (found, text.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn call(include_results: bool) -> FileSearchCall {
        let result = |file_id: &str, filename: &str| FileSearchResult {
            file_id: file_id.into(),
            filename: filename.into(),
            score: 0.9,
            attributes: Map::new(),
            text: "text".into(),
        };
        FileSearchCall {
            id: "fs_1".into(),
            query: "holidays".into(),
            results: vec![result("file-a", "a.pdf"), result("file-b", "b.md")],
            include_results,
        }
    }

    #[test]
    fn the_tool_is_read_with_openais_fields_and_defaults() {
        let tool = FileSearchTool::parse(
            &json!({"type": "file_search", "vector_store_ids": ["vs_1", "vs_2"],
                    "max_num_results": 3,
                    "filters": {"type": "eq", "key": "lang", "value": "en"},
                    "ranking_options": {"ranker": "auto", "score_threshold": 0.25}}),
            "tools[0]",
        )
        .unwrap();
        assert_eq!(tool.vector_store_ids, ["vs_1", "vs_2"]);
        assert_eq!(tool.max_num_results, 3);
        assert!(tool.filter.is_some());
        assert_eq!(tool.score_threshold, Some(0.25));

        let tool = FileSearchTool::parse(
            &json!({"type": "file_search", "vector_store_ids": ["vs_1"], "filters": null}),
            "tools[0]",
        )
        .unwrap();
        assert_eq!(tool.max_num_results, retrieval::DEFAULT_RESULTS);
        assert!(tool.filter.is_none() && tool.score_threshold.is_none());

        for (tool, param) in [
            (json!({"type": "file_search"}), "tools[1].vector_store_ids"),
            (
                json!({"type": "file_search", "vector_store_ids": []}),
                "tools[1].vector_store_ids",
            ),
            (
                json!({"type": "file_search", "vector_store_ids": [7]}),
                "tools[1].vector_store_ids",
            ),
            (
                json!({"type": "file_search", "vector_store_ids": ["vs"], "max_num_results": 51}),
                "tools[1].max_num_results",
            ),
            (
                json!({"type": "file_search", "vector_store_ids": ["vs"], "ranking_options": {"score_threshold": 2}}),
                "tools[1].ranking_options.score_threshold",
            ),
            (
                json!({"type": "file_search", "vector_store_ids": ["vs"], "filters": {"type": "near"}}),
                "tools[1].filters",
            ),
        ] {
            let e = FileSearchTool::parse(&tool, "tools[1]").err().unwrap();
            assert_eq!(e.param.as_deref(), Some(param), "{tool}: {}", e.message);
        }
    }

    #[test]
    fn the_call_item_shows_results_only_when_included() {
        let item = serde_json::to_value(call(false).item(Status::Completed)).unwrap();
        assert_eq!(
            item,
            json!({"type": "file_search_call", "id": "fs_1", "status": "completed",
                   "queries": ["holidays"], "results": null})
        );
        let item = serde_json::to_value(call(true).item(Status::Completed)).unwrap();
        assert_eq!(
            item["results"],
            json!([
                {"file_id": "file-a", "filename": "a.pdf", "score": 0.9, "attributes": {}, "text": "text"},
                {"file_id": "file-b", "filename": "b.md", "score": 0.9, "attributes": {}, "text": "text"},
            ])
        );
        let added = serde_json::to_value(call(true).item(Status::InProgress)).unwrap();
        assert_eq!(added["status"], "in_progress");
        assert_eq!(added["queries"], json!([]));
        assert_eq!(added["results"], Value::Null);
    }

    #[test]
    fn markers_of_given_passages_become_citations_at_their_position() {
        let call = call(false);
        let text = "Thirty days [1]. Café parking [2, 1], not [3] nor [x] nor [1234] nor [ 1].";
        let (annotations, next) = call.citations(text, 0);
        assert_eq!(next, text.len());
        let at = |marker: &str| text[..text.find(marker).unwrap()].chars().count();
        assert_eq!(
            annotations,
            [
                json!({"type": "file_citation", "file_id": "file-a", "filename": "a.pdf", "index": at("[1]")}),
                json!({"type": "file_citation", "file_id": "file-b", "filename": "b.md", "index": at("[2, 1]")}),
                json!({"type": "file_citation", "file_id": "file-a", "filename": "a.pdf", "index": at("[2, 1]")}),
            ]
        );
        // Indexes count characters, not bytes: "é" is one character of two bytes.
        assert_eq!(annotations[1]["index"], text.find("[2, 1]").unwrap() - 1);
    }

    #[test]
    fn a_growing_text_is_scanned_once_and_a_split_marker_waits_for_its_end() {
        let call = call(false);
        let whole = "See [1] and [2]. Also [1,2] done";
        let (expected, _) = call.citations(whole, 0);
        // Every way of cutting the text in two pieces finds the same citations.
        for cut in 0..=whole.len() {
            let (mut found, next) = call.citations(&whole[..cut], 0);
            assert!(next <= cut);
            let (rest, end) = call.citations(whole, next);
            found.extend(rest);
            assert_eq!(end, whole.len());
            assert_eq!(found, expected, "cut at {cut}");
        }
        // An open bracket at the end is where the next scan starts.
        assert_eq!(call.citations("text [1, ", 0).1, 5);
        assert_eq!(call.citations("text [", 0).1, 5);
        assert_eq!(call.citations("text [a", 0).1, 7);
    }
}
