//! Shared pieces of the integration tests: the real binary as a child
//! process, a local origin server, and a small HTTP client.
#![allow(dead_code)]

pub mod claims;
pub mod layout;
pub mod origin;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;

use std::net::TcpListener;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
