//! The `UserName` key: an agent started as root drops to that user and its
//! groups, keeping only the capabilities capture needs — CAP_NET_RAW and
//! CAP_NET_ADMIN (AF_PACKET), plus CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK and
//! CAP_SYS_RESOURCE when a capture may run on AF_XDP (`Capture = afxdp` or
//! an ActiveClient line's `capture=afxdp`). An agent that is not root (the
//! packaged unit: `User=xrpcapd` with ambient capabilities) cannot change
//! user: a `UserName` naming another user is a warning and is ignored, so
//! the unit's `User=` and the ini never fight.
//!
//! Capabilities belong to threads, so the drop happens before the agent
//! starts any (it refuses otherwise); the user and group changes are
//! process-wide (glibc's set*id). Safe Rust: `nix` for the users and
//! set*id calls, `caps` for the capability sets.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{self, Gid, Uid, User};

use crate::settings::{Backend, CaptureChoice, Config};

/// Why the privileges could not be dropped (the agent must not go on).
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("UserName = {0}: no such user")]
    NoSuchUser(String),
    #[error("UserName = {user}: {what}: {source}")]
    Sys {
        user: String,
        what: &'static str,
        source: nix::Error,
    },
    #[error("UserName = {user}: {what}: {source}")]
    Caps {
        user: String,
        what: &'static str,
        source: caps::errors::CapsError,
    },
    #[error(
        "UserName = {0}: {1} threads already run; privileges must be dropped before the first"
    )]
    Threads(String, usize),
    #[error("UserName = {0}: still able to become root after the drop")]
    NotDropped(String),
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No `UserName`, or it names the current user.
    Unchanged,
    /// Not root and `UserName` names another user: ignored (warned).
    Ignored(String),
    /// Now runs as this user, with these capabilities.
    Dropped { user: String, caps: Vec<String> },
}

/// The capabilities an agent keeps: AF_PACKET's, plus AF_XDP's when the
/// configuration may capture with it.
pub fn kept_capabilities(cfg: &Config) -> CapsHashSet {
    let mut keep: CapsHashSet = [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN].into();
    let afxdp = cfg.capture.backend == Backend::AfXdp
        || cfg
            .active_clients
            .iter()
            .any(|c| c.capture == Some(CaptureChoice::AfXdp));
    if afxdp {
        keep.extend([
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_IPC_LOCK,
            Capability::CAP_SYS_RESOURCE,
        ]);
    }
    keep
}

/// Applies `UserName` of `cfg` (see the module's documentation). Call it
/// before any thread starts.
pub fn apply(cfg: &Config) -> Result<Outcome, PrivilegeError> {
    let Some(name) = cfg.user_name.as_deref() else {
        return Ok(Outcome::Unchanged);
    };
    let sys = |what| {
        move |source| PrivilegeError::Sys {
            user: name.to_string(),
            what,
            source,
        }
    };
    let user = User::from_name(name)
        .map_err(sys("looking up the user"))?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_string()));
    let me = Uid::effective();
    if !me.is_root() {
        return Ok(match user {
            Ok(u) if u.uid == me => Outcome::Unchanged,
            _ => Outcome::Ignored(name.to_string()),
        });
    }
    let user = user?;
    if user.uid.is_root() {
        return Ok(Outcome::Unchanged);
    }
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        return Err(PrivilegeError::Threads(name.to_string(), threads));
    }
    let keep = kept_capabilities(cfg);
    drop_to(name, user.uid, user.gid, &keep)?;
    let mut caps: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    caps.sort();
    Ok(Outcome::Dropped {
        user: name.to_string(),
        caps,
    })
}

fn drop_to(name: &str, uid: Uid, gid: Gid, keep: &CapsHashSet) -> Result<(), PrivilegeError> {
    let sys = |what| {
        move |source| PrivilegeError::Sys {
            user: name.to_string(),
            what,
            source,
        }
    };
    let caps_err = |what| {
        move |source| PrivilegeError::Caps {
            user: name.to_string(),
            what,
            source,
        }
    };
    // While root: nothing else can ever come back (bounding set).
    let bounding =
        caps::read(None, CapSet::Bounding).map_err(caps_err("reading the bounding set"))?;
    for cap in bounding.difference(keep) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(caps_err("dropping from the bounding set"))?;
    }
    // The permitted set survives the uid change (the effective one does not).
    caps::securebits::set_keepcaps(true).map_err(caps_err("PR_SET_KEEPCAPS"))?;
    let cname =
        std::ffi::CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.into()))?;
    unistd::initgroups(&cname, gid).map_err(sys("setting the groups"))?;
    unistd::setresgid(gid, gid, gid).map_err(sys("setting the group"))?;
    unistd::setresuid(uid, uid, uid).map_err(sys("setting the user"))?;
    caps::securebits::set_keepcaps(false).map_err(caps_err("PR_SET_KEEPCAPS"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    caps::set(None, CapSet::Permitted, keep).map_err(caps_err("setting the permitted set"))?;
    caps::set(None, CapSet::Effective, keep).map_err(caps_err("setting the effective set"))?;
    // Paranoia: there is no way back.
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::NotDropped(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, "t.ini").unwrap().config
    }

    #[test]
    fn afxdp_adds_its_capabilities() {
        let plain = kept_capabilities(&cfg("ActiveClient = 192.0.2.1, 2003\n"));
        assert_eq!(
            plain,
            [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN].into()
        );
        let xdp = kept_capabilities(&cfg("Capture = afxdp\n"));
        assert!(xdp.contains(&Capability::CAP_BPF) && xdp.contains(&Capability::CAP_IPC_LOCK));
        let line = kept_capabilities(&cfg("ActiveClient = 192.0.2.1, 2003, capture=afxdp\n"));
        assert_eq!(line, xdp);
    }

    #[test]
    fn no_user_name_changes_nothing() {
        assert_eq!(apply(&cfg("")).unwrap(), Outcome::Unchanged);
    }
}
