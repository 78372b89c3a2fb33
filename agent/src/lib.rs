//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP. The binary (`main.rs`) is a thin shell around
//! this library so that the control logic and the datapath are testable from `tests/`.
//!
//! Safe Rust: syscalls go through the `sys` crate; only the ring modules
//! (`capture::afpacket::ring`, `capture::afxdp::{socket, ring}`) allow
//! `unsafe`, for memory shared with the kernel.
#![deny(unsafe_code)]

pub mod auth;
pub mod capture;
pub mod control;
pub mod datapath;
pub mod filter;
pub mod host;
pub mod iface;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod session;
pub mod settings;
pub mod setup;
pub mod status;
pub mod tunnel;
