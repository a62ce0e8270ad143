//! Integration tests: the real server, over real sockets, against the in-repo mock upstream,
//! and the real `proxima` binary for the command line and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod accounts;
mod auth;
mod cache;
mod chat;
mod cli;
mod conversations;
mod errors;
mod failover;
mod files;
mod limits;
mod local;
mod logs;
mod matrix;
mod providers;
mod responses;
mod retrieval_use;
mod routing;
mod shutdown;
mod streaming;
mod telemetry;
mod tools;
mod vector_stores;
