/* bier.bpf.c: BIER forwarding (RFC 8279) with the RFC 8296 encapsulation over Ethernet (EtherType 0xAB37),
 * a TC ingress program on every interface of a BFR. One program plays every role:
 *   BFIR  an IP packet matching `bfir` ((S,G), (*,G), or a model-sync UDP destination) gets a BIER header
 *         per set and is forwarded per the BIFT;
 *   BFR   a BIER packet is copied once to each neighbour whose F-BM intersects the bitstring, the copy's
 *         bitstring being bitstring AND F-BM, and those bits are cleared from what remains (RFC 8279 s6.5);
 *   BFER  where the node's own bit is set, the packet is also decapsulated and delivered locally.
 * and, as the baseline BIER is compared with, SR-P2MP trees over SR-MPLS (root, replication node, leaf,
 * and SR unicast between replication nodes: the tree section below).
 * Replication: transit frames with at least BIER_XDP_MIN_FANOUT copies to send take the XDP fast path
 * (xdp_bier: one BPF_F_BROADCAST redirect to every BIER port, xdp_bier_port keeping each port's copy);
 * everything else is replicated here in TC with bpf_clone_redirect, which also hands a decapsulated copy
 * to the local stack in the same pass. Measured with live frames (bench/bier.py, input frames/s fully
 * replicated, 8 ports, fan-out 1/2/4/8): XDP always 381k/389k/316k/318k, TC alone 626k/326k/271k/122k,
 * the two together (XDP from 3 copies) 764k/401k/305k/267k.
 * Local delivery takes two passes: bpf_skb_adjust_room refuses an skb whose protocol is not IP, so the
 * copy is first re-injected at this interface's ingress labelled as the inner protocol (skb->mark carries
 * the header length), and the second pass removes the BIER header from what is now an IP skb. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include "bier.h"

#define PIN(name) DINET_PIN_DIR "/" #name
#define BIFT_OFF ETH_HLEN
#define BIER_OFF (ETH_HLEN + BIER_BIFT_WORD_LEN)
#define BS_OFF (BIER_OFF + BIER_FIXED_LEN)
#define MARK_DECAP_MASK 0xFFFFFF00

/* bift: BIFT-id -> bift_entry; written by dinet. */
BPF_TABLE_PINNED("hash", __u32, struct bift_entry, bift, BIER_MAX_BIFT, PIN(bift));
/* bfir: bfir_key -> bfir_entry; written by dinet. */
BPF_TABLE_PINNED("hash", struct bfir_key, struct bfir_entry, bfir, BIER_MAX_BFIR, PIN(bfir));
/* bier_port_down: ifindex -> when its port went down; written by dinet's link monitor (fast reroute). */
BPF_TABLE_PINNED("hash", __u32, __u64, bier_port_down, BIER_MAX_PORTS, PIN(bier_port_down));
/* bier_counters: BIER_* event or drop -> packets, per CPU; written here. */
BPF_TABLE_PINNED("percpu_array", __u32, __u64, bier_counters, BIER_COUNTERS, PIN(bier_counters));
/* bier_ports: slot -> a BIER port (ifindex) and its devmap program (xdp_bier_port); written by dinet with the
 * BIFT. The XDP fast path broadcasts transit frames to every port here but the one they came in on. */
struct bier_ports_table_t {
	__u32 key;
	struct bpf_devmap_val leaf;
	u64 (*redirect_map)(int, int);
	__u32 max_entries;
};
__attribute__((section("maps/devmap:" PIN(bier_ports)))) struct bier_ports_table_t bier_ports = {
	.max_entries = BIER_MAX_NEIGHBORS * 4};
/* bier_cfg: 0 -> the smallest fan-out the XDP fast path takes (0: BIER_XDP_MIN_FANOUT); 1 -> how many of the
 * node's ports are down (fast reroute); written by dinet. */
BPF_TABLE_PINNED("array", __u32, __u32, bier_cfg, 2, PIN(bier_cfg));
/* tree_segment, tree_node, tree_root: the SR-P2MP tree baseline (bier.h); written by dinet. */
BPF_TABLE_PINNED("hash", __u32, struct tree_segment, tree_segment, TREE_MAX_SEGMENTS, PIN(tree_segment));
BPF_TABLE_PINNED("hash", __u32, struct tree_hop, tree_node, TREE_MAX_NODES, PIN(tree_node));
BPF_TABLE_PINNED("hash", struct bfir_key, struct tree_root, tree_root, TREE_MAX_ROOTS, PIN(tree_root));
/* if_tx: egress ifindex -> copies sent there, per CPU; written here. */
BPF_TABLE_PINNED("percpu_hash", __u32, __u64, if_tx, 256, PIN(if_tx));

