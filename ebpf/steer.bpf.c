/* steer.bpf.c: XDP program of the ingress steering node (CATS service-ID anycast).
 * A packet to a service (VIP, protocol, port) keeps the instance its flow was placed on
 * (affinity table); a new flow takes the instance its hash selects in the service's weighted
 * Maglev ring (filled by dinet); a session-affine service's new flow hashes its session key instead (the IPv6
 * flow label, or the client's source-port group: dinet_consts.h), so one conversation's connections meet
 * one instance. The packet is then IP-in-IP encapsulated toward the instance's
 * tunnel endpoint and forwarded (FIB lookup, or a static next hop); the endpoint's decap program
 * delivers it and the instance answers the client directly. Everything else passes untouched.
 * Compiled by bcc with -DDINET_PIN_DIR="..." naming the bpffs folder that holds the node's maps. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/udp.h>
#include "steer.h"
#include "parse.h"

#define PIN(name) DINET_PIN_DIR "/" #name
#define RING_ENTRIES (2 * DINET_MAX_SERVICES * DINET_RING_SIZE)
#define INST_ENTRIES (DINET_MAX_SERVICES * DINET_MAX_INSTANCES)

/* services: svc_key -> svc_value; written by dinet. */
BPF_TABLE_PINNED("hash", struct svc_key, struct svc_value, services, DINET_MAX_SERVICES, PIN(services));
/* vip_addrs: vip_key -> count of services on that address; written by dinet. */
BPF_TABLE_PINNED("hash", struct vip_key, __u32, vip_addrs, DINET_MAX_VIP_ADDRS, PIN(vip_addrs));
/* vip_filter: vip_fold(address) -> what folds there (dinet_consts.h: DINET_FILTER_*): how many VIP addresses,
 * how many session-affine services, and an epoch bumped when the latter changes; written by dinet. One array
 * load sends most traffic that is not for a service on its way (only a hit costs a hash lookup) and tells
 * the packets of session-affine services from the rest, so that only they pay for the session rules. */
BPF_TABLE_PINNED("array", __u32, __u64, vip_filter, DINET_VIP_FILTER_SIZE, PIN(vip_filter));
/* svc_gen: svc_id -> the slot's generation, bumped by dinet whenever a service takes or leaves the slot.
 * An affinity hit is trusted without the service lookup when its generation is still current. */
BPF_TABLE_PINNED("array", __u32, __u32, svc_gen, DINET_MAX_SERVICES, PIN(svc_gen));
/* instances: svc_id * MAX_INSTANCES + slot -> inst_value; written by dinet. */
BPF_TABLE_PINNED("array", __u32, struct inst_value, instances, INST_ENTRIES, PIN(instances));
/* ring: ((svc_id * 2 + ring_sel) * RING_SIZE + hash % RING_SIZE) -> slot or DINET_SLOT_NONE; written by dinet. */
BPF_TABLE_PINNED("array", __u32, __u32, ring, RING_ENTRIES, PIN(ring));
/* affinity: flow_key -> flow_value; written here on a new flow, LRU-evicted. */
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow_value, affinity, DINET_AFFINITY_ENTRIES, PIN(affinity));
/* sessions: session_key -> session_value; written here when a session-affine service places a session, LRU. */
BPF_TABLE_PINNED("lru_hash", struct session_key, struct session_value, sessions, DINET_SESSION_ENTRIES, PIN(sessions));
/* flow_cache: per CPU, hash of the 5-tuple -> a copy of its affinity entry; written here only, not pinned
 * (a cache: the LRU above stays the record). A hit costs an array load and a key compare instead of a
 * hash-table lookup; every DINET_FLOW_CACHE_TOUCH-th hit also looks the flow up in the LRU, so that an
 * active flow is never the least recently used there. */
BPF_PERCPU_ARRAY(flow_cache, struct flow_cache_entry, DINET_FLOW_CACHE_SIZE);
/* nh_cache: per CPU, fold of the tunnel endpoint -> the FIB's answer for it (see steer.h); written here
 * only, not pinned. Saves the FIB lookup on most packets: the largest cost of forwarding a hit. */
BPF_PERCPU_ARRAY(nh_cache, struct nh_cache_entry, DINET_NH_CACHE_SIZE);
/* counters per service and per instance, per CPU; written here. */
BPF_TABLE_PINNED("percpu_array", __u32, struct steer_counter, svc_stats, DINET_MAX_SERVICES, PIN(svc_stats));
BPF_TABLE_PINNED("percpu_array", __u32, struct steer_counter, inst_stats, INST_ENTRIES, PIN(inst_stats));
/* inst_placed: index as instances -> new flows placed on a two-choices instance under its load's report (steer.h);
 * shared by every CPU (added to atomically), written here. */
BPF_TABLE_PINNED("array", __u32, struct placed_value, inst_placed, INST_ENTRIES, PIN(inst_placed));
/* verdicts: DINET_DROP_* / DINET_PASS_* -> packets, per CPU; written here. */
BPF_TABLE_PINNED("percpu_array", __u32, __u64, verdicts, DINET_VERDICTS, PIN(verdicts));
/* config: 0 -> steer_config; written by dinet. */
BPF_TABLE_PINNED("array", __u32, struct steer_config, config, 1, PIN(config));

