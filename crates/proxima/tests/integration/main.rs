//! Integration tests: the real server, over real sockets, against the in-repo mock upstream,
//! and the real `proxima` binary for the command line and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod chat;
mod tools;
mod streaming;
mod failover;
mod errors;
mod auth;
mod providers;
mod cli;
mod shutdown;
