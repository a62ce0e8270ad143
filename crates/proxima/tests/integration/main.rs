//! Integration tests: the real server, over real sockets, against the in-repo mock upstream.
