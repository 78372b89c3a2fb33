//! SIGHUP (reload) and SIGTERM/SIGINT (stop) as readable sockets of the
//! event loop: the handlers only write a byte to a socket pair.

use std::io::{self, Read};

use anyhow::Context;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

/// Which signal a readable pipe stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGTERM or SIGINT: stop.
    Stop,
}

/// The read ends of the signal pipes.
pub struct Signals {
    hup: UnixStream,
    term: UnixStream,
}

impl Signals {
    /// Installs the handlers and registers the pipes under `hup_token` and
    /// `term_token`.
    pub fn install(
        registry: &Registry,
        hup_token: Token,
        term_token: Token,
    ) -> anyhow::Result<Signals> {
        let (hup_r, hup_w) = std::os::unix::net::UnixStream::pair().context("signal pipe")?;
        let (term_r, term_w) = std::os::unix::net::UnixStream::pair().context("signal pipe")?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, hup_w)
            .context("registering SIGHUP")?;
        let term_w2 = term_w.try_clone().context("signal pipe")?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, term_w)
            .context("registering SIGTERM")?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, term_w2)
            .context("registering SIGINT")?;
        for s in [&hup_r, &term_r] {
            s.set_nonblocking(true).context("signal pipe")?;
        }
        let mut hup = UnixStream::from_std(hup_r);
        let mut term = UnixStream::from_std(term_r);
        registry.register(&mut hup, hup_token, Interest::READABLE)?;
        registry.register(&mut term, term_token, Interest::READABLE)?;
        Ok(Signals { hup, term })
    }

    /// Empties the pipe of `which`; whether the signal came.
    pub fn drain(&mut self, which: Signal) -> bool {
        let pipe = match which {
            Signal::Reload => &mut self.hup,
            Signal::Stop => &mut self.term,
        };
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        got
    }
}
