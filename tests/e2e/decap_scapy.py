#!/usr/bin/env python3
"""Builds the tunnel packets of tests/e2e/decap.rs with Scapy, the
independent encapsulator for the tunnels this kernel has no device for
(GENEVE, GRE/TEB, ERSPAN II/III).

    decap_scapy.py KIND OUT_DIR DST_MAC SRC_MAC [VLAN]

KIND: geneve, geneve-ip (AWS GWLB's shape: an IP packet, no Ethernet),
gre, erspan2, erspan3; KIND+tag: the expected inner frames carry the
tunnel id as the agent's `+tag` inserts it (docs/tunnels.md): ERSPAN's
session in an 802.1Q tag, a VNI or GRE key in an 802.1ad tag (bits 23..12)
and an 802.1Q tag (bits 11..0), after the MAC addresses. Writes OUT_DIR/outer.pcap (every packet to send:
the matching ones, then one of another VNI/key/session and one cut short)
and OUT_DIR/inner.pcap (the inner frames the sensor must receive, in
order, byte for byte: for geneve-ip with the agent's synthesized Ethernet
header, zero MACs). With VLAN, the outer frames carry that 802.1Q tag.
Prints the number of foreign and malformed packets.
"""

import sys

from scapy.all import GRE, IP, UDP, Dot1Q, Ether, Raw, wrpcap
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions

COUNT = 40
OUTER_SRC, OUTER_DST = "10.200.1.1", "10.200.1.2"
MATCH, OTHER = 100, 200  # VNI / GRE key
SESSION, OTHER_SESSION = 5, 6


def inner_frame(i, ip_only=False):
    payload = bytes([(i * 7 + k) & 0xFF for k in range(20 + i * 13)])
    ip = IP(src="192.168.77.1", dst="192.168.77.2", id=i) / UDP(sport=4000, dport=7001) / Raw(payload)
    if ip_only:
        return ip
    return Ether(src="02:00:00:00:aa:01", dst="02:00:00:00:aa:02") / ip


def encap(kind, i, inner, foreign=False):
    vni = OTHER if foreign else MATCH
    session = OTHER_SESSION if foreign else SESSION
    if kind == "geneve":
        # One 8-byte option: the header length field must be honoured.
        opt = GeneveOptions(classid=0x0108, type=1, data=b"\x00\x00\x00\x01")
        t = UDP(sport=40000 + i, dport=6081) / GENEVE(vni=vni, proto=0x6558, options=[opt])
    elif kind == "geneve-ip":
        t = UDP(sport=40000 + i, dport=6081) / GENEVE(vni=vni, proto=0x0800)
    elif kind == "gre":
        t = GRE(key_present=1, key=vni, proto=0x6558)
    elif kind == "erspan2":
        t = GRE(seqnum_present=1, sequence_number=i, proto=0x88BE) / ERSPAN_II(session_id=session, index=i)
    elif kind == "erspan3":
        # Every other packet with the platform-specific subheader (O bit).
        o = i % 2
        t = GRE(seqnum_present=1, sequence_number=i, proto=0x22EB) / ERSPAN_III(
            session_id=session, timestamp=1000 + i, o=o
        )
        if o:
            t = t / ERSPAN_PlatformSpecific(platf_id=3, info1=0, info2=i)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return t / inner


def main():
    kind, out, dst_mac, src_mac = sys.argv[1:5]
    tag = kind.endswith("+tag")
    kind = kind.removesuffix("+tag")
    ip_only = kind == "geneve-ip"
    l2 = Ether(dst=dst_mac, src=src_mac)
    if len(sys.argv) > 5:
        l2 = l2 / Dot1Q(vlan=int(sys.argv[5]))
    outer_l2 = l2 / IP(src=OUTER_SRC, dst=OUTER_DST)
    outers, inners = [], []
    for i in range(COUNT):
        inner = inner_frame(i, ip_only)
        outers.append(outer_l2 / encap(kind, i, inner))
        if ip_only:
            expected = Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00", type=0x0800) / inner
        else:
            expected = inner
        if tag:
            raw = bytes(expected)
            if kind.startswith("erspan"):
                tags = b"\x81\x00" + SESSION.to_bytes(2, "big")
            else:
                tags = b"\x88\xa8" + (MATCH >> 12).to_bytes(2, "big") + b"\x81\x00" + (MATCH & 0xFFF).to_bytes(2, "big")
            expected = Ether(raw[:12] + tags + raw[12:])
        inners.append(expected)
    # Another VNI, key or session: counted as foreign, not forwarded.
    outers.append(outer_l2 / encap(kind, COUNT, inner_frame(COUNT, ip_only), foreign=True))
    # Cut inside the tunnel header (the IP length says so): malformed.
    whole = bytes(IP(src=OUTER_SRC, dst=OUTER_DST) / encap(kind, COUNT + 1, inner_frame(COUNT + 1, ip_only)))
    cut = bytearray(whole[: 20 + 10])
    cut[2:4] = (20 + 10).to_bytes(2, "big")
    ip_hdr = IP(bytes(cut))
    del ip_hdr.chksum
    if ip_hdr.proto == 17:
        ip_hdr[UDP].len = 10
        del ip_hdr[UDP].chksum
    outers.append(l2 / IP(bytes(ip_hdr)))
    wrpcap(f"{out}/outer.pcap", outers)
    wrpcap(f"{out}/inner.pcap", inners)
    print("foreign=1 malformed=1")


if __name__ == "__main__":
    main()
