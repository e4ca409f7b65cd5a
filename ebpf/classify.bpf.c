/* classify.bpf.c: a link's traffic classes (lab link emulation): at an interface's TC egress, the class of each
 * packet from its DSCP (IPv4's TOS byte, IPv6's traffic class; a steering tunnel's outer header carries the
 * inner one), written to skb->priority as the HTB class (major 1) the interface's root qdisc queues it in.
 * HTB takes skb->priority as the class when it names one of its leaves, so no tc filter is needed. A packet of
 * a DSCP no class claims, or not IP, goes to HTB's default class. Counts packets per class.
 *
 * Runs before the root qdisc (the clsact egress hook of __dev_queue_xmit); the link emulator's delay line sends
 * through the qdisc (AF_PACKET without PACKET_QDISC_BYPASS), so its frames are classified too. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include "dinet_consts.h"

/* class_of: DSCP (0-63) -> HTB class minor number (0: the default class); written by dinet.lab.classes. */
BPF_ARRAY(class_of, __u32, 64);
/* class_count: HTB class minor number >> 4 (0-15: the classes are 1:10, 1:20, ... in tc's hex) -> packets, per
 * CPU; written here. */
BPF_PERCPU_ARRAY(class_count, __u64, 16);

int tc_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 dscp = 64; /* none */
	if ((void *)(eth + 1) + 2 <= data_end) {
		__u8 *ip = (void *)(eth + 1);
		if (eth->h_proto == bpf_htons(DINET_ETHERTYPE_IPV4) && (ip[0] >> 4) == 4)
			dscp = ip[1] >> 2;
		else if (eth->h_proto == bpf_htons(DINET_ETHERTYPE_IPV6) && (ip[0] >> 4) == 6)
			dscp = ((ip[0] & 0x0f) << 2) | (ip[1] >> 6);
	}
	__u32 minor = 0;
	if (dscp < 64) {
		__u32 *m = class_of.lookup(&dscp);
		if (m)
			minor = *m;
	}
	__u32 idx = (minor >> 4) & 15;
	__u64 *c = class_count.lookup(&idx);
	if (c)
		*c += 1;
	if (minor)
		skb->priority = (1 << 16) | minor;
	/* TC_ACT_UNSPEC: the programs after this one on the hook (loss, a cut) still run */
	return TC_ACT_UNSPEC;
}
