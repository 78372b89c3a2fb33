//! Every raw syscall the agent and the sensor make, wrapped once, each
//! `unsafe` block with the argument for why it holds. Above this crate the
//! code is safe Rust (`#![deny(unsafe_code)]`), except the two ring modules
//! that read memory shared with the kernel (AF_PACKET's TPACKET_V3 ring and
//! AF_XDP's UMEM and rings).
//!
//! Errors are `io::Error`s (the syscall's errno), except where a call has
//! more to say ([`bpf::LoadError`]). Nothing here allocates or logs on a
//! per-packet path: [`mmsg`] batches reuse their arrays, and the wrappers the
//! datapath calls per batch are one syscall each.

pub mod bpf;
pub mod caps;
pub mod clock;
pub mod cpu;
pub mod eventfd;
pub mod ifreq;
pub mod mmsg;
pub mod netlink;
pub mod notify;
pub mod ns;
pub mod poll;
pub mod process;
pub mod reuseport;
pub mod signal;
pub mod socket;
pub mod sockopt;
pub mod tap;
pub mod tcp;

pub use sockopt::Pod;

use std::io;

/// `Ok(rc)` for a non-negative return, else the errno as an error.
fn check<T: Copy + Default + PartialOrd>(rc: T) -> io::Result<T> {
    if rc < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