static __always_inline void bump(__u32 idx)
{
	__u64 *c = bier_counters.lookup(&idx);
	if (c)
		*c += 1;
}

static __always_inline int drop(__u32 reason)
{
	bump(reason);
	return TC_ACT_SHOT;
}

static __always_inline void count_tx(__u32 ifindex)
{
	__u64 one = 1;
	__u64 *c = if_tx.lookup(&ifindex);
	if (c)
		*c += 1;
	else
		if_tx.update(&ifindex, &one);
}

/* Bitstring bytes of a BSL code (1, 2, 3 = 64, 128, 256 bits), written so the verifier sees the bound. */
static __always_inline __u32 bs_bytes(__u32 bsl)
{
	__u32 n = 8;
	if (bsl == BIER_BSL_128)
		n = 16;
	else if (bsl == BIER_BSL_256)
		n = 32;
	return n;
}

static __always_inline __u64 any_bits(struct bier_bits *b)
{
	return b->w[0] | b->w[1] | b->w[2] | b->w[3];
}

/* Sends one copy per neighbour whose F-BM intersects `rem` (RFC 8279 s6.5), the copy carrying
 * rem AND F-BM and the BIFT-id word `word0`; clears each F-BM from `rem`. Returns the copies sent. */
static __always_inline int replicate(struct __sk_buff *skb, struct bift_entry *e, struct bier_bits *rem, __u32 bsl,
				     __u32 word0)
{
	__be32 w0 = bpf_htonl(word0);
	__u32 bs_len = bs_bytes(bsl);
	int sent = 0;
	if (bpf_skb_store_bytes(skb, BIFT_OFF, &w0, sizeof(w0), 0))
		return 0;
	for (__u32 i = 0; i < BIER_MAX_NEIGHBORS; i++) {
		if (i >= e->n_nbr)
			break;
		struct bier_nbr *n = &e->nbr[i];
		struct bier_bits m;
		m.w[0] = rem->w[0] & n->fbm.w[0];
		m.w[1] = rem->w[1] & n->fbm.w[1];
		m.w[2] = rem->w[2] & n->fbm.w[2];
		m.w[3] = rem->w[3] & n->fbm.w[3];
		if (!any_bits(&m))
			continue;
		rem->w[0] &= ~n->fbm.w[0];
		rem->w[1] &= ~n->fbm.w[1];
		rem->w[2] &= ~n->fbm.w[2];
		rem->w[3] &= ~n->fbm.w[3];
		__u8 macs[12];
		__builtin_memcpy(macs, n->dmac, 6);
		__builtin_memcpy(macs + 6, n->smac, 6);
		if (bpf_skb_store_bytes(skb, BS_OFF, &m, bs_len, 0) || bpf_skb_store_bytes(skb, 0, macs, 12, 0) ||
		    bpf_clone_redirect(skb, n->ifindex, 0)) {
			bump(BIER_DROP_REDIRECT);
			continue;
		}
		bump(BIER_EV_COPIES);
		count_tx(n->ifindex);
		sent++;
	}
	if (any_bits(rem))
		bump(BIER_DROP_NO_NEIGHBOR); /* bits this BFR has no path to (RFC 8279 s6.5: not forwarded) */
	return sent;
}

/* Fast reroute: while a port of one of e's neighbours is down, the entry dinet planned for that case (the
 * neighbour's bits moved to its loop-free alternates) replaces e. With no port down this costs one array
 * read. One failure at a time is covered: the first down port found decides. */
static __always_inline struct bift_entry *rerouted(struct bift_entry *e, __u32 bift_id)
{
	__u32 one = 1;
	__u32 *down = bier_cfg.lookup(&one);
	if (!down || !*down)
		return e;
	for (__u32 i = 0; i < BIER_MAX_NEIGHBORS; i++) {
		if (i >= e->n_nbr)
			break;
		__u32 ifindex = e->nbr[i].ifindex;
		if (!bier_port_down.lookup(&ifindex))
			continue;
		__u32 key = ((i + 1) << BIER_FRR_KEY_SHIFT) | bift_id;
		struct bift_entry *b = bift.lookup(&key);
		if (b) {
			bump(BIER_EV_FRR);
			return b;
		}
		bump(BIER_DROP_PORT_DOWN);
		return e;
	}
	return e;
}

