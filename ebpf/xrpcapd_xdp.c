// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// xrpcapd's XDP program: the kernel half of the `afxdp` capture source.
//
// For every frame that arrives on the interface it decides between two
// outcomes:
//   - redirect into the AF_XDP socket bound to the frame's RX queue (the
//     XSKMAP slot of that queue), where xrpcapd's worker picks it up;
//   - pass it on to the kernel stack (XDP_PASS), untouched.
//
// The decision is a conservative pre-filter. User space derives the rules
// from the capture's cBPF program (xdpc/src/rules.rs) so that
// every frame the cBPF program could accept is redirected. The rules may let
// through MORE than the filter accepts, never less; what they let through
// then goes to the exact filter: the cBPF program translated into eBPF and
// tail-called from here (filter_prog), or, when it cannot be translated,
// the worker's cBPF interpreter on each redirected frame.
//
// To stay exact, the rules compare the very bytes the cBPF program reads:
// fixed offsets in an untagged frame (ethertype at 12, IPv4 protocol at 23,
// addresses at 26/30, ports right after the IPv4 header; IPv6 next header at
// 20, addresses at 22/38, ports at 54/56). A VLAN-tagged frame never satisfies a cBPF test of
// ethertype 0x0800/0x86dd at offset 12, so it is judged by the "other" class.
// The parser still walks 802.1Q/QinQ tags and the common IPv6 extension
// headers: the own-traffic exclusion and the per-frame counters use them.
//
// Own traffic (the agent's control connection and data stream to the sensor)
// is never redirected: it must reach the host's stack, or the agent would cut
// its own connection to the sensor when that runs over the captured link.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#include "xrpcapd_abi.h"

// --- The few libbpf definitions we need (no libbpf headers required). ---
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;
static long (*bpf_tail_call)(void *ctx, void *map, __u32 index) = (void *)12;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_xdp_adjust_meta)(struct xdp_md *ctx, int delta) = (void *)54;

#define bswap16(x) __builtin_bswap16(x)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define htons(x) __builtin_bswap16(x)
#else
#define htons(x) (x)
#endif

// --- Maps (names and shapes are part of the contract: agent/src/capture/afxdp/abi.rs). ---

// One AF_XDP socket per RX queue.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// The capture's cBPF filter translated into eBPF by user space
// (xdpc/src/translate.rs), in slot FILTER_SLOT when it translates exactly.
// It ends the frame's run itself: accept → redirect into `xsks` and count,
// reject → count C_FILTERED and pass (or drop). An empty slot makes the tail
// call fall through to the redirect below, and user space runs the filter.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} filter_prog SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rules);
} rules SEC(".maps");

// IPv4 prefixes: a frame matches when its source or destination is inside one.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct v4_key);
	__type(value, __u8);
} v4_prefixes SEC(".maps");

// IPv6 prefixes: as v4_prefixes, for the addresses at 22/38 of the frame.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct v6_key);
	__type(value, __u8);
} v6_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_OWN_FLOWS);
	__type(key, struct flow);
	__type(value, __u8);
} own_flows SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		*c += 1;
}

// Reads a big-endian u16 at `off` if the frame holds it.
static __always_inline int load16(void *data, void *end, __u32 off, __u16 *out)
{
	if (off > 4096)
		return 0;
	__u8 *p = (__u8 *)data + off;
	if ((void *)(p + 2) > end)
		return 0;
	*out = ((__u16)p[0] << 8) | p[1];
	return 1;
}

static __always_inline int bit_set(const __u64 *bitmap, __u8 v)
{
	return (bitmap[(v >> 6) & 3] >> (v & 63)) & 1;
}

static __always_inline int in_ranges(const struct port_range *r, __u32 n, __u16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_PORT_RANGES; i++) {
		if (i < n && port >= r[i].lo && port <= r[i].hi)
			return 1;
	}
	return 0;
}

// The port dimension: either 16-bit word at `off` and `off + 2` in a range.
// A frame too short to hold them cannot satisfy the cBPF test either, but we
// let it through anyway: never stricter than the filter.
static __always_inline int ports_match(void *data, void *end, __u32 off,
				       const struct port_range *r, __u32 n)
{
	__u16 a, b;
	if (!load16(data, end, off, &a) || !load16(data, end, off + 2, &b))
		return 1;
	return in_ranges(r, n, a) || in_ranges(r, n, b);
}

static __always_inline int v4_addr_match(__u32 addr)
{
	struct v4_key k = {.prefixlen = 32, .addr = addr};
	return bpf_map_lookup_elem(&v4_prefixes, &k) != 0;
}

static __always_inline int v6_addr_match(const struct in6_addr *addr)
{
	struct v6_key k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&v6_prefixes, &k) != 0;
}

