//! Parsers of rpcapd.ini values, shared by the key table and the flags
//! (`cli`) so that both say the same about a bad value. Each returns what
//! was expected as its `Err`.

use std::net::IpAddr;
use std::path::PathBuf;

use argon2::password_hash::PasswordHash;
use ipnet::IpNet;

use super::model::{
    ActiveClient, Backend, CaptureChoice, Preselect, TlsMode, UserEntry, XdpMode,
    DEFAULT_ACTIVE_PORT, MAX_UDPSTR_SIZE, MIN_UDPSTR_SIZE,
};

/// `YES` or `NO` (any case).
pub fn parse_yes_no(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err("YES or NO".into())
    }
}

/// `off`, `optional` or `required`.
pub fn parse_tls_mode(value: &str) -> Result<TlsMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "off" => Ok(TlsMode::Off),
        "optional" => Ok(TlsMode::Optional),
        "required" => Ok(TlsMode::Required),
        _ => Err("off, optional or required".into()),
    }
}

/// `MetricsListen`, `--metrics-listen`: an IP address and a port (not 0).
pub fn parse_metrics_listen(value: &str) -> Result<std::net::SocketAddr, String> {
    match value.trim().parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(
            "ADDR:PORT, an IP address and a port other than 0 (127.0.0.1:9917, [::1]:9917)".into(),
        ),
    }
}

/// `StatusSocket`, `--status-socket`: `none` or an absolute path.
pub fn parse_status_socket(value: &str) -> Result<super::model::StatusSocket, String> {
    use super::model::StatusSocket;
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") {
        return Ok(StatusSocket::Off);
    }
    if v.is_empty() {
        return Err("a path or none".into());
    }
    Ok(StatusSocket::Path(std::path::PathBuf::from(v)))
}

pub fn parse_nonempty(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(what.to_string())
    } else {
        Ok(value.to_string())
    }
}

/// A non-empty path.
pub fn parse_path(value: &str) -> Result<PathBuf, String> {
    parse_nonempty(value, "a path").map(PathBuf::from)
}

/// Hosts separated by spaces, commas or semicolons (`PassiveClient`).
pub fn parse_host_list(value: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = split_fields(value).map(parse_host).collect();
    if hosts.is_empty() {
        return Err("a host name or address".into());
    }
    Ok(hosts)
}

/// Splits on the separators the references accept: space, comma, semicolon.
fn split_fields(value: &str) -> impl Iterator<Item = &str> {
    value.split([' ', '\t', ',', ';']).filter(|s| !s.is_empty())
}

/// `DEFAULT`, a port number 1..=65535 or a TCP service name of
/// /etc/services (the references hand the port to getaddrinfo, which
/// reads service names there).
pub fn parse_port(value: &str) -> Result<u16, String> {
    if value.eq_ignore_ascii_case("DEFAULT") {
        return Ok(DEFAULT_ACTIVE_PORT);
    }
    let expected =
        || "a port 1..=65535 or DEFAULT (or a TCP service name of /etc/services)".to_string();
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(expected()),
        };
    }
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    service_port(&services, value).ok_or_else(expected)
}

/// The TCP port of service `name` (or an alias) in /etc/services text.
fn service_port(services: &str, name: &str) -> Option<u16> {
    services.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let (first, port_proto) = (fields.next()?, fields.next()?);
        let (port, proto) = port_proto.split_once('/')?;
        let named = first == name || fields.any(|alias| alias == name);
        (named && proto == "tcp")
            .then(|| port.parse::<u16>().ok().filter(|p| *p != 0))
            .flatten()
    })
}

/// A host name or address; brackets around an IPv6 address are removed.
fn parse_host(value: &str) -> String {
    value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value)
        .to_string()
}

const ACTIVE_CLIENT_EXPECTED: &str =
    "`host, port[, ifname=NAME][, ifaddr=ADDR[/PREFIX]][, capture=afpacket|afxdp]\
     [, decap=KIND[:ID][@SRC]]` (port DEFAULT = 2003)";

/// The options of an ActiveClient line, matched without regard to case.
const ACTIVE_CLIENT_OPTIONS: [&str; 4] = ["ifname", "ifaddr", "capture", "decap"];

fn is_option(key: &str) -> bool {
    ACTIVE_CLIENT_OPTIONS
        .iter()
        .any(|o| o.eq_ignore_ascii_case(key))
}

/// One word of an ActiveClient line after the host: the port, an option,
/// or a word that is neither.
struct Word {
    text: String,
    /// As written, when spaces around its `=` were removed (`ifname= eth0`,
    /// `ifname =eth0`).
    spaced: Option<String>,
}

