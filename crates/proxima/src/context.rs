//! Server-side conversation context.

pub mod assemble;
