//! Log lines: `tracing` events on stderr as text or JSON, each line a request writes tagged with
//! that request's id.
//!
//! The id is a task-local set around the request's handler ([`in_request`]) and read only when
//! a line is written. A `tracing` span per request did the same, but the fmt layer formats a
//! span's fields when it opens and the filter takes a lock each time it is entered or left:
//! about 3,300 instructions a request (2.7 % of a plain call), and more of the request's path
//! out of the processor's caches, for lines most requests never write.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// `handler`, with `id` on every line it logs. A named future, not an `async fn`, so that the
/// service that tags requests ([`crate::server`]'s request ids) can hold it without a box.
pub fn in_request<F: Future>(id: Arc<str>, handler: F) -> TaskLocalFuture<Arc<str>, F> {
    REQUEST_ID.scope(id, handler)
}

/// How log lines are written: text as `tracing`'s full format writes it, the request's id as a
/// span named `request` would show it (`TIME LEVEL request{id=ID}: message fields`); or JSON
/// as `tracing`'s JSON format writes it (fields flattened), with a `request_id` field inside a
/// request.
pub struct Lines {
    json: Option<Format<Json>>,
}

impl Lines {
    pub fn text() -> Lines {
        Lines { json: None }
    }

    pub fn json() -> Lines {
        let json = tracing_subscriber::fmt::format()
            .with_target(false)
            .json()
            .flatten_event(true);
        Lines { json: Some(json) }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let id = REQUEST_ID.try_with(Arc::clone).ok();
        if let Some(json) = &self.json {
            let Some(id) = id else {
                return json.format_event(ctx, writer, event);
            };
            // The line is one object and a newline: the id goes in as its last field.
            let mut line = String::new();
            json.format_event(ctx, Writer::new(&mut line), event)?;
            let Some(open) = line.trim_end_matches('\n').strip_suffix('}') else {
                return writer.write_str(&line);
            };
            let id = serde_json::to_string(&*id).map_err(|_| fmt::Error)?;
            let comma = if open.ends_with('{') { "" } else { "," };
            return writeln!(writer, "{open}{comma}\"request_id\":{id}}}");
        }
        let style = Style::of(&writer);
        write_time_and_level(&mut writer, *event.metadata().level(), &style)?;
        let Style { dim, bold, reset } = style;
        let mut spans = false;
        if let Some(id) = id {
            write!(
                writer,
                "{bold}request{{{reset}id={id}{bold}}}{reset}{dim}:{reset}"
            )?;
            spans = true;
        }
        // A dependency's spans, if it opens any.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{bold}{}", span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{reset}{fields}{bold}}}")?;
                    }
                }
                write!(writer, "{reset}{dim}:{reset}")?;
                spans = true;
            }
        }
        if spans {
            writer.write_char(' ')?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// ANSI escapes for a terminal, none for a file or a pipe.
struct Style {
    dim: &'static str,
    bold: &'static str,
    reset: &'static str,
}

impl Style {
    fn of(writer: &Writer<'_>) -> Style {
        if writer.has_ansi_escapes() {
            Style {
                dim: "\x1b[2m",
                bold: "\x1b[1m",
                reset: "\x1b[0m",
            }
        } else {
            Style {
                dim: "",
                bold: "",
                reset: "",
            }
        }
    }
}

fn write_time_and_level(writer: &mut Writer<'_>, level: Level, style: &Style) -> fmt::Result {
    writer.write_str(style.dim)?;
    if SystemTime.format_time(writer).is_err() {
        writer.write_str("<unknown time>")?;
    }
    let color = match level {
        _ if style.reset.is_empty() => "",
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        Level::ERROR => "\x1b[31m",
    };
    let reset = style.reset;
    write!(writer, "{reset} {color}{level:>5}{reset} ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs one line inside a request and one outside, as `format` writes them.
    fn log_both(json: bool) -> Vec<String> {
        let lines = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_ansi(false);
        let subscriber: Box<dyn Subscriber + Send + Sync> = if json {
            Box::new(builder.json().event_format(Lines::json()).finish())
        } else {
            Box::new(builder.event_format(Lines::text()).finish())
        };
        tracing::subscriber::with_default(subscriber, || {
            REQUEST_ID.sync_scope(Arc::from("req_\"7\""), || {
                tracing::warn!(attempt = 2, "upstream `up` failed");
            });
            tracing::info!("proxima listening");
        });
        lines.text().lines().map(str::to_string).collect()
    }

    #[test]
    fn a_text_line_inside_a_request_names_it_as_a_span_would() {
        let lines = log_both(false);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (_, inside) = lines[0].split_once("Z ").expect("a timestamp first");
        assert_eq!(
            inside,
            " WARN request{id=req_\"7\"}: upstream `up` failed attempt=2"
        );
        let (_, outside) = lines[1].split_once("Z ").expect("a timestamp first");
        assert_eq!(outside, " INFO proxima listening");
    }

    #[test]
    fn a_json_line_inside_a_request_has_its_id() {
        let lines = log_both(true);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(inside["request_id"], "req_\"7\"");
        assert_eq!(inside["level"], "WARN");
        assert_eq!(inside["message"], "upstream `up` failed");
        assert_eq!(inside["attempt"], 2);
        assert!(inside["timestamp"].is_string());
        let outside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(outside["message"], "proxima listening");
        assert!(outside.get("request_id").is_none(), "{outside}");
    }
}