/// Joins an option split by spaces around its `=` back into one word:
/// `ifname= eth0`, `ifname =eth0` and `ifname = eth0` are `ifname=eth0`.
/// Only the options' names are joined: `foo = bar` stays three words.
fn join_options<'a>(fields: impl Iterator<Item = &'a str>) -> Vec<Word> {
    let fields: Vec<&str> = fields.collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < fields.len() {
        let f = fields[i];
        let next = fields.get(i + 1).copied();
        // `ifname =eth0`, `ifname = eth0`
        if is_option(f) && next.is_some_and(|n| n.starts_with('=')) {
            let eq = next.unwrap_or_default();
            if eq == "=" {
                match fields.get(i + 2) {
                    Some(v) if !v.contains('=') => {
                        words.push(Word {
                            text: format!("{f}={v}"),
                            spaced: Some(format!("{f} = {v}")),
                        });
                        i += 3;
                    }
                    _ => {
                        words.push(Word {
                            text: format!("{f}="),
                            spaced: Some(format!("{f} =")),
                        });
                        i += 2;
                    }
                }
            } else {
                words.push(Word {
                    text: format!("{f}{eq}"),
                    spaced: Some(format!("{f} {eq}")),
                });
                i += 2;
            }
            continue;
        }
        // `ifname= eth0`
        if let Some(key) = f.strip_suffix('=').filter(|k| is_option(k)) {
            if let Some(v) = next.filter(|n| !n.contains('=')) {
                words.push(Word {
                    text: format!("{key}={v}"),
                    spaced: Some(format!("{f} {v}")),
                });
                i += 2;
                continue;
            }
        }
        words.push(Word {
            text: f.to_string(),
            spaced: None,
        });
        i += 1;
    }
    words
}

/// `host, port[, ifname=NAME][, ifaddr=ADDR[/PREFIX]][, capture=afpacket|afxdp][, decap=SPEC]`.
pub fn parse_active_client(value: &str) -> Result<ActiveClient, String> {
    parse_active_client_line(value).map(|(client, _)| client)
}

/// An ActiveClient value as a file writes it (comments already removed):
/// the client and what deserves a warning. Spaces around an option's `=`
/// are read as the option (ExtraHop's rpcapd drops the preselection); a
/// word that is no option is ignored with a warning (ExtraHop's warns and
/// serves). A bad port or a bad value of a known option is an error: a
/// preselection that cannot be read is not dropped silently.
pub fn parse_active_client_line(value: &str) -> Result<(ActiveClient, Vec<String>), String> {
    let mut fields = split_fields(value);
    let host = fields.next().ok_or(ACTIVE_CLIENT_EXPECTED)?;
    if host.contains('=') {
        return Err(ACTIVE_CLIENT_EXPECTED.into());
    }
    let mut client = ActiveClient {
        host: parse_host(host),
        port: DEFAULT_ACTIVE_PORT,
        preselect: Preselect::default(),
        capture: None,
        decap: None,
    };
    let mut warnings = Vec::new();
    for (i, word) in join_options(fields).into_iter().enumerate() {
        let field = word.text.as_str();
        let option = field.split_once('=').filter(|(k, _)| is_option(k));
        match option {
            Some((k, v)) => {
                let k = k.to_ascii_lowercase();
                match k.as_str() {
                    "capture" => client.capture = Some(parse_capture_choice(v)?),
                    "decap" => client.decap = Some(v.parse().map_err(|e| format!("{e}"))?),
                    "ifname" => client.preselect.ifname = Some(parse_nonempty(v, "ifname=NAME")?),
                    _ => client.preselect.ifaddr = Some(parse_ifaddr(v)?),
                }
                if let Some(written) = &word.spaced {
                    warnings.push(format!(
                        "`{written}` read as `{k}={v}` (ExtraHop's rpcapd ignores the \
                         preselection of a line with spaces around `=`)"
                    ));
                }
            }
            None if i == 0 && !field.contains('=') => {
                client.port =
                    parse_port(field).map_err(|e| format!("{e} in {ACTIVE_CLIENT_EXPECTED}"))?;
            }
            None => warnings.push(format!(
                "`{field}` ignored: not an ActiveClient option (ifname=, ifaddr=, capture=, decap=)"
            )),
        }
    }
    Ok((client, warnings))
}

/// `capture=` of an ActiveClient line.
pub fn parse_capture_choice(value: &str) -> Result<CaptureChoice, String> {
    match value.to_ascii_lowercase().as_str() {
        "afpacket" => Ok(CaptureChoice::AfPacket),
        "afxdp" => Ok(CaptureChoice::AfXdp),
        _ => Err(format!(
            "capture={value}: expected capture=afpacket or capture=afxdp"
        )),
    }
}

/// An address (a host prefix) or an address/prefix, IPv4 or IPv6.
pub fn parse_ifaddr(value: &str) -> Result<IpNet, String> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net);
    }
    value
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| "ifaddr=ADDR or ifaddr=ADDR/PREFIX (IPv4 or IPv6)".into())
}

/// `-a host,port[,host,port…]`.
pub fn parse_active_list(value: &str) -> Result<Vec<ActiveClient>, String> {
    let fields: Vec<&str> = split_fields(value).collect();
    if fields.is_empty() || !fields.chunks_exact(2).remainder().is_empty() {
        return Err("host,port[,host,port...]".into());
    }
    fields
        .chunks(2)
        .map(|pair| {
            Ok(ActiveClient {
                host: parse_host(pair[0]),
                port: parse_port(pair[1])?,
                preselect: Preselect::default(),
                capture: None,
                decap: None,
            })
        })
        .collect()
}

