//! Password authentication of RPCAP clients (AUTH_REQ type PASSWORD).
//!
//! Two sources of accounts, tried in order:
//! - `User = NAME HASH` lines of the configuration, HASH an argon2id PHC
//!   string as printed by `xrpcapd --hash-password`;
//! - with `SystemAccounts = YES`, the system's accounts: the SHA-crypt hash
//!   (`$6$`, `$5$`) of the shadow file. Locked or disabled accounts (`!`, `*`,
//!   empty) are refused without any hash being computed on their behalf
//!   (CVE-2019-15163 crashed the reference on them).
//!
//! Every failure looks the same from outside: the caller sends one text for
//! all of them, and an unknown user costs a hash computation as a known one
//! does, so timing does not tell whether a user exists (CVE-2019-15162).
//! [`Backoff`] delays the replies to a peer that keeps failing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Where the system accounts' hashes are.
pub const DEFAULT_SHADOW_FILE: &str = "/etc/shadow";

/// One `User = NAME HASH` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    /// argon2 PHC string.
    pub hash: String,
}

/// Parses `NAME HASH`; the hash must be a PHC string argon2 can verify with.
pub fn parse_user(value: &str) -> Result<UserEntry, String> {
    let expected = "`NAME HASH`, HASH from `xrpcapd --hash-password`";
    let mut fields = value.split_whitespace();
    let (Some(name), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(expected.into());
    };
    let parsed = PasswordHash::new(hash).map_err(|e| format!("{expected} ({e})"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("{expected} (an argon2 hash)"));
    }
    Ok(UserEntry {
        name: name.to_string(),
        hash: hash.to_string(),
    })
}

/// An argon2id hash of `password` with a fresh random salt (argon2's
/// default cost: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

/// Random bytes from the kernel (the salt of a new hash).
fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| anyhow::anyhow!("reading /dev/urandom: {e}"))
}

/// A hash of nothing in particular, verified when the user is unknown so that
/// the answer takes as long as for a known user.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("xrpcapd-no-such-user").unwrap_or_else(|_| {
            // Fixed salt if the kernel gave no random bytes: only timing depends on it.
            let salt = SaltString::encode_b64(b"xrpcapd-dummy-salt").expect("valid salt");
            Argon2::default()
                .hash_password(b"x", &salt)
                .expect("argon2 with default parameters")
                .to_string()
        })
    })
}

/// The accounts a passive or active session may authenticate against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authenticator {
    pub users: Vec<UserEntry>,
    /// Also check the system's accounts in `shadow_file`.
    pub system_accounts: bool,
    pub shadow_file: Option<PathBuf>,
}

impl Authenticator {
    /// Whether `user` / `password` is a valid account. Never says why not.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
        else {
            verify_argon2(dummy_hash(), b"");
            return false;
        };
        if let Some(entry) = self.users.iter().find(|u| u.name == user) {
            return verify_argon2(&entry.hash, password.as_bytes());
        }
        if self.system_accounts {
            match self.shadow_hash(user) {
                Some(ShadowHash::Crypt(h)) => return verify_crypt(&h, password),
                Some(ShadowHash::Locked) => {
                    verify_argon2(dummy_hash(), password.as_bytes());
                    return false;
                }
                None => {}
            }
        }
        verify_argon2(dummy_hash(), password.as_bytes());
        false
    }

    /// The shadow entry of `user`, if there is one.
    fn shadow_hash(&self, user: &str) -> Option<ShadowHash> {
        let path = self
            .shadow_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SHADOW_FILE));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                log::error!("SystemAccounts: cannot read {}: {e}", path.display());
                return None;
            }
        };
        shadow_lookup(&text, user)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ShadowHash {
    Crypt(String),
    /// `!…`, `*`, empty or any hash that is not a crypt string: no login.
    Locked,
}

/// The hash field of `user` in the text of a shadow file.
fn shadow_lookup(text: &str, user: &str) -> Option<ShadowHash> {
    let line = text.lines().find(|l| l.split(':').next() == Some(user))?;
    let hash = line.split(':').nth(1).unwrap_or("");
    if hash.starts_with('$') {
        Some(ShadowHash::Crypt(hash.to_string()))
    } else {
        Some(ShadowHash::Locked)
    }
}

fn verify_argon2(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
        Err(_) => false,
    }
}

/// SHA-crypt (`$6$`, `$5$`); other schemes (yescrypt `$y$`, MD5, bcrypt)
/// are not supported and refuse the login (logged once per attempt).
fn verify_crypt(hash: &str, password: &str) -> bool {
    if hash.starts_with("$6$") {
        sha_crypt::sha512_check(password, hash).is_ok()
    } else if hash.starts_with("$5$") {
        sha_crypt::sha256_check(password, hash).is_ok()
    } else {
        log::warn!(
            "SystemAccounts: hash scheme {} is not supported (only SHA-crypt $5$/$6$): login refused",
            hash.split('$').nth(1).unwrap_or("?")
        );
        verify_argon2(dummy_hash(), password.as_bytes());
        false
    }
}

