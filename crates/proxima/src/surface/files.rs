//! The Files API, `/v1/files`, in the shape of OpenAI's: documents uploaded once
//! (multipart/form-data), kept whole in the database for the vector stores built from them.
//!
//! An upload is limited by `[files] max_bytes`, not by `server.max_body_bytes` (which the JSON
//! routes apply as they read their bodies): the body is parsed as it streams in, and reading
//! stops as soon as the file passes the limit (413), so no more than the limit is ever held.
//!
//! A file belongs to the caller's team, or to the key when it has none: any other caller gets
//! 404 for it, as for an id that never existed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::{json_or_error, query, Paging};
use crate::clock::now_ms;
use crate::context::check_id;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RequestContext;
use crate::store::{FileRecord, Order};
use crate::wire::files as wire;

/// Room for the multipart framing and the small parts around the file (`purpose`, and any
/// other fields an SDK sends): the whole body may exceed the file limit by this much.
const FORM_OVERHEAD: usize = 64 * 1024;

/// Most files one list page holds, and the default: OpenAI's.
const MAX_LIST: usize = 10_000;

/// An upload, read from the form.
struct Upload {
    filename: String,
    purpose: String,
    content: Vec<u8>,
}

/// The caller's file `id`, or 404.
async fn owned(cx: &RequestContext, id: &str) -> Result<FileRecord> {
    check_id(id, "file_id")?;
    cx.services
        .store
        .get_file(&cx.tenant(), id)
        .await?
        .ok_or_else(|| unknown_file(id))
}

/// The answer to a file nobody (or somebody else) has: the same either way.
fn unknown_file(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no file `{id}`: it does not exist, or belongs to another team or key"),
    )
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::RequestTooLarge,
        format!(
            "the file is larger than the {limit} bytes this gateway accepts ([files] max_bytes)"
        ),
    )
    .with_param("file")
}

/// What a malformed form gets.
fn bad_form(detail: impl std::fmt::Display) -> Error {
    Error::invalid_request(format!(
        "send the upload as multipart/form-data with a `file` part and a `purpose` part: {detail}"
    ))
}

/// Reads the `file` and `purpose` parts of a multipart body, holding at most `limit` bytes of
/// file (and [`FORM_OVERHEAD`] of the rest).
async fn read_upload(headers: &HeaderMap, body: Body, limit: usize) -> Result<Upload> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| bad_form(format!("the content-type is `{content_type}`")))?;
    let whole = limit.saturating_add(FORM_OVERHEAD);
    // A body announced too large is refused before any of it is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > whole as u64) {
        return Err(too_large(limit));
    }
    let limits = multer::SizeLimit::new()
        .whole_stream(whole as u64)
        .per_field(FORM_OVERHEAD as u64)
        .for_field("file", limit as u64);
    let mut form = multer::Multipart::with_constraints(
        body.into_data_stream(),
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let form_error = |e: multer::Error| match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            too_large(limit)
        }
        other => bad_form(other),
    };
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut purpose: Option<String> = None;
    while let Some(mut field) = form.next_field().await.map_err(form_error)? {
        match field.name() {
            Some("file") => {
                let filename = field
                    .file_name()
                    .map(base_name)
                    .filter(|name| !name.is_empty())
                    .ok_or_else(|| {
                        Error::invalid_request("the `file` part needs a filename")
                            .with_param("file")
                    })?
                    .to_owned();
                let mut content = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                    content.extend_from_slice(&chunk);
                }
                file = Some((filename, content));
            }
            Some("purpose") => purpose = Some(field.text().await.map_err(form_error)?),
            // Other fields an SDK may send (`expires_after`): read past, bounded by the limits.
            _ => while field.chunk().await.map_err(form_error)?.is_some() {},
        }
    }
    let (filename, content) = file.ok_or_else(|| {
        Error::invalid_request("the form has no `file` part: attach the document as `file`")
            .with_param("file")
    })?;
    let purpose = purpose.ok_or_else(|| {
        Error::invalid_request(format!(
            "the form has no `purpose` part; one of: {}",
            wire::PURPOSES.join(", ")
        ))
        .with_param("purpose")
    })?;
    let purpose = purpose.trim().to_owned();
    if !wire::PURPOSES.contains(&purpose.as_str()) {
        return Err(Error::invalid_request(format!(
            "`purpose` must be one of {}, not `{purpose}`",
            wire::PURPOSES.join(", ")
        ))
        .with_param("purpose"));
    }
    Ok(Upload {
        filename,
        purpose,
        content,
    })
}

