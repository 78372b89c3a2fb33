//! SIGHUP (reload) and SIGTERM/SIGINT (stop) as one readable descriptor of
//! the event loop: the process's signal self-pipe (`sys::signal`, the same
//! the sensor uses), registered under one token.

use std::os::fd::AsRawFd;

use anyhow::Context;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use sys::signal::{SignalPipe, SIGHUP, SIGINT, SIGTERM};

/// What the signals that arrived ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// SIGHUP: reload the configuration.
    pub reload: bool,
    /// SIGTERM or SIGINT: stop.
    pub stop: bool,
}

/// The read end of the signal pipe.
pub struct Signals {
    pipe: SignalPipe,
}

impl Signals {
    /// Installs the handlers and registers the pipe under `token`.
    pub fn install(registry: &Registry, token: Token) -> anyhow::Result<Signals> {
        let pipe = SignalPipe::install(&[SIGHUP, SIGTERM, SIGINT]).context("signal pipe")?;
        registry
            .register(&mut SourceFd(&pipe.as_raw_fd()), token, Interest::READABLE)
            .context("registering the signal pipe")?;
        Ok(Signals { pipe })
    }

    /// Empties the pipe: what the signals in it ask for.
    pub fn drain(&mut self) -> Asked {
        let caught = self.pipe.drain();
        Asked {
            reload: caught.contains(SIGHUP),
            stop: caught.contains(SIGTERM) || caught.contains(SIGINT),
        }
    }
}
