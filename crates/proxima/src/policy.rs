//! Policy: who the caller is and what they may do: auth, then rate limits and budgets
//! ([`limits`]). Later stages (PII, guardrails) add their checks here.

pub mod auth;
pub mod limits;

pub use auth::{Auth, Caller};
pub use limits::Limiter;
