//! Text extraction: the readable text of an uploaded file, which vector stores chunk and
//! index. The kind is told by the file name's extension, and a PDF also by its `%PDF-` header:
//!
//! - plain text (`.txt`, `.md`, `.markdown`, `.text`, `.log`, and any other name whose bytes
//!   are UTF-8 text): as is;
//! - HTML (`.html`, `.htm`): the visible text, a line per block;
//! - JSON (`.json`, `.jsonl`): a line per value, `key: value`, in document order;
//! - CSV and TSV: a line per row, `header: value; header: value`;
//! - PDF: the text layer, page after page.
//!
//! Anything else (an image, an archive, a scanned PDF) is an error saying why. Extraction is
//! CPU work on a whole file: async callers run it on the blocking pool.

use std::fmt::Write as _;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// The text of the file `filename` whose bytes are `bytes`. Fails with a 400-class error
/// naming the file when it holds no text this can read.
pub fn extract_text(filename: &str, bytes: &[u8]) -> Result<String> {
    let extension = filename
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    if extension == "pdf" || is_pdf(bytes) {
        return pdf(filename, bytes);
    }
    let text = decode(filename, bytes)?;
    Ok(match extension.as_str() {
        "html" | "htm" => html(&text),
        "json" | "jsonl" | "ndjson" => json(&text),
        "csv" => table(&text, ','),
        "tsv" => table(&text, '\t'),
        _ => text,
    })
}

/// The error for a file with no text to extract.
fn unreadable(filename: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_request(format!("cannot extract text from `{filename}`: {why}"))
}

/// Whether `bytes` are a PDF: its header may follow some junk within the first kilobyte.
fn is_pdf(bytes: &[u8]) -> bool {
    memchr::memmem::find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_some()
}

/// Text as UTF-8 (a byte-order mark dropped), or UTF-16 when a byte-order mark says so.
fn decode(filename: &str, bytes: &[u8]) -> Result<String> {
    let utf16 = |bytes: &[u8], unit: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| unit([pair[0], pair[1]]))
            .collect();
        String::from_utf16(&units).ok()
    };
    let text = match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::str::from_utf8(rest).ok().map(str::to_owned),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        _ => std::str::from_utf8(bytes).ok().map(str::to_owned),
    };
    match text {
        // A NUL byte does not occur in text: valid UTF-8 can still be a binary format.
        Some(text) if !text.contains('\0') => Ok(text),
        _ => Err(unreadable(
            filename,
            "it is not text (UTF-8 or UTF-16) nor a PDF; text, Markdown, HTML, JSON, CSV and \
             PDF files can be read",
        )),
    }
}

// ---------------------------------------------------------------- PDF

