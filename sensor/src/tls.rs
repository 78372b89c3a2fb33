//! TLS (rpcaps://) as the sensor speaks it: the agent is the TLS server in
//! both modes (it accepted our connection, or it dialed us and then waits
//! for our ClientHello), so the sensor is always the TLS client, on the
//! control connection and on TCP data connections. UDP data cannot be TLS
//! (the agent refuses such a STARTCAP), so TLS needs `--tcp-data`.
//!
//! The agent's certificate is checked against `--tls-ca` (a chain to one of
//! its certificates, valid for the expected name) and/or `--tls-pin`: the
//! SHA-256 of the agent's certificate (DER, hex), or of its public key
//! (`sha256//BASE64`, the SubjectPublicKeyInfo's DER as curl's
//! `--pinnedpubkey` takes it), which stays valid when the certificate is
//! re-issued for the same key. [`Stream`] is a non-blocking
//! socket the mio loop reads and writes as plaintext either way: handshakes
//! advance as the socket's events come, so a slow agent delays nobody, and
//! the session's reply timeout bounds a handshake that never ends (the AUTH
//! request, queued in rustls, awaits its reply).
//!
//! A refused certificate (control or data connection) is counted
//! ([`Tls::refused`], `xrpcap_sensor_tls_refused_total`) and logged at WARN
//! with the reason, once per agent address (later refusals of the same
//! address, such as a redialing agent's, at debug level).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use base64ct::{Base64, Encoding};
use mio::net::TcpStream;
use rpcap::addr::canonical;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme,
};

/// The TLS options of the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub ca: Option<PathBuf>,
    /// Accepted agent certificates or public keys.
    pub pins: Vec<Pin>,
    /// The name the agent's certificate must carry (default: the host of
    /// `--connect`, or the agent's address).
    pub name: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Options {
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || !self.pins.is_empty()
    }
}

/// TLS for every agent: the rustls configuration and the name override.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    name: Option<String>,
    refusals: Arc<Refusals>,
}

/// Agent addresses whose refusal was logged at WARN, at most this many
/// (then at debug level): a scan from many addresses cannot grow the set
/// without bound.
const LOGGED_MAX: usize = 4096;

/// The agents' certificates refused so far, and the addresses logged.
#[derive(Debug, Default)]
struct Refusals {
    count: AtomicU64,
    logged: Mutex<HashSet<IpAddr>>,
}

impl Refusals {
    /// Counts a refusal of `peer`'s certificate and logs it: at WARN the
    /// first time for that address, at debug level after.
    fn refuse(&self, peer: Option<IpAddr>, reason: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let who = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        let first = peer.is_some_and(|p| {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            logged.len() < LOGGED_MAX && logged.insert(p)
        });
        if first {
            log::warn!(
                "agent {who}: TLS: refused the agent's certificate: {reason} \
                 (counted in tls_refused; this agent's further refusals are logged at debug level)"
            );
        } else {
            log::debug!("agent {who}: TLS: refused the agent's certificate again: {reason}");
        }
    }
}

impl Tls {
    /// The client configuration from `opts`, or None without TLS.
    pub fn new(opts: &Options) -> anyhow::Result<Option<Tls>> {
        if !opts.enabled() {
            if opts.cert.is_some() || opts.key.is_some() || opts.name.is_some() {
                bail!("--tls-cert, --tls-key and --tls-name need --tls-ca or --tls-pin");
            }
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = match &opts.ca {
            None => None,
            Some(ca) => Some(ca_verifier(ca, provider.clone())?),
        };
        let verifier = Arc::new(Verifier {
            webpki,
            pins: opts.pins.clone(),
            provider: provider.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&opts.cert, &opts.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<_, _>>())
                    .with_context(|| format!("--tls-cert {}", cert.display()))?;
                if certs.is_empty() {
                    bail!("--tls-cert {}: no certificate", cert.display());
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("--tls-key {}", key.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .context("--tls-cert and --tls-key do not make a usable pair")?
            }
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Some(Tls {
            config: Arc::new(config),
            name: opts.name.clone(),
            refusals: Arc::default(),
        }))
    }

    /// The name to check on an agent's certificate: `--tls-name`, else
    /// `host` (a `--connect` host, an address or a DNS name).
    pub fn server_name(&self, host: &str) -> io::Result<ServerName<'static>> {
        let host = self.name.as_deref().unwrap_or(host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("TLS name {host}: {e}"))
        })
    }

    /// `stream` with a TLS client session for `name` (its ClientHello sent
    /// as soon as the socket takes it).
    pub fn wrap(&self, stream: TcpStream, name: ServerName<'static>) -> io::Result<Stream> {
        let conn = ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        let session = Session {
            conn,
            refusals: self.refusals.clone(),
            counted: false,
        };
        let mut s = Stream::Tls(Box::new(session), stream);
        s.flush()?;
        Ok(s)
    }

    /// Agent connections (control or data) whose certificate was refused.
    pub fn refused(&self) -> u64 {
        self.refusals.count.load(Ordering::Relaxed)
    }
}

