/* bench_steer.bpf.c: xdp_steer wrapped for BPF_PROG_TEST_RUN benchmarks (bench/xdp_steer.py only).
 * BPF_PROG_TEST_RUN runs every repetition on the same buffer without resetting it, so after the first
 * repetition the program would see its own encapsulated output. These wrappers undo the encapsulation
 * after each run (one bpf_xdp_adjust_head and a 14-byte copy, counted in the figures, so they err on
 * the slow side); xdp_steer_miss also gives every repetition a new flow (client address and port from
 * a per-CPU sequence number) so that each one takes the new-flow path. */
/* Compiled as one text after steer.bpf.c, with -DDINET_STEER_NO_ENTRY (bcc rewrites map calls only in
 * its main text, so the steering code cannot come through #include). */

int xdp_steer(struct xdp_md *ctx)
{
	return steer(ctx);
}

/* bench_seq: 0 -> the next flow number, per CPU; written here. Not pinned. */
BPF_PERCPU_ARRAY(bench_seq, __u32, 1);

/* What the encapsulation does to the head of the frame, and nothing else: for measuring the undo. */
static __always_inline int push_only(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct ethhdr) + sizeof(struct iphdr) > data_end)
		return XDP_ABORTED;
	__builtin_memset(data, 0, sizeof(struct ethhdr) + sizeof(struct iphdr));
	return XDP_TX;
}

static __always_inline int run_and_restore(struct xdp_md *ctx, int probe)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr saved;
	if (data + sizeof(saved) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(&saved, data, sizeof(saved));
	long len_before = data_end - data; /* the tail does not move: the length grows by what was pushed */
	int action = probe ? push_only(ctx) : steer(ctx);
	long pushed = (long)((void *)(long)ctx->data_end - (void *)(long)ctx->data) - len_before;
	if (pushed > 0) {
		if (bpf_xdp_adjust_head(ctx, pushed))
			return XDP_ABORTED;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + sizeof(saved) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data, &saved, sizeof(saved));
	}
	return action;
}

int xdp_steer_hit(struct xdp_md *ctx)
{
	return run_and_restore(ctx, 0);
}

/* The harness alone: push the outer header's room, then undo it as the other wrappers do. Half of this
 * above the floor estimates what the undo adds to xdp_steer_hit and xdp_steer_miss. */
int xdp_undo_probe(struct xdp_md *ctx)
{
	return run_and_restore(ctx, 1);
}

/* Gives the frame (Ethernet, IPv4 without options, then TCP or UDP: the benchmark's) the next flow of a
 * per-CPU sequence n: source port port_base + (n & port_mask), the client address's low 16 bits from the rest
 * of n; then steers it and undoes the encapsulation. */
static __always_inline int next_flow(struct xdp_md *ctx, __u16 port_base, __u32 port_mask, int port_bits)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct udphdr *l4 = (void *)(iph + 1);
	if ((void *)(l4 + 1) > data_end)
		return XDP_ABORTED;
	__u32 zero = 0;
	__u32 *seq = bench_seq.lookup(&zero);
	if (!seq)
		return XDP_ABORTED;
	__u32 n = (*seq)++;
	l4->source = bpf_htons(port_base + (n & port_mask));
	iph->saddr = (iph->saddr & bpf_htonl(0xffff0000)) | bpf_htonl((n >> port_bits) & 0xffff);
	return run_and_restore(ctx, 0);
}

/* Every repetition a new flow. */
int xdp_steer_miss(struct xdp_md *ctx)
{
	return next_flow(ctx, 0, 0xffff, 16);
}

/* As xdp_steer_miss, to a session-affine service: every repetition a new flow from a session port
 * (61440 + n mod 4096, the client address from n / 4096), so that the 8 ports of a session group come in a
 * row: one flow in 8 places a new session, the other 7 find theirs. */
int xdp_steer_session_miss(struct xdp_md *ctx)
{
	return next_flow(ctx, DINET_SESSION_PORT_MIN, 4095, 12);
}
