// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// The contract between xrpcapd_xdp.c and the agent: everything user space
// writes into the program's maps or reads back from them. The Rust half is
// agent/src/capture/afxdp/abi.rs; its tests check the values here, the
// maps of the compiled object and the structs' layout in its BTF against
// that file. Change both together.
#ifndef XRPCAPD_ABI_H
#define XRPCAPD_ABI_H

#include <linux/types.h>

// Bytes of XDP metadata in front of a redirected frame: its arrival time,
// bpf_ktime_get_ns() (CLOCK_MONOTONIC ns, host order).
#define META_LEN 8

// Map sizes.
#define MAX_QUEUES 256    // xsks: one AF_XDP socket per RX queue
#define MAX_PREFIXES 256  // v4_prefixes, v6_prefixes
#define MAX_OWN_FLOWS 64  // own_flows
#define MAX_PORT_RANGES 16

// Keys: the one `struct rules` in `rules`, the translated filter's slot in
// the `filter_prog` prog array.
#define RULES_KEY 0
#define FILTER_SLOT 0

// Slots of the per-CPU `counters` array.
enum counter {
	C_SEEN = 0,         // every frame the program ran on
	C_REDIRECTED = 1,   // handed to bpf_redirect_map successfully
	C_PASSED = 2,       // left to the kernel stack (rules or own traffic)
	C_DROPPED = 3,      // dropped because RULE_DROP_REJECTED is set
	C_REDIRECT_ERR = 4, // matched, but no socket on this queue: passed instead
	C_OWN = 5,          // own traffic passed to the stack (also in C_PASSED)
	C_FILTERED = 6,     // rejected by the translated filter (also in C_PASSED/C_DROPPED)
	C_UNSTAMPED = 7,    // no room for the timestamp (driver without metadata)
	C_COUNT = 8,
};

// Rule flags (struct rules.flags).
#define RULE_ALL 0x1           // no pre-filter: redirect every frame
#define RULE_V4 0x2            // some IPv4 frame may match
#define RULE_V6 0x4            // some IPv6 frame may match
#define RULE_OTHER 0x8         // some other (or tagged) frame may match
#define RULE_V4_ANY_PROTO 0x10
#define RULE_V4_ANY_ADDR 0x20
#define RULE_V4_ANY_PORT 0x40
#define RULE_V6_ANY_PROTO 0x80
#define RULE_V6_ANY_PORT 0x100
#define RULE_DROP_REJECTED 0x200 // XDP_DROP instead of XDP_PASS for non-matches
#define RULE_OWN 0x400           // the own-traffic map has entries
#define RULE_V6_ANY_ADDR 0x800

struct port_range {
	__u16 lo; // host byte order, inclusive
	__u16 hi;
};

// The pre-filter, at key 0 of the `rules` array.
struct rules {
	__u32 flags;
	__u32 v4_nports;
	__u32 v6_nports;
	__u32 pad;
	__u64 v4_protos[4]; // bitmap over the 256 protocol numbers
	__u64 v6_protos[4];
	struct port_range v4_ports[MAX_PORT_RANGES];
	struct port_range v6_ports[MAX_PORT_RANGES];
};

// Keys of the LPM tries.
struct v4_key {
	__u32 prefixlen;
	__u32 addr; // network byte order
};

struct v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// One own-traffic flow. Zero address/port fields are wildcards: user space
// stores exact 5-tuples (control connection) and destination-only or
// source-only entries (data stream), and the program looks all three up.
struct flow {
	__u8 family; // 4 or 6
	__u8 proto;
	__u16 sport; // network byte order
	__u16 dport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

#endif
