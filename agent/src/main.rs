//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP.

#[allow(dead_code)]
mod capture;
#[allow(dead_code)]
mod datapath;

fn main() {
    eprintln!("xrpcapd: the agent is not built yet (issue 4)");
    std::process::exit(2);
}
