//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP.
#![deny(unsafe_code)]

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use log::{error, info, warn};

use xrpcapd::control::tls;
use xrpcapd::control::{Control, Timing};
use xrpcapd::host::WorkerHost;
use xrpcapd::privileges::{self, Outcome};
use xrpcapd::settings::cli::Cli;
use xrpcapd::settings::{Backend, Config};
use xrpcapd::{auth, filter, iface, logging};

/// The file (if any) with the flags applied, checked as a whole.
fn effective_config(cli: &Cli, report_warnings: bool) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(path) => {
            let parsed = Config::load(path)?;
            if report_warnings {
                for w in &parsed.warnings {
                    warn!("{w}");
                    eprintln!("warning: {w}");
                }
            }
            parsed.config
        }
        None => Config::default(),
    };
    cli.apply(&mut cfg);
    if let Some(expr) = &cfg.local_filter {
        filter::check_local(expr).context("LocalFilter")?;
    }
    if let Backend::File(path) = &cfg.capture.backend {
        if !path.is_file() {
            bail!("Capture = file:{}: no such file", path.display());
        }
    }
    Ok(cfg)
}

/// `--hash-password`: one line from standard input, its hash on standard output.
fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("empty password");
    }
    println!("{}", auth::hash_password(password)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.hash_password {
        return hash_password();
    }
    if cli.list_interfaces {
        let list = iface::list().context("listing interfaces")?;
        print!("{}", iface::render(&list));
        return Ok(());
    }
    let cfg = effective_config(&cli, true)?;
    if cli.check_config {
        println!("{cfg}");
        return Ok(());
    }
    logging::init(cfg.log_level, cfg.syslog)?;
    info!("xrpcapd {} starting", env!("CARGO_PKG_VERSION"));
    if cfg.active_only && cfg.active_clients.is_empty() {
        bail!("no sensor to serve: -v (active only) needs ActiveClient lines (-f) or -a host,port");
    }
    if cfg.passive.udpstr && cfg.udpstr_size == 0 {
        warn!("PassiveUdpStr = YES with UdpStrSize = 0: passive clients get plain UDP");
    }
    // Loaded once: a reload keeps the running TLS configuration.
    let tls = tls::server_config(&cfg.tls).context("TLS")?;
    if tls.is_some() {
        info!("TLS {} (rpcaps://)", cfg.tls.effective_mode());
    }
    if cfg.null_auth {
        info!("NULL authentication permitted");
    }
    // Before any thread starts: capabilities are per thread.
    match privileges::apply(&cfg)? {
        Outcome::Unchanged => {}
        Outcome::Ignored(user) => warn!(
            "UserName = {user} ignored: not started as root (the systemd unit's User= decides)"
        ),
        Outcome::Dropped { user, caps } => {
            info!("running as {user} with {}", caps.join(" "))
        }
    }
    let host = WorkerHost::new(&cfg).with_tls(tls.clone());
    let reload_cli = cli.clone();
    let reload = Box::new(move || effective_config(&reload_cli, true));
    let mut control = Control::new(cfg.clone(), Timing::from_config(&cfg), host)?
        .with_tls(tls)
        .with_signals(reload)
        .context("installing signal handlers")?;
    let explicit = cli.passive_requested() || !cfg.passive.clients.is_empty();
    match control.listen() {
        Ok(_) => {}
        // Listening by default (no -b/-p/-4/-l/PassiveClient) must not stop
        // the active sessions when the port is taken.
        Err(e) if !explicit && !cfg.active_clients.is_empty() => {
            error!(
                "passive mode off: {e:#}; serving the ActiveClient sensors only (-v silences this)"
            )
        }
        Err(e) => return Err(e).context("passive mode (-v turns it off)"),
    }
    control.run()?;
    info!("xrpcapd stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("xrpcapd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
