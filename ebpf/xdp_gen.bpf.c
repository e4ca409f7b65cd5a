/* xdp_gen.bpf.c: an in-kernel traffic generator for bench/ (what xdp-trafficgen does, which fails to
 * load on Debian 12's xdp-tools). Run with BPF_PROG_RUN in live-frame mode on the generator's interface:
 * every repetition rewrites the frame from `gen_template` (pages are recycled with whatever the
 * receivers wrote into them), gives it the next of `flows` UDP source ports, and sends it (XDP_TX). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#define GEN_LEN 64

struct gen_template {
	__u8 bytes[GEN_LEN]; /* Ethernet + IPv4 + UDP + payload, as sent */
	__u32 flows;         /* source ports 1024 .. 1024 + flows - 1 */
	__u32 sport_offset;  /* where the UDP source port is in `bytes` */
};

/* gen_template: 0 -> the frame to send; written by the benchmark. Not pinned. */
BPF_ARRAY(gen_template, struct gen_template, 1);
/* gen_seq: 0 -> frames generated, per CPU; written here. */
BPF_PERCPU_ARRAY(gen_seq, __u32, 1);

int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_template *t = gen_template.lookup(&zero);
	__u32 *seq = gen_seq.lookup(&zero);
	if (!t || !seq || data + GEN_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, GEN_LEN);
	__u32 n = (*seq)++;
	__u32 off = t->sport_offset;
	if (off > GEN_LEN - 2 || !t->flows)
		return XDP_ABORTED;
	__u16 port = 1024 + n % t->flows;
	__u8 *p = data + off;
	if ((void *)(p + 2) > data_end)
		return XDP_ABORTED;
	p[0] = port >> 8;
	p[1] = port & 0xff;
	return XDP_TX;
}