fn ca_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("--tls-ca {}", ca.display()))?
    {
        let c = c.with_context(|| format!("--tls-ca {}", ca.display()))?;
        roots
            .add(c)
            .with_context(|| format!("--tls-ca {}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("--tls-ca {}: no certificate", ca.display());
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("--tls-ca: certificate verifier")
}

/// One `--tls-pin`: what of the agent's certificate it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The SHA-256 of the whole certificate (DER).
    Certificate([u8; 32]),
    /// The SHA-256 of its SubjectPublicKeyInfo (DER): the key, whatever
    /// certificate carries it.
    PublicKey([u8; 32]),
}

/// `--tls-pin`: `sha256//BASE64` (curl's `--pinnedpubkey`: the base64 of
/// the SHA-256 of the public key's DER SubjectPublicKeyInfo), or 64 hex
/// digits, colons allowed (the certificate's, as `openssl x509 -fingerprint
/// -sha256` prints it).
pub fn parse_pin(s: &str) -> Result<Pin, String> {
    if let Some(b64) = s.strip_prefix("sha256//") {
        let mut out = [0u8; 32];
        let n = Base64::decode(b64.trim(), &mut out).map(|d| d.len());
        return match n {
            Ok(32) => Ok(Pin::PublicKey(out)),
            _ => Err(format!(
                "'{s}' is not a public key pin: sha256// and the base64 of a SHA-256 \
                 digest (44 characters)"
            )),
        };
    }
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    let bad = || {
        format!(
            "'{s}' is not a pin: a certificate's SHA-256 (64 hex digits, colons allowed) \
             or sha256//BASE64 of its public key"
        )
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Pin::Certificate(out))
}

/// `sha256//BASE64` of a digest, as curl and `--tls-pin` write it.
fn spki_pin(d: &[u8; 32]) -> String {
    let mut buf = [0u8; 44];
    let b64 = Base64::encode(d, &mut buf).expect("44 characters hold 32 bytes");
    format!("sha256//{b64}")
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(d: &[u8]) -> String {
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why `--tls-pin` refused a certificate.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PinRefused(String);

/// A certificate refused by a pin: an invalid certificate for rustls (the
/// agent gets a bad_certificate alert).
fn refusal(why: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PinRefused(
        why,
    )))))
}