/* First pass of local delivery: label a clone as the inner protocol and hand it back to this ingress,
 * addressed as it arrived (replication rewrote the MAC addresses for the last neighbour). */
static __always_inline void deliver_local(struct __sk_buff *skb, __u8 proto, __u32 hlen, __u8 *macs)
{
	if (proto != BIER_PROTO_IPV4 && proto != BIER_PROTO_IPV6) {
		bump(BIER_DROP_PROTO);
		return;
	}
	if (skb->len < ETH_HLEN + hlen + (proto == BIER_PROTO_IPV4 ? 20 : 40)) {
		bump(BIER_DROP_TRUNCATED); /* the inner packet is shorter than its own fixed header */
		return;
	}
	__be16 et = bpf_htons(proto == BIER_PROTO_IPV4 ? DINET_ETHERTYPE_IPV4 : DINET_ETHERTYPE_IPV6);
	__u32 saved = skb->mark;
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0) || bpf_skb_store_bytes(skb, 12, &et, sizeof(et), 0))
		return;
	skb->mark = BIER_MARK_LOCAL | hlen;
	if (bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS))
		bump(BIER_DROP_REDIRECT);
	else
		bump(BIER_EV_LOCAL);
	skb->mark = saved;
}

/* Second pass: the clone is back, as an IP skb still carrying the BIER header; remove it. */
static __always_inline int finish_local(struct __sk_buff *skb)
{
	__u32 hlen = skb->mark & ~MARK_DECAP_MASK;
	skb->mark = 0;
	if (hlen != TREE_HLEN &&
	    (hlen < BIER_BIFT_WORD_LEN + BIER_FIXED_LEN + 8 || hlen > BIER_BIFT_WORD_LEN + BIER_FIXED_LEN + 32))
		return drop(BIER_DROP_ENCAP);
	if (bpf_skb_adjust_room(skb, -(__s32)hlen, BPF_ADJ_ROOM_MAC, 0))
		return drop(BIER_DROP_ENCAP);
	return TC_ACT_OK;
}

/* ---- SR-P2MP trees: the baseline BIER is measured against (draft-ietf-pim-sr-p2mp-policy over SR-MPLS) ----
 * A tree's frame carries [node SID, replication SID (bottom of stack)]. A node whose node SID is on top
 * and not its own passes the frame on toward that node (SR unicast: the top label's TTL minus one); at its
 * own node SID it looks the replication SID up in tree_segment and sends one replica per downstream
 * replication node, each relabelled with that node's two SIDs, and delivers locally when it is a leaf. The
 * root pushes the two labels on an IP packet that matches tree_root. State per tree lives at the root,
 * the branching nodes and the leaves only; what BIER needs none of. */

/* RFC 3032 s2.1: a label stack entry, label(20) TC(3) S(1) TTL(8). */
static __always_inline __be32 mpls_lse(__u32 label, __u32 bos, __u32 ttl)
{
	return bpf_htonl((label << 12) | (bos << 8) | (ttl & 0xff));
}

/* One replica per downstream node of the segment, its labels carrying `ttl`. */
static __always_inline void tree_replicate(struct __sk_buff *skb, struct tree_segment *seg, __u32 ttl)
{
	for (__u32 i = 0; i < TREE_MAX_REPLICAS; i++) {
		if (i >= seg->n)
			break;
		struct tree_replica *r = &seg->r[i];
		__be32 st[2] = {mpls_lse(r->node_sid, 0, ttl), mpls_lse(r->rep_sid, 1, ttl)};
		__u8 macs[12];
		__builtin_memcpy(macs, r->dmac, 6);
		__builtin_memcpy(macs + 6, r->smac, 6);
		if (bpf_skb_store_bytes(skb, ETH_HLEN, st, sizeof(st), 0) || bpf_skb_store_bytes(skb, 0, macs, 12, 0) ||
		    bpf_clone_redirect(skb, r->ifindex, 0)) {
			bump(BIER_DROP_REDIRECT);
			continue;
		}
		bump(BIER_EV_TREE_COPIES);
		count_tx(r->ifindex);
	}
}

