//! `TunnelClient` lines and `--tunnel-client`: export the frames of one
//! interface in a standard tunnel (VXLAN, GRE/TEB, ERSPAN II/III) to one
//! receiver, with no RPCAP sensor:
//!
//! `TunnelClient = vxlan|gre|erspan2|erspan3, HOST[, PORT][, vni=N | session=N][, hwid=N][, ifname=IF][, snaplen=N][, sample=N][, filter=EXPR]`
//!
//! Fields are separated by commas, semicolons or white space; `filter=`
//! comes last and takes the rest of the line (a tcpdump expression).
//! `PORT` is VXLAN's (default 4789); GRE has none. `vni=` (VXLAN, default
//! 0), `session=` (ERSPAN, default 0), `hwid=` (ERSPAN III, default 0),
//! `snaplen=` (bytes kept of each frame, default all), `sample=N` (one
//! frame of every N, default all).
//! Without `ifname=` the interface of `-i IFNAME` is captured; one of them
//! is needed.

use std::fmt;

use crate::tunnel::encap::{Kind, MAX_HWID, MAX_SESSION, MAX_VNI};
use crate::tunnel::VXLAN_PORT;

/// One export.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelClient {
    pub kind: Kind,
    pub host: String,
    /// VXLAN's UDP port (GRE: unused).
    pub port: u16,
    /// The interface captured (None: `-i IFNAME`'s, filled in by the flags).
    pub ifname: Option<String>,
    /// Bytes kept of each frame (`snaplen=`; default: whole frames).
    pub snaplen: Option<u32>,
    /// `sample=N`: one frame of every N (RPCAP's one-of-N sampling).
    pub sample: Option<u32>,
    /// AND-ed with `LocalFilter` (the agent's own filter).
    pub filter: Option<String>,
}

pub const TUNNEL_CLIENT_EXPECTED: &str = "`vxlan|gre|erspan2|erspan3, HOST[, PORT][, vni=N | session=N][, hwid=N][, ifname=IF][, snaplen=N][, sample=N][, filter=EXPR]`";

impl TunnelClient {
    /// `vxlan:HOST:PORT`, `gre:HOST`, `erspan2:HOST`, …: its label in the
    /// metrics, the status and the log lines.
    pub fn label(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.kind {
            Kind::Vxlan { .. } => format!("vxlan:{host}:{}", self.port),
            k => format!("{}:{host}", k.name()),
        }
    }
}

impl fmt::Display for TunnelClient {
    /// The line as `--check-config` prints it (parses back to the same).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}, {host}", self.kind.name())?;
        match self.kind {
            Kind::Vxlan { vni } => write!(f, ", {}, vni={vni}", self.port)?,
            Kind::Gre => {}
            Kind::Erspan2 { session } => write!(f, ", session={session}")?,
            Kind::Erspan3 { session, hwid } => write!(f, ", session={session}, hwid={hwid}")?,
        }
        if let Some(i) = &self.ifname {
            write!(f, ", ifname={i}")?;
        }
        if let Some(n) = self.snaplen {
            write!(f, ", snaplen={n}")?;
        }
        if let Some(n) = self.sample {
            write!(f, ", sample={n}")?;
        }
        if let Some(e) = &self.filter {
            write!(f, ", filter={e}")?;
        }
        Ok(())
    }
}

fn number<T: std::str::FromStr + PartialOrd>(
    key: &str,
    v: &str,
    max: T,
    what: &str,
) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{key}={v}: expected {what}")),
    }
}

