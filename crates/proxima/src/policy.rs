//! Policy: who the caller is and what they may do — authentication (static keys, virtual keys
//! from the database, JWTs), model permissions, rate limits and budgets. Later stages (PII,
//! guardrails) add their checks here.

pub mod auth;
pub mod directory;
pub mod jwt;
pub mod limits;

pub use auth::{Auth, Caller};
pub use directory::Directory;
pub use jwt::{JwtIdentity, JwtVerifier};
pub use limits::Limiter;