/* A frame on a tree, at a node on its path. */
static __always_inline int tree_rx(struct __sk_buff *skb)
{
	__be32 st[2];
	__u8 macs[12];
	bump(BIER_EV_TREE_RX);
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) || bpf_skb_load_bytes(skb, ETH_HLEN, st, sizeof(st)))
		return drop(BIER_DROP_TRUNCATED);
	__u32 top = bpf_ntohl(st[0]), bos = bpf_ntohl(st[1]);
	if ((top & 0x100) || !(bos & 0x100))
		return drop(BIER_DROP_TREE_STACK); /* a tree's stack is exactly [node SID, replication SID(S)] */
	__u32 node_sid = top >> 12, ttl = top & 0xff;
	struct tree_hop *h = tree_node.lookup(&node_sid);
	if (!h)
		return drop(BIER_DROP_TREE_ROUTE);
	if (!h->local) { /* not a replication node of this tree: on toward the one the top label names */
		if (ttl <= 1)
			return drop(BIER_DROP_TTL);
		__be32 lse = bpf_htonl((top & ~0xffu) | (ttl - 1)); /* a swap to the same SID: label, TC kept */
		__u8 hop[12];
		__builtin_memcpy(hop, h->dmac, 6);
		__builtin_memcpy(hop + 6, h->smac, 6);
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &lse, sizeof(lse), 0) || bpf_skb_store_bytes(skb, 0, hop, 12, 0))
			return drop(BIER_DROP_ENCAP);
		bump(BIER_EV_TREE_UNICAST);
		count_tx(h->ifindex);
		return bpf_redirect(h->ifindex, 0);
	}
	__u32 rep_sid = bos >> 12;
	struct tree_segment *seg = tree_segment.lookup(&rep_sid);
	if (!seg)
		return drop(BIER_DROP_TREE_SEGMENT);
	if (seg->n) {
		if (ttl <= 1)
			bump(BIER_DROP_TTL);
		else
			tree_replicate(skb, seg, ttl - 1);
	}
	if (seg->local) {
		__u8 v = 0;
		bpf_skb_load_bytes(skb, ETH_HLEN + TREE_HLEN, &v, 1);
		v >>= 4; /* the label stack does not name its payload: the IP version does */
		deliver_local(skb, v == 4 ? BIER_PROTO_IPV4 : (v == 6 ? BIER_PROTO_IPV6 : 0), TREE_HLEN, macs);
	}
	return TC_ACT_SHOT;
}

/* The root: push the tree's two labels on the IP packet and send the root segment's replicas. */
static __always_inline int tree_push(struct __sk_buff *skb, __u32 rep_sid)
{
	struct tree_segment *seg = tree_segment.lookup(&rep_sid);
	if (!seg)
		return drop(BIER_DROP_TREE_SEGMENT);
	if (bpf_skb_adjust_room(skb, TREE_HLEN, BPF_ADJ_ROOM_MAC, 0))
		return drop(BIER_DROP_ENCAP);
	__be16 et = bpf_htons(DINET_ETHERTYPE_MPLS);
	if (bpf_skb_store_bytes(skb, 12, &et, sizeof(et), 0))
		return drop(BIER_DROP_ENCAP);
	bump(BIER_EV_TREE_PUSH);
	tree_replicate(skb, seg, BIER_DEFAULT_TTL); /* the root's replicas carry the full TTL, as a BFIR's */
	return TC_ACT_SHOT;
}

/* The tree a packet's key names at its root: (S,G), (*,G), then (*, destination, UDP port). */
static __always_inline struct tree_root *tree_root_of(struct bfir_key *k, __u8 l4, __be16 dport, int *by_port)
{
	k->dport = 0;
	k->proto = 0;
	struct tree_root *r = tree_root.lookup(k);
	if (r)
		return r;
	__builtin_memset(k->src, 0, sizeof(k->src));
	r = tree_root.lookup(k);
	if (r || l4 != DINET_IPPROTO_UDP || !dport)
		return r;
	k->dport = dport;
	k->proto = DINET_IPPROTO_UDP;
	*by_port = 1;
	return tree_root.lookup(k);
}

