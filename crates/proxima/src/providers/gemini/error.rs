//! Gemini's own failure: a prompt blocked by its safety filters. Status errors and broken
//! connections are classified like every provider's, in `upstream_error`.

use crate::error::{Error, ErrorKind};
pub use crate::providers::upstream_error::error_message;

/// The prompt itself was refused by Gemini's safety filters: the client's content, so 400.
pub fn prompt_blocked(provider: &str, reason: &str) -> Error {
    Error::new(
        ErrorKind::UpstreamRejected(400),
        format!("provider `{provider}` blocked the prompt ({reason}); change the prompt or the safety settings"),
    )
}
