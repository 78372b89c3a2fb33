//! `and_then(a, b)` against libpcap's own "(a) and (b)", and its exact
//! semantics (RET A, fresh registers and scratch memory for `second`).

use rpcap::bpf::opcode::*;
use rpcap::bpf::{and_then, validate, Insn, Program, ValidateError, MAX_INSNS};
use xrpcap_testkit::bpf_corpus::{compile, frame, PcapFile, Pkt, Rng, EXPRS};

fn s(code: u16, k: u32) -> Insn {
    Insn::stmt(code, k)
}

fn frames(seed: u64, n: usize) -> Vec<Pkt> {
    let mut rng = Rng(seed);
    (0..n).map(|_| frame(&mut rng)).collect()
}

/// Asserts that `prog` accepts exactly the packets of `want`.
fn assert_verdicts(prog: &Program, what: &str, want: &[bool], pkts: &[Pkt]) -> usize {
    for (p, &want) in pkts.iter().zip(want) {
        let got = prog.run(&p.data, p.wirelen);
        assert_eq!(
            got != 0,
            want,
            "{what}: ours {got} on {:02x?} (wirelen {})",
            p.data,
            p.wirelen
        );
    }
    want.iter().filter(|&&t| t).count()
}

fn both(a: &[bool], b: &[bool]) -> Vec<bool> {
    a.iter().zip(b).map(|(x, y)| *x && *y).collect()
}

/// libpcap's "(a) and (b)" equals "a accepts and b accepts" unless a
/// keyword of `a` shifts the offsets of what follows it (vlan, mpls, pppoes,
/// geneve).
fn shifts_offsets(expr: &str) -> bool {
    ["vlan", "mpls", "pppoes", "geneve"]
        .iter()
        .any(|k| expr.contains(k))
}

#[test]
fn pairs_match_libpcap_conjunction() {
    let pkts = frames(7, 3000);
    let file = PcapFile::write(&pkts);
    // Every 3rd expression against every 4th, parts optimized or not.
    let alone: Vec<Vec<bool>> = EXPRS
        .iter()
        .map(|e| file.libpcap_accepts(e, true, pkts.len()))
        .collect();
    let mut nonempty = 0;
    let mut pairs = 0;
    for (i, a) in EXPRS.iter().enumerate().step_by(2) {
        for (j, b) in EXPRS.iter().enumerate().skip(1).step_by(3) {
            let (oa, ob) = (i % 4 == 0, j % 3 != 0);
            let prog = and_then(&compile(a, oa), &compile(b, ob)).expect("compose");
            assert_eq!(validate(prog.insns()), Ok(()));
            let want = both(&alone[i], &alone[j]);
            let what = format!("{a:?} then {b:?}");
            nonempty += usize::from(assert_verdicts(&prog, &what, &want, &pkts) > 0);
            if !shifts_offsets(a) {
                let conj = format!("({a}) and ({b})");
                assert_eq!(
                    want,
                    file.libpcap_accepts(&conj, true, pkts.len()),
                    "{conj}"
                );
            }
            pairs += 1;
        }
    }
    assert!(pairs >= 500, "{pairs}");
    // Enough pairs with a non-empty conjunction for the test to mean something.
    assert!(nonempty * 3 > pairs, "{nonempty} of {pairs}");
}

#[test]
fn chains_match_libpcap() {
    let pkts = frames(8, 3000);
    let file = PcapFile::write(&pkts);
    // The agent's use: the sensor's filter, then own-traffic exclusion, then
    // a local filter.
    let chains: [[&str; 3]; 4] = [
        [
            "tcp or udp",
            "not (host 10.1.2.3 and udp port 2003)",
            "not port 22",
        ],
        ["ip", "not net 10.0.0.0/8", "len > 100"],
        [
            "vlan and tcp",
            "vlan and tcp[tcpflags] & tcp-syn != 0",
            "vlan and ip[8] > 1",
        ],
        ["ip6 or arp", "not ip6 host 2001:db8::1", "greater 60"],
    ];
    for [a, b, c] in chains {
        let ab = and_then(&compile(a, true), &compile(b, false)).unwrap();
        let abc = and_then(ab.insns(), &compile(c, true)).unwrap();
        let want: Vec<bool> = [a, b, c]
            .iter()
            .map(|e| file.libpcap_accepts(e, true, pkts.len()))
            .reduce(|x, y| both(&x, &y))
            .unwrap();
        let n = assert_verdicts(&abc, &format!("{a} / {b} / {c}"), &want, &pkts);
        assert!(n > 0, "{a} / {b} / {c} accepts nothing");
    }
}

