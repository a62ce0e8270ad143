//! The Responses API surface: `POST /v1/responses`, served by every provider through the
//! canonical model, streaming and not.

mod stream;

pub use stream::{encode, Event, ResponseEvents};
