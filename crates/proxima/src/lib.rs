//! Proxima, an LLM gateway: one OpenAI-compatible API in front of many providers.
//!
//! The modules follow the path of a request (see [`server`] for the whole path in one place):
//! [`surface`] (wire formats in and out, via [`wire`]) → [`canonical`] model → [`policy`]
//! (auth) → [`pipeline`] → [`router`] (strategy, retries, fallbacks) → [`providers`] (one
//! adapter per upstream API) → back. [`config`] and [`gateway`] build the whole from a file;
//! [`ui`] is the admin web UI.

#[allow(unsafe_code)]
pub mod allocator;
pub mod audit;
pub mod cache;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod error;
pub mod gateway;
pub mod guardrails;
pub mod http_client;
pub mod mcp;
pub mod pii;
pub mod pipeline;
pub mod policy;
pub mod pricing;
pub mod prompts;
pub mod providers;
pub mod retrieval;
pub mod router;
pub mod server;
pub mod services;
pub mod sse;
pub mod state;
pub mod store;
pub mod surface;
pub mod telemetry;
pub mod tokenizer;
pub mod ui;
pub mod usage;
pub mod wire;
pub mod words;
pub mod worker;
