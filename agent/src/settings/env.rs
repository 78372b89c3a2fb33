//! Configuration without files: every rpcapd.ini key from an environment
//! variable, `XRPCAPD_` and the key's name in UPPER_SNAKE
//! (`ActiveClient` → `XRPCAPD_ACTIVE_CLIENT`, `MetricsListen` →
//! `XRPCAPD_METRICS_LISTEN`), derived from [`KEYS`]: a new key gets its
//! variable with no code here.
//!
//! A value is read as if it were the lines `Key = value` of a file named
//! after the variable, by the ini's own lexer ([`super::ini`]): same
//! parsers, same warnings, same errors, located at the variable
//! (`XRPCAPD_UDP_STR_SIZE: UdpStrSize = 12: expected ...`), or at the
//! variable and line when the value holds several
//! (`XRPCAPD_ACTIVE_CLIENT:2: ...`).
//!
//! Several entries: one per line of the value, or numbered variables
//! `XRPCAPD_ACTIVE_CLIENT_1`, `_2`, … (numeric order, after the plain
//! one). Repeatable keys take them all; for a key that holds one value the
//! last entry wins, as the last line of a file does. Blank lines and `#`
//! lines of a value are skipped, an empty variable is unset (as
//! `/etc/default/xrpcapd` reads it, and as templated manifests write an
//! optional value).
//!
//! Precedence (ini < drop-ins < environment < flags) is the loader's
//! ([`Config::load_all`](super::Config::load_all)): a key set here
//! replaces the files' value, repeatable keys too.

use std::ffi::OsString;

use super::ini::{lex, Diag, Key, Origin, Step, KEYS};

/// What every configuration variable starts with.
pub const PREFIX: &str = "XRPCAPD_";

/// `XRPCAPD_*` variables that are not rpcapd.ini keys: xrpcapd-setup's
/// (`/etc/default/xrpcapd`; it runs `xrpcapd --check-config` with them
/// in its environment). Neither read nor warned about here.
pub const NOT_CONFIG: &[&str] = &[
    "XRPCAPD_SENSOR",
    "XRPCAPD_IFNAME",
    "XRPCAPD_IFADDR",
    "XRPCAPD_FILTER",
    "XRPCAPD_NULL_AUTH",
    "XRPCAPD_BIN",
];

/// `ActiveClient` → `ACTIVE_CLIENT`: an underscore before each capital
/// that follows a small letter or a digit, or that starts a word after an
/// acronym (`ABCDef` → `ABC_DEF`).
pub fn upper_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let prev = chars[i - 1];
            let next_small = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_small)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The variable of `key`: `XRPCAPD_` and its name in UPPER_SNAKE.
pub fn variable(key: &Key) -> String {
    format!("{PREFIX}{}", upper_snake(key.name))
}

/// The key a variable sets and its number (`_2`), if it names one.
fn key_of(var: &str) -> Option<(usize, Option<u64>)> {
    let rest = var.strip_prefix(PREFIX)?;
    let find = |snake: &str| KEYS.iter().position(|k| upper_snake(k.name) == snake);
    if let Some(i) = find(rest) {
        return Some((i, None));
    }
    let (base, number) = rest.rsplit_once('_')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((find(base)?, Some(number.parse().ok()?)))
}

/// One configuration variable.
#[derive(Debug, Clone)]
struct Var {
    name: String,
    /// Its key's position in [`KEYS`].
    key: usize,
    number: Option<u64>,
    value: String,
}

/// The configuration variables of an environment, in the order they
/// apply, and what was wrong with the others.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: Vec<Var>,
    diags: Vec<(bool, Diag)>,
}

impl Environment {
    /// The variables of this process (they do not change while it runs:
    /// a reload reads the same).
    pub fn from_process() -> Environment {
        Environment::from_vars(std::env::vars_os())
    }

