//! Policy: who the caller is and what they may do — authentication (static keys, virtual keys
//! from the database, JWTs), model permissions and regions, rate limits and budgets. What is
//! checked in the prompt itself (PII, guardrails) is the prepare phase's: [`crate::pii`],
//! [`crate::guardrails`].

pub mod auth;
pub mod directory;
pub mod jwt;
pub mod limits;

pub use auth::{Auth, Caller};
pub use directory::Directory;
pub use jwt::{JwtIdentity, JwtVerifier};
pub use limits::Limiter;
