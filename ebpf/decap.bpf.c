/* decap.bpf.c: XDP program of a steering tunnel endpoint (the host of a service instance, or a site's
 * egress node). An IP-in-IP packet (outer protocol 4 or 41, either outer family) addressed to one of
 * the endpoints in `endpoints` loses its outer header and goes up the local stack, where the VIP is a
 * local address; the instance answers the client directly. Everything else passes untouched. */
#include <uapi/linux/bpf.h>
#include "steer.h"
#include "parse.h"

#define PIN(name) DINET_PIN_DIR "/" #name

/* endpoints: endpoint_key -> 1 for each local tunnel endpoint; written by dinet. */
BPF_TABLE_PINNED("hash", struct endpoint_key, __u32, endpoints, DINET_MAX_ENDPOINTS, PIN(endpoints));
/* verdicts: DINET_DECAP_OK / DINET_DROP_DECAP_MALFORMED -> packets, per CPU; written here. */
BPF_TABLE_PINNED("percpu_array", __u32, __u64, verdicts, DINET_VERDICTS, PIN(verdicts));

static __always_inline int verdict(__u32 reason, int action)
{
	count_verdict(verdicts.lookup(&reason));
	return action;
}

int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct endpoint_key ek = {};
	__u8 inner_proto;
	int olen;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(DINET_ETHERTYPE_IPV4)) {
		struct iphdr *iph = (void *)(eth + 1);
		if ((void *)(iph + 1) > data_end)
			return XDP_PASS;
		if (iph->protocol != DINET_IPPROTO_IPIP && iph->protocol != DINET_IPPROTO_IPV6)
			return XDP_PASS;
		__builtin_memcpy(ek.addr.addr, &iph->daddr, 4);
		ek.family = DINET_AF_INET;
		if (!endpoints.lookup(&ek))
			return XDP_PASS;
		if (iph->ihl < 5 || (iph->frag_off & bpf_htons(0x3FFF)))
			return verdict(DINET_DROP_DECAP_MALFORMED, XDP_DROP);
		inner_proto = iph->protocol;
		olen = iph->ihl * 4;
	} else if (eth->h_proto == bpf_htons(DINET_ETHERTYPE_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		if (ip6->nexthdr != DINET_IPPROTO_IPIP && ip6->nexthdr != DINET_IPPROTO_IPV6)
			return XDP_PASS;
		__builtin_memcpy(ek.addr.addr, &ip6->daddr, 16);
		ek.family = DINET_AF_INET6;
		if (!endpoints.lookup(&ek))
			return XDP_PASS;
		inner_proto = ip6->nexthdr;
		olen = sizeof(*ip6);
	} else {
		return XDP_PASS;
	}

	/* The inner header must be there and of the family the outer header announced. */
	__u8 *inner = (void *)(eth + 1) + olen;
	if ((void *)(inner + 1) > data_end || (*inner >> 4) != (inner_proto == DINET_IPPROTO_IPIP ? 4 : 6))
		return verdict(DINET_DROP_DECAP_MALFORMED, XDP_DROP);

	struct ethhdr copy;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	copy.h_proto = bpf_htons(inner_proto == DINET_IPPROTO_IPIP ? DINET_ETHERTYPE_IPV4 : DINET_ETHERTYPE_IPV6);
	if (bpf_xdp_adjust_head(ctx, olen))
		return verdict(DINET_DROP_DECAP_MALFORMED, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return verdict(DINET_DROP_DECAP_MALFORMED, XDP_DROP);
	__builtin_memcpy(eth, &copy, sizeof(copy));
	return verdict(DINET_DECAP_OK, XDP_PASS);
}
