//! Policy: who the caller is and what they may do. Later stages (limits, budgets, PII,
//! guardrails) add their checks here.

pub mod auth;

pub use auth::{Auth, Caller};
