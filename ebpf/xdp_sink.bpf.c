/* xdp_sink.bpf.c: counts and drops every packet (the receiving end of bench/ forwarding runs). */
#include <uapi/linux/bpf.h>

/* sink_count: 0 -> packets received, per CPU; written here, read by the benchmark. Not pinned. */
BPF_PERCPU_ARRAY(sink_count, __u64, 1);

int xdp_sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = sink_count.lookup(&zero);
	if (c)
		*c += 1;
	return XDP_DROP;
}
