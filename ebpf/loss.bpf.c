/* loss.bpf.c: random loss on a link, for kernels without netem (lab link emulation). A TC program on an
 * interface's egress (or ingress) drops each packet with the configured probability, independently
 * (Bernoulli loss, as netem's "loss P%" without correlation), and counts what it passed and dropped.
 *
 * Frames that XDP redirects onto a veth skip TC, so links emulated this way carry the TC path. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

/* loss_cfg: 0 -> drop threshold (a packet is dropped when a uniform u32 falls below it: P * 2^32);
 * network byte order not involved (host u32). Written by dinet.lab.loss, read here. Not pinned. */
BPF_ARRAY(loss_cfg, __u32, 1);
/* loss_count: 0 -> packets passed, 1 -> packets dropped, per CPU; written here, read by dinet.lab.loss. */
BPF_PERCPU_ARRAY(loss_count, __u64, 2);

int tc_loss(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *threshold = loss_cfg.lookup(&zero);
	__u32 outcome = threshold && bpf_get_prandom_u32() < *threshold;
	__u64 *c = loss_count.lookup(&outcome);
	if (c)
		*c += 1;
	/* TC_ACT_UNSPEC, not TC_ACT_OK: the programs after this one on the hook (BIER, steering) still run */
	return outcome ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
