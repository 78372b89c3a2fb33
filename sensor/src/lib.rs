//! xrpcap-sensor as a library: the event loop, the sans-IO RPCAP client
//! session, the data-channel intake and the command line, so that the
//! binary stays a thin shell and the parsers can be fuzzed (sensor/fuzz).
//!
//! Safe Rust: every syscall goes through the `sys` crate.
#![deny(unsafe_code)]

pub mod agent;
pub mod allow;
pub mod capture;
pub mod choose;
pub mod cli;
pub mod config;
pub mod control;
pub mod data;
pub mod data_channel;
pub mod delay;
pub mod dial;
pub mod filter;
pub mod linger;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod pcapng;
pub mod rotation;
pub mod session;
pub mod shard;
pub mod shared_port;
pub mod source;
pub mod summary;
pub mod tap;
pub mod tls;
pub mod token;
pub mod writer;
