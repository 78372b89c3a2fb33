//! Differential tests: our validator and interpreter against libpcap on
//! every expression of `xrpcap_testkit::bpf_corpus::EXPRS`, optimized and not.

use proptest::prelude::*;
use rpcap::bpf::{validate, Program};
use xrpcap_testkit::bpf_corpus::{compile, frame, PcapFile, Pkt, Rng, EXPRS};

/// The dead handle's snaplen: what libpcap's programs return on accept.
const DEAD_SNAPLEN: u32 = 65535;

struct Compiled {
    expr: &'static str,
    optimize: bool,
    ours: Program,
    theirs: pcap::BpfProgram,
}

thread_local! {
    // pcap::BpfProgram is not Sync: one set per test thread.
    static COMPILED: Vec<Compiled> = compile_all();
}

fn compiled<R>(f: impl FnOnce(&[Compiled]) -> R) -> R {
    COMPILED.with(|c| f(c))
}

fn compile_all() -> Vec<Compiled> {
    {
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("dead handle");
        let mut v = Vec::new();
        for &expr in EXPRS {
            for optimize in [true, false] {
                let ours = Program::new(compile(expr, optimize))
                    .unwrap_or_else(|e| panic!("{expr:?} (optimize {optimize}): {e}"));
                let theirs = cap.compile(expr, optimize).expect("compile");
                v.push(Compiled {
                    expr,
                    optimize,
                    ours,
                    theirs,
                });
            }
        }
        v
    }
}

#[test]
fn every_libpcap_program_validates() {
    assert!(EXPRS.len() >= 40);
    compiled(|all| {
        for c in all {
            assert_eq!(validate(c.ours.insns()), Ok(()), "{}", c.expr);
            assert!(c.ours.insns().len() > 1, "{}", c.expr);
        }
    })
}

/// Runs every compiled expression on `pkts` through a pcap file read back by
/// libpcap (so caplen < wirelen is honoured) and through our interpreter.
/// Returns per expression how many packets were accepted.
fn assert_same_as_libpcap(pkts: &[Pkt]) -> Vec<usize> {
    let file = PcapFile::write(pkts);
    let mut accepted = Vec::new();
    compiled(|all| {
        for c in all {
            let theirs = file.libpcap_accepts(c.expr, c.optimize, pkts.len());
            let mut n = 0;
            for (p, &want) in pkts.iter().zip(&theirs) {
                let got = c.ours.run(&p.data, p.wirelen);
                assert!(
                got == if want { DEAD_SNAPLEN } else { 0 },
                "{:?} (optimize {}): ours {got}, libpcap accepts {want}, wirelen {}, caplen {}, packet {:02x?}",
                c.expr,
                c.optimize,
                p.wirelen,
                p.data.len(),
                p.data
            );
                n += usize::from(want);
            }
            accepted.push(n);
        }
    });
    accepted
}

#[test]
fn same_verdicts_as_libpcap_on_generated_frames() {
    let mut rng = Rng(0x5eed_b9f0);
    let pkts: Vec<Pkt> = (0..20000).map(|_| frame(&mut rng)).collect();
    let accepted = assert_same_as_libpcap(&pkts);
    // The frames must exercise both outcomes of every expression, or the
    // comparison proves little.
    compiled(|all| {
        for (c, n) in all.iter().zip(accepted) {
            assert!(
                n > 0 && n < pkts.len(),
                "{:?}: {n} of {} accepted — generator misses a case",
                c.expr,
                pkts.len()
            );
        }
    })
}

#[test]
fn same_verdicts_as_pcap_offline_filter() {
    // pcap's BpfProgram::filter runs pcap_offline_filter with caplen = len.
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let p = frame(&mut rng);
        compiled(|all| {
            for c in all {
                let ours = c.ours.run(&p.data, p.data.len() as u32) != 0;
                assert_eq!(
                    ours,
                    c.theirs.filter(&p.data),
                    "{:?} on {:02x?}",
                    c.expr,
                    p.data
                );
            }
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_same_as_libpcap(data in proptest::collection::vec(any::<u8>(), 0..160)) {
        compiled(|all| for c in all {
            let ours = c.ours.run(&data, data.len() as u32) != 0;
            assert_eq!(ours, c.theirs.filter(&data), "{:?} on {:02x?}", c.expr, data);
        })
    }

    #[test]
    fn random_frames_same_as_libpcap(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let pkts: Vec<Pkt> = (0..64).map(|_| frame(&mut rng)).collect();
        assert_same_as_libpcap(&pkts);
    }
}