/// Per-peer delays after failed authentications: the n-th failure in a row
/// delays the reply by base × 2^(n−1), capped; a peer is forgotten after
/// `forget` without failures. At most [`Backoff::MAX_PEERS`] peers are
/// remembered (the oldest go first), so memory stays bounded.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    forget: Duration,
    peers: HashMap<IpAddr, (u32, Instant)>,
}

impl Backoff {
    pub const MAX_PEERS: usize = 4096;

    pub fn new(base: Duration, cap: Duration, forget: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            forget,
            peers: HashMap::new(),
        }
    }

    /// Records a failure of `peer` at `now`; returns how long to hold the reply.
    pub fn failed(&mut self, peer: IpAddr, now: Instant) -> Duration {
        let forget = self.forget;
        if self.peers.len() >= Self::MAX_PEERS && !self.peers.contains_key(&peer) {
            self.peers
                .retain(|_, (_, at)| now.duration_since(*at) < forget);
            if self.peers.len() >= Self::MAX_PEERS {
                if let Some(oldest) = self.peers.iter().min_by_key(|(_, (_, at))| *at) {
                    let oldest = *oldest.0;
                    self.peers.remove(&oldest);
                }
            }
        }
        let entry = self.peers.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= forget {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let exp = (entry.0 - 1).min(20);
        self.base.saturating_mul(1 << exp).min(self.cap)
    }

    /// A successful login clears the peer's record.
    pub fn succeeded(&mut self, peer: IpAddr) {
        self.peers.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_users_verify_and_others_fail() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let user = parse_user(&format!("alice {h}")).unwrap();
        let a = Authenticator {
            users: vec![user],
            ..Default::default()
        };
        assert!(a.verify(b"alice", b"s3cret"));
        assert!(!a.verify(b"alice", b"S3cret"));
        assert!(!a.verify(b"bob", b"s3cret"));
        assert!(!a.verify(b"alice", b"\xff"));
    }

    #[test]
    fn user_lines_need_a_name_and_an_argon2_hash() {
        assert!(parse_user("alice").is_err());
        assert!(parse_user("alice plain").is_err());
        assert!(parse_user("alice $6$salt$abc").is_err());
        let h = hash_password("x").unwrap();
        assert!(parse_user(&format!("alice {h} extra")).is_err());
    }

    #[test]
    fn shadow_accounts_sha_crypt_and_locked_ones() {
        let params = sha_crypt::Sha512Params::new(5000).unwrap();
        let h6 = sha_crypt::sha512_simple("pw6", &params).unwrap();
        let params = sha_crypt::Sha256Params::new(5000).unwrap();
        let h5 = sha_crypt::sha256_simple("pw5", &params).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        std::fs::write(
            &shadow,
            format!(
                "root:*:19000:0:99999:7:::\nsix:{h6}:19000::::::\nfive:{h5}:1::::::\n\
                 locked:!{h6}:1::::::\nstar:*:1::::::\nempty::1::::::\nyes:$y$j9T$abc$def:1::::::\n"
            ),
        )
        .unwrap();
        let a = Authenticator {
            users: vec![],
            system_accounts: true,
            shadow_file: Some(shadow.clone()),
        };
        assert!(a.verify(b"six", b"pw6"));
        assert!(!a.verify(b"six", b"pw5"));
        assert!(a.verify(b"five", b"pw5"));
        for locked in ["locked", "star", "empty", "root", "yes", "nobody"] {
            assert!(!a.verify(locked.as_bytes(), b"pw6"), "{locked}");
            assert!(!a.verify(locked.as_bytes(), b""), "{locked}");
        }
        // Off: the same account is unknown.
        let off = Authenticator {
            system_accounts: false,
            ..a
        };
        assert!(!off.verify(b"six", b"pw6"));
    }

    #[test]
    fn backoff_doubles_caps_forgets_and_stays_bounded() {
        let mut b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(8),
            Duration::from_secs(60),
        );
        let p: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        let delays: Vec<u64> = (0..6).map(|_| b.failed(p, t).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.failed(p, t + Duration::from_secs(61)).as_secs(), 1);
        b.succeeded(p);
        assert_eq!(b.failed(p, t).as_secs(), 1);
        for i in 0..(Backoff::MAX_PEERS as u32 + 10) {
            b.failed(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(b.peers.len() <= Backoff::MAX_PEERS);
    }
}
