//! TLS (rpcaps://): implicit TLS from the first byte of a connection, with
//! xrpcapd always the TLS server (PROTOCOL.md §4), on control connections (TCP data
//! channels: [`crate::host`]).
//!
//! [`Conn`] is a control connection as the mio loop sees it: it tells TLS
//! from plaintext by the first byte (22 starts a TLS handshake, 0 an RPCAP
//! header), then reads and writes plaintext either way. [`server_config`]
//! builds the rustls configuration from `TlsCert`/`TlsKey`/`TlsClientCa`.

use std::io::{self, Read, Write};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::settings::{Tls, TlsMode};

/// First byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 22;

/// The rustls server configuration, or None when TLS is off.
pub fn server_config(tls: &Tls) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    if tls.effective_mode() == TlsMode::Off {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        anyhow::bail!("TLS needs both TlsCert and TlsKey");
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .with_context(|| format!("TlsCert {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("TlsCert {}: no certificate", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("TlsKey {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("TlsClientCa {}", ca.display()))?
            {
                let c = c.with_context(|| format!("TlsClientCa {}", ca.display()))?;
                roots
                    .add(c)
                    .with_context(|| format!("TlsClientCa {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("TlsCert and TlsKey do not make a usable pair")?;
    Ok(Some(Arc::new(config)))
}

/// What the first byte said.
enum Kind {
    /// Nothing received yet.
    Unknown,
    Plain,
    Tls(Box<ServerConnection>),
}

/// What [`Conn::sniff`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// No byte yet.
    Pending,
    Plain,
    Tls,
    /// Plaintext while TLS is required: send TLS_REQUIRED and close.
    PlainRefused,
    /// Neither TLS nor RPCAP version 0: let the session answer it as plaintext.
    Other,
}

/// A control connection, TLS or plaintext, over a stream `S`.
pub struct Conn<S> {
    pub stream: S,
    kind: Kind,
    mode: TlsMode,
    config: Option<Arc<ServerConfig>>,
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S, mode: TlsMode, config: Option<Arc<ServerConfig>>) -> Conn<S> {
        let kind = if config.is_none() || mode == TlsMode::Off {
            Kind::Plain
        } else {
            Kind::Unknown
        };
        Conn {
            stream,
            kind,
            mode,
            config,
        }
    }

    /// Whether the first byte is still awaited.
    pub fn sniffing(&self) -> bool {
        matches!(self.kind, Kind::Unknown)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls(_))
    }

    /// Decides TLS or plaintext from `first`, the first byte received.
    pub fn sniff(&mut self, first: Option<u8>) -> io::Result<Sniffed> {
        if !matches!(self.kind, Kind::Unknown) {
            return Ok(if self.is_tls() {
                Sniffed::Tls
            } else {
                Sniffed::Plain
            });
        }
        let Some(b) = first else {
            return Ok(Sniffed::Pending);
        };
        let config = self.config.clone().expect("Unknown only with a config");
        if b == TLS_HANDSHAKE {
            let conn = ServerConnection::new(config).map_err(io::Error::other)?;
            self.kind = Kind::Tls(Box::new(conn));
            return Ok(Sniffed::Tls);
        }
        self.kind = Kind::Plain;
        Ok(match (self.mode, b) {
            (TlsMode::Required, _) => Sniffed::PlainRefused,
            (_, 0) => Sniffed::Plain,
            _ => Sniffed::Other,
        })
    }

    /// Plaintext from the peer: `Ok(0)` at the end of the stream,
    /// `WouldBlock` when nothing more is there now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let tls = match &mut self.kind {
            Kind::Tls(t) => t,
            Kind::Plain => return self.stream.read(buf),
            // Not one byte seen yet (see `sniff`): nothing may be consumed.
            Kind::Unknown => return Err(io::ErrorKind::WouldBlock.into()),
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the peer why (an alert) before giving up.
                let _ = tls.write_tls(&mut self.stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages to send back.
            write_tls(tls, &mut self.stream)?;
        }
    }

    /// Sends `data` (plaintext); returns how much was taken. TLS takes what
    /// fits rustls's bounded buffer (64 KiB) and sends what the socket
    /// accepts; `WouldBlock` when both are full, as a plain socket says, so
    /// that the replies a peer leaves unread stay in the session, counted
    /// against its output bound.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.kind {
            Kind::Tls(t) => {
                write_tls(t, &mut self.stream)?;
                let n = t.writer().write(data)?;
                write_tls(t, &mut self.stream)?;
                if n == 0 && !data.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
            _ => self.stream.write(data),
        }
    }

    /// Sends what TLS still holds (after the socket was full).
    pub fn flush_tls(&mut self) -> io::Result<()> {
        if let Kind::Tls(t) = &mut self.kind {
            write_tls(t, &mut self.stream)?;
        }
        Ok(())
    }

    /// Bytes waiting in TLS for the socket.
    pub fn tls_pending(&self) -> bool {
        matches!(&self.kind, Kind::Tls(t) if t.wants_write())
    }
}

/// Plaintext to the peer as an `io::Write` (what a session writes its
/// replies to).
impl<S: Read + Write> Write for Conn<S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        Conn::write(self, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

fn write_tls<S: Write>(tls: &mut ServerConnection, stream: &mut S) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