/* BFR (and BFER) processing of a BIER packet. */
static __always_inline int bfr(struct __sk_buff *skb)
{
	__u8 h[BIER_BIFT_WORD_LEN + BIER_FIXED_LEN];
	__u8 macs[12];
	bump(BIER_EV_RX);
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) || bpf_skb_load_bytes(skb, BIFT_OFF, h, sizeof(h)))
		return drop(BIER_DROP_TRUNCATED);
	__u32 word0 = ((__u32)h[0] << 24) | ((__u32)h[1] << 16) | ((__u32)h[2] << 8) | h[3];
	__u32 bift_id = word0 >> 12;
	__u32 ttl = word0 & 0xff;
	if ((h[4] >> 4) != BIER_NIBBLE)
		return drop(BIER_DROP_NIBBLE);
	if ((h[4] & 0xf) != BIER_VERSION)
		return drop(BIER_DROP_VERSION);
	__u32 bsl = h[5] >> 4;
	if (bsl < BIER_BSL_64 || bsl > BIER_BSL_256 || ((bift_id >> BIER_BIFT_BSL_SHIFT) & 0xf) != bsl)
		return drop(BIER_DROP_BSL);
	struct bier_bits bs = {};
	__u32 bs_len = bs_bytes(bsl);
	if (bpf_skb_load_bytes(skb, BS_OFF, &bs, bs_len))
		return drop(BIER_DROP_TRUNCATED);
	if (!any_bits(&bs))
		return drop(BIER_DROP_ZERO_BITSTRING);
	struct bift_entry *e = bift.lookup(&bift_id);
	if (!e)
		return drop(BIER_DROP_BIFT_MISS);
	e = rerouted(e, bift_id);

	struct bier_bits rem;
	rem.w[0] = bs.w[0] & ~e->local.w[0];
	rem.w[1] = bs.w[1] & ~e->local.w[1];
	rem.w[2] = bs.w[2] & ~e->local.w[2];
	rem.w[3] = bs.w[3] & ~e->local.w[3];
	int local = (bs.w[0] & e->local.w[0]) || (bs.w[1] & e->local.w[1]) || (bs.w[2] & e->local.w[2]) ||
		    (bs.w[3] & e->local.w[3]);
	if (any_bits(&rem)) {
		if (ttl <= 1) /* RFC 8296 s2.1.1.2: a TTL that would reach 0 ends forwarding */
			bump(BIER_DROP_TTL);
		else
			replicate(skb, e, &rem, bsl, (word0 & ~0xffu) | (ttl - 1));
	}
	if (local)
		deliver_local(skb, h[9] & 0x3f, BIER_BIFT_WORD_LEN + BIER_FIXED_LEN + bs_len, macs);
	return TC_ACT_SHOT; /* every copy has left; the original is consumed */
}

/* BFIR classification of an IP packet: the lookup key, the BIER Proto and DSCP, and whether the packet is
 * malformed (judged only once it matches an entry, as the steering program judges only what is addressed
 * to a VIP). The UDP port (model sync) is read through IPv4 options and IPv6 extension headers (the same
 * limits as steering: DINET_IPV6_EXT_MAX headers of DINET_IPV6_EXT_MAX_LEN bytes), within the datagram,
 * and never from a fragment: a fragmented datagram is matched by (S,G) and (*,G) only, so all its
 * fragments go the same way (model-sync senders keep their datagrams under the MTU; UFTP does). */
struct bfir_pkt {
	__u8 proto;
	__u8 dscp;
	__u8 bad;     /* malformed IP header or length */
	__u8 short_udp; /* the UDP header does not fit the datagram */
};