/// The PDF's text layer, pages separated by a blank line.
fn pdf(filename: &str, bytes: &[u8]) -> Result<String> {
    // lopdf answers malformed files with errors; a panic on some input it does not foresee
    // must not take the caller's thread down with it.
    let pages = std::panic::catch_unwind(|| {
        let document = lopdf::Document::load_mem(bytes)?;
        let numbers: Vec<u32> = document.get_pages().keys().copied().collect();
        Ok::<_, lopdf::Error>(
            numbers
                .iter()
                .map(|&n| document.extract_text(&[n]))
                .collect::<Vec<_>>(),
        )
    })
    .map_err(|_| unreadable(filename, "the PDF is malformed"))?
    .map_err(|e| match e {
        lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword => {
            unreadable(filename, "the PDF is protected by a password")
        }
        e => unreadable(filename, format!("the PDF is malformed ({e})")),
    })?;
    if pages.is_empty() {
        return Err(unreadable(filename, "the PDF has no pages"));
    }
    let mut failure = None;
    let mut text = String::new();
    for page in pages {
        match page {
            Ok(page) => {
                let page = tidy_lines(&page);
                if !page.is_empty() {
                    if !text.is_empty() {
                        text.push_str("\n\n");
                    }
                    text.push_str(&page);
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    match failure {
        Some(e) if text.is_empty() => Err(unreadable(
            filename,
            format!("the PDF's text could not be read ({e})"),
        )),
        _ if text.is_empty() => Err(unreadable(
            filename,
            "the PDF has no text layer (a scanned document?); run OCR on it and upload the \
             result, or upload the text",
        )),
        _ => Ok(text),
    }
}

/// Lines with their spaces collapsed, empty ones dropped.
fn tidy_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        for (i, word) in words.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

// ---------------------------------------------------------------- HTML

/// Elements whose content is never shown.
const HIDDEN: &[&str] = &[
    "head", "script", "style", "noscript", "template", "svg", "title",
];

/// Elements that start a new line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "caption",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tr",
    "ul",
];

/// The visible text of an HTML document: hidden elements dropped, a line per block, table
/// cells apart, entities decoded, whitespace collapsed.
fn html(source: &str) -> String {
    let mut text = String::with_capacity(source.len() / 2);
    let mut rest = source;
    while let Some(at) = rest.find('<') {
        push_visible(&mut text, &rest[..at]);
        rest = &rest[at..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let inside = &rest[1..];
        let closing = inside.starts_with('/');
        let name = inside
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let declaration = inside.starts_with('!') || inside.starts_with('?');
        if name.is_empty() && !declaration {
            // A `<` that starts no tag, as in `3 < 4`, is text.
            text.push('<');
            rest = inside;
            continue;
        }
        let end = tag_end(rest);
        let self_closing = rest[..end].ends_with("/>");
        rest = &rest[end..];
        if declaration {
            continue;
        }
        if !closing && !self_closing && HIDDEN.contains(&name.as_str()) {
            rest = skip_hidden(rest, &name);
            text.push('\n');
        } else if BLOCKS.contains(&name.as_str()) {
            text.push('\n');
        } else if matches!(name.as_str(), "td" | "th") {
            text.push(' ');
        }
    }
    push_visible(&mut text, rest);
    tidy_lines(&text)
}

/// Appends text of the page with its entities decoded. Line breaks in the source are spaces
/// on the page: only blocks break lines.
fn push_visible(text: &mut String, raw: &str) {
    text.extend(
        decode_entities(raw)
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c }),
    );
}

/// The length of the tag that starts `at` with `<`, through its `>` (quoted attribute values
/// respected), or the whole rest when it never closes.
fn tag_end(at: &str) -> usize {
    let mut quote = None;
    for (i, c) in at.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    at.len()
}

/// What follows the hidden element `name` that `rest` is inside of. A `<head>` also ends
/// where `<body>` starts, since its closing tag is optional.
fn skip_hidden<'a>(rest: &'a str, name: &str) -> &'a str {
    let lower = rest.to_ascii_lowercase();
    let close = format!("</{name}");
    let end = match (lower.find(&close), name == "head") {
        (Some(at), _) => Some(at),
        (None, true) => lower.find("<body"),
        (None, false) => None,
    };
    match end {
        Some(at) => {
            let after = &rest[at..];
            if after.starts_with("</") {
                &after[tag_end(after)..]
            } else {
                after
            }
        }
        None => "",
    }
}

/// Text with its character references decoded; unknown ones are kept as written.
fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let reference = rest[1..]
            .find(';')
            .filter(|&end| end <= 32)
            .and_then(|end| entity(&rest[1..=end]).map(|c| (c, end + 2)));
        match reference {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character an entity names (`amp`, `#233`, `#xE9`).
fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "times" => '×',
        "divide" => '÷',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "ccedil" => 'ç',
        _ => return None,
    })
}

// ---------------------------------------------------------------- JSON

/// A line per value of a JSON document (or of each line of JSON Lines), `key: value`, in the
/// document's order; an object or list under a key is introduced by `key:`. Text that is not
/// JSON is kept as is.
fn json(text: &str) -> String {
    let mut lines = Vec::new();
    if json_lines(text, &mut lines) {
        return lines.join("\n");
    }
    lines.clear();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if !json_lines(line, &mut lines) {
            return text.to_owned();
        }
    }
    lines.join("\n")
}

/// Adds the lines of the one JSON value `text` holds to `out`; `false` when it is not one.
fn json_lines(text: &str, out: &mut Vec<String>) -> bool {
    let mut parser = serde_json::Deserializer::from_str(text);
    Lines { key: None, out }
        .deserialize(&mut parser)
        .and_then(|()| parser.end())
        .is_ok()
}

/// Writes the lines of one JSON value, found under `key`, into `out`.
struct Lines<'a> {
    key: Option<String>,
    out: &'a mut Vec<String>,
}

