/* steer.h: the contract between the steering/decap XDP programs and user space: the key and value
 * layout of every map. User space never re-declares these; it takes bcc's BTF-derived Key/Leaf types. */
#ifndef DINET_STEER_H
#define DINET_STEER_H

#include "dinet_consts.h"

/* An address of either family: IPv4 in addr[0..3] with the rest zero. Network byte order. */
struct dinet_addr {
	__u8 addr[16];
};

/* services: key (VIP, L4 protocol, port in network order, family) -> service slot. Written by dinet. */
struct svc_key {
	struct dinet_addr vip;
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* ring_sel: which of the two ring halves is live (flipped atomically after the other half is written).
 * gen: the slot's generation when this service took it (see svc_gen). */
struct svc_value {
	__u32 svc_id;
	__u32 ring_sel;
	__u32 gen;
	__u32 flags; /* DINET_SVC_SESSION: new flows placed by their session key (dinet_consts.h) */
};

/* vip_addrs: key the VIP address alone -> number of services on it, so non-service traffic
 * leaves after one lookup and malformed traffic to a VIP is told apart from traffic to others. */
struct vip_key {
	struct dinet_addr addr;
	__u32 family;
};

/* instances: index svc_id * DINET_MAX_INSTANCES + slot -> the instance. Written by dinet. */
struct inst_value {
	struct dinet_addr endpoint; /* tunnel endpoint: the host that decapsulates (network order) */
	__u32 instance_id;          /* the operator's id for the instance; 0 = empty slot */
	__u32 weight;
	__u8 family;                /* family of endpoint */
	__u8 state;                 /* DINET_INST_* */
	__u16 site_id;
	__u32 epoch;                /* drawn by dinet (nonzero) each time an instance takes the slot, so a flow
	                             * placed on an earlier occupant, even this instance before it left and came
	                             * back, is not taken for one of this occupant's */
	/* two-choices services (dinet_consts.h, DINET_SVC_TWO_CHOICES): the load the controller last wrote */
	__u32 load_gen;  /* the report the load is of: placed flows counted under another do not count */
	__u32 load_step; /* what each new flow placed here beyond load_free adds to load */
	__u32 load_free; /* new flows it takes before they add load_step (requests it runs before one waits) */
	__u32 load_each; /* what each new flow placed here adds to load (dinet: its prefill) */
	__u64 load;      /* dinet writes a new request's predicted TTFT in microseconds */
};

/* inst_placed: index as instances -> the new flows the program placed on a two-choices service's instance
 * under the load of report `gen` (shared by every CPU, added to atomically). Written here only; read by dinet. */
struct placed_value {
	__u32 gen;
	__u32 count;
};

/* affinity: LRU, key the 5-tuple as seen on the wire -> where the flow was placed. Written by the
 * program on a new flow; read by dinet (list) and deleted by nobody but the LRU. */
struct flow_key {
	struct dinet_addr src;
	struct dinet_addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct flow_value {
	__u32 svc_id;
	__u32 slot;
	__u32 instance_id; /* the slot's occupant when placed: a reused slot is not the same instance */
	__u32 gen;         /* svc_gen[svc_id] when placed: a removed or replaced service is not the same */
	__u32 epoch;       /* the instance slot's epoch when placed */
	__u32 session;     /* the session key it was placed by (0: its 5-tuple placed it) */
};

/* sessions: LRU, key (service slot, session key, client address) -> the instance its flows go to. Written by
 * the program when a session-affine service places a session; read by dinet (list); evicted by the LRU. */
struct session_key {
	struct dinet_addr src;
	__u32 svc_id;
	__u32 session; /* tag << 24 | value (dinet_consts.h) */
	__u32 family;
};

struct session_value {
	__u32 slot;
	__u32 instance_id;
	__u32 epoch;
	__u32 gen; /* svc_gen[svc_id] when placed */
};

/* nh_cache (kernel side only): per CPU, direct-mapped by tunnel endpoint, a copy of what bpf_fib_lookup
 * answered for it: where to send, with which MACs, and the largest packet it accepted. Valid for
 * DINET_NH_CACHE_NS; a larger packet, a miss or an expired entry asks the FIB again. */
struct nh_cache_entry {
	struct dinet_addr endpoint;
	__u64 expires_ns;
	__u32 ifindex;
	__u32 ok_len;
	__u8 smac[6];
	__u8 dmac[6];
	__u8 family;
	__u8 pad[3];
};

/* flow_cache (kernel side only): per CPU, direct-mapped, a copy of recently used affinity entries (never made
 * where a session-affine service folds: a SYN on a 5-tuple may re-place its flow, and only the shared LRU says
 * so). tag: the upper half of the destination's vip_filter entry when copied (no session services, and their
 * epoch): a copy of another tag is not used, as the LRU may have moved on meanwhile. */
struct flow_cache_entry {
	struct flow_key key;
	struct flow_value val;
	__u32 hits;
	__u32 tag;
};


/* Per-CPU counters for a service (index svc_id) and an instance (index svc_id * MAX_INSTANCES + slot). */
struct steer_counter {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 session_flows;     /* of the new flows, those of a session that found its session's instance */
	__u64 sessions;          /* sessions placed (a session key seen for the first time) */
	__u64 sessions_replaced; /* sessions placed again: the instance they had left */
};

/* config: index 0, the ingress node's tunnel sources and forwarding mode. Written by dinet. */
struct steer_config {
	struct dinet_addr src4;
	struct dinet_addr src6;
	__u8 fwd_mode;      /* DINET_FWD_FIB or DINET_FWD_STATIC */
	__u8 pad[3];
	__u32 static_ifindex; /* DINET_FWD_STATIC: 0 = XDP_TX back out of the ingress port */
	__u8 static_smac[6];
	__u8 static_dmac[6];
	__u32 static_mtu; /* DINET_FWD_STATIC: the next hop's MTU (0: not checked) */
};

/* endpoints (decap side): key a local tunnel endpoint address -> 1. Written by dinet. */
struct endpoint_key {
	struct dinet_addr addr;
	__u32 family;
};

#endif /* DINET_STEER_H */
