/* bier_xdp.bpf.c: the XDP alternative for BIER replication, kept for bench/bier.py's comparison with the TC
 * program (bier.bpf.c), which dinet uses. xdp_bier_bcast sends every BIER frame to all ports of `bier_ports`
 * at once (XDP_REDIRECT with BPF_F_BROADCAST); each port's devmap program xdp_bier_egress rewrites its copy
 * to bitstring AND that port's F-BM, or drops it when they do not intersect. What this cannot do is hand a
 * decapsulated copy to the local stack in the same pass (one verdict per frame), nor clear bits from what
 * remains for the next neighbour; with disjoint F-BMs the per-port AND gives the same copies. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include "bier.h"

#define BS_OFF (ETH_HLEN + BIER_BIFT_WORD_LEN + BIER_FIXED_LEN)

struct port_entry {
	struct bier_bits fbm;
	__u8 smac[6];
	__u8 dmac[6];
};

/* bier_ports: slot -> egress port and its devmap program; written by the benchmark. */
BPF_XDP_REDIRECT_MAP("devmap", struct bpf_devmap_val, bier_ports, 16);
/* port_fbm: egress ifindex -> F-BM and MAC addresses; written by the benchmark. */
BPF_HASH(port_fbm, __u32, struct port_entry, 16);

int xdp_bier_bcast(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *h = data + ETH_HLEN;
	if (data + BS_OFF + 8 > data_end || ((struct ethhdr *)data)->h_proto != bpf_htons(DINET_ETHERTYPE_BIER))
		return XDP_PASS;
	if ((h[4] >> 4) != BIER_NIBBLE || (h[5] >> 4) != BIER_BSL_64 || h[3] <= 1)
		return XDP_DROP;
	return bier_ports.redirect_map(0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

int xdp_bier_egress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 ifindex = ctx->egress_ifindex;
	struct port_entry *p = port_fbm.lookup(&ifindex);
	if (!p || data + BS_OFF + 8 > data_end)
		return XDP_DROP;
	__u64 *bs = data + BS_OFF;
	__u64 m = *bs & p->fbm.w[0];
	if (!m)
		return XDP_DROP;
	*bs = m;
	__u8 *ttl = data + ETH_HLEN + 3;
	*ttl -= 1;
	__builtin_memcpy(data, p->dmac, 6);
	__builtin_memcpy(data + 6, p->smac, 6);
	return XDP_PASS;
}
