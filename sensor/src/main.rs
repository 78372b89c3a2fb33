//! xrpcap-sensor: the reference RPCAP sensor.

fn main() {
    eprintln!("xrpcap-sensor: the sensor is not built yet (issue 3)");
    std::process::exit(2);
}