/// Parses the value of a `TunnelClient` line (or `--tunnel-client`).
pub fn parse_tunnel_client(value: &str) -> Result<TunnelClient, String> {
    let lower = value.to_ascii_lowercase();
    let (head, filter) = match lower.find("filter=") {
        Some(at) => {
            let expr = value[at + "filter=".len()..].trim();
            if expr.is_empty() {
                return Err("filter=: expected a tcpdump expression".into());
            }
            (&value[..at], Some(expr.to_string()))
        }
        None => (value, None),
    };
    let mut fields = head.split([' ', '\t', ',', ';']).filter(|s| !s.is_empty());
    let kind_word = fields.next().ok_or(TUNNEL_CLIENT_EXPECTED)?;
    let host = fields.next().ok_or(TUNNEL_CLIENT_EXPECTED)?;
    if host.contains('=') {
        return Err(TUNNEL_CLIENT_EXPECTED.into());
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_string();
    let mut port = None;
    let (mut vni, mut session, mut hwid, mut ifname) = (None, None, None, None);
    let (mut snaplen, mut sample) = (None, None);
    for (i, field) in fields.enumerate() {
        match field.split_once('=') {
            None if i == 0 => {
                port = Some(match field.parse::<u16>() {
                    Ok(p) if p != 0 => p,
                    _ => return Err(format!("`{field}`: expected a UDP port 1..=65535")),
                })
            }
            None => return Err(format!("`{field}`: not a TunnelClient option in {TUNNEL_CLIENT_EXPECTED}")),
            Some((k, v)) => match k.to_ascii_lowercase().as_str() {
                "vni" => vni = Some(number("vni", v, MAX_VNI, "a VNI 0..=16777215")?),
                "session" => {
                    session = Some(number("session", v, MAX_SESSION, "a session ID 0..=1023")?)
                }
                "hwid" => hwid = Some(number("hwid", v, MAX_HWID, "a hardware ID 0..=63")?),
                "ifname" if !v.is_empty() => ifname = Some(v.to_string()),
                "snaplen" => {
                    snaplen = Some(number("snaplen", v, 262_144, "a snapshot length 1..=262144")?.max(1))
                }
                "sample" => sample = Some(number("sample", v, 1_000_000, "N of one-of-N, 1..=1000000")?.max(1)),
                "ifname" => return Err("ifname=: expected an interface name".into()),
                _ => return Err(format!("`{field}`: not a TunnelClient option (vni=, session=, hwid=, ifname=, snaplen=, sample=, filter=)")),
            },
        }
    }
    let kind = match kind_word.to_ascii_lowercase().as_str() {
        "vxlan" => Kind::Vxlan {
            vni: vni.unwrap_or(0),
        },
        "gre" => Kind::Gre,
        "erspan2" | "erspan" => Kind::Erspan2 {
            session: session.unwrap_or(0),
        },
        "erspan3" => Kind::Erspan3 {
            session: session.unwrap_or(0),
            hwid: hwid.unwrap_or(0),
        },
        other => {
            return Err(format!(
                "`{other}`: expected vxlan, gre, erspan2 or erspan3"
            ))
        }
    };
    if vni.is_some() && !kind.is_udp() {
        return Err("vni= is for vxlan".into());
    }
    if session.is_some() && !kind.cuts() {
        return Err("session= is for erspan2 and erspan3".into());
    }
    if hwid.is_some() && !matches!(kind, Kind::Erspan3 { .. }) {
        return Err("hwid= is for erspan3".into());
    }
    if port.is_some() && !kind.is_udp() {
        return Err(format!("{}: GRE has no port (IP protocol 47)", kind.name()));
    }
    Ok(TunnelClient {
        kind,
        host,
        port: if kind.is_udp() {
            port.unwrap_or(VXLAN_PORT)
        } else {
            0
        },
        ifname,
        snaplen,
        sample,
        filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_print_back() {
        let t = parse_tunnel_client(
            "vxlan, 10.0.0.9, 4790, vni=42, ifname=eth1, filter=tcp port 80, or udp",
        )
        .unwrap();
        assert_eq!(t.kind, Kind::Vxlan { vni: 42 });
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.9", 4790));
        assert_eq!(t.ifname.as_deref(), Some("eth1"));
        assert_eq!(t.filter.as_deref(), Some("tcp port 80, or udp"));
        assert_eq!(t.label(), "vxlan:10.0.0.9:4790");
        assert_eq!(parse_tunnel_client(&t.to_string()).unwrap(), t);

        let t = parse_tunnel_client("VXLAN 10.0.0.9").unwrap();
        assert_eq!(
            (t.kind, t.port, t.ifname),
            (Kind::Vxlan { vni: 0 }, 4789, None)
        );

        let t =
            parse_tunnel_client("erspan3, [fd00::1]; session=1023, hwid=7, ifname=span0").unwrap();
        assert_eq!(
            t.kind,
            Kind::Erspan3 {
                session: 1023,
                hwid: 7
            }
        );
        assert_eq!(t.host, "fd00::1");
        assert_eq!(t.label(), "erspan3:[fd00::1]");
        assert_eq!(parse_tunnel_client(&t.to_string()).unwrap(), t);

        let t = parse_tunnel_client("gre, sensor.example, ifname=eth0").unwrap();
        assert_eq!((t.kind, t.port), (Kind::Gre, 0));
        assert_eq!(parse_tunnel_client(&t.to_string()).unwrap(), t);
        let t = parse_tunnel_client("erspan2, h, session=3, snaplen=128, sample=10").unwrap();
        assert_eq!((t.snaplen, t.sample), (Some(128), Some(10)));
        assert_eq!(parse_tunnel_client(&t.to_string()).unwrap(), t);
        assert_eq!(t.kind, Kind::Erspan2 { session: 3 });
    }

    #[test]
    fn bad_lines_say_what_was_expected() {
        for (line, want) in [
            ("", "vxlan|gre"),
            ("vxlan", "vxlan|gre"),
            ("ipip, h", "expected vxlan, gre"),
            ("vxlan, h, 0", "UDP port"),
            ("vxlan, h, vni=16777216", "VNI"),
            ("erspan2, h, session=1024", "session ID"),
            ("gre, h, 4789", "GRE has no port"),
            ("gre, h, vni=1", "vni= is for vxlan"),
            ("vxlan, h, session=1", "session= is for erspan"),
            ("erspan2, h, hwid=1", "hwid= is for erspan3"),
            ("vxlan, h, ifname=", "interface name"),
            ("vxlan, h, filter=", "tcpdump expression"),
            ("vxlan, h, 4789, extra", "not a TunnelClient option"),
            ("vxlan, h, bogus=1", "not a TunnelClient option"),
        ] {
            let e = parse_tunnel_client(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
