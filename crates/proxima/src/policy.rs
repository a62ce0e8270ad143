//! Policy: who the caller is and what they may do. Later stages (limits, budgets, PII,
//! guardrails) add their checks here.

pub mod auth;
pub mod jwt;

pub use auth::{Auth, Caller};
pub use jwt::{JwtIdentity, JwtVerifier};
