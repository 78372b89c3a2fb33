//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use log::{info, warn};

use xrpcapd::cli::Cli;
use xrpcapd::config::Config;
use xrpcapd::control::{Control, Timing};
use xrpcapd::host::WorkerHost;
use xrpcapd::{filter, iface, logging};

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
    if let xrpcapd::datapath::Backend::File(path) = &cfg.backend {
        if !path.is_file() {
            bail!("Capture = file:{}: no such file", path.display());
        }
    }
    Ok(cfg)
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
    if !cfg.active_only {
        let p = &cfg.passive;
        let how = if cli.passive_requested() || !p.clients.is_empty() {
            "requested"
        } else {
            "the default without -v"
        };
        warn!(
            "passive mode ({how}: listen on {}:{}) is not implemented yet; serving active sessions only",
            p.bind.as_deref().unwrap_or("*"),
            p.port
        );
    }
    if let Some(user) = &cfg.user_name {
        warn!("UserName = {user} is not implemented: xrpcapd keeps its user (use systemd User= and capabilities)");
    }
    if cfg.active_clients.is_empty() {
        bail!("no sensor to serve: give ActiveClient lines (-f) or -a host,port (passive mode is not implemented yet)");
    }
    let host = WorkerHost::new(&cfg);
    let reload_cli = cli.clone();
    let reload = Box::new(move || effective_config(&reload_cli, true));
    let mut control = Control::new(cfg.clone(), Timing::from_config(&cfg), host)?
        .with_signals(reload)
        .context("installing signal handlers")?;
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
