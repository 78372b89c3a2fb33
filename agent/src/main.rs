//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use log::{error, info, warn};

use xrpcapd::control::tls;
use xrpcapd::control::{Control, Timing};
use xrpcapd::host::WorkerHost;
use xrpcapd::privileges::{self, Outcome, PrivilegeError};
use xrpcapd::settings::cli::{Cli, Command};
use xrpcapd::settings::{
    Backend, Config, Environment, Explained, LoadError, Loaded, NO_SENSOR_WARNING,
};
use xrpcapd::{auth, filter, iface, logging, metrics, status};

/// Exit status of a configuration error (EX_CONFIG of sysexits.h): the
/// unit's `RestartPreventExitStatus=78` does not restart into it again.
const EX_CONFIG: u8 = 78;

/// Why xrpcapd stops with an error: the configuration (exit 78) or anything
/// else (exit 1).
enum Failure {
    Config(anyhow::Error),
    Other(anyhow::Error),
    /// `-d`'s starting process: the daemon's answer is printed, exit with it.
    Exit(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// The effective configuration and the sources it was read from.
struct Effective {
    config: Config,
    loaded: Loaded,
}

/// The files (if any: main file, then its drop-ins) and the `XRPCAPD_*`
/// variables of the process, without the flags.
fn load_sources(cli: &Cli) -> Result<Loaded, LoadError> {
    Config::load_all(
        cli.config.as_deref(),
        cli.config_dir.as_deref(),
        &Environment::from_process(),
    )
}

/// The files (if any: main file, then its drop-ins), then the environment
/// (`XRPCAPD_*`), then the flags, checked as a whole. A reload reads the
/// same environment (a process's does not change).
fn effective_config(cli: &Cli, report_warnings: bool) -> anyhow::Result<Effective> {
    let loaded = load_sources(cli)?;
    if report_warnings {
        for w in &loaded.warnings {
            logging::warn(&w.to_string());
        }
    }
    let mut cfg = loaded.config.clone();
    cli.apply(&mut cfg);
    if let Some(expr) = &cfg.local_filter {
        filter::check_local(expr).context("LocalFilter")?;
    }
    for t in &cfg.tunnel_clients {
        if t.ifname.is_none() {
            bail!("TunnelClient = {t}: which interface? add ifname=IF (or -i IFNAME)");
        }
        if let Some(f) = &t.filter {
            filter::check_local(f).with_context(|| format!("TunnelClient = {t}: filter="))?;
        }
    }
    if let Backend::File(path) = &cfg.capture.backend {
        if !path.is_file() {
            bail!("Capture = file:{}: no such file", path.display());
        }
    }
    if cli.config.is_none() && cfg.no_sensor() {
        bail!(
            "no sensor to serve: -v (active only) needs ActiveClient lines (-f FILE, \
             XRPCAPD_ACTIVE_CLIENT) or -a host,port"
        );
    }
    Ok(Effective {
        config: cfg,
        loaded,
    })
}

/// What an operator must hear about a configuration that is valid, at
/// start, at each reload and in `--check-config`.
fn config_warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if cfg.no_sensor() {
        w.push(NO_SENSOR_WARNING.to_string());
    }
    w.extend(cfg.null_auth_warning());
    w.extend(preselection_warnings(cfg));
    w
}

/// ActiveClient preselections that match no interface now: their sensors'
/// OPEN requests are refused (ExtraHop's rpcapd serves every interface).
fn preselection_warnings(cfg: &Config) -> Vec<String> {
    if !cfg.active_clients.iter().any(|c| c.preselect.is_set()) {
        return Vec::new();
    }
    match iface::list() {
        Ok(ifaces) => iface::unmatched_preselections(&cfg.active_clients, &ifaces),
        Err(e) => vec![format!(
            "cannot list the interfaces to check the preselections: {e}"
        )],
    }
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

/// Inetd mode: the connection on standard input, which then (with standard
/// output and error, the same socket under inetd and systemd's
/// StandardInput=socket) is pointed at /dev/null, as libpcap's rpcapd -i does.
fn inetd_socket() -> anyhow::Result<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("inetd mode: duplicating standard input")?;
    let stream = std::net::TcpStream::from(fd);
    stream.peer_addr().context(
        "inetd mode (-i without IFNAME, --inetd): standard input must be a connected TCP socket",
    )?;
    sys::process::stdio_to_dev_null().context("inetd mode: standard streams to /dev/null")?;
    Ok(stream)
}

/// `--pid-file`: written at start, removed at exit.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> anyhow::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `xrpcapd status`: the table of the agent on the status socket
/// (`--status-socket`, else `StatusSocket` of `-f FILE` or of
/// `XRPCAPD_STATUS_SOCKET`, else the default).
fn status_command(cli: &Cli) -> Result<(), Failure> {
    let socket = match &cli.status_socket {
        Some(s) => s.clone(),
        None => {
            load_sources(cli)
                .map_err(|e| Failure::Config(e.into()))?
                .config
                .status_socket
        }
    };
    let Some(path) = socket.path() else {
        return Err(Failure::Config(anyhow::anyhow!(
            "StatusSocket = none: this agent has no status socket"
        )));
    };
    let text = status::query(&path)
        .with_context(|| format!("no xrpcapd running? cannot connect to {}", path.display()))?;
    print!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<(), Failure> {
    if cli.command == Some(Command::Status) {
        return status_command(&cli);
    }
    if cli.hash_password {
        return Ok(hash_password()?);
    }
    if cli.list_interfaces {
        let list = iface::list().context("listing interfaces")?;
        print!("{}", iface::render(&list));
        return Ok(());
    }
    if cli.daemon && cli.inetd_mode() {
        return Err(Failure::Config(anyhow::anyhow!(
            "-d (daemon) and -i without IFNAME (inetd mode) cannot be used together"
        )));
    }
    let Effective {
        config: cfg,
        loaded,
    } = effective_config(&cli, true).map_err(Failure::Config)?;
    if let Some(path) = &cli.save_config {
        // As the references: a file that cannot be written is no reason not to serve.
        if let Err(e) = std::fs::write(path, format!("{cfg}\n")) {
            logging::warn(&format!("-s {}: {e}", path.display()));
        }
    }
    if cli.check_config {
        use std::fmt::Write as _;
        let mut out = String::new();
        for f in &loaded.files {
            let _ = writeln!(out, "# read {}", f.display());
        }
        if !loaded.env.is_empty() {
            let _ = writeln!(out, "# environment: {}", loaded.env.join(" "));
        }
        let explained = Explained {
            loaded: &loaded,
            config: &cfg,
        };
        let _ = writeln!(out, "{explained}");
        for w in config_warnings(&cfg) {
            let _ = writeln!(out, "# WARNING: {w}");
            eprintln!("warning: {w}");
        }
        for n in cli.notices() {
            let _ = writeln!(out, "# notice: {n}");
            eprintln!("notice: {n}");
        }
        // A reader that stops early (`| head`) is no failure of the check.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
        return Ok(());
    }
    // Loaded before forking: a bad certificate fails the start itself.
    let tls = tls::server_config(&cfg.tls)
        .context("TLS")
        .map_err(Failure::Config)?;
    let inetd = if cli.inetd_mode() {
        Some(inetd_socket()?)
    } else {
        None
    };
    // Before any thread starts (fork keeps only the calling one).
    let mut readiness = None;
    if cli.daemon {
        match sys::process::daemonize().context("becoming a daemon (-d)")? {
            sys::process::Forked::Parent { code, message } => {
                if !message.is_empty() {
                    eprintln!("xrpcapd: {message}");
                }
                return Err(Failure::Exit(code));
            }
            sys::process::Forked::Daemon(r) => readiness = Some(r),
        }
    }
    let result = serve(&cli, cfg, &loaded, tls, inetd, &mut readiness);
    if let (Err(f), Some(r)) = (&result, readiness.take()) {
        match f {
            Failure::Config(e) => r.failed(EX_CONFIG, &format!("{e:#}")),
            Failure::Other(e) => r.failed(1, &format!("{e:#}")),
            Failure::Exit(code) => r.failed(*code, ""),
        }
    }
    result
}

/// Runs the agent once the process is what it should be (a daemon, the
/// inetd socket in hand); `readiness` is answered once it serves.
fn serve(
    cli: &Cli,
    mut cfg: Config,
    loaded: &Loaded,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    inetd: Option<std::net::TcpStream>,
    readiness: &mut Option<sys::process::Readiness>,
) -> Result<(), Failure> {
    let _pid_file = cli.pid_file.as_deref().map(PidFile::write).transpose()?;
    // Standard error is /dev/null for a daemon and the client's socket in
    // inetd mode: syslog, when there is one (as libpcap's rpcapd -d and -i).
    let detached = cli.daemon || inetd.is_some();
    let syslog = cfg.syslog || (detached && Path::new("/dev/log").exists());
    logging::init(cfg.log_level, syslog)?;
    info!("xrpcapd {} starting", env!("CARGO_PKG_VERSION"));
    for f in &loaded.files {
        info!("configuration read from {}", f.display());
    }
    if !loaded.env.is_empty() {
        info!("configuration read from {}", loaded.env.join(", "));
    }
    for n in cli.notices() {
        warn!("{n}");
    }
    let mut start_warnings = Vec::new();
    if inetd.is_some() {
        // One client, the one on standard input: no sensors, no listener.
        cfg.active_clients.clear();
        cfg.tunnel_clients.clear();
    } else {
        start_warnings = config_warnings(&cfg);
        for w in &start_warnings {
            warn!("{w}");
        }
    }
    if cfg.passive.udpstr && cfg.udpstr_size == 0 {
        warn!("PassiveUdpStr = YES with UdpStrSize = 0: passive clients get plain UDP");
    }
    if tls.is_some() {
        info!("TLS {} (rpcaps://)", cfg.tls.effective_mode());
    }
    if cfg.null_auth {
        info!("NULL authentication permitted");
    }
    // Before any thread starts, so that every thread inherits it; before
    // the privileges drop, which takes CAP_SYS_NICE away.
    if let Some(n) = cli.nice_value() {
        match sys::process::set_nice(n) {
            Ok(()) => info!("nice {n} (-e)"),
            Err(e) => warn!("-e {n}: {e}; running at the inherited nice value"),
        }
    }
    // Before any thread starts: capabilities are per thread.
    let outcome = privileges::apply(&cfg).map_err(|e| match e {
        PrivilegeError::NoSuchUser(_) => Failure::Config(e.into()),
        e => Failure::Other(e.into()),
    })?;
    match outcome {
        Outcome::Unchanged => {}
        Outcome::Ignored(user) => warn!(
            "UserName = {user} ignored: not started as root (the systemd unit's User= decides)"
        ),
        Outcome::Dropped { user, caps } => {
            info!("running as {user} with {}", caps.join(" "))
        }
    }
    // After the privileges drop: the HTTP thread holds no capability.
    let published = metrics::Published::default();
    let endpoint = match cfg.metrics_listen {
        // One process per connection: the port is not ours to take.
        Some(addr) if inetd.is_some() => {
            warn!("MetricsListen = {addr} ignored in inetd mode");
            None
        }
        Some(addr) => {
            let ep = metrics::serve(addr, published.clone())
                .with_context(|| format!("metrics endpoint on {addr} (MetricsListen)"))?;
            info!("metrics on http://{}/metrics", ep.addr);
            Some(ep)
        }
        None => None,
    };
    // The status socket: none in inetd mode (one process per connection).
    let board = status::Board::default();
    let status_server = if inetd.is_some() {
        None
    } else {
        status::open(&cfg.status_socket, &board).context("status socket (StatusSocket)")?
    };
    if let Some(s) = &status_server {
        info!("status on {} (xrpcapd status)", s.path().display());
        board.set_warnings(start_warnings);
    }
    let host = WorkerHost::new(&cfg).with_tls(tls.clone());
    let reload_cli = cli.clone();
    let one_client = inetd.is_some();
    let metrics_at = cfg.metrics_listen;
    let status_at = cfg.status_socket.clone();
    let reload_board = board.clone();
    let reload = Box::new(move || {
        let mut cfg = effective_config(&reload_cli, true)?.config;
        if one_client {
            cfg.active_clients.clear();
            cfg.tunnel_clients.clear();
        }
        if cfg.metrics_listen != metrics_at {
            let show =
                |a: Option<std::net::SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
            warn!(
                "MetricsListen = {} takes effect at the next start (the endpoint stays at {})",
                show(cfg.metrics_listen),
                show(metrics_at)
            );
        }
        if cfg.status_socket != status_at {
            warn!("StatusSocket changed: it takes effect at the next start");
        }
        let warnings = config_warnings(&cfg);
        for w in &warnings {
            warn!("{w}");
        }
        reload_board.set_warnings(warnings);
        Ok(cfg)
    });
    let mut control = Control::new(cfg.clone(), Timing::from_config(&cfg), host)?
        .with_tls(tls)
        .with_signals(reload)
        .context("installing signal handlers")?;
    if endpoint.is_some() {
        control = control.with_metrics(published);
    }
    if status_server.is_some() {
        control = control.with_status(board);
    }
    if let Some(stream) = inetd {
        control.serve_one(stream)?;
    } else {
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
            Err(e) => return Err(e.context("passive mode (-v turns it off)").into()),
        }
    }
    if let Some(r) = readiness.take() {
        r.ready();
    }
    control.run()?;
    info!("xrpcapd stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A flag's bad value is a configuration error; usage errors stay
            // clap's (2), --help and --version succeed.
            use clap::error::ErrorKind;
            let bad_value = matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            );
            let _ = e.print();
            return if bad_value {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::from(e.exit_code() as u8)
            };
        }
    };
    let (code, e) = match run(cli) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Config(e)) => (ExitCode::from(EX_CONFIG), e),
        Err(Failure::Other(e)) => (ExitCode::FAILURE, e),
        Err(Failure::Exit(code)) => return ExitCode::from(code),
    };
    log::error!("{e:#}");
    eprintln!("xrpcapd: {e:#}");
    code
}
