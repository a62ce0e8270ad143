//! Wire formats of the APIs Proxima speaks, each with its conversions to and from the canonical
//! model. A format is written once and used on both sides: the OpenAI chat format is what the
//! OpenAI surface reads and writes, and what the `openai` provider writes and reads.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;
