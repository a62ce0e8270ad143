//! The Files API's objects, in OpenAI's shape: a file, a page of files, a deletion, and the
//! purposes a file may be uploaded for.

use serde_json::{json, Value};

use crate::store::FileRecord;

/// The purposes OpenAI accepts for an upload.
pub const PURPOSES: &[&str] = &[
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// A file object. Files are stored whole at upload, so they are always `processed`, and they
/// do not expire.
pub fn file(record: &FileRecord) -> Value {
    json!({
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at / 1000,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": null,
        "status_details": null,
    })
}

/// A page of files.
pub fn file_list(records: &[FileRecord], has_more: bool) -> Value {
    super::conversations::list(records.iter().map(file).collect(), has_more)
}

/// What `DELETE /v1/files/{id}` answers.
pub fn deleted(id: &str) -> Value {
    json!({"id": id, "object": "file", "deleted": true})
}

/// The `content-type` a file's bytes are served with, from its name's extension.
pub fn content_type(filename: &str) -> &'static str {
    let extension = filename
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "json" => "application/json",
        "jsonl" => "application/jsonl",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("Report.PDF"), "application/pdf");
        assert_eq!(content_type("notes.md"), "text/markdown; charset=utf-8");
        assert_eq!(content_type("a.b.json"), "application/json");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(content_type("archive.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn a_file_object_has_openai_fields_in_seconds() {
        let record = FileRecord {
            id: "file-1".into(),
            owner: "team:a".into(),
            filename: "a.txt".into(),
            purpose: "assistants".into(),
            bytes: 3,
            created_at: 1_700_000_000_999,
        };
        assert_eq!(
            file(&record),
            json!({"id": "file-1", "object": "file", "bytes": 3, "created_at": 1_700_000_000,
                   "filename": "a.txt", "purpose": "assistants", "status": "processed",
                   "expires_at": null, "status_details": null})
        );
        let page = file_list(&[record], true);
        assert_eq!(
            (&page["first_id"], &page["last_id"], &page["has_more"]),
            (&json!("file-1"), &json!("file-1"), &json!(true))
        );
    }
}