/// A file name without the directory some clients send with it.
fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name).trim()
}

/// `POST /v1/files`: stores an upload, answers its file object.
pub async fn upload(
    Extension(cx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let upload = read_upload(&headers, body, cx.gateway.config.files.max_bytes).await?;
            let record = cx
                .services
                .store
                .create_file(
                    &cx.tenant(),
                    &upload.filename,
                    &upload.purpose,
                    &upload.content,
                    now_ms(),
                )
                .await?;
            Ok(wire::file(&record))
        }
        .await,
    )
}

/// `GET /v1/files`: the caller's files, newest first unless `order=asc`, all of them (up to
/// 10,000) unless `limit` says fewer; `purpose` keeps one purpose's.
pub async fn list(
    Extension(cx): Extension<Arc<RequestContext>>,
    RawQuery(raw): RawQuery,
) -> Response {
    #[derive(Deserialize)]
    struct Filter {
        #[serde(default)]
        purpose: Option<String>,
    }
    json_or_error(
        async {
            let filter: Filter = query(raw.as_deref())?;
            let paging = Paging::with_limits(raw, MAX_LIST, MAX_LIST)?;
            let order = if paging.descending {
                Order::Desc
            } else {
                Order::Asc
            };
            let tenant = cx.tenant();
            let store = &cx.services.store;
            let after = match &paging.after {
                Some(id) => Some(store.get_file(&tenant, id).await?.ok_or_else(|| {
                    Error::invalid_request(format!("`after`: you have no file `{id}`"))
                        .with_param("after")
                })?),
                None => None,
            };
            let limit = u32::try_from(paging.limit).unwrap_or(u32::MAX);
            let mut page = store
                .list_files(
                    &tenant,
                    filter.purpose.as_deref(),
                    after.as_ref(),
                    order,
                    limit.saturating_add(1),
                )
                .await?;
            let has_more = page.len() > paging.limit;
            page.truncate(paging.limit);
            Ok(wire::file_list(&page, has_more))
        }
        .await,
    )
}

/// `GET /v1/files/{id}`.
pub async fn get(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(owned(&cx, &id).await.map(|file| wire::file(&file)))
}

/// `GET /v1/files/{id}/content`: the bytes exactly as uploaded, typed by the file's extension.
pub async fn content(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        let file = owned(&cx, &id).await?;
        let bytes = cx
            .services
            .store
            .file_content(&cx.tenant(), &id)
            .await?
            // Deleted between the two reads.
            .ok_or_else(|| unknown_file(&id))?;
        Ok::<_, Error>((file, bytes))
    }
    .await;
    match found {
        Ok((file, bytes)) => {
            let mut response = Response::new(Body::from(bytes));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(wire::content_type(&file.filename)),
            );
            response
        }
        Err(e) => json_or_error(Err(e)),
    }
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(
        async {
            check_id(&id, "file_id")?;
            if cx.services.store.delete_file(&cx.tenant(), &id).await? {
                Ok(wire::deleted(&id))
            } else {
                Err(unknown_file(&id))
            }
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_their_directories() {
        assert_eq!(base_name("report.pdf"), "report.pdf");
        assert_eq!(base_name("/home/ada/report.pdf"), "report.pdf");
        assert_eq!(base_name("C:\\Users\\ada\\notes.txt"), "notes.txt");
        assert_eq!(base_name("dir/"), "");
    }
}
