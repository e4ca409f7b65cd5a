/* bench_bier.bpf.c: the BFR path of bier.bpf.c wrapped for BPF_PROG_TEST_RUN (bench/bier.py only),
 * compiled as one text after bier.bpf.c with -DDINET_BIER_NO_ENTRY. BPF_PROG_TEST_RUN repeats on the
 * same skb, and forwarding rewrites the MACs, the TTL and the bitstring; the wrappers save the first
 * BENCH_SAVE bytes and put them back after each run (two helper calls, in every figure alike). */
#define BENCH_SAVE (BS_OFF + 32)

/* bench_fwd: 0 -> the egress ifindex of the plain forward; written by the benchmark. Not pinned. */
BPF_ARRAY(bench_fwd, __u32, 1);

int tc_bier(struct __sk_buff *skb)
{
	if ((skb->mark & MARK_DECAP_MASK) == BIER_MARK_LOCAL)
		return finish_local(skb);
	return bfr(skb);
}

int tc_bfr_bench(struct __sk_buff *skb)
{
	__u8 saved[BENCH_SAVE];
	if (bpf_skb_load_bytes(skb, 0, saved, sizeof(saved)))
		return TC_ACT_SHOT;
	int rc = bfr(skb);
	bpf_skb_store_bytes(skb, 0, saved, sizeof(saved), 0);
	return rc;
}

/* The baseline: one copy out of one port with new MAC addresses, no BIER processing. */
int tc_fwd_bench(struct __sk_buff *skb)
{
	__u8 saved[BENCH_SAVE];
	__u32 zero = 0;
	__u32 *ifindex = bench_fwd.lookup(&zero);
	if (!ifindex || bpf_skb_load_bytes(skb, 0, saved, sizeof(saved)))
		return TC_ACT_SHOT;
	__u8 macs[12] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1};
	bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0);
	if (bpf_clone_redirect(skb, *ifindex, 0))
		bump(BIER_DROP_REDIRECT);
	else
		bump(BIER_EV_COPIES);
	bpf_skb_store_bytes(skb, 0, saved, sizeof(saved), 0);
	return TC_ACT_SHOT;
}
