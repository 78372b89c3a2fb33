//! bpf(2): the translated XDP filter program (`xdpc::translate`, loaded by
//! the agent's `afxdp::program`): load, put into / clear from the prog
//! array, and test runs.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` of enum bpf_attach_type: what aya loads `xrpcapd_xdp` with.
/// Caller and callee of a tail call must agree on it (kernel 6.18 refuses
/// the prog-array update otherwise).
const BPF_XDP: u32 = 37;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (the kernel
/// takes a shorter attr and treats the rest as zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` must be the attr struct of `cmd`, and every pointer in it must be
/// valid for what the kernel does with it during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's promise; the size passed is the struct's.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A program the verifier refused (or a load that failed otherwise).
#[derive(Debug)]
pub struct LoadError {
    pub error: io::Error,
    /// The end of the verifier's log (empty if it wrote none).
    pub log: String,
}

/// Loads an XDP program: `insns` are eBPF instructions (8 bytes each),
/// licensed GPL (the helpers it calls require it), `flags` the prog_flags
/// (BPF_F_XDP_HAS_FRAGS or 0), for attach type BPF_XDP. On failure, loads again with the verifier's
/// log on and returns its last lines.
pub fn prog_load_xdp(insns: &[u8], name: &str, flags: u32) -> Result<OwnedFd, LoadError> {
    const LICENSE: &[u8] = b"GPL\0";
    const LOAD_TRIES: u32 = 5;
    const LOG_SIZE: usize = 1 << 20;
    let load = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_flags: flags,
            expected_attach_type: BPF_XDP,
            ..ProgLoadAttr::default()
        };
        for (d, s) in attr.prog_name.iter_mut().take(15).zip(name.bytes()) {
            *d = s;
        }
        if let Some(log) = log {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        // The verifier gives up with EAGAIN when a signal is pending for
        // the thread: retry a few times, as libbpf does.
        let mut tries = 1;
        let fd = loop {
            // SAFETY: the attr of BPF_PROG_LOAD; `insns`, LICENSE (NUL-ended)
            // and the log buffer (log_size bytes, writable) outlive the call.
            match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < LOAD_TRIES => {
                    tries += 1
                }
                r => break r?,
            }
        };
        // SAFETY: a fresh program fd, owned from here on.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut buf = vec![0u8; LOG_SIZE];
            let retry = load(Some(&mut buf));
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let text = String::from_utf8_lossy(&buf[..end]);
            let lines: Vec<&str> = text.lines().collect();
            let log = lines[lines.len().saturating_sub(6)..].join("\n");
            match retry {
                // Loaded with the log on: a transient failure before.
                Ok(fd) => Ok(fd),
                Err(_) => Err(LoadError { error, log }),
            }
        }
    }
}

/// Puts program `prog_fd` into slot `key` of a BPF_MAP_TYPE_PROG_ARRAY
/// (an atomic replacement of what was there).
pub fn prog_array_set(map: &impl AsRawFd, key: u32, prog_fd: RawFd) -> io::Result<()> {
    let value = prog_fd as u32;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..MapElemAttr::default()
    };
    // SAFETY: the attr of BPF_MAP_UPDATE_ELEM; key and value are live u32s,
    // the sizes the prog array has.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
}

/// Empties slot `key` of a prog array (a tail call into it falls through).
pub fn prog_array_clear(map: &impl AsRawFd, key: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        ..MapElemAttr::default()
    };
    // SAFETY: the attr of BPF_MAP_DELETE_ELEM; `key` is a live u32.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs XDP program `prog_fd` once on `frame` (BPF_PROG_TEST_RUN; frames
/// beyond a page become multi-buffer input if the program has frags) and
/// returns its XDP action.
pub fn prog_test_run_xdp(prog_fd: &impl AsRawFd, frame: &[u8]) -> io::Result<u32> {
    prog_test_run_xdp_out(prog_fd, frame, &mut []).map(|(act, _)| act)
}

/// As [`prog_test_run_xdp`], with the buffer the program left (from
/// its XDP metadata on) copied into `out` when `out` is not empty: returns
/// the action and that buffer's length. An `out` too short is an error
/// (ENOSPC).
pub fn prog_test_run_xdp_out(
    prog_fd: &impl AsRawFd,
    frame: &[u8],
    out: &mut [u8],
) -> io::Result<(u32, usize)> {
    let mut attr = TestRunAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: if out.is_empty() {
            0
        } else {
            out.as_mut_ptr() as u64
        },
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: the attr of BPF_PROG_TEST_RUN; data_in is `frame`, read only;
    // data_out is null or `out`, writable for data_size_out bytes (the
    // kernel copies at most that much); no context buffers.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok((attr.retval, attr.data_size_out as usize))
}
