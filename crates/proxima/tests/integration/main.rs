//! Integration tests: the real server, over real sockets, against the in-repo mock upstream,
//! and the real `proxima` binary for the command line and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod accounts;
mod audit;
mod auth;
mod cache;
mod chat;
mod cli;
mod conversations;
mod errors;
mod failover;
mod files;
mod guardrails;
mod limits;
mod local;
mod logs;
mod matrix;
mod mcp;
mod pii;
mod prompts;
mod providers;
mod residency;
mod responses;
mod retention;
mod retrieval_use;
mod routing;
mod shutdown;
mod streaming;
mod telemetry;
mod tools;
mod ui;
mod vector_stores;
