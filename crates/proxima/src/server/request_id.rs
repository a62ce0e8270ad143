//! Every request's id: the client's `x-request-id` or one the gateway makes, echoed on the
//! answer and set as the request's log tag ([`crate::telemetry::log`]).
//!
//! A service around the whole router, not an axum middleware: a `from_fn` layer clones its
//! inner route and boxes its future for every request, about 2,900 instructions of a chat
//! call, where this wrapper is cloned once per connection and its future is a plain struct.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_service::Service;

use crate::telemetry::log::in_request;

/// The request id, as an extension: the ledger row and the admin UI's playground read it.
#[derive(Clone)]
pub struct RequestId(pub Arc<str>);

/// The request's id, the client's or the gateway's.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A router with each request's id set before routing, so every route and both fallbacks
/// carry it.
#[derive(Clone)]
pub struct WithRequestId<S>(pub S);

impl<S> Service<Request> for WithRequestId<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = id_of(&req);
        req.extensions_mut().insert(RequestId(id.clone()));
        Tagged {
            inner: in_request(id.clone(), self.0.call(req)),
            id,
        }
    }
}

pin_project! {
    /// The routed request, run with its id as the log tag; its answer gets `x-request-id`.
    pub struct Tagged<F> {
        #[pin]
        inner: TaskLocalFuture<Arc<str>, F>,
        id: Arc<str>,
    }
}

impl<F> Future for Tagged<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if let Ok(value) = HeaderValue::from_str(this.id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// The client's id when it is a sensible one (1 to 128 visible ASCII characters), else a new
/// one.
fn id_of(req: &Request) -> Arc<str> {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .unwrap_or_else(new_request_id)
}

/// A new request id: `req_` and 32 random hex digits, written by hand (`format!` of a `u128`
/// took about 900 instructions, most of what tagging a request cost).
fn new_request_id() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_00000000000000000000000000000000";
    let mut bits = fastrand::u128(..);
    for digit in id[4..].iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    Arc::from(String::from_utf8_lossy(&id))
}

#[cfg(test)]
mod tests {
    use super::new_request_id;

    #[test]
    fn a_new_request_id_is_req_and_32_random_hex_digits() {
        let ids: Vec<_> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            let Some(digits) = id.strip_prefix("req_") else {
                panic!("{id} does not start with req_");
            };
            assert_eq!(digits.len(), 32, "{id}");
            assert!(
                digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
        // Every digit is drawn: each position takes more than one value over the ids.
        for position in 4..36 {
            let values: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(values.len() > 1, "position {position} is always the same");
        }
    }
}
