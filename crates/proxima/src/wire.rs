//! Wire formats of the APIs Proxima speaks, each with its conversions to and from the canonical
//! model. A format is written once and used on both sides: the OpenAI chat format is what the
//! OpenAI surface reads and writes, and what the `openai` provider writes and reads.

/// Starting size of buffers that JSON bodies are written into: a typical chat answer or request
/// fits, so the buffer is not regrown (and copied) several times on the way.
pub const JSON_CAPACITY: usize = 1024;

pub mod anthropic;
pub mod conversations;
pub mod files;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod vector_stores;
