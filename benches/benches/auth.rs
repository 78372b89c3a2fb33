//! Password checks: how long `Authenticator::verify` takes for an unknown
//! user next to accounts of each source (a `User` line's argon2id, shadow
//! yescrypt `$y$` and SHA-512-crypt `$6$`), always with a wrong password.
//! Equal times mean timing does not tell whether a user exists (issue 12
//! item 8, CVE-2019-15162).

use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use xrpcapd::auth::{parse_user, Authenticator};

/// The hashes of "bench pw" made by the system tools at their default cost
/// (`mkpasswd -m yescrypt`, `openssl passwd -6`, `xrpcapd --hash-password`).
const YESCRYPT: &str = "$y$j9T$lAhew5rCAFplN3qgIgGvb0$8sM4B6kwmOBnMR5KnxhNBK29AN6lnmqa0pAa0tynUAD";
const SHA512: &str = "$6$zF18L8pvL6od1GbU$jWPwXwbPG.yRng7l.v7U/SCXktdHnvXEj00jbFSQi.wv/OxE4HpIYUf2TohXhMTTwXmadm5EVFjpO6dn.U3Mp1";
const ARGON2: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$REsbRaQf8IcYqALFmmuSSg$qWTRwb33Bq/4FtWMgzDt6DPz+4Hofu0Atu3MpbO6COU";

/// The users measured: (name, user).
const USERS: [(&str, &str); 5] = [
    ("unknown", "nobody"),
    ("locked", "locked"),
    ("user_argon2id", "alice"),
    ("shadow_yescrypt", "y"),
    ("shadow_sha512", "six"),
];

/// An argon2id `User` line and a shadow file with a yescrypt, a SHA-512-crypt,
/// a disabled and a locked account.
fn accounts(dir: &tempfile::TempDir) -> Authenticator {
    let shadow = dir.path().join("shadow");
    std::fs::write(
        &shadow,
        format!(
            "root:*:19000:0:99999:7:::\ny:{YESCRYPT}:19000:0:99999:7:::\n\
             six:{SHA512}:19000:0:99999:7:::\nlocked:!{YESCRYPT}:19000::::::\n"
        ),
    )
    .expect("writing the shadow file");
    let auth = Authenticator {
        users: vec![parse_user(&format!("alice {ARGON2}")).expect("user line")],
        system_accounts: true,
        shadow_file: Some(shadow),
    };
    for user in ["alice", "y", "six"] {
        assert!(auth.verify(user.as_bytes(), b"bench pw"), "{user}");
    }
    auth
}

/// Criterion, one user after the other.
fn bench(c: &mut Criterion, auth: &Authenticator) {
    let mut g = c.benchmark_group("verify");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(5));
    for (name, user) in USERS {
        g.bench_function(name, |b| {
            b.iter(|| black_box(auth.verify(black_box(user.as_bytes()), b"wrong pw")))
        });
    }
    g.finish();
}

/// The users in turn, round after round, so that a machine whose load
/// changes (the project's VM is shared) affects them alike: the median of
/// each, and its difference from the unknown user's.
fn interleaved(auth: &Authenticator, rounds: usize) {
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); USERS.len()];
    for _ in 0..rounds {
        for (i, (_, user)) in USERS.iter().enumerate() {
            let t0 = Instant::now();
            black_box(auth.verify(black_box(user.as_bytes()), b"wrong pw"));
            times[i].push(t0.elapsed());
        }
    }
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    println!("interleaved, {rounds} rounds: median per check (difference from unknown)");
    for ((name, _), m) in USERS.iter().zip(&medians) {
        let diff = m.as_secs_f64() - medians[0].as_secs_f64();
        println!(
            "  {name:<16} {:8.2} ms ({:+.2} ms)",
            m.as_secs_f64() * 1e3,
            diff * 1e3
        );
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = accounts(&dir);
    let rounds = std::env::var("AUTH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    interleaved(&auth, rounds);
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &auth);
    c.final_summary();
}
