/*
 * A real third-party RPCAP client for xrpcapd's interop tests: libpcap's own
 * rpcap:// / rpcaps:// client code (pcap_findalldevs_ex, pcap_open,
 * pcap_stats, pcap_remoteact_accept_ex), built by scripts/libpcap-remote.sh
 * against upstream libpcap with remote capture on.
 *
 *   rpcap_client [OPTIONS] list SOURCE
 *   rpcap_client [OPTIONS] capture SOURCE OUTFILE
 *   rpcap_client [OPTIONS] active ADDR PORT [IFNAME OUTFILE]
 *
 * OPTIONS
 *   -u USER -p PASS   password authentication (default NULL authentication)
 *   -U                UDP data channel (PCAP_OPENFLAG_DATATX_UDP)
 *   -s                TLS in active mode (rpcaps://; `list`/`capture` take it
 *                     from the SOURCE scheme)
 *   -c COUNT          stop after COUNT packets (default 10)
 *   -f FILTER         capture filter (default "ip or not ip": libpcap 1.10.3
 *                     fails a remote capture without a filter)
 *   -I SECS           stop when no packet came for SECS once one came (default 3)
 *   -T SECS           stop after SECS in all (default 30)
 *
 * Output lines (stdout, flushed): `dev NAME|DESC|FLAGS`, `addr NAME FAMILY
 * ADDR NETMASK`, `connected HOST`, `capturing`, `captured N`,
 * `stats recv=R drop=D ifdrop=I`. Errors: `error: TEXT` on stderr, exit 2.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct pcap_rmtauth auth;
static int use_auth, udp, tls, count = 10, idle_secs = 3, total_secs = 30;
static const char *filter = "ip or not ip";

static void fail(const char *what, const char *text)
{
	fprintf(stderr, "error: %s: %s\n", what, text);
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_sockaddr(const struct sockaddr *sa, char *out, size_t len)
{
	snprintf(out, len, "-");
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, len);
}

static int list(const char *source)
{
	char errbuf[PCAP_ERRBUF_SIZE];
	pcap_if_t *devs, *d;
	pcap_addr_t *a;
	char addr[64], mask[64];

	if (pcap_findalldevs_ex(source, use_auth ? &auth : NULL, &devs, errbuf) != 0)
		fail("pcap_findalldevs_ex", errbuf);
	for (d = devs; d != NULL; d = d->next) {
		printf("dev %s|%s|0x%x\n", d->name, d->description ? d->description : "", d->flags);
		for (a = d->addresses; a != NULL; a = a->next) {
			print_sockaddr(a->addr, addr, sizeof addr);
			print_sockaddr(a->netmask, mask, sizeof mask);
			printf("addr %s %s %s %s\n", d->name,
			    a->addr && a->addr->sa_family == AF_INET6 ? "inet6" : "inet", addr, mask);
		}
	}
	pcap_freealldevs(devs);
	fflush(stdout);
	return 0;
}

static int capture(const char *source, const char *outfile)
{
	char errbuf[PCAP_ERRBUF_SIZE];
	struct bpf_program prog;
	struct pcap_pkthdr *h;
	const u_char *data;
	struct pcap_stat st;
	pcap_dumper_t *dump;
	pcap_t *p;
	int flags = udp ? PCAP_OPENFLAG_DATATX_UDP : 0, n = 0, rc;
	double start = now(), last = 0;

	p = pcap_open(source, 65535, flags, 100, use_auth ? &auth : NULL, errbuf);
	if (p == NULL)
		fail("pcap_open", errbuf);
	if (pcap_compile(p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) != 0)
		fail("pcap_compile", pcap_geterr(p));
	if (pcap_setfilter(p, &prog) != 0)
		fail("pcap_setfilter", pcap_geterr(p));
	pcap_freecode(&prog);
	dump = pcap_dump_open(p, outfile);
	if (dump == NULL)
		fail("pcap_dump_open", pcap_geterr(p));
	/* The first read starts the remote capture (STARTCAP + data channel). */
	while (n < count) {
		rc = pcap_next_ex(p, &h, &data);
		if (rc < 0)
			fail("pcap_next_ex", pcap_geterr(p));
		if (last == 0 && n == 0) {
			printf("capturing\n");
			fflush(stdout);
			last = -1;
		}
		if (rc == 1) {
			pcap_dump((u_char *)dump, h, data);
			n++;
			last = now();
		}
		if (now() - start > total_secs)
			break;
		if (last > 0 && now() - last > idle_secs)
			break;
	}
	pcap_dump_close(dump);
	printf("captured %d\n", n);
	if (pcap_stats(p, &st) != 0)
		fail("pcap_stats", pcap_geterr(p));
	printf("stats recv=%u drop=%u ifdrop=%u\n", st.ps_recv, st.ps_drop, st.ps_ifdrop);
	fflush(stdout);
	pcap_close(p);
	return 0;
}

static int active(const char *addr, const char *port, const char *ifname, const char *outfile)
{
	char errbuf[PCAP_ERRBUF_SIZE], host[PCAP_BUF_SIZE], source[PCAP_BUF_SIZE + 64];
	SOCKET s;

	s = pcap_remoteact_accept_ex(addr, port, "", host, use_auth ? &auth : NULL, tls, errbuf);
	if (s == INVALID_SOCKET)
		fail("pcap_remoteact_accept_ex", errbuf);
	printf("connected %s\n", host);
	fflush(stdout);
	snprintf(source, sizeof source, "%s%s/", tls ? "rpcaps://" : "rpcap://", host);
	list(source);
	if (ifname != NULL) {
		snprintf(source, sizeof source, "%s%s/%s", tls ? "rpcaps://" : "rpcap://", host, ifname);
		capture(source, outfile);
	}
	if (pcap_remoteact_close(host, errbuf) != 0)
		fail("pcap_remoteact_close", errbuf);
	return 0;
}

int main(int argc, char **argv)
{
	int opt;

	while ((opt = getopt(argc, argv, "u:p:Usc:f:I:T:")) != -1) {
		switch (opt) {
		case 'u': auth.username = optarg; use_auth = 1; break;
		case 'p': auth.password = optarg; use_auth = 1; break;
		case 'U': udp = 1; break;
		case 's': tls = 1; break;
		case 'c': count = atoi(optarg); break;
		case 'f': filter = optarg; break;
		case 'I': idle_secs = atoi(optarg); break;
		case 'T': total_secs = atoi(optarg); break;
		default: fail("usage", "see the comment at the top of rpcap_client.c");
		}
	}
	if (use_auth)
		auth.type = RPCAP_RMTAUTH_PWD;
	argc -= optind;
	argv += optind;
	if (argc == 2 && strcmp(argv[0], "list") == 0)
		return list(argv[1]);
	if (argc == 3 && strcmp(argv[0], "capture") == 0)
		return capture(argv[1], argv[2]);
	if ((argc == 3 || argc == 5) && strcmp(argv[0], "active") == 0)
		return active(argv[1], argv[2], argc == 5 ? argv[3] : NULL, argc == 5 ? argv[4] : NULL);
	fail("usage", "list SOURCE | capture SOURCE OUTFILE | active ADDR PORT [IFNAME OUTFILE]");
	return 2;
}