    /// The configuration variables among `vars`: names `XRPCAPD_*`, the
    /// others ignored.
    pub fn from_vars<I, N, V>(vars: I) -> Environment
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<OsString>,
        V: Into<OsString>,
    {
        let mut env = Environment::default();
        for (name, value) in vars {
            let Ok(name) = name.into().into_string() else {
                continue;
            };
            if !name.starts_with(PREFIX) || NOT_CONFIG.contains(&name.as_str()) {
                continue;
            }
            let Some((key, number)) = key_of(&name) else {
                let warning = format!(
                    "unknown variable ignored: `{}` is no rpcapd.ini key in UPPER_SNAKE \
                     (ActiveClient is XRPCAPD_ACTIVE_CLIENT, several: _1, _2...)",
                    &name[PREFIX.len()..]
                );
                env.diags
                    .push((false, Origin::Env { var: name, line: 0 }.diag(warning)));
                continue;
            };
            match value.into().into_string() {
                Ok(value) if value.trim().is_empty() => {}
                Ok(value) => env.vars.push(Var {
                    name,
                    key,
                    number,
                    value,
                }),
                Err(_) => {
                    let e = "the value is not UTF-8".to_string();
                    env.diags
                        .push((true, Origin::Env { var: name, line: 0 }.diag(e)));
                }
            }
        }
        // The key table's order, then the plain variable, then the
        // numbered ones in numeric order.
        env.vars
            .sort_by(|a, b| (a.key, a.number, &a.name).cmp(&(b.key, b.number, &b.name)));
        env.diags.sort_by(|a, b| a.1.file.cmp(&b.1.file));
        env
    }

    /// The configuration variables, in the order they apply.
    pub fn names(&self) -> Vec<String> {
        self.vars.iter().map(|v| v.name.clone()).collect()
    }

    /// Each variable as the lines `Key = value` of a file named after it.
    pub(super) fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .diags
            .iter()
            .map(|(error, d)| match error {
                true => Step::Error(d.clone()),
                false => Step::Warning(d.clone()),
            })
            .collect();
        for v in &self.vars {
            let key = KEYS[v.key].name;
            let text: String = v
                .value
                .lines()
                .map(|l| {
                    let l = l.trim();
                    if l.is_empty() || l.starts_with('#') {
                        "\n".to_string()
                    } else {
                        format!("{key} = {l}\n")
                    }
                })
                .collect();
            let several = v.value.lines().count() > 1;
            steps.extend(lex(&text, &|line| Origin::Env {
                var: v.name.clone(),
                line: if several { line } else { 0 },
            }));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ini::{ConfigError, LoadError, Loaded, BAD_LINES};
    use crate::settings::model::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment::from_vars(vars.iter().map(|&(n, v)| (n, v)))
    }