static __always_inline int bfir_classify(struct __sk_buff *skb, struct bfir_key *k, struct bfir_pkt *pk)
{
	__u32 frame = skb->len > ETH_HLEN ? skb->len - ETH_HLEN : 0;
	__u8 l4 = 0;
	__u32 l3 = 0, dgram = 0;
	int frag = 0;
	__be16 eth_proto;
	if (bpf_skb_load_bytes(skb, 12, &eth_proto, 2))
		return -1;
	if (eth_proto == bpf_htons(DINET_ETHERTYPE_IPV4)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return -1;
		k->family = DINET_AF_INET;
		__builtin_memcpy(k->src, &ip.saddr, 4);
		__builtin_memcpy(k->dst, &ip.daddr, 4);
		k->proto = ip.protocol;
		pk->dscp = ip.tos >> 2;
		pk->proto = BIER_PROTO_IPV4;
		l3 = ip.ihl * 4;
		dgram = bpf_ntohs(ip.tot_len);
		pk->bad = ip.version != 4 || ip.ihl < 5 || dgram < l3 || dgram > frame;
		frag = (ip.frag_off & bpf_htons(0x3FFF)) != 0; /* MF set or offset nonzero */
		l4 = ip.protocol;
	} else if (eth_proto == bpf_htons(DINET_ETHERTYPE_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return -1;
		k->family = DINET_AF_INET6;
		__builtin_memcpy(k->src, &ip6.saddr, 16);
		__builtin_memcpy(k->dst, &ip6.daddr, 16);
		k->proto = ip6.nexthdr;
		pk->dscp = ((ip6.priority << 4) | (ip6.flow_lbl[0] >> 4)) >> 2;
		pk->proto = BIER_PROTO_IPV6;
		l3 = sizeof(ip6);
		dgram = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
		pk->bad = ip6.version != 6 || dgram > frame;
		l4 = ip6.nexthdr;
#pragma unroll
		for (int i = 0; i < DINET_IPV6_EXT_MAX; i++) {
			if (l4 != DINET_IPPROTO_HOPOPTS && l4 != DINET_IPPROTO_ROUTING && l4 != DINET_IPPROTO_DSTOPTS)
				break;
			__u8 oh[2];
			if (l3 + 2 > dgram || bpf_skb_load_bytes(skb, ETH_HLEN + l3, oh, 2)) {
				pk->bad = 1;
				break;
			}
			if ((oh[1] + 1) * 8 > DINET_IPV6_EXT_MAX_LEN) {
				l4 = 0; /* longer than either plane walks: no port is read */
				break;
			}
			l4 = oh[0];
			l3 += (oh[1] + 1) * 8;
		}
		if (l3 > dgram)
			pk->bad = 1;
		frag = l4 == DINET_IPPROTO_FRAGMENT;
	} else {
		return -1;
	}
	k->proto = l4; /* the upper layer, past any extension headers */
	if (l4 == DINET_IPPROTO_UDP && !frag && l3 >= 20 && ETH_HLEN + l3 + 4 <= skb->len) {
		/* a malformed datagram is matched too, so that one for us is dropped and counted, not passed */
		__be16 port;
		if (!bpf_skb_load_bytes(skb, ETH_HLEN + l3 + 2, &port, 2))
			k->dport = port;
		pk->short_udp = l3 + 8 > dgram;
	}
	return 0;
}

/* BFIR: classify an IP packet; on a match push the BIER header and forward it for each set; where a set
 * holds this node's own bit the packet is also delivered here (RFC 8279 s6.5: it is a BFER for it). */
static __always_inline int bfir_push(struct __sk_buff *skb)
{
	struct bfir_key k = {};
	struct bfir_pkt pk = {};
	__u8 macs[12];
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) || bfir_classify(skb, &k, &pk))
		return TC_ACT_OK;
	__u8 dscp = pk.dscp, proto = pk.proto;
	__be16 dport = k.dport;
	__u8 l4 = k.proto;
	struct bfir_key tk = k; /* the same key for the tree roots, should no BIER entry match */
	/* (S,G) */
	k.dport = 0;
	k.proto = 0;
	struct bfir_entry *be = bfir.lookup(&k);
	if (!be) { /* (*,G) */
		__builtin_memset(k.src, 0, sizeof(k.src));
		be = bfir.lookup(&k);
	}
	int by_port = 0;
	if (!be && l4 == DINET_IPPROTO_UDP && dport) { /* model sync: (*, destination, UDP port) */
		k.dport = dport;
		k.proto = DINET_IPPROTO_UDP;
		be = bfir.lookup(&k);
		by_port = 1;
	}
	if (!be) {
		int tree_by_port = 0;
		struct tree_root *tr = tree_root_of(&tk, l4, dport, &tree_by_port);
		if (!tr) {
			bump(BIER_EV_PASS);
			return TC_ACT_OK;
		}
		if (pk.bad || (tree_by_port && pk.short_udp))
			return drop(BIER_DROP_MALFORMED);
		return tree_push(skb, tr->rep_sid);
	}
	if (pk.bad || (by_port && pk.short_udp))
		return drop(BIER_DROP_MALFORMED);
	if (be->bsl < BIER_BSL_64 || be->bsl > BIER_BSL_256)
		return drop(BIER_DROP_BSL);
	__u32 bsl = be->bsl;
	__u32 bs_len = bs_bytes(bsl);
	__u32 hlen = BIER_BIFT_WORD_LEN + BIER_FIXED_LEN + bs_len;
	__u32 entropy = bpf_get_hash_recalc(skb) & 0xFFFFF;
	if (bpf_skb_adjust_room(skb, hlen, BPF_ADJ_ROOM_MAC, 0))
		return drop(BIER_DROP_ENCAP);
	__be16 et = bpf_htons(DINET_ETHERTYPE_BIER);
	__u8 h[BIER_FIXED_LEN];
	h[0] = (BIER_NIBBLE << 4) | BIER_VERSION;
	h[1] = (bsl << 4) | ((entropy >> 16) & 0xf);
	h[2] = (entropy >> 8) & 0xff;
	h[3] = entropy & 0xff;
	h[4] = (dscp >> 2) & 0xf;              /* OAM 0, Rsv 0, DSCP high 4 bits */
	h[5] = ((dscp & 0x3) << 6) | proto;    /* DSCP low 2 bits, Proto */
	h[6] = be->bfir_id >> 8;
	h[7] = be->bfir_id & 0xff;
	if (bpf_skb_store_bytes(skb, 12, &et, sizeof(et), 0) || bpf_skb_store_bytes(skb, BIER_OFF, h, sizeof(h), 0))
		return drop(BIER_DROP_ENCAP);
	bump(BIER_EV_BFIR_PUSH); /* once per packet, however many sets it is sent in (BMv2 counts the same) */
	int local = 0;
	for (__u32 s = 0; s < BIER_MAX_SI_PER_GROUP; s++) {
		if (s >= be->n_sets)
			break;
		struct bfir_set *set = &be->sets[s];
		__u32 bift_id = set->bift_id;
		struct bift_entry *e = bift.lookup(&bift_id);
		if (!e) {
			bump(BIER_DROP_BIFT_MISS);
			continue;
		}
		e = rerouted(e, bift_id);
		struct bier_bits rem;
		rem.w[0] = set->bits.w[0] & ~e->local.w[0];
		rem.w[1] = set->bits.w[1] & ~e->local.w[1];
		rem.w[2] = set->bits.w[2] & ~e->local.w[2];
		rem.w[3] = set->bits.w[3] & ~e->local.w[3];
		local |= (set->bits.w[0] & e->local.w[0]) || (set->bits.w[1] & e->local.w[1]) ||
			 (set->bits.w[2] & e->local.w[2]) || (set->bits.w[3] & e->local.w[3]);
		/* RFC 8296 s2.1.1.1: BIFT-id, TC 0, S 1 (bottom of stack), TTL */
		if (any_bits(&rem))
			replicate(skb, e, &rem, bsl, (bift_id << 12) | (1 << 8) | BIER_DEFAULT_TTL);
	}
	if (local)
		deliver_local(skb, proto, hlen, macs);
	return TC_ACT_SHOT; /* the copies have left; the unencapsulated original goes no further */
}

