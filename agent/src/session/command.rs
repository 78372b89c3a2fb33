//! What goes into a [`Session`](super::Session) and what comes out of it
//! besides reply bytes: inputs (bytes, answers, events of the capture),
//! commands for the driver and the answers it gives back.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpcap::bpf::Program;
use rpcap::msg::{Interface, Sampling, Stats};

use super::capture::StartRequest;
use crate::auth::Authenticator;
use crate::datapath::{StartError, UpdateError};

/// Something that happened to the session, handed in with the time it happened.
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes received from the peer (plaintext, after TLS).
    Received(&'a [u8]),
    /// Replies were sent: requests held back while the peer left too many
    /// unread ([`OUTPUT_HIGH_WATER`](super::OUTPUT_HIGH_WATER)) may go on.
    Sent,
    /// The answer to the command the session waits for.
    Answer(Answer),
    /// The running capture stopped by itself (interface gone, data
    /// connection closed): the session stops it and tells the peer why.
    CaptureFailed(String),
    /// The connection turned out to be TLS (known from its first byte): TCP
    /// data channels are then TLS too, and UDP data is refused.
    Tls,
    /// The connection is gone or the daemon stops: the capture ends.
    Shutdown,
}

/// Work for the driver, taken with [`Session::poll_command`](super::Session::poll_command).
#[derive(Debug)]
pub enum Command {
    /// For the capture host (see [`crate::host`]).
    Host(HostCommand),
    /// Check a password, off the thread that runs the sessions (argon2 and
    /// yescrypt take tens of ms); answer [`Answer::PasswordChecked`].
    CheckPassword(PasswordCheck),
    /// A passive client failed to authenticate: answer [`Answer::Hold`] with
    /// how long its reply is held (the delay grows per peer address across
    /// connections, so the driver keeps it).
    HoldFailedAuth,
    /// A passive client authenticated: its address's failures are forgotten.
    AuthSucceeded,
}

/// What the capture host does for a session. Each has an answer except
/// [`HostCommand::SetSampling`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCommand {
    /// Answer [`Answer::Interfaces`].
    ListInterfaces,
    /// The DLT of an interface: answer [`Answer::Linktype`].
    ReadLinktype(String),
    /// Answer [`Answer::Started`]; the capture belongs to this connection.
    StartCapture(Box<StartRequest>),
    /// Replace the running capture's filter: answer [`Answer::FilterUpdated`].
    UpdateFilter(Program),
    /// Retune the running capture's sampling; no answer.
    SetSampling(Sampling),
    /// The running capture's counters: answer [`Answer::Stats`].
    ReadStats,
    /// Stop the capture: answer [`Answer::Stopped`] with its final counters.
    Stop,
}

/// Why the host could not start or retune a capture. The session sends
/// its text to the peer as the RPCAP error.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error("TLS data channel requested but TLS is not configured")]
    TlsNotConfigured,
    #[error("cannot connect the data channel to {dest}: {source}")]
    Connect { dest: SocketAddr, source: io::Error },
    #[error("data listener: {0}")]
    Listener(io::Error),
    #[error("spawning the data accept thread: {0}")]
    Spawn(io::Error),
    /// A pending data channel failed (accept, TLS handshake, or the worker
    /// its thread started): that thread's message.
    #[error("{0}")]
    DataChannel(String),
    #[error("no capture is running")]
    NoCapture,
}

/// The answers to commands; errors become the text sent to the peer.
#[derive(Debug)]
pub enum Answer {
    Interfaces(Result<Vec<Interface>, String>),
    Linktype(Result<i32, String>),
    /// The capture started; the port of its data channel where we listen
    /// (passive TCP data), 0 otherwise.
    Started(Result<u16, HostError>),
    FilterUpdated(Result<(), HostError>),
    Stats(Stats),
    Stopped(Stats),
    PasswordChecked(bool),
    Hold(Duration),
}

impl Answer {
    /// What kind of answer, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Interfaces(_) => "interfaces",
            Answer::Linktype(_) => "link type",
            Answer::Started(_) => "capture started",
            Answer::FilterUpdated(_) => "filter updated",
            Answer::Stats(_) => "stats",
            Answer::Stopped(_) => "capture stopped",
            Answer::PasswordChecked(_) => "password checked",
            Answer::Hold(_) => "hold",
        }
    }
}

/// A password to check against the session's accounts.
pub struct PasswordCheck {
    pub auth: Arc<Authenticator>,
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl PasswordCheck {
    /// Runs the check here (what the driver's checker thread does).
    pub fn verify(&self) -> bool {
        self.auth.verify(&self.user, &self.password)
    }
}

impl std::fmt::Debug for PasswordCheck {
    /// Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}
