//! A real Prometheus server (Debian's `prometheus` package) for the metrics
//! tests: started inside a namespace with a scrape configuration written
//! here (every target scraped each second), its storage in a temporary
//! directory, queried through its HTTP API (`/api/v1/query`). Plus
//! `promtool check metrics` on an endpoint's answer.
//!
//! HTTP requests go from a thread inside the namespace ([`Netns::enter`])
//! over a plain HTTP/1.0 GET: the tests need no more than that.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::netns::Netns;
use crate::process::Child;
use crate::wait::wait_until;

/// How long Prometheus may take to start (it replays an empty WAL).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One series of a query's answer: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus server inside a namespace.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    _dir: TempDir,
    ns: String,
    listen: SocketAddr,
}

impl Prometheus {
    /// Starts `prometheus` in `ns`, listening on `listen` (an address of that
    /// namespace, e.g. 127.0.0.1:9090), scraping each `(job, target)` every
    /// second. Returns once it is ready to answer queries.
    pub fn start(ns: &Netns, listen: SocketAddr, targets: &[(&str, SocketAddr)]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("xrpcap-test-prometheus-")
            .tempdir()?;
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            cfg.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, cfg).context("writing prometheus.yml")?;
        let mut cmd = ns.command("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=info");
        let mut child = Child::spawn("prometheus", cmd)
            .context("starting prometheus (Debian package `prometheus`, scripts/setup.sh)")?;
        child.wait_for_output("Server is ready to receive web requests", START_TIMEOUT)?;
        Ok(Prometheus {
            child,
            _dir: dir,
            ns: ns.name().to_string(),
            listen,
        })
    }

    /// Its log (Prometheus logs to stderr).
    pub fn log(&self) -> String {
        self.child.stderr()
    }

    /// The instant query `q` (PromQL): every series of the answer vector.
    pub fn query(&self, q: &str) -> Result<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        let (status, body) = http_get_in(&self.ns, self.listen, &path, None)?;
        if status != 200 {
            bail!("query {q}: HTTP {status}: {body}");
        }
        parse_vector(&body).with_context(|| format!("query {q}"))
    }

    /// The value of `q`, which must answer one series (None: no series yet).
    pub fn value(&self, q: &str) -> Result<Option<f64>> {
        let mut v = self.query(q)?;
        match v.len() {
            0 => Ok(None),
            1 => Ok(Some(v.remove(0).value)),
            n => bail!("query {q}: {n} series, expected one: {v:?}"),
        }
    }

    /// Waits until `q` answers one series whose value satisfies `ok`;
    /// returns that value.
    pub fn wait_value(&self, q: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> Result<f64> {
        let mut last = None;
        let waited = wait_until(timeout, q, || {
            last = self.value(q)?;
            Ok(last.is_some_and(&ok))
        });
        waited.with_context(|| format!("last answer {last:?}; prometheus log:\n{}", self.log()))?;
        Ok(last.expect("a value"))
    }

    /// Waits until every target is scraped successfully (`up == 1`).
    pub fn wait_up(&self, targets: usize, timeout: Duration) -> Result<()> {
        self.wait_value("count(up == 1)", timeout, |n| n as usize == targets)
            .map(|_| ())
    }
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters stay).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series of a `/api/v1/query` answer of type vector.
pub fn parse_vector(body: &str) -> Result<Vec<Sample>> {
    let v: serde_json::Value = serde_json::from_str(body).context("answer is not JSON")?;
    if v["status"] != "success" {
        bail!("query failed: {body}");
    }
    if v["data"]["resultType"] != "vector" {
        bail!("not a vector: {body}");
    }
    let results = v["data"]["result"].as_array().context("no result array")?;
    results
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .context("no metric labels")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = r["value"][1]
                .as_str()
                .context("no value")?
                .parse::<f64>()
                .context("value is not a number")?;
            Ok(Sample { labels, value })
        })
        .collect()
}

/// `GET path` from `addr`, from inside namespace `ns`: status and body.
/// `accept` sets the Accept header.
pub fn http_get_in(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Result<(u16, String)> {
    let ns = ns.to_string();
    let path = path.to_string();
    let accept = accept.map(str::to_string);
    std::thread::spawn(move || {
        crate::netns::switch_thread(&ns);
        http_get(addr, &path, accept.as_deref())
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `GET path` from `addr` (HTTP/1.0, the server closes): status and body.
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut r = Vec::new();
    s.read_to_end(&mut r)
        .with_context(|| format!("reading {addr}{path}"))?;
    let r = String::from_utf8(r).context("answer is not UTF-8")?;
    let (head, body) = r.split_once("\r\n\r\n").context("no HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line: {head}"))?;
    Ok((status, body.to_string()))
}

/// `promtool check metrics` on `text` (an endpoint's answer in the
/// Prometheus text format): Ok, or its complaints.
pub fn promtool_check_metrics(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian package `prometheus`)")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics: {}{}\n--- checked:\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `packaging/grafana/check.py` on `dashboard` (a file name in
/// packaging/grafana) against `pages` (`GET /metrics` texts of the real
/// binaries): every metric name the dashboard's PromQL reads must be on
/// one of the pages, and promtool must parse every expression.
pub fn grafana_check(pages: &[&str], dashboard: &str) -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana");
    let tmp = TempDir::new()?;
    let mut cmd = Command::new("python3");
    cmd.arg(dir.join("check.py"));
    for (i, page) in pages.iter().enumerate() {
        let file = tmp.path().join(format!("page{i}.txt"));
        std::fs::write(&file, page)?;
        cmd.arg("--metrics").arg(file);
    }
    let out = cmd
        .arg(dir.join(dashboard))
        .output()
        .context("running python3 packaging/grafana/check.py")?;
    if !out.status.success() {
        bail!(
            "check.py {dashboard}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_answer_is_parsed() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"agent":"10.0.0.1","interface":"eth0"},"value":[1700000000.1,"42"]}]}}"#;
        let v = parse_vector(body).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].value, 42.0);
        assert_eq!(v[0].labels["interface"], "eth0");
        assert!(parse_vector(r#"{"status":"error","error":"bad"}"#).is_err());
    }

    #[test]
    fn query_parameters_are_encoded() {
        assert_eq!(percent_encode("a{b=\"c\"} 1"), "a%7Bb%3D%22c%22%7D%201");
    }

    #[test]
    fn promtool_tells_good_from_bad() {
        if Command::new("promtool").arg("--version").output().is_err() {
            eprintln!("promtool not installed (scripts/setup.sh): skipped");
            return;
        }
        promtool_check_metrics("# HELP a_total A.\n# TYPE a_total counter\na_total 1\n").unwrap();
        assert!(promtool_check_metrics("# TYPE a counter\na_total 1\n").is_err());
    }
}