static __always_inline int own_lookup(struct flow *f)
{
	if (bpf_map_lookup_elem(&own_flows, f))
		return 1;
	// Destination only (datagrams to the sensor; TCP data to the sensor).
	struct flow d = *f;
	d.sport = 0;
	__builtin_memset(d.saddr, 0, 16);
	if (bpf_map_lookup_elem(&own_flows, &d))
		return 1;
	// Source only (TCP data from the sensor).
	struct flow s = *f;
	s.dport = 0;
	__builtin_memset(s.daddr, 0, 16);
	return bpf_map_lookup_elem(&own_flows, &s) != 0;
}

// IPv4 decision for an untagged frame.
static __always_inline int v4_matches(const struct rules *r, void *data, void *end,
				      struct iphdr *ip, int *own)
{
	__u32 ihl = (__u32)ip->ihl * 4;
	__u32 l4 = sizeof(struct ethhdr) + ihl;
	int first_fragment = (ip->frag_off & htons(0x1fff)) == 0;

	if (r->flags & RULE_OWN) {
		struct flow f = {.family = 4, .proto = ip->protocol};
		__builtin_memcpy(f.saddr, &ip->saddr, 4);
		__builtin_memcpy(f.daddr, &ip->daddr, 4);
		if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) && first_fragment) {
			__u16 sp, dp;
			if (load16(data, end, l4, &sp) && load16(data, end, l4 + 2, &dp)) {
				f.sport = htons(sp);
				f.dport = htons(dp);
				if (own_lookup(&f)) {
					*own = 1;
					return 0;
				}
			}
		} else if (!first_fragment) {
			// Later fragments of our own datagrams: destination only, no ports.
			if (own_lookup(&f)) {
				*own = 1;
				return 0;
			}
		}
	}

	if (r->flags & RULE_ALL)
		return 1;
	if (!(r->flags & RULE_V4))
		return 0;
	if (!(r->flags & RULE_V4_ANY_PROTO) && !bit_set(r->v4_protos, ip->protocol))
		return 0;
	if (!(r->flags & RULE_V4_ANY_ADDR) && !v4_addr_match(ip->saddr) &&
	    !v4_addr_match(ip->daddr))
		return 0;
	// The cBPF port test reads the two words right after the IPv4 header
	// (ldxb 4*([14]&0xf); ldh [x+14] / [x+16]) whatever the fragment offset.
	if (!(r->flags & RULE_V4_ANY_PORT) &&
	    !ports_match(data, end, l4, r->v4_ports, r->v4_nports))
		return 0;
	return 1;
}

// Walks the common IPv6 extension headers; returns the upper-layer protocol
// and its offset (0 when the chain is too long or truncated).
static __always_inline __u8 v6_upper(void *data, void *end, __u8 next, __u32 *off)
{
#pragma unroll
	for (int i = 0; i < 6; i++) {
		__u8 *h = (__u8 *)data + *off;
		if ((void *)(h + 8) > end)
			return 0;
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			next = h[0];
			*off += ((__u32)h[1] + 1) * 8;
			break;
		case IPPROTO_FRAGMENT:
			// Only the first fragment carries the upper-layer header.
			if ((((__u16)h[2] << 8) | h[3]) & 0xfff8)
				return 0;
			next = h[0];
			*off += 8;
			break;
		case IPPROTO_AH:
			next = h[0];
			*off += ((__u32)h[1] + 2) * 4;
			break;
		default:
			return next;
		}
		if (*off > 1024)
			return 0;
	}
	return 0;
}

// IPv6 decision for an untagged frame.
static __always_inline int v6_matches(const struct rules *r, void *data, void *end,
				      struct ipv6hdr *ip6, int *own)
{
	__u32 off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	__u8 upper = v6_upper(data, end, ip6->nexthdr, &off);

	// Own traffic only without extension headers: the cBPF exclusion
	// (libpcap's "tcp"/"udp" on IPv6) recognises exactly that form.
	if ((r->flags & RULE_OWN) &&
	    (ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP)) {
		__u16 sp, dp;
		if (load16(data, end, off, &sp) && load16(data, end, off + 2, &dp)) {
			struct flow f = {.family = 6, .proto = ip6->nexthdr};
			f.sport = htons(sp);
			f.dport = htons(dp);
			__builtin_memcpy(f.saddr, &ip6->saddr, 16);
			__builtin_memcpy(f.daddr, &ip6->daddr, 16);
			if (own_lookup(&f)) {
				*own = 1;
				return 0;
			}
		}
	}