const BACKEND_EXPECTED: &str = "afpacket, afxdp, afxdp:IFNAME[,IFNAME...] or file:PATH";

/// `afpacket`, `afxdp` (every interface), `afxdp:IF[,IF...]` (those
/// interfaces; AF_PACKET elsewhere) or `file:PATH`; with the AF_XDP
/// interfaces (empty: every interface, or not AF_XDP).
pub fn parse_backend(value: &str) -> Result<(Backend, Vec<String>), String> {
    if value.eq_ignore_ascii_case("afpacket") {
        Ok((Backend::AfPacket, Vec::new()))
    } else if value.eq_ignore_ascii_case("afxdp") {
        Ok((Backend::AfXdp, Vec::new()))
    } else if let Some(list) = value.strip_prefix("afxdp:") {
        let interfaces: Vec<String> = split_fields(list).map(str::to_owned).collect();
        if interfaces.is_empty() {
            return Err(BACKEND_EXPECTED.into());
        }
        Ok((Backend::AfXdp, interfaces))
    } else if let Some(path) = value.strip_prefix("file:").filter(|p| !p.is_empty()) {
        Ok((Backend::File(PathBuf::from(path)), Vec::new()))
    } else {
        Err(BACKEND_EXPECTED.into())
    }
}

/// `auto`, `native` or `generic`.
pub fn parse_xdp_mode(value: &str) -> Result<XdpMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "auto" => Ok(XdpMode::Auto),
        "native" | "drv" => Ok(XdpMode::Native),
        "generic" | "skb" => Ok(XdpMode::Generic),
        _ => Err("auto, native or generic".into()),
    }
}

/// 0 (plain format) or a udpstr datagram size.
pub fn parse_udpstr_size(value: &str) -> Result<usize, String> {
    let expected = || format!("0 or {MIN_UDPSTR_SIZE}..={MAX_UDPSTR_SIZE}");
    let n: usize = value.parse().map_err(|_| expected())?;
    if n == 0 || (MIN_UDPSTR_SIZE..=MAX_UDPSTR_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(expected())
    }
}

/// A byte count with an optional K/M/G suffix (powers of 1024), at least `min`.
pub fn parse_bytes(value: &str, min: usize) -> Result<usize, String> {
    let expected = || format!("a byte count >= {min} (suffix K, M or G allowed)");
    let (digits, mult) = match value.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&value[..i], 1usize << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&value[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&value[..i], 1 << 30),
        _ => (value, 1),
    };
    let n: usize = digits.trim().parse().map_err(|_| expected())?;
    let n = n.checked_mul(mult).ok_or_else(expected)?;
    // Socket buffers and rings are sized with i32 on the wire and in the kernel.
    if n < min || n > i32::MAX as usize {
        return Err(expected());
    }
    Ok(n)
}

/// CPUs as a list of numbers and ranges: `0,2` or `1-3`.
pub fn parse_cpu_list(value: &str) -> Result<Vec<usize>, String> {
    let expected = || "a list of CPU numbers or ranges, e.g. `1` or `0,2-3`".to_string();
    let mut cpus = Vec::new();
    for field in split_fields(value) {
        let (a, b) = match field.split_once('-') {
            Some((a, b)) => (a, b),
            None => (field, field),
        };
        let a: usize = a.parse().map_err(|_| expected())?;
        let b: usize = b.parse().map_err(|_| expected())?;
        if a > b || b >= 4096 {
            return Err(expected());
        }
        cpus.extend(a..=b);
    }
    if cpus.is_empty() {
        return Err(expected());
    }
    Ok(cpus)
}

pub fn parse_log_level(value: &str) -> Result<log::LevelFilter, String> {
    value
        .parse::<log::LevelFilter>()
        .map_err(|_| "off, error, warn, info, debug or trace".into())
}

pub fn parse_u32_in(value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("a number {min}..={max}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_numbers_default_or_tcp_service_names() {
        let services = "# comment\nftp\t\t21/tcp\nrpcap 2002/udp\nrpcap\t2002/tcp\trpcapd # x\n\
                        bad 0/tcp\n";
        assert_eq!(service_port(services, "ftp"), Some(21));
        assert_eq!(service_port(services, "rpcap"), Some(2002));
        assert_eq!(service_port(services, "rpcapd"), Some(2002), "an alias");
        assert_eq!(service_port(services, "x"), None, "a comment is no alias");
        assert_eq!(service_port(services, "bad"), None);
        assert_eq!(service_port(services, "nosuch"), None);
        assert_eq!(parse_port("DEFAULT"), Ok(2003));
        assert_eq!(parse_port("default"), Ok(2003));
        assert_eq!(parse_port("4000"), Ok(4000));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("no-such-service-x").is_err());
        // This machine's /etc/services, when it names ssh.
        let etc = std::fs::read_to_string("/etc/services").unwrap_or_default();
        if service_port(&etc, "ssh").is_some() {
            assert_eq!(parse_port("ssh"), Ok(22));
        }
    }
}
