//! xrpcapd: captures the frames of chosen interfaces and forwards them to a
//! remote sensor over RPCAP.

fn main() {
    eprintln!("xrpcapd: the agent is not built yet (issue 4)");
    std::process::exit(2);
}