#[test]
fn returns_seconds_value() {
    let first = [s(RET_K, 96)];
    let prog = and_then(&first, &[s(RET_K, 1500)]).unwrap();
    assert_eq!(prog.run(&[], 0), 1500);
    let prog = and_then(&[s(RET_K, 0)], &[s(RET_K, 1500)]).unwrap();
    assert_eq!(prog.run(&[], 0), 0);
    // A second that rejects rejects.
    let prog = and_then(&first, &[s(RET_K, 0)]).unwrap();
    assert_eq!(prog.run(&[], 0), 0);
}

#[test]
fn ret_a_of_first_accepts_only_when_non_zero() {
    // first returns the packet's first byte.
    let first = [s(LD_B_ABS, 0), s(RET_A, 0)];
    let second = [s(RET_K, 77)];
    let prog = and_then(&first, &second).unwrap();
    assert_eq!(prog.run(&[0], 1), 0);
    assert_eq!(prog.run(&[5], 1), 77);
    assert_eq!(prog.run(&[0xff], 1), 77);
    assert_eq!(prog.run(&[], 1), 0, "first's load fails");
    // Mixed RET K and RET A, with a jump of first over both.
    let first = [
        s(LD_B_ABS, 0),
        Insn::jump(JMP_JGT_K, 10, 0, 1),
        s(RET_K, 1), // > 10: accept
        s(RET_A, 0), // ≤ 10: accept iff non-zero
    ];
    let prog = and_then(&first, &second).unwrap();
    for (b, want) in [(0u8, 0), (3, 77), (10, 77), (11, 77), (200, 77)] {
        assert_eq!(prog.run(&[b], 1), want, "{b}");
    }
}

#[test]
fn second_starts_with_fresh_registers_and_memory() {
    // first dirties A, X and M[2], M[15] and accepts.
    let first = [
        s(LD_IMM, 9),
        s(ST, 2),
        s(LDX_IMM, 7),
        s(STX, 15),
        s(RET_K, 1),
    ];
    // second returns 50 when A, X, M[2] and M[15] are all 0, else 60.
    let second = [
        s(ALU_OR_X, 0),
        s(ST, 0),
        s(LD_MEM, 2),
        s(LDX_MEM, 15),
        s(ALU_OR_X, 0),
        s(LDX_MEM, 0),
        s(ALU_OR_X, 0),
        Insn::jump(JMP_JEQ_K, 0, 0, 1),
        s(RET_K, 50),
        s(RET_K, 60),
    ];
    assert_eq!(Program::new(second.to_vec()).unwrap().run(&[], 0), 50);
    let prog = and_then(&first, &second).unwrap();
    assert_eq!(prog.run(&[], 0), 50);
    // Only the two words first writes are cleared: ld #0, st M[2], st M[15], ldx #0.
    assert_eq!(prog.insns().len(), first.len() + 4 + second.len());
}

#[test]
fn inputs_are_validated_and_length_capped() {
    let bad = [s(ST, 16), s(RET_K, 1)];
    let ok = [s(RET_K, 1)];
    assert_eq!(
        and_then(&bad, &ok),
        Err(ValidateError::BadMemIndex { pc: 0, k: 16 })
    );
    assert_eq!(
        and_then(&ok, &bad),
        Err(ValidateError::BadMemIndex { pc: 0, k: 16 })
    );
    assert_eq!(and_then(&[], &ok), Err(ValidateError::Empty));
    let mut big = vec![s(LD_IMM, 0); MAX_INSNS - 4];
    big.push(s(RET_K, 1));
    // big + ld #0 + ldx #0 + ret = MAX_INSNS: fits; one more does not.
    assert_eq!(and_then(&big, &ok).unwrap().insns().len(), MAX_INSNS);
    assert_eq!(
        and_then(&big, &[s(LD_IMM, 0), s(RET_K, 1)]),
        Err(ValidateError::TooLong(MAX_INSNS + 1))
    );
}

#[test]
fn accept_all_is_neutral() {
    let pkts = frames(9, 500);
    for expr in ["tcp port 80", "ip6 and udp", "vlan"] {
        let p = compile(expr, true);
        let all = Program::accept_all();
        let left = and_then(all.insns(), &p).unwrap();
        let right = and_then(&p, all.insns()).unwrap();
        let alone = Program::new(p).unwrap();
        for pkt in &pkts {
            let want = alone.run(&pkt.data, pkt.wirelen);
            assert_eq!(left.run(&pkt.data, pkt.wirelen), want);
            assert_eq!(right.run(&pkt.data, pkt.wirelen) != 0, want != 0);
        }
    }
}
