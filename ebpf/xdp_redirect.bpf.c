/* xdp_redirect.bpf.c (bench only): every frame out of one port, MACs rewritten, nothing looked up. The
 * limit of any XDP forwarding program on bench/xdp_steer.py's veth path: steering is measured against it. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>

struct redirect_cfg {
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
};

/* redirect_cfg: 0 -> where frames go and with which MACs; written by the benchmark. Not pinned. */
BPF_ARRAY(redirect_cfg, struct redirect_cfg, 1);

int xdp_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct redirect_cfg *cfg = redirect_cfg.lookup(&zero);

	if (!cfg || (void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, cfg->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->smac, ETH_ALEN);
	return bpf_redirect(cfg->ifindex, 0);
}