/* The XDP fast path, for frames this node only passes on: a well-formed BIER frame with no bit of this
 * node's, bits for neighbours and TTL to spare goes to every BIER port at once (BPF_F_BROADCAST), and each
 * port's program (xdp_bier_port) keeps its copy only if the bitstring meets that neighbour's F-BM. With
 * the disjoint F-BMs dinet computes this gives RFC 8279 s6.5's copies. It takes frames with at least
 * bier_cfg's fan-out (default BIER_XDP_MIN_FANOUT); everything else (few copies, local delivery, BFIR,
 * anything to drop and count) goes on to tc_bier. Measured in bench/bier.py with live frames: broadcast
 * beats a clone per copy from fan-out 3-4 up, and loses below. */
int xdp_bier(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 *h = (void *)(eth + 1);
	if ((void *)(h + BIER_BIFT_WORD_LEN + BIER_FIXED_LEN) > data_end || eth->h_proto != bpf_htons(DINET_ETHERTYPE_BIER))
		return XDP_PASS;
	__u32 bsl = h[5] >> 4;
	__u32 bift_id = ((__u32)h[0] << 12) | ((__u32)h[1] << 4) | (h[2] >> 4);
	if ((h[4] >> 4) != BIER_NIBBLE || (h[4] & 0xf) != BIER_VERSION || h[3] <= 1 || bsl < BIER_BSL_64 ||
	    bsl > BIER_BSL_256 || ((bift_id >> BIER_BIFT_BSL_SHIFT) & 0xf) != bsl)
		return XDP_PASS;
	__u32 nw = bs_bytes(bsl) / 8;
	__u64 *w = (void *)(h + BIER_BIFT_WORD_LEN + BIER_FIXED_LEN);
	if ((void *)(w + 4) > data_end && (void *)(w + nw) > data_end)
		return XDP_PASS;
	struct bier_bits bs = {};
	if ((void *)(w + 1) > data_end)
		return XDP_PASS;
	bs.w[0] = w[0];
	if (nw > 1) {
		if ((void *)(w + 2) > data_end)
			return XDP_PASS;
		bs.w[1] = w[1];
	}
	if (nw > 2) {
		if ((void *)(w + 4) > data_end)
			return XDP_PASS;
		bs.w[2] = w[2];
		bs.w[3] = w[3];
	}
	__u32 one = 1;
	__u32 *down = bier_cfg.lookup(&one);
	if (down && *down)
		return XDP_PASS; /* a port is down: TC's fast reroute decides where copies go */
	struct bift_entry *e = bift.lookup(&bift_id);
	if (!e || !any_bits(&bs) || (bs.w[0] & e->local.w[0]) || (bs.w[1] & e->local.w[1]) ||
	    (bs.w[2] & e->local.w[2]) || (bs.w[3] & e->local.w[3]))
		return XDP_PASS;
	struct bier_bits rem = bs;
	__u32 fanout = 0;
	for (__u32 i = 0; i < BIER_MAX_NEIGHBORS; i++) {
		if (i >= e->n_nbr)
			break;
		struct bier_nbr *n = &e->nbr[i];
		if ((rem.w[0] & n->fbm.w[0]) | (rem.w[1] & n->fbm.w[1]) | (rem.w[2] & n->fbm.w[2]) | (rem.w[3] & n->fbm.w[3])) {
			/* RFC 8279 s6.5 sends a copy back through the port the frame came in on when its neighbour's
			 * bits are set; the broadcast excludes that port, so TC sends that frame's copies */
			if (n->ifindex == ctx->ingress_ifindex)
				return XDP_PASS;
			fanout++;
		}
		rem.w[0] &= ~n->fbm.w[0];
		rem.w[1] &= ~n->fbm.w[1];
		rem.w[2] &= ~n->fbm.w[2];
		rem.w[3] &= ~n->fbm.w[3];
	}
	__u32 zero = 0;
	__u32 *min = bier_cfg.lookup(&zero);
	if (fanout < (min && *min ? *min : BIER_XDP_MIN_FANOUT))
		return XDP_PASS; /* few copies: a clone each in TC is cheaper than a broadcast to every port */
	bump(BIER_EV_RX);
	bump(BIER_EV_FAST);
	if (any_bits(&rem))
		bump(BIER_DROP_NO_NEIGHBOR);
	return bier_ports.redirect_map(0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

/* The devmap program of every BIER port: this port's copy carries bitstring AND its neighbour's F-BM, or
 * is dropped when that is empty; TTL minus one, the neighbour's MAC addresses. */
int xdp_bier_port(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *h = data + ETH_HLEN;
	if ((void *)(h + BIER_BIFT_WORD_LEN + BIER_FIXED_LEN) > data_end)
		return XDP_DROP;
	__u32 bift_id = ((__u32)h[0] << 12) | ((__u32)h[1] << 4) | (h[2] >> 4);
	__u32 nw = bs_bytes(h[5] >> 4) / 8;
	struct bift_entry *e = bift.lookup(&bift_id);
	if (!e)
		return XDP_DROP;
	__u32 egress = ctx->egress_ifindex;
	for (__u32 i = 0; i < BIER_MAX_NEIGHBORS; i++) {
		if (i >= e->n_nbr)
			break;
		struct bier_nbr *n = &e->nbr[i];
		if (n->ifindex != egress)
			continue;
		__u64 *w = (void *)(h + BIER_BIFT_WORD_LEN + BIER_FIXED_LEN);
		if ((void *)(w + 1) > data_end)
			return XDP_DROP;
		__u64 m0 = w[0] & n->fbm.w[0], m1 = 0, m2 = 0, m3 = 0;
		if (nw > 1) {
			if ((void *)(w + 2) > data_end)
				return XDP_DROP;
			m1 = w[1] & n->fbm.w[1];
		}
		if (nw > 2) {
			if ((void *)(w + 4) > data_end)
				return XDP_DROP;
			m2 = w[2] & n->fbm.w[2];
			m3 = w[3] & n->fbm.w[3];
		}
		if (!(m0 | m1 | m2 | m3))
			return XDP_DROP;
		w[0] = m0;
		if (nw > 1 && (void *)(w + 2) <= data_end)
			w[1] = m1;
		if (nw > 2 && (void *)(w + 4) <= data_end) {
			w[2] = m2;
			w[3] = m3;
		}
		h[3] -= 1; /* TTL */
		__builtin_memcpy(data, n->dmac, 6);
		__builtin_memcpy(data + 6, n->smac, 6);
		bump(BIER_EV_COPIES);
		count_tx(egress);
		return XDP_PASS;
	}
	return XDP_DROP;
}

#ifndef DINET_BIER_NO_ENTRY /* bench_bier.bpf.c defines the entry points itself (bcc takes only the main text's) */
int tc_bier(struct __sk_buff *skb)
{
	if ((skb->mark & MARK_DECAP_MASK) == BIER_MARK_LOCAL)
		return finish_local(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(DINET_ETHERTYPE_BIER))
		return bfr(skb);
	if (eth->h_proto == bpf_htons(DINET_ETHERTYPE_MPLS))
		return tree_rx(skb);
	return bfir_push(skb);
}
#endif