impl Lines<'_> {
    fn push(&mut self, value: &dyn std::fmt::Display) {
        let mut line = String::new();
        let _ = match &self.key {
            Some(key) => write!(line, "{key}: {value}"),
            None => write!(line, "{value}"),
        };
        self.out.push(line);
    }

    /// Introduces a nested object or list with its key.
    fn open(&mut self) {
        if let Some(key) = &self.key {
            self.out.push(format!("{key}:"));
        }
    }
}

impl<'de> DeserializeSeed<'de> for Lines<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Lines<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(mut self, v: bool) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }

    fn visit_i64<E>(mut self, v: i64) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }

    fn visit_u64<E>(mut self, v: u64) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }

    fn visit_f64<E>(mut self, v: f64) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }

    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        if !v.trim().is_empty() {
            self.push(&v);
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let Lines { key, out } = self;
        // Each value of a list stands under the list's key: a plain value as `key: value`,
        // an object introduced by `key:`.
        while items
            .next_element_seed(Lines {
                key: key.clone(),
                out: &mut *out,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut entries: A) -> Result<(), A::Error> {
        self.open();
        while let Some(key) = entries.next_key::<String>()? {
            entries.next_value_seed(Lines {
                key: Some(key),
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- CSV

/// A line per data row, `header: value` for its non-empty cells, `; ` between them. A file of
/// one row is that row.
fn table(text: &str, separator: char) -> String {
    let rows = records(text, separator);
    let Some((headers, data)) = rows.split_first() else {
        return String::new();
    };
    if data.is_empty() {
        return headers.join(", ");
    }
    let mut out = String::with_capacity(text.len() * 2);
    for row in data {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            if !line.is_empty() {
                line.push_str("; ");
            }
            match headers.get(i).map(|h| h.trim()).filter(|h| !h.is_empty()) {
                Some(header) => {
                    let _ = write!(line, "{header}: {cell}");
                }
                None => {
                    let _ = write!(line, "column {}: {cell}", i + 1);
                }
            }
        }
        if !line.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&line);
        }
    }
    out
}

/// The records of delimited text (RFC 4180: quoted cells may hold separators, line breaks
/// and doubled quotes); blank lines are skipped.
fn records(text: &str, separator: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    cell.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            }
            '"' if cell.is_empty() => quoted = true,
            c if quoted => cell.push(c),
            c if c == separator => row.push(std::mem::take(&mut cell)),
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                row.push(std::mem::take(&mut cell));
                if row.iter().any(|cell| !cell.is_empty()) {
                    rows.push(std::mem::take(&mut row));
                } else {
                    row.clear();
                }
            }
            c => cell.push(c),
        }
    }
    row.push(cell);
    if row.iter().any(|cell| !cell.is_empty()) {
        rows.push(row);
    }
    rows
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn error(filename: &str, bytes: &[u8]) -> String {
        let e = extract_text(filename, bytes).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidRequest);
        e.message
    }

    #[test]
    fn text_and_markdown_come_as_they_are() {
        let text = "# Notes\n\nThe launch code is *falcon*.\n";
        for name in [
            "notes.md",
            "notes.txt",
            "notes.markdown",
            "server.log",
            "README",
        ] {
            assert_eq!(extract_text(name, text.as_bytes()).unwrap(), text);
        }
        assert_eq!(
            extract_text("bom.txt", b"\xEF\xBB\xBFhello").unwrap(),
            "hello"
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("Zürich".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(extract_text("windows.txt", &utf16).unwrap(), "Zürich");
    }

    #[test]
    fn binary_files_are_refused_saying_why() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";
        let message = error("photo.png", png);
        assert!(message.contains("`photo.png`"), "{message}");
        assert!(message.contains("not text"), "{message}");
        assert!(error("data.txt", b"abc\0def").contains("not text"));
        assert!(error("latin1.txt", b"caf\xe9").contains("not text"));
    }

    #[test]
    fn html_keeps_only_the_visible_text() {
        let page = r#"<!DOCTYPE html>
<html><head><title>Hidden title</title>
<style>body { color: red; }</style>
<script>var secret = "<p>not shown</p>";</script></head>
<body>
  <h1>Quarterly   report</h1>
  <!-- a comment -->
  <p>Revenue grew by <b>12&nbsp;%</b> &amp; costs fell &mdash; see&#x20;below.</p>
  <ul><li>Tom &lt;CEO&gt;</li><li data-x="a > b">Caf&eacute; &#233;t&eacute;</li></ul>
  <table><tr><th>Name</th><th>Role</th></tr><tr><td>Ada</td><td>Engineer</td></tr></table>
  Line<br>break, and 3 < 4 stays.
  <noscript>Enable JS</noscript>
</body></html>"#;
        assert_eq!(
            extract_text("page.html", page.as_bytes()).unwrap(),
            "Quarterly report\n\
             Revenue grew by 12 % & costs fell — see below.\n\
             Tom <CEO>\n\
             Café été\n\
             Name Role\n\
             Ada Engineer\n\
             Line\n\
             break, and 3 < 4 stays."
        );
        // A head without its closing tag ends at the body.
        assert_eq!(
            extract_text("a.htm", b"<html><head><title>t</title><body><p>shown</p>").unwrap(),
            "shown"
        );
        // An unclosed script hides the rest, as a browser would.
        assert_eq!(extract_text("b.htm", b"<p>a</p><script>x").unwrap(), "a");
    }

    #[test]
    fn json_becomes_key_value_lines_in_document_order() {
        let json = r#"{"name": "Ada", "born": 1815, "active": false, "spouse": null,
            "languages": ["English", "French"],
            "work": {"title": "Notes on the Analytical Engine", "year": 1843},
            "children": [{"name": "Byron"}, {"name": "Annabella"}]}"#;
        assert_eq!(
            extract_text("ada.json", json.as_bytes()).unwrap(),
            "name: Ada\nborn: 1815\nactive: false\nlanguages: English\nlanguages: French\n\
             work:\ntitle: Notes on the Analytical Engine\nyear: 1843\n\
             children:\nname: Byron\nchildren:\nname: Annabella"
        );
        assert_eq!(
            extract_text("rows.jsonl", b"{\"q\": \"a\"}\n\n{\"q\": \"b\"}\n").unwrap(),
            "q: a\nq: b"
        );
        assert_eq!(extract_text("top.json", b"[\"x\", 2]").unwrap(), "x\n2");
        // Not JSON after all: still text.
        assert_eq!(extract_text("bad.json", b"{oops").unwrap(), "{oops");
    }

    #[test]
    fn csv_rows_become_header_value_lines() {
        let csv = "name,role,notes\r\nAda,engineer,\"wrote \"\"the\"\" first program, 1843\"\r\n\
                   \r\nGrace,,\"line one\nline two\"\nAlan,mathematician,x,extra\n";
        assert_eq!(
            extract_text("people.csv", csv.as_bytes()).unwrap(),
            "name: Ada; role: engineer; notes: wrote \"the\" first program, 1843\n\
             name: Grace; notes: line one\nline two\n\
             name: Alan; role: mathematician; notes: x; column 4: extra"
        );
        assert_eq!(
            extract_text("t.tsv", b"city\tcountry\nOslo\tNorway").unwrap(),
            "city: Oslo; country: Norway"
        );
        assert_eq!(extract_text("one.csv", b"a,b").unwrap(), "a, b");
    }

    #[test]
    fn a_pdf_gives_its_text_layer_page_by_page() {
        let text = extract_text("report.pdf", &data("report.pdf")).unwrap();
        assert_eq!(
            text,
            "Proxima Quarterly Report\n\
             The launch code of project Osprey is falcon-7.\n\
             Revenue grew by 12 percent over the quarter.\n\n\
             Second page: the meeting is in Zürich at the Café Léman.\n\
             Ada Lovelace wrote the first program."
        );
        // Found by its header whatever its name.
        assert_eq!(extract_text("upload", &data("report.pdf")).unwrap(), text);
    }

    #[test]
    fn a_pdf_without_text_or_structure_is_refused_saying_why() {
        let message = error("scan.pdf", &data("scanned.pdf"));
        assert!(
            message.contains("the PDF has no text layer (a scanned document?); "),
            "{message}"
        );
        let pdf = data("report.pdf");
        for broken in [&pdf[..pdf.len() / 3], b"%PDF-1.4\n garbage".as_slice()] {
            let message = error("broken.pdf", broken);
            assert!(message.contains("the PDF is malformed"), "{message}");
        }
        // Flipped bytes anywhere: an answer every time, never a panic.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..300 {
            let mut bytes = pdf.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % bytes.len() as u64) as usize;
                bytes[at] = (seed >> 32) as u8;
            }
            let _ = extract_text("fuzzed.pdf", &bytes);
        }
    }
}
