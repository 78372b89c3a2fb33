//! Agents on their own loopback addresses (127.x.y.z), so that a sensor
//! with `--receive-threads N` deals them over its threads by address.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A control connection to the sensor on 127.0.0.1:`port` from `ip`,
/// retried for 10 s while the sensor starts.
pub fn connect_from(ip: Ipv4Addr, port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        match s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()) {
            Ok(()) => return s.into(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect from {ip} to the sensor on {port}: {e}"),
        }
    }
}

/// The receive thread the sensor's reuseport program picks for `ip`.
pub fn thread_of(ip: Ipv4Addr, threads: usize) -> usize {
    u32::from(ip) as usize % threads
}