/* Two addresses equal, word by word (clang may turn a 16-byte memcmp into a call BPF cannot make). */
static __always_inline int same_addr(const struct dinet_addr *a, const struct dinet_addr *b)
{
	const __u32 *x = (const __u32 *)a->addr, *y = (const __u32 *)b->addr;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int verdict(__u32 reason, int action)
{
	count_verdict(verdicts.lookup(&reason));
	return action;
}

/* crc_table: byte -> CRC-32 table entry (reflected polynomial 0xEDB88320); written by dinet at load. */
BPF_TABLE_PINNED("array", __u32, __u32, crc_table, 256, PIN(crc_table));

/* CRC-32 (IEEE 802.3, reflected, init and xorout 0xFFFFFFFF): the same function as zlib.crc32 and
 * v1model's HashAlgorithm.crc32, so both data planes and the tests agree on where a new flow goes.
 * Table-driven (a bitwise loop exhausts the verifier's budget); runs only on a new flow. */
static __always_inline __u32 crc32_byte(__u32 crc, __u8 byte)
{
	__u32 i = (crc ^ byte) & 0xff;
	__u32 *t = crc_table.lookup(&i);
	return t ? *t ^ (crc >> 8) : crc;
}

/* The CRC over an address's first alen bytes (4 or 16). */
static __always_inline __u32 crc32_addr(__u32 crc, struct dinet_addr *a, int alen)
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (i < alen)
			crc = crc32_byte(crc, a->addr[i]);
	return crc;
}

/* The flow's hash: CRC-32 over src, dst (4 or 16 bytes each), sport, dport, proto, in wire order. */
/* The filter index of an address: its four 32-bit words (as loaded on a little-endian host) XORed, then
 * the two halves XORed. dinet.targets.xdp.vip_fold computes the same. */
static __always_inline __u32 vip_fold(struct vip_key *vk)
{
	__u32 *w = (__u32 *)vk->addr.addr;
	__u32 x = w[0] ^ w[1] ^ w[2] ^ w[3];
	return (x ^ (x >> 16)) & (DINET_VIP_FILTER_SIZE - 1);
}

/* What folds where the address does (DINET_FILTER_*), 0 when nothing does. */
static __always_inline __u64 maybe_vip(struct vip_key *vk)
{
	__u32 idx = vip_fold(vk);
	__u64 *n = vip_filter.lookup(&idx);
	return n ? *n : 0;
}

/* A packet the program does not steer: dropped with `reason` if it is addressed to a VIP (malformed,
 * fragment, ...), passed with `pass_reason` if to a VIP, and passed as not a service otherwise. */
static __always_inline int not_steered(struct vip_key *vk, __u32 reason, int action)
{
	if (vip_addrs.lookup(vk))
		return verdict(reason, action);
	return verdict(DINET_PASS_NOT_SERVICE, XDP_PASS);
}

/* A TCP SYN without ACK, its flags within the datagram (the first 14 bytes of TCP, as p4/parser.p4 reads them). */
static __always_inline int tcp_syn(void *l4, void *data_end, __u32 l4_off, __u32 inner_len, __u8 proto)
{
	if (proto != DINET_IPPROTO_TCP || l4_off + 14 > inner_len || l4 + 14 > data_end)
		return 0;
	return (((__u8 *)l4)[13] & 0x12) == 0x02;
}

/* The service a flow is addressed to: its destination, port, protocol and family. */
static __always_inline void svc_key_of(struct svc_key *sk, struct flow_key *k)
{
	sk->vip = k->dst;
	sk->port = k->dport;
	sk->proto = k->proto;
	sk->family = k->family;
}

static __always_inline __u32 cache_index(struct flow_key *k)
{
	__u32 *w = (__u32 *)k;
	__u32 x = w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5] ^ w[6] ^ w[7] ^ w[8] ^ w[9];
	return (x * 0x9E3779B1u) >> 20 & (DINET_FLOW_CACHE_SIZE - 1);
}

