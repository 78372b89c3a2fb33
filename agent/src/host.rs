//! The daemon's [`CaptureHost`]: real interfaces and datapath [`Worker`]s.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use rpcap::bpf::Insn;
use rpcap::msg::{Interface, Sampling, Stats};

use crate::config::Config;
use crate::datapath::{Backend, CaptureSpec, Transport, Worker, XdpSpec};
use crate::iface;
use crate::session::{CaptureHost, DataChannel, StartRequest};

/// How long connecting a TCP data channel to the sensor may take.
const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts captures with the datapath, as configured.
#[derive(Debug)]
pub struct WorkerHost {
    backend: Backend,
    send_buffer: usize,
    ring_size: usize,
    cpus: Vec<usize>,
    next_cpu: usize,
    dry_run: bool,
}

impl WorkerHost {
    pub fn new(cfg: &Config) -> WorkerHost {
        WorkerHost {
            backend: cfg.backend.clone(),
            send_buffer: cfg.send_buffer,
            ring_size: cfg.ring_size,
            cpus: cfg.worker_cpus.clone(),
            next_cpu: 0,
            dry_run: cfg.dry_run,
        }
    }

    /// The CPUs of `WorkerCpu`, handed out in turn.
    fn pick_cpu(&mut self) -> Option<usize> {
        let cpu = self
            .cpus
            .get(self.next_cpu % self.cpus.len().max(1))
            .copied();
        self.next_cpu = self.next_cpu.wrapping_add(1);
        cpu
    }
}

impl CaptureHost for WorkerHost {
    type Capture = Worker;

    fn interfaces(&mut self) -> io::Result<Vec<Interface>> {
        iface::list()
    }

    /// With `Capture = file:PATH` every name opens the file: its link type.
    fn linktype(&mut self, ifname: &str) -> io::Result<i32> {
        match &self.backend {
            Backend::AfPacket | Backend::AfXdp(_) => iface::linktype(ifname),
            Backend::File(path) => pcap::Capture::from_file(path)
                .map(|c| c.get_datalink().0)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display()))),
        }
    }

    fn start(&mut self, req: StartRequest) -> Result<Worker, String> {
        let transport = match req.data {
            DataChannel::UdpStr { dest, size } => Transport::UdpStr { dest, size },
            DataChannel::PlainUdp { dest } => Transport::PlainUdp { dest },
            DataChannel::TcpConnect { dest } => {
                let stream = TcpStream::connect_timeout(&dest, DATA_CONNECT_TIMEOUT)
                    .map_err(|e| format!("cannot connect the data channel to {dest}: {e}"))?;
                Transport::Tcp(stream)
            }
        };
        let backend = match &self.backend {
            // AF_XDP only where the operator named it (or as the default).
            Backend::AfXdp(x) if x.covers(&req.ifname) => Backend::AfXdp(XdpSpec {
                own: Some(req.own),
                ..x.clone()
            }),
            Backend::AfXdp(_) => Backend::AfPacket,
            b => b.clone(),
        };
        let spec = CaptureSpec {
            ifname: req.ifname,
            backend,
            snaplen: req.snaplen,
            promisc: req.promisc,
            read_timeout: req.read_timeout,
            filter: req.filter,
            sampling: req.sampling,
            transport,
            sndbuf: self.send_buffer,
            ring_bytes: self.ring_size,
            cpu: self.pick_cpu(),
            dry_run: self.dry_run,
        };
        Worker::start(spec).map_err(|e| e.to_string())
    }

    fn update_filter(&mut self, cap: &mut Worker, filter: Vec<Insn>) -> Result<(), String> {
        cap.update_filter(filter).map_err(|e| e.to_string())
    }

    fn set_sampling(&mut self, cap: &mut Worker, sampling: Sampling) {
        cap.set_sampling(sampling)
    }

    fn stats(&mut self, cap: &Worker) -> Stats {
        cap.stats()
    }

    fn failure(&mut self, cap: &Worker) -> Option<String> {
        cap.failure()
    }

    fn stop(&mut self, cap: Worker) -> Stats {
        cap.stop()
    }

    fn reconfigure(&mut self, cfg: &Config) {
        *self = WorkerHost::new(cfg);
    }
}