	if (r->flags & RULE_ALL)
		return 1;
	if (!(r->flags & RULE_V6))
		return 0;
	// The cBPF test reads the next header at offset 20; libpcap also looks
	// behind a fragment header. Match either the first or the upper protocol.
	if (!(r->flags & RULE_V6_ANY_PROTO) && !bit_set(r->v6_protos, ip6->nexthdr) &&
	    !(upper && bit_set(r->v6_protos, upper)))
		return 0;
	// The cBPF address tests read the fixed header (22/38): no extension
	// header moves them.
	if (!(r->flags & RULE_V6_ANY_ADDR) && !v6_addr_match(&ip6->saddr) &&
	    !v6_addr_match(&ip6->daddr))
		return 0;
	if (!(r->flags & RULE_V6_ANY_PORT)) {
		__u32 fixed = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
		int hit = ports_match(data, end, fixed, r->v6_ports, r->v6_nports);
		if (!hit && upper && off != fixed)
			hit = ports_match(data, end, off, r->v6_ports, r->v6_nports);
		if (!hit)
			return 0;
	}
	return 1;
}

// Stamps a frame about to be redirected with its arrival time: AF_XDP
// descriptors carry none, and the worker reads the rings in rounds, up to
// tens of milliseconds apart. bpf_ktime_get_ns() (CLOCK_MONOTONIC) goes
// into 8 bytes of XDP metadata right in front of the frame; AF_XDP copy
// mode copies the metadata with the frame (in front of the first buffer
// of a multi-buffer frame) and zero-copy leaves it where it is, so user
// space finds it in the 8 bytes before the frame in its UMEM chunk
// (agent/src/capture/afxdp/socket.rs) and turns it into wall-clock time. A driver
// without metadata support refuses the room (bpf_xdp_adjust_meta fails):
// the frame goes on unstamped, counted, and user space, which zeroes the
// word after reading it, sees 0 and stamps the frame with its read time.
_Static_assert(META_LEN == sizeof(__u64), "the stamp is one __u64");

static __always_inline void stamp(struct xdp_md *ctx)
{
	__u64 now = bpf_ktime_get_ns();

	if (bpf_xdp_adjust_meta(ctx, -META_LEN) == 0) {
		__u64 *meta = (void *)(long)ctx->data_meta;
		if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
			*meta = now;
			return;
		}
	}
	count(C_UNSTAMPED);
}

// "xdp.frags": loaded with BPF_F_XDP_HAS_FRAGS (multi-buffer aware), so
// it may run on frames longer than a page (jumbo MTU in native mode) and
// redirect them to AF_XDP sockets bound with XDP_USE_SG. Every read above
// is bounded by data_end, i.e. looks at the first buffer only, which holds
// the headers (the drivers and generic XDP put at least a page there); a
// first buffer that held less would be judged like a truncated frame,
// i.e. redirected when in doubt. Later fragments are never read here.
// The loader patches the name back to "xdp" for kernels that predate
// frags (Linux < 5.18, see agent/src/capture/afxdp/program.rs).
SEC("xdp.frags")
int xrpcapd_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 rules_key = RULES_KEY;
	int match = 1, own = 0;

	count(C_SEEN);
	struct rules *r = bpf_map_lookup_elem(&rules, &rules_key);
	if (!r) {
		count(C_PASSED);
		return XDP_PASS;
	}

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end) {
		// Runt frame: the cBPF program may still accept it (ld len).
		match = (r->flags & (RULE_ALL | RULE_OTHER)) != 0;
		goto decide;
	}

	__u16 proto = eth->h_proto;
	if (proto == htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5) {
			match = (r->flags & (RULE_ALL | RULE_V4)) != 0;
			goto decide;
		}
		match = v4_matches(r, data, end, ip, &own);
	} else if (proto == htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end) {
			match = (r->flags & (RULE_ALL | RULE_V6)) != 0;
			goto decide;
		}
		match = v6_matches(r, data, end, ip6, &own);
	} else {
		// Everything else, VLAN-tagged (802.1Q, QinQ) frames included:
		// the cBPF program sees the tag at offset 12 too, so no IP rule of
		// an untagged form can hold. Only an "other" path may accept it.
		match = (r->flags & (RULE_ALL | RULE_OTHER)) != 0;
	}

decide:
	if (own) {
		count(C_OWN);
		count(C_PASSED);
		return XDP_PASS;
	}
	if (!match) {
		if (r->flags & RULE_DROP_REJECTED) {
			count(C_DROPPED);
			return XDP_DROP;
		}
		count(C_PASSED);
		return XDP_PASS;
	}
	// Stamped before the filter: its accept path redirects too, and the
	// time is the frame's arrival, not the end of the filter's work.
	stamp(ctx);
	// The exact filter decides from here when it is installed (no return).
	bpf_tail_call(ctx, &filter_prog, FILTER_SLOT);
	// XDP_PASS as the fallback action: no socket on this queue.
	long act = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (act == XDP_REDIRECT) {
		count(C_REDIRECTED);
	} else {
		count(C_REDIRECT_ERR);
		count(C_PASSED);
	}
	return act;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