    fn load(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        match Config::load_all(None, None, &env(vars)) {
            Ok(l) => Ok(l),
            Err(LoadError::Invalid(e)) => Err(e),
            Err(e) => panic!("{e}"),
        }
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        let l = load(vars).unwrap_or_else(|e| panic!("{e}"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        l.config
    }

    #[test]
    fn every_key_has_a_variable_and_none_clashes() {
        for (name, var) in [
            ("ActiveClient", "XRPCAPD_ACTIVE_CLIENT"),
            ("MetricsListen", "XRPCAPD_METRICS_LISTEN"),
            ("UdpStrSize", "XRPCAPD_UDP_STR_SIZE"),
            ("MaxClientsPerHost", "XRPCAPD_MAX_CLIENTS_PER_HOST"),
            ("TlsClientCa", "XRPCAPD_TLS_CLIENT_CA"),
            ("XdpBusyPoll", "XRPCAPD_XDP_BUSY_POLL"),
            ("Passive", "XRPCAPD_PASSIVE"),
            ("TunnelClient", "XRPCAPD_TUNNEL_CLIENT"),
        ] {
            assert_eq!(format!("{PREFIX}{}", upper_snake(name)), var);
        }
        assert_eq!(upper_snake("HTTPPort"), "HTTP_PORT");
        assert_eq!(upper_snake("Ipv6Only"), "IPV6_ONLY");
        let vars: Vec<String> = KEYS.iter().map(variable).collect();
        for (i, v) in vars.iter().enumerate() {
            let key = &KEYS[i];
            // Unique, and not one of xrpcapd-setup's variables.
            assert_eq!(vars.iter().filter(|w| *w == v).count(), 1, "{v}");
            assert!(!NOT_CONFIG.contains(&v.as_str()), "{v}");
            // A number never belongs to the name: `_N` is free.
            assert!(!key.name.chars().any(|c| c.is_ascii_digit()), "{v}");
            assert_eq!(key_of(v), Some((i, None)));
            assert_eq!(key_of(&format!("{v}_12")), Some((i, Some(12))));
        }
        assert_eq!(key_of("XRPCAPD_ACTIVE_CLIENT_"), None);
        assert_eq!(key_of("XRPCAPD_ACTIVE_CLIENT_X"), None);
        assert_eq!(key_of("XRPCAPD_active_client"), None);
    }

    /// xrpcapd-setup's variables (its environment reaches the agent through
    /// `--check-config`) are neither configuration nor warned about.
    #[test]
    fn setup_variables_are_not_configuration() {
        use crate::setup;
        for v in [
            setup::ENV_SENSOR,
            setup::ENV_IFNAME,
            setup::ENV_IFADDR,
            setup::ENV_FILTER,
            setup::ENV_NULL_AUTH,
            "XRPCAPD_BIN",
        ] {
            assert!(NOT_CONFIG.contains(&v), "{v}");
        }
        let l = load(&[
            ("XRPCAPD_SENSOR", "10.0.0.9"),
            ("XRPCAPD_FILTER", "not port 22"),
            ("XRPCAPD_BIN", "/usr/sbin/xrpcapd"),
            ("XRPCAP_PASSWORD", "x"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        assert!(l.warnings.is_empty() && l.env.is_empty(), "{l:?}");
        assert_eq!(l.config, Config::default());
    }

    #[test]
    fn a_value_per_key_as_in_a_file() {
        let c = config(&[
            ("XRPCAPD_PASSIVE", "no"),
            ("XRPCAPD_ACTIVE_CLIENT", "10.0.0.1, 2003, ifname=eth0"),
            ("XRPCAPD_NULL_AUTH_PERMIT", "YES"),
            ("XRPCAPD_UDP_STR_SIZE", "0"),
            ("XRPCAPD_METRICS_LISTEN", "127.0.0.1:9917"),
            ("XRPCAPD_LOCAL_FILTER", "not port 22"),
            ("XRPCAPD_CAPTURE", "afxdp:span0"),
            ("XRPCAPD_XDP_MODE", "generic"),
            ("XRPCAPD_LOG_LEVEL", "debug"),
        ]);
        let want = Config::parse(
            "Passive = no\nActiveClient = 10.0.0.1, 2003, ifname=eth0\nNullAuthPermit = YES\n\
             UdpStrSize = 0\nMetricsListen = 127.0.0.1:9917\nLocalFilter = not port 22\n\
             Capture = afxdp:span0\nXdpMode = generic\nLogLevel = debug\n",
            "t.ini",
        )
        .unwrap()
        .config;
        assert_eq!(c, want);
    }

    #[test]
    fn repeatable_keys_take_lines_and_numbered_variables_in_order() {
        let hosts = |c: &Config| -> Vec<String> {
            c.active_clients.iter().map(|a| a.to_string()).collect()
        };
        // Lines, blank and comment lines skipped (a YAML block scalar ends
        // in a newline).
        let c = config(&[(
            "XRPCAPD_ACTIVE_CLIENT",
            "10.0.0.1, 2003\n\n# the lab\n  10.0.0.2, DEFAULT, ifname=eth1\r\n",
        )]);
        assert_eq!(hosts(&c), ["10.0.0.1, 2003", "10.0.0.2, 2003, ifname=eth1"]);
        // Numbered: numeric order (10 after 2), after the plain one,
        // whatever the order of the environment.
        let c = config(&[
            ("XRPCAPD_ACTIVE_CLIENT_10", "h10"),
            ("XRPCAPD_ACTIVE_CLIENT_2", "h2"),
            ("XRPCAPD_ACTIVE_CLIENT", "h0\nh00"),
            ("XRPCAPD_ACTIVE_CLIENT_1", "h1"),
            ("XRPCAPD_PASSIVE_CLIENT_1", "a, b"),
            ("XRPCAPD_PASSIVE_CLIENT_2", "c"),
        ]);
        let got: Vec<&str> = c.active_clients.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(got, ["h0", "h00", "h1", "h2", "h10"]);
        assert_eq!(c.passive.clients, ["a", "b", "c"]);
        // One-value keys: the last entry wins, as the last line of a file.
        let c = config(&[
            ("XRPCAPD_UDP_STR_SIZE_2", "900"),
            ("XRPCAPD_UDP_STR_SIZE", "0\n500"),
        ]);
        assert_eq!(c.udpstr_size, 900);
        // An empty variable is unset.
        let c = config(&[("XRPCAPD_ACTIVE_CLIENT", ""), ("XRPCAPD_UDP_STR_SIZE", " ")]);
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_variables_warn_with_their_name() {
        let l = load(&[
            ("XRPCAPD_ACTIVE_CLIENTS", "h"),
            ("XRPCAPD_BOGUS_1", "1"),
            ("XRPCAPD_ACTIVE_CLIENT", "h"),
        ])
        .unwrap();
        assert_eq!(l.config.active_clients.len(), 1);
        let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(
                "XRPCAPD_ACTIVE_CLIENTS: unknown variable ignored: `ACTIVE_CLIENTS` is no rpcapd.ini key"
            ),
            "{w:?}"
        );
        assert!(w[1].starts_with("XRPCAPD_BOGUS_1: unknown variable ignored"));
        // Warnings of a value name the variable, and the line when there
        // are several.
        let l = load(&[("XRPCAPD_ACTIVE_CLIENT", "h, 2003, ifname= eth0\nh2 # lab")]).unwrap();
        let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
        assert!(w[0].starts_with("XRPCAPD_ACTIVE_CLIENT:1: `ifname= eth0` read as"));
        assert!(w[1].starts_with("XRPCAPD_ACTIVE_CLIENT:2: ActiveClient = h2: trailing comment"));
    }

    #[test]
    fn errors_name_the_variable_and_all_are_reported() {
        let e = load(&[
            ("XRPCAPD_UDP_STR_SIZE", "12"),
            ("XRPCAPD_ACTIVE_CLIENT_2", "h, 0"),
            ("XRPCAPD_ACTIVE_CLIENT", "h, 1\nh, 70000"),
        ])
        .unwrap_err();
        let got: Vec<String> = e.errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        let port = "expected a port 1..=65535 or DEFAULT";
        assert!(
            got[0].starts_with(&format!(
                "XRPCAPD_ACTIVE_CLIENT:2: ActiveClient = h, 70000: {port}"
            )),
            "{got:?}"
        );
        assert!(
            got[1].starts_with(&format!(
                "XRPCAPD_ACTIVE_CLIENT_2: ActiveClient = h, 0: {port}"
            )),
            "{got:?}"
        );
        assert_eq!(
            got[2],
            "XRPCAPD_UDP_STR_SIZE: UdpStrSize = 12: expected 0 or 29..=65000"
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let bad = OsString::from_vec(vec![0xff, b'x']);
            let env = Environment::from_vars([(OsString::from("XRPCAPD_USER_NAME"), bad)]);
            let e = Config::load_all(None, None, &env).unwrap_err().to_string();
            assert_eq!(e, "XRPCAPD_USER_NAME: the value is not UTF-8");
        }
    }

    /// The ini's table of bad lines ([`BAD_LINES`]), each value set in its
    /// key's variable: the same error as the file line, located at the
    /// variable instead of `file:line`.
    #[test]
    fn same_errors_as_the_ini_for_the_same_bad_values() {
        let mut run = 0;
        for &(text, want) in BAD_LINES {
            // `Key value` without `=` is a file's syntax; an empty value is
            // an unset variable.
            let Some((name, value)) = text.split_once('=') else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            let key = KEYS
                .iter()
                .find(|k| k.name.eq_ignore_ascii_case(name.trim()))
                .unwrap();
            let var = variable(key);
            let from_ini = Config::parse(&format!("{text}\n"), "rpcapd.ini")
                .unwrap_err()
                .to_string();
            let msg = from_ini.strip_prefix("rpcapd.ini:1: ").unwrap();
            let got = load(&[(var.as_str(), value)]).unwrap_err().to_string();
            assert_eq!(got, format!("{var}: {msg}"), "{text}");
            let want = want.strip_prefix("rpcapd.ini:1: ").unwrap_or(want);
            assert!(got.contains(want), "{text}: got `{got}`, want `{want}`");
            // A line of a value that holds several: `VAR:LINE`.
            let got = load(&[(var.as_str(), &format!("# first\n{value}"))])
                .unwrap_err()
                .to_string();
            assert_eq!(got, format!("{var}:2: {msg}"), "{text}");
            run += 1;
        }
        // All but the four a variable cannot hold.
        assert_eq!(run, BAD_LINES.len() - 4);
    }

    /// Every variable docs/configuration.md names is a key's (or one of
    /// xrpcapd-setup's); the man page lists them all from [`KEYS`].
    #[test]
    fn the_guide_names_real_variables() {
        let text = include_str!("../../../docs/configuration.md");
        let mut seen = 0;
        for (i, _) in text.match_indices(PREFIX) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let name = name.trim_end_matches('_');
            // `XRPCAPD_*`; the typo of the unknown-variable example.
            if name == "XRPCAPD" || name == "XRPCAPD_ACTIVE_CLIENTS" {
                continue;
            }
            assert!(
                key_of(name).is_some() || NOT_CONFIG.contains(&name),
                "docs/configuration.md names {name}, which is no variable"
            );
            seen += 1;
        }
        assert!(seen > KEYS.len(), "{seen}");
    }
}