static __always_inline int same_key(struct flow_key *a, struct flow_key *b)
{
	__u64 *x = (__u64 *)a, *y = (__u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

/* A new flow's session key (dinet_consts.h: tag << 24 | value), or 0 when it has none. label: the IPv6 flow
 * label (0 for IPv4 or when unset). */
static __always_inline __u32 session_key(struct flow_key *k, __u32 label)
{
	if (label)
		return (DINET_SESSION_TAG_LABEL << 24) | label;
	__u16 sport = bpf_ntohs(k->sport);
	if (sport >= DINET_SESSION_PORT_MIN)
		return (DINET_SESSION_TAG_PORT << 24) | (sport >> DINET_SESSION_PORT_BITS);
	return 0;
}

/* The hash that places a new flow: CRC-32 over src, dst (4 or 16 bytes each), then sport and dport, or with a
 * session key the key (4 bytes) and dport, then proto, all in wire order. */
static __always_inline __u32 flow_hash(struct flow_key *k, __u32 session)
{
	__u32 crc = 0xFFFFFFFF;
	int alen = k->family == DINET_AF_INET ? 4 : 16;
	crc = crc32_addr(crc, &k->src, alen);
	crc = crc32_addr(crc, &k->dst, alen);
	__u8 mid[6];
	int mlen = 4;
	if (session) {
		__be32 s = bpf_htonl(session);
		__builtin_memcpy(mid, &s, 4);
		__builtin_memcpy(mid + 4, &k->dport, 2);
		mlen = 6;
	} else {
		__builtin_memcpy(mid, &k->sport, 4); /* sport then dport, network order */
	}
#pragma unroll
	for (int i = 0; i < 6; i++)
		if (i < mlen)
			crc = crc32_byte(crc, mid[i]);
	crc = crc32_byte(crc, k->proto);
	return crc ^ 0xFFFFFFFF;
}

/* A two-choices service's second candidate: CRC-32 over dport, sport, dst, src (4 or 16 bytes each), proto, in
 * wire order (the first candidate's fields reversed, as p4/steering.p4 hashes them). New flows only. */
static __always_inline __u32 flow_hash2(struct flow_key *k)
{
	__u32 crc = 0xFFFFFFFF;
	int alen = k->family == DINET_AF_INET ? 4 : 16;
	__u8 ports[4];
	__builtin_memcpy(ports, &k->dport, 2);
	__builtin_memcpy(ports + 2, &k->sport, 2);
#pragma unroll
	for (int i = 0; i < 4; i++)
		crc = crc32_byte(crc, ports[i]);
	crc = crc32_addr(crc, &k->dst, alen);
	crc = crc32_addr(crc, &k->src, alen);
	crc = crc32_byte(crc, k->proto);
	return crc ^ 0xFFFFFFFF;
}

/* A two-choices instance's load now: the controller's, plus what the flows placed here since add
 * (dinet_consts.h, DINET_SVC_TWO_CHOICES). */
static __always_inline __u64 load_now(struct inst_value *inst, struct placed_value *p)
{
	__u32 n = p && p->gen == inst->load_gen ? p->count : 0;
	__u64 beyond = n > inst->load_free ? n - inst->load_free : 0;
	return inst->load + (__u64)n * inst->load_each + beyond * inst->load_step;
}

/* Picks the slot for a new flow: the ring's choice, or the next usable slot if the ring still
 * names an instance that stopped being UP between two control-plane writes. */
static __always_inline int pick_slot(struct svc_value *sv, __u32 h, __u32 *slot_out, struct inst_value **inst_out)
{
	__u32 base = (sv->svc_id * 2 + (sv->ring_sel & 1)) * DINET_RING_SIZE;
#pragma unroll
	for (int probe = 0; probe < 4; probe++) {
		__u32 idx = base + (h + probe) % DINET_RING_SIZE;
		__u32 *slot = ring.lookup(&idx);
		if (!slot || *slot == DINET_SLOT_NONE || *slot >= DINET_MAX_INSTANCES)
			return -1;
		__u32 iidx = sv->svc_id * DINET_MAX_INSTANCES + *slot;
		struct inst_value *inst = instances.lookup(&iidx);
		if (inst && inst->state == DINET_INST_UP && inst->instance_id) {
			*slot_out = *slot;
			*inst_out = inst;
			return 0;
		}
	}
	return -1;
}

/* The instance a remembered flow stays on, or NULL: the flow stays while its service and instance live (up
 * or draining, same occupant of the slot, same generation of the service's slot). */
static __always_inline struct inst_value *flow_live(struct flow_value *fv, __u32 *svc_id, __u32 *slot)
{
	if (!fv || fv->svc_id >= DINET_MAX_SERVICES || fv->slot >= DINET_MAX_INSTANCES)
		return 0;
	__u32 sid = fv->svc_id;
	__u32 *gen = svc_gen.lookup(&sid);
	__u32 iidx = sid * DINET_MAX_INSTANCES + fv->slot;
	struct inst_value *inst = instances.lookup(&iidx);
	if (!gen || *gen != fv->gen || !inst || inst->state == DINET_INST_DOWN || inst->instance_id != fv->instance_id ||
	    inst->epoch != fv->epoch)
		return 0;
	*svc_id = sid;
	*slot = fv->slot;
	return inst;
}

/* What a new flow of a session-affine service did: found its session's instance, placed a new session, or
 * placed a session whose instance had left. */
#define SESSION_NONE 0
#define SESSION_FOUND 1
#define SESSION_NEW 2
#define SESSION_REPLACED 3

/* A two-choices service's new flow (dinet_consts.h, DINET_SVC_TWO_CHOICES): the ring's second candidate
 * instead of the first (*slot, *inst) where its load is lower; then counts the flow where it goes. */
static __always_inline void two_choices(struct svc_value *sv, struct flow_key *k, __u32 *slot, struct inst_value **inst)
{
	__u32 slot2;
	struct inst_value *inst2;
	__u32 idx = sv->svc_id * DINET_MAX_INSTANCES + *slot;
	struct placed_value *p = inst_placed.lookup(&idx);
	if (pick_slot(sv, flow_hash2(k), &slot2, &inst2) == 0 && slot2 != *slot) {
		__u32 idx2 = sv->svc_id * DINET_MAX_INSTANCES + slot2;
		struct placed_value *p2 = inst_placed.lookup(&idx2);
		if (load_now(inst2, p2) < load_now(*inst, p)) {
			*slot = slot2;
			*inst = inst2;
			p = p2;
		}
	}
	if (!p)
		return;
	if (p->gen == (*inst)->load_gen) {
		__sync_fetch_and_add(&p->count, 1);
	} else { /* the first flow under a new report's load (two CPUs may both restart it: one flow lost) */
		p->gen = (*inst)->load_gen;
		p->count = 1;
	}
}

/* Whether a flow was placed in the current generation of its service (its instance may have left since): a new
 * flow so remembered does not consult its session's entry (as p4/steering.p4). On the new-flow path only. */
static __always_inline int remembered(struct flow_value *fv)
{
	if (!fv || fv->svc_id >= DINET_MAX_SERVICES)
		return 0;
	__u32 sid = fv->svc_id;
	__u32 *gen = svc_gen.lookup(&sid);
	return gen && *gen == fv->gen;
}

static __always_inline void count(void *stats_map_result, __u64 bytes, int new_flow, int session_event)
{
	struct steer_counter *c = stats_map_result;
	if (!c)
		return;
	c->packets += 1;
	c->bytes += bytes;
	if (!new_flow) /* an established flow's packet pays for two adds, no more */
		return;
	c->new_flows += 1;
	if (session_event == SESSION_FOUND)
		c->session_flows += 1;
	else if (session_event == SESSION_NEW)
		c->sessions += 1;
	else if (session_event == SESSION_REPLACED)
		c->sessions_replaced += 1;
}

/* The instance a remembered session's new flow goes to, or NULL: while it takes new flows (up, the same occupant
 * of the slot) in the same generation of the service's slot. A draining instance keeps its established flows
 * (affinity), not its sessions: their next connections are placed anew. */
static __always_inline struct inst_value *session_live(struct session_value *sv, __u32 svc_id, __u32 gen)
{
	if (!sv || sv->slot >= DINET_MAX_INSTANCES || sv->gen != gen)
		return 0;
	__u32 iidx = svc_id * DINET_MAX_INSTANCES + sv->slot;
	struct inst_value *inst = instances.lookup(&iidx);
	if (!inst || inst->state != DINET_INST_UP || inst->instance_id != sv->instance_id || inst->epoch != sv->epoch)
		return 0;
	return inst;
}

/* Pushes the outer IPv4 or IPv6 header (IP-in-IP) and forwards. inner_len: the inner IP datagram's
 * own length (not the frame's: a short frame carries Ethernet padding). */
/* Finishes an ICMP(v6) error built in place: folds `sum` (bpf_csum_diff's running sum, negative on error)
 * into the checksum at csum_at, cuts the `extra` bytes beyond the message, and sends it back out. */
static __always_inline int icmp_send(struct xdp_md *ctx, __s64 sum, __u8 *csum_at, int extra)
{
	if (sum < 0)
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	__u32 c = (__u32)sum;
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	__u16 csum = ~c;
	__builtin_memcpy(csum_at, &csum, 2);
	if (extra > 0 && bpf_xdp_adjust_tail(ctx, -extra))
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	return verdict(DINET_ICMP_TOO_BIG, XDP_TX);
}

/* RFC 792 / RFC 1191: the encapsulated packet would not fit the next hop's MTU. Turn the frame into an
 * ICMP "fragmentation needed" (type 3 code 4) from this node to the client, quoting the client's IP header
 * and 8 bytes, with `mtu`, what an inner packet may be once the outer header is added; send it back out
 * (XDP_TX). The frame arrives here as the client sent it. */
static __always_inline int icmp4_too_big(struct xdp_md *ctx, struct steer_config *cfg, __u32 mtu)
{
	if (bpf_xdp_adjust_head(ctx, -28)) /* room for IPv4 (20) and ICMP (8) before the quote */
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u8 *icmp = (void *)(ip + 1);
	struct iphdr *quote = (void *)(icmp + 8);
	if ((void *)(quote + 1) > data_end)
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	/* a packet too big for the MTU is far longer than the longest quote (60 + 8): the verifier needs it said */
	if ((void *)icmp + 8 + 68 > data_end)
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	__u32 qlen = quote->ihl * 4 + 8;
	if (qlen < 28 || qlen > 68)
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	__be32 client = quote->saddr;
	__u8 macs[12]; /* the frame's own Ethernet addresses, now 28 bytes in (where IP and ICMP will go) */
	__builtin_memcpy(macs, (void *)ip + 14, 12);
	__builtin_memcpy(eth->h_dest, macs + 6, ETH_ALEN); /* back to where it came from */
	__builtin_memcpy(eth->h_source, macs, ETH_ALEN);
	eth->h_proto = bpf_htons(DINET_ETHERTYPE_IPV4);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(20 + 8 + qlen);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = DINET_ENCAP_TTL;
	ip->protocol = 1; /* ICMP */
	ip->check = 0;
	__builtin_memcpy(&ip->saddr, cfg->src4.addr, 4);
	ip->daddr = client;
	ip->check = ipv4_csum(ip);
	icmp[0] = 3; /* destination unreachable */
	icmp[1] = 4; /* fragmentation needed and DF set */
	icmp[2] = 0;
	icmp[3] = 0;
	icmp[4] = 0;
	icmp[5] = 0;
	__u16 next_mtu = mtu > 68 ? mtu : 68; /* RFC 791: every IPv4 link carries 68 bytes */
	icmp[6] = next_mtu >> 8;
	icmp[7] = next_mtu & 0xff;
	__s64 sum = bpf_csum_diff(0, 0, (void *)icmp, 8 + qlen, 0);
	return icmp_send(ctx, sum, icmp + 2, (int)(data_end - data) - (int)(sizeof(*eth) + 28 + qlen));
}

/* RFC 4443 s3.2 / RFC 8201: the IPv6 twin: an ICMPv6 Packet Too Big (type 2) from this node's IPv6 tunnel
 * source to the client, with `mtu` (at least 1280) and the first DINET_PTB_QUOTE bytes of the client's
 * packet (its header and what follows: enough for the client's stack to find the connection). */
static __always_inline int icmp6_too_big(struct xdp_md *ctx, struct steer_config *cfg, __u32 mtu)
{
	if (bpf_xdp_adjust_head(ctx, -48)) /* room for IPv6 (40) and ICMPv6 (8) before the quote */
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	__u8 *icmp = (void *)(ip6 + 1);
	struct ipv6hdr *quote = (void *)(icmp + 8);
	if ((void *)icmp + 8 + DINET_PTB_QUOTE > data_end)
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	__u8 macs[12]; /* the frame's own Ethernet addresses, now 48 bytes in */
	__builtin_memcpy(macs, (void *)ip6 + 34, 12);
	__builtin_memcpy(eth->h_dest, macs + 6, ETH_ALEN);
	__builtin_memcpy(eth->h_source, macs, ETH_ALEN);
	eth->h_proto = bpf_htons(DINET_ETHERTYPE_IPV6);
	__u32 *src = (__u32 *)cfg->src6.addr;
	if (!(src[0] | src[1] | src[2] | src[3])) /* no IPv6 tunnel source configured: nothing to answer from */
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	__u32 *w = (__u32 *)ip6;
	w[0] = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(8 + DINET_PTB_QUOTE);
	ip6->nexthdr = DINET_IPPROTO_ICMPV6;
	ip6->hop_limit = 255;
	__builtin_memcpy(&ip6->daddr, &quote->saddr, 16);
	__builtin_memcpy(&ip6->saddr, cfg->src6.addr, 16);
	__u32 next_mtu = mtu > 1280 ? mtu : 1280; /* RFC 8200 s5: the IPv6 minimum */
	icmp[0] = 2; /* Packet Too Big */
	icmp[1] = 0;
	icmp[2] = 0;
	icmp[3] = 0;
	__be32 m = bpf_htonl(next_mtu);
	__builtin_memcpy(icmp + 4, &m, 4);
	/* checksum over the pseudo-header (RFC 8200 s8.1), then the message */
	__u32 pseudo[10];
	__builtin_memcpy(pseudo, &ip6->saddr, 16);
	__builtin_memcpy(pseudo + 4, &ip6->daddr, 16);
	pseudo[8] = bpf_htonl(8 + DINET_PTB_QUOTE);
	pseudo[9] = bpf_htonl(DINET_IPPROTO_ICMPV6);
	__s64 sum = bpf_csum_diff(0, 0, pseudo, sizeof(pseudo), 0);
	if (sum < 0)
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	sum = bpf_csum_diff(0, 0, (void *)icmp, 8 + DINET_PTB_QUOTE, (__u32)sum);
	return icmp_send(ctx, sum, icmp + 2, (int)(data_end - data) - (int)(sizeof(*eth) + 48 + DINET_PTB_QUOTE));
}

/* The encapsulated packet would exceed `mtu` (the next hop's): tell the client what fits once the outer
 * header (olen bytes) is added. An IPv4 packet without DF may not be answered so (RFC 1191 s4) and this
 * node cannot fragment in XDP: it is dropped and counted. */
static __always_inline int too_big(struct xdp_md *ctx, struct steer_config *cfg, __u16 inner_eth_proto, __u32 mtu,
				   int olen)
{
	__u32 room = mtu > (__u32)olen ? mtu - olen : 0;
	if (inner_eth_proto == bpf_htons(DINET_ETHERTYPE_IPV6))
		return icmp6_too_big(ctx, cfg, room);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	if ((void *)(iph + 1) > data_end || !(iph->frag_off & bpf_htons(0x4000)))
		return verdict(DINET_DROP_TOO_BIG, XDP_DROP);
	return icmp4_too_big(ctx, cfg, room);
}

/* ds: the inner header's DS field (DSCP and ECN), copied to the outer one (RFC 2983's uniform model, RFC 6040's
 * normal mode), so that a link's classes (lab link emulation, a provider's queues) see the traffic's class. */
static __always_inline int encap_and_forward(struct xdp_md *ctx, struct inst_value *inst, __u16 inner_eth_proto,
					     __u32 inner_len, __u8 ds)
{
	__u32 zero = 0;
	struct steer_config *cfg = config.lookup(&zero);
	if (!cfg)
		return verdict(DINET_DROP_ENCAP, XDP_DROP);
	int v6 = inst->family == DINET_AF_INET6;
	int olen = v6 ? (int)sizeof(struct ipv6hdr) : (int)sizeof(struct iphdr);
	__u8 inner_proto = inner_eth_proto == bpf_htons(DINET_ETHERTYPE_IPV4) ? DINET_IPPROTO_IPIP : DINET_IPPROTO_IPV6;

	/* The next hop first (its lookup does not touch the frame): a frame too big for it once encapsulated
	 * is answered before anything is rewritten. */
	struct bpf_fib_lookup fib = {};
	int rc = BPF_FIB_LKUP_RET_SUCCESS;
	__u32 tot_len = inner_len + olen;
	__u32 *ep = (__u32 *)inst->endpoint.addr;
	__u32 nh_idx = (ep[0] ^ ep[1] ^ ep[2] ^ ep[3]);
	nh_idx = (nh_idx ^ (nh_idx >> 16)) & (DINET_NH_CACHE_SIZE - 1);
	struct nh_cache_entry *nh = NULL;
	__u64 now = 0;
	if (cfg->fwd_mode == DINET_FWD_STATIC && cfg->static_mtu && tot_len > cfg->static_mtu)
		return too_big(ctx, cfg, inner_eth_proto, cfg->static_mtu, olen);
	if (cfg->fwd_mode != DINET_FWD_STATIC) {
		nh = nh_cache.lookup(&nh_idx);
		now = bpf_ktime_get_ns();
		if (nh && nh->family == inst->family && tot_len <= nh->ok_len && now < nh->expires_ns &&
		    same_addr(&nh->endpoint, &inst->endpoint)) {
			fib.ifindex = nh->ifindex;
			__builtin_memcpy(fib.smac, nh->smac, ETH_ALEN);
			__builtin_memcpy(fib.dmac, nh->dmac, ETH_ALEN);
			goto rewrite; /* the FIB's answer of less than DINET_NH_CACHE_NS ago, for a packet this size */
		}
		if (v6) {
			fib.family = 10; /* AF_INET6 */
			__builtin_memcpy(fib.ipv6_src, cfg->src6.addr, 16);
			__builtin_memcpy(fib.ipv6_dst, inst->endpoint.addr, 16);
		} else {
			fib.family = 2; /* AF_INET */
			__builtin_memcpy(&fib.ipv4_src, cfg->src4.addr, 4);
			__builtin_memcpy(&fib.ipv4_dst, inst->endpoint.addr, 4);
		}
		fib.tot_len = tot_len;
		fib.ifindex = ctx->ingress_ifindex;
		rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
		if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
			return too_big(ctx, cfg, inner_eth_proto, fib.mtu_result, olen);
		if (rc == BPF_FIB_LKUP_RET_SUCCESS && nh) {
			int same = nh->family == inst->family && now < nh->expires_ns &&
				   same_addr(&nh->endpoint, &inst->endpoint) && nh->ifindex == fib.ifindex;
			if (!same) {
				__builtin_memcpy(nh->endpoint.addr, inst->endpoint.addr, 16);
				nh->family = inst->family;
				nh->ifindex = fib.ifindex;
				nh->ok_len = 0;
				nh->expires_ns = now + DINET_NH_CACHE_NS;
			}
			__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
			__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
			if (tot_len > nh->ok_len)
				nh->ok_len = tot_len;
		}
	}

rewrite:
	if (bpf_xdp_adjust_head(ctx, -olen))
		return verdict(DINET_DROP_ENCAP, XDP_DROP);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return verdict(DINET_DROP_ENCAP, XDP_DROP);
	if (v6) {
		struct ipv6hdr *o6 = (void *)(eth + 1);
		if ((void *)(o6 + 1) > data_end)
			return verdict(DINET_DROP_ENCAP, XDP_DROP);
		eth->h_proto = bpf_htons(DINET_ETHERTYPE_IPV6);
		o6->version = 6;
		o6->priority = ds >> 4;
		o6->flow_lbl[0] = (ds & 0x0f) << 4;
		o6->flow_lbl[1] = 0;
		o6->flow_lbl[2] = 0;
		o6->payload_len = bpf_htons(inner_len);
		o6->nexthdr = inner_proto;
		o6->hop_limit = DINET_ENCAP_TTL;
		__builtin_memcpy(&o6->saddr, cfg->src6.addr, 16);
		__builtin_memcpy(&o6->daddr, inst->endpoint.addr, 16);
	} else {
		struct iphdr *o4 = (void *)(eth + 1);
		if ((void *)(o4 + 1) > data_end)
			return verdict(DINET_DROP_ENCAP, XDP_DROP);
		eth->h_proto = bpf_htons(DINET_ETHERTYPE_IPV4);
		o4->version = 4;
		o4->ihl = 5;
		o4->tos = ds;
		o4->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
		o4->id = 0;
		o4->frag_off = 0;
		o4->ttl = DINET_ENCAP_TTL;
		o4->protocol = inner_proto;
		o4->check = 0;
		__builtin_memcpy(&o4->saddr, cfg->src4.addr, 4);
		__builtin_memcpy(&o4->daddr, inst->endpoint.addr, 4);
		o4->check = ipv4_csum(o4);
	}

	if (cfg->fwd_mode == DINET_FWD_STATIC) {
		__builtin_memcpy(eth->h_source, cfg->static_smac, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, cfg->static_dmac, ETH_ALEN);
		if (cfg->static_ifindex == 0)
			return XDP_TX;
		return bpf_redirect(cfg->static_ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		if (fib.ifindex == ctx->ingress_ifindex)
			return XDP_TX;
		return bpf_redirect(fib.ifindex, 0);
	}
	/* No neighbour entry yet (or no route): the kernel routes the encapsulated packet and resolves it. */
	return verdict(DINET_PASS_SLOW_PATH, XDP_PASS);
}

static __always_inline int steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct flow_key key __attribute__((aligned(8))) = {};
	struct vip_key vk = {};
	void *l4;
	__u32 l4_off; /* where L4 starts, from the IP header: checked against the datagram's length as a number
		       * (a second packet-pointer bound would let clang merge the two checks where the verifier
		       * cannot follow) */
	__u32 inner_len;
	__u64 frame_len = data_end - data;
	__u32 label = 0; /* the IPv6 flow label (RFC 6437), a session-affine service's key where set */
	__u8 ds = 0;     /* the DS field (DSCP, ECN): the outer header carries it too */
	__u64 filt;      /* what folds where the destination does (DINET_FILTER_*) */

	if ((void *)(eth + 1) > data_end)
		return verdict(DINET_PASS_NOT_SERVICE, XDP_PASS);
	__u16 eth_proto = eth->h_proto;

	if (eth_proto == bpf_htons(DINET_ETHERTYPE_IPV4)) {
		struct iphdr *iph = (void *)(eth + 1);
		if ((void *)iph + 20 > data_end || iph->ihl < 5 || iph->version != 4)
			return verdict(DINET_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(vk.addr.addr, &iph->daddr, 4);
		vk.family = DINET_AF_INET;
		filt = maybe_vip(&vk);
		if (!(filt & DINET_FILTER_VIPS))
			return verdict(DINET_PASS_NOT_SERVICE, XDP_PASS);
		inner_len = bpf_ntohs(iph->tot_len);
		if (inner_len < iph->ihl * 4 || (void *)iph + inner_len > data_end)
			return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
		l4_off = iph->ihl * 4; /* what follows inner_len is Ethernet padding or trailer, not the datagram */
		if (iph->frag_off & bpf_htons(0x3FFF)) /* MF set or offset nonzero */
			return not_steered(&vk, DINET_DROP_FRAGMENT, XDP_DROP);
		key.family = DINET_AF_INET;
		key.proto = iph->protocol;
		ds = iph->tos;
		__builtin_memcpy(key.src.addr, &iph->saddr, 4);
		__builtin_memcpy(key.dst.addr, &iph->daddr, 4);
		l4 = (void *)iph + iph->ihl * 4;
	} else if (eth_proto == bpf_htons(DINET_ETHERTYPE_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return verdict(DINET_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(vk.addr.addr, &ip6->daddr, 16);
		vk.family = DINET_AF_INET6;
		filt = maybe_vip(&vk);
		if (!(filt & DINET_FILTER_VIPS))
			return verdict(DINET_PASS_NOT_SERVICE, XDP_PASS);
		inner_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		if ((void *)ip6 + inner_len > data_end)
			return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
		l4_off = sizeof(*ip6);
		__u8 nh = ip6->nexthdr;
		l4 = ip6 + 1;
		/* RFC 8200 s4.1: walk hop-by-hop, routing and destination options to the upper layer. */
#pragma unroll
		for (int i = 0; i < DINET_IPV6_EXT_MAX; i++) {
			if (nh != DINET_IPPROTO_HOPOPTS && nh != DINET_IPPROTO_ROUTING && nh != DINET_IPPROTO_DSTOPTS)
				break;
			struct ipv6_opt_hdr *oh = l4;
			if ((void *)(oh + 1) > data_end)
				return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
			if (l4_off + sizeof(*oh) > inner_len)
				return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
			if ((oh->hdrlen + 1) * 8 > DINET_IPV6_EXT_MAX_LEN)
				return not_steered(&vk, DINET_DROP_IPV6_EXTHDR, XDP_DROP);
			nh = oh->nexthdr;
			l4 += (oh->hdrlen + 1) * 8;
			l4_off += (oh->hdrlen + 1) * 8;
		}
		if (l4_off > inner_len) /* the last extension header runs past the datagram */
			return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
		if (nh == DINET_IPPROTO_FRAGMENT)
			return not_steered(&vk, DINET_DROP_FRAGMENT, XDP_DROP);
		if (nh == DINET_IPPROTO_HOPOPTS || nh == DINET_IPPROTO_ROUTING || nh == DINET_IPPROTO_DSTOPTS)
			return not_steered(&vk, DINET_DROP_IPV6_EXTHDR, XDP_DROP);
		key.family = DINET_AF_INET6;
		key.proto = nh;
		label = ((__u32)(ip6->flow_lbl[0] & 0x0f) << 16) | ((__u32)ip6->flow_lbl[1] << 8) | ip6->flow_lbl[2];
		ds = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		__builtin_memcpy(key.src.addr, &ip6->saddr, 16);
		__builtin_memcpy(key.dst.addr, &ip6->daddr, 16);
	} else {
		return verdict(DINET_PASS_NOT_SERVICE, XDP_PASS);
	}

	if (key.proto != DINET_IPPROTO_TCP && key.proto != DINET_IPPROTO_UDP)
		return not_steered(&vk, DINET_PASS_UNKNOWN_SERVICE, XDP_PASS);
	struct udphdr *ports = l4; /* TCP and UDP both start with source and destination port */
	if ((void *)(ports + 1) > data_end)
		return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
	if (l4_off + sizeof(*ports) > inner_len) /* the L4 header's first 8 bytes lie in the datagram */
		return not_steered(&vk, DINET_DROP_MALFORMED, XDP_DROP);
	key.sport = ports->source;
	key.dport = ports->dest;
	/* Where a session-affine service folds (and only there), whether this is a TCP SYN: the session rules
	 * below need it; read here, so that nothing of the L4 header stays live past the lookups. */
	int sessions_here = (filt >> DINET_FILTER_SESSIONS_SHIFT) & DINET_FILTER_SESSIONS_MASK;
	int syn = sessions_here && tcp_syn(l4, data_end, l4_off, inner_len, key.proto);

	/* An established flow first: one hash lookup, then array loads only. A CPU's copy of an affinity entry is
	 * tagged with its destination's filter entry (session-affine services there and their epoch) when made;
	 * no copy is made where a session-affine service folds, so packets there take the LRU alone (a SYN on
	 * another CPU may have re-placed a flow, below, and only the LRU, shared by all, says so at once), and a
	 * copy made before session services came or went is not used (the epoch has moved on). */
	int new_flow = 0, session_event = SESSION_NONE;
	__u32 svc_id = DINET_MAX_SERVICES;
	__u32 slot = DINET_SLOT_NONE;
	struct inst_value *inst = 0;
	__u32 tag = filt >> DINET_FILTER_SESSIONS_SHIFT;
	__u32 cidx = cache_index(&key);
	struct flow_cache_entry *ce = flow_cache.lookup(&cidx);
	struct flow_value *fv = 0;
	int cached = 0;
	if (ce && same_key(&ce->key, &key) && ce->tag == tag) {
		fv = &ce->val;
		cached = 1;
		if ((++ce->hits & (DINET_FLOW_CACHE_TOUCH - 1)) == 0)
			affinity.lookup(&key); /* keep it recent in the LRU */
	} else {
		fv = affinity.lookup(&key);
		if (fv && ce && !sessions_here) {
			ce->key = key;
			ce->val = *fv;
			ce->hits = 0;
			ce->tag = tag;
		}
	}
	inst = flow_live(fv, &svc_id, &slot);
	if (!inst && cached) {
		/* This CPU's copy no longer holds (its instance left, or the set changed), but the LRU is the
		 * record: another CPU may have placed the flow since. Only a record that does not hold either
		 * places the flow anew, so a flow never moves between CPUs while its instance lives. */
		fv = affinity.lookup(&key);
		if (fv && ce) { /* cached: the copy is of this tag */
			ce->val = *fv;
			ce->hits = 0;
		}
		inst = flow_live(fv, &svc_id, &slot);
	}
	/* A TCP SYN (no ACK) with a session key to a session-affine service opens a new connection of that
	 * session: the session's entry places it, whatever the affinity table remembers of the 5-tuple (a client
	 * reuses its session's ports, also ones an earlier placement policy remembered; as Katran skips its LRU
	 * for a SYN). Only destinations where a session-affine service folds pay for this. */
	struct svc_value *sv = 0;
	if (inst && syn) {
		struct svc_key sk = {};
		svc_key_of(&sk, &key);
		sv = services.lookup(&sk);
		if (sv && (sv->flags & DINET_SVC_SESSION) && session_key(&key, label)) {
			inst = 0;
			fv = 0; /* not remembered: its session's entry places it */
			slot = DINET_SLOT_NONE;
			svc_id = DINET_MAX_SERVICES;
		}
	}
	if (slot == DINET_SLOT_NONE) {
		if (!sv) {
			struct svc_key sk = {};
			svc_key_of(&sk, &key);
			sv = services.lookup(&sk);
		}
		if (!sv || sv->svc_id >= DINET_MAX_SERVICES)
			return not_steered(&vk, DINET_PASS_UNKNOWN_SERVICE, XDP_PASS);
		__u32 session = (sv->flags & DINET_SVC_SESSION) ? session_key(&key, label) : 0;
		struct session_key sk2 = {};
		struct session_value *known = 0;
		inst = 0;
		if (session && (syn || !remembered(fv))) {
			sk2.src = key.src;
			sk2.svc_id = sv->svc_id;
			sk2.session = session;
			sk2.family = key.family;
			known = sessions.lookup(&sk2);
			inst = session_live(known, sv->svc_id, sv->gen);
		}
		if (inst && known) {
			slot = known->slot; /* the session's instance, whatever the weights say since */
			session_event = SESSION_FOUND;
		} else {
			if (pick_slot(sv, flow_hash(&key, session), &slot, &inst) < 0)
				return verdict(DINET_DROP_NO_INSTANCE, XDP_DROP);
			if ((sv->flags & DINET_SVC_TWO_CHOICES) && !session)
				two_choices(sv, &key, &slot, &inst);
			if (session) {
				struct session_value nsv = {};
				nsv.slot = slot;
				nsv.instance_id = inst->instance_id;
				nsv.epoch = inst->epoch;
				nsv.gen = sv->gen;
				sessions.update(&sk2, &nsv);
				session_event = known ? SESSION_REPLACED : SESSION_NEW;
			}
		}
		svc_id = sv->svc_id;
		struct flow_value nv = {};
		nv.svc_id = svc_id;
		nv.slot = slot;
		nv.instance_id = inst->instance_id;
		nv.gen = sv->gen;
		nv.epoch = inst->epoch;
		nv.session = session;
		affinity.update(&key, &nv);
		if (ce && !sessions_here) {
			ce->key = key;
			ce->val = nv;
			ce->hits = 0;
			ce->tag = tag;
		}
		new_flow = 1;
	}
	if (!inst)
		return verdict(DINET_DROP_NO_INSTANCE, XDP_DROP);

	__u32 svc_idx = svc_id;
	__u32 inst_idx = svc_id * DINET_MAX_INSTANCES + slot;
	count(svc_stats.lookup(&svc_idx), frame_len, new_flow, session_event);
	count(inst_stats.lookup(&inst_idx), frame_len, new_flow, session_event);
	return encap_and_forward(ctx, inst, eth_proto, inner_len, ds);
}

#ifndef DINET_STEER_NO_ENTRY /* bench_steer.bpf.c defines the entry points itself (bcc takes only the main file's) */
int xdp_steer(struct xdp_md *ctx)
{
	return steer(ctx);
}
#endif
