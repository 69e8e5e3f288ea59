//! Integration-test harness: real `redis-server`, `nutcracker` and `keyway` processes on free
//! loopback ports, stopped by PID when their guard drops (even when a test panics), and a tiny
//! blocking RESP client that can talk to the proxy and to a backend alike.
//!
//! The proxy under test is `keyway` unless `KEYWAY_ITEST_PROXY=nutcracker` is set, which runs
//! every suite against the program Keyway replaces (tests of Keyway-only behaviour then fail).
//!
//! One module per process or concern; this file only lists them and re-exports everything, so
//! a test file's `use common::*;` sees the whole harness. Each test binary uses a subset of it,
//! hence `dead_code` and `unused_imports` (for the re-exports) are allowed here.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod admin_http;
mod binaries;
mod client;
mod cluster;
mod etcd;
pub mod fake_backend;
pub mod live;
mod memcached;
mod ports;
mod process;
mod proxy;
mod redis;
mod sentinel;
mod temp_dir;
mod tls;
mod wait;

pub use admin_http::*;
pub use binaries::*;
pub use client::*;
pub use cluster::*;
pub use etcd::*;
pub use memcached::*;
pub use ports::*;
pub use process::*;
pub use proxy::*;
pub use redis::*;
pub use sentinel::*;
pub use temp_dir::*;
pub use tls::*;
pub use wait::*;