/// The agent's certificate: a chain to `--tls-ca` (if given) and one of the
/// pins (if any). The handshake's signatures are checked either way.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<Pin>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(w) = &self.webpki {
            w.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if !self.pins.is_empty() {
            let cert = sha256(end_entity.as_ref());
            // The key as webpki reads the certificate (what rustls checks
            // the handshake's signature with).
            let spki = webpki::EndEntityCert::try_from(end_entity)
                .map(|c| sha256(c.subject_public_key_info().as_ref()));
            let pinned = |p: &Pin| match p {
                Pin::Certificate(d) => *d == cert,
                Pin::PublicKey(d) => spki.as_ref().is_ok_and(|k| k == d),
            };
            if !self.pins.iter().any(pinned) {
                let key = match &spki {
                    Ok(k) => format!("public key {}", spki_pin(k)),
                    Err(e) => format!("public key unreadable: {e}"),
                };
                return Err(refusal(format!(
                    "the agent's certificate (SHA-256 {}, {key}) matches no --tls-pin",
                    hex(&cert)
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A non-blocking connection to an agent, plaintext or TLS, read and
/// written as plaintext.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<Session>, TcpStream),
}

/// A TLS connection and the account of its refusal.
pub struct Session {
    conn: ClientConnection,
    refusals: Arc<Refusals>,
    /// Its refusal was counted (rustls repeats a failure on every call).
    counted: bool,
}

impl Session {
    /// `e` as an I/O error; a refused certificate is counted once.
    fn fail(&mut self, sock: &TcpStream, e: rustls::Error) -> io::Error {
        let refused = matches!(
            e,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        );
        let text = describe(&e);
        if refused && !self.counted {
            self.counted = true;
            let peer = sock.peer_addr().ok().map(|a| canonical(a.ip()));
            self.refusals.refuse(peer, &text);
        }
        io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {text}"))
    }
}

impl Stream {
    /// The socket (to register with the poll).
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) | Stream::Tls(_, s) => s,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(..))
    }
}

impl Read for Stream {
    /// Plaintext: `Ok(0)` at the end of the stream, `WouldBlock` when
    /// nothing more is there now; a TLS failure (the agent's certificate
    /// refused, an alert) is an `InvalidData` error naming it.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (session, sock) = match self {
            Stream::Plain(s) => return s.read(buf),
            Stream::Tls(t, s) => (t, s),
        };
        loop {
            let tls = &mut session.conn;
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The agent closed without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(sock) {
                Ok(0) => {
                    // EOF: what rustls still holds, then the end.
                    if let Err(e) = tls.process_new_packets() {
                        return Err(session.fail(sock, e));
                    }
                    return match tls.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(_) => Ok(0),
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    write_tls(tls, sock)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the agent why (an alert) before giving up.
                let _ = tls.write_tls(sock);
                return Err(session.fail(sock, e));
            }
            // Handshake messages, and the plaintext queued before it ended.
            write_tls(tls, sock)?;
        }
    }
}

impl Write for Stream {
    /// Takes what fits rustls's bounded buffer and sends what the socket
    /// accepts; `WouldBlock` when both are full, as a plain socket says.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(data),
            Stream::Tls(session, sock) => {
                let tls = &mut session.conn;
                write_tls(tls, sock)?;
                let n = tls.writer().write(data)?;
                write_tls(tls, sock)?;
                if n == 0 && !data.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    /// Sends what TLS still holds (after the socket was full).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(session, sock) => write_tls(&mut session.conn, sock),
        }
    }
}

/// `e` for a log line: a pin's refusal in words (rustls prints the
/// debug form of an `Other` certificate error).
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
            format!("invalid peer certificate: {}", o.0)
        }
        e => e.to_string(),
    }
}

/// Sends TLS records until the socket is full (or still connecting).
fn write_tls(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                return Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_take_hex_with_or_without_colons() {
        let plain = "00".repeat(31) + "ff";
        let Pin::Certificate(d) = parse_pin(&plain).unwrap() else {
            panic!("a certificate pin");
        };
        assert_eq!(d[31], 0xff);
        assert_eq!(parse_pin(&hex(&d)).unwrap(), parse_pin(&plain).unwrap());
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn public_key_pins_are_curls_sha256_base64() {
        // curl's documentation example form: sha256// + 44 base64 characters.
        let pin = "sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=";
        let Pin::PublicKey(d) = parse_pin(pin).unwrap() else {
            panic!("a public key pin");
        };
        assert_eq!(spki_pin(&d), pin);
        assert_eq!(d[0], 0x62);
        assert!(parse_pin("sha256//YhKJKSzo").is_err(), "too short");
        assert!(parse_pin("sha256//not base64 at all, no, not at all!!!!").is_err());
        assert!(parse_pin("sha1//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=").is_err());
    }

    #[test]
    fn names_are_addresses_or_dns_names() {
        let t = Tls::new(&Options {
            pins: vec![Pin::Certificate([0; 32])],
            ..Options::default()
        })
        .unwrap()
        .unwrap();
        assert!(matches!(
            t.server_name("10.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            t.server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            t.server_name("agent.example").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(Tls::new(&Options {
            cert: Some("c.pem".into()),
            ..Options::default()
        })
        .is_err());
    }
}
