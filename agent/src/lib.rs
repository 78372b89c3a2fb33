//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP. The binary (`main.rs`) is a thin shell around
//! this library so that the datapath and the control logic are testable from `tests/`.

pub mod capture;
pub mod datapath;
