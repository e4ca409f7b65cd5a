/* bier.h: the contract between the BIER TC program and user space: the key and value layout of every map.
 * Bitstrings and forwarding bit masks are kept as the packet carries them (RFC 8296 s2.1: network order,
 * BFR-id 1 of a set is the last bit), in BIER_MAX_BSL_WORDS 64-bit words of which a BSL of 64, 128 or 256
 * uses the first 1, 2 or 4. AND and OR do not care about byte order, so no word is ever swapped. */
#ifndef DINET_BIER_H
#define DINET_BIER_H

#include "dinet_consts.h"

struct bier_bits {
	__u64 w[BIER_MAX_BSL_WORDS];
};

/* A neighbour in a BIFT: where a copy goes and which bits it serves (RFC 8279 s6.5, the F-BM). */
struct bier_nbr {
	struct bier_bits fbm;
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
	__u16 pad;
};

/* bift: key the BIFT-id (host order) -> this BFR's forwarding entry for that (BSL, SD, SI). Written by dinet. */
struct bift_entry {
	struct bier_bits local; /* this BFR's own bit(s) in the set: a packet with one set is delivered here too */
	__u32 n_nbr;
	__u32 pad;
	struct bier_nbr nbr[BIER_MAX_NEIGHBORS];
};

/* Fast reroute (loop-free alternates per BFER, planned by dinet with the BIFT): `bift` also holds, under
 * key ((i + 1) << BIER_FRR_KEY_SHIFT) | BIFT-id, the whole entry to use while the port of the entry's
 * neighbour i is down (that neighbour's bits moved to its backups). bier_port_down: ifindex -> when the
 * port went down (CLOCK_MONOTONIC ns), bier_cfg[1]: how many are down; both written by the node's link
 * monitor the moment the kernel reports the link (no controller, no planning in between). */

/* bfir: key the traffic to encapsulate -> the sets to send it to. Looked up as (S,G), then (*,G), then
 * (*, destination, UDP port) for model sync. Addresses in network order, IPv4 in the first 4 bytes. */
struct bfir_key {
	__u8 src[16];
	__u8 dst[16];
	__be16 dport;
	__u8 proto;
	__u8 family;
};

struct bfir_set {
	struct bier_bits bits;
	__u32 bift_id;
	__u32 pad;
};

struct bfir_entry {
	__u32 n_sets;
	__u16 bfir_id; /* this BFIR's BFR-id, carried in every header it pushes */
	__u8 bsl;      /* BSL code (1 = 64 bits ...) of every set below */
	__u8 pad;
	struct bfir_set sets[BIER_MAX_SI_PER_GROUP];
};

/* ---- SR-P2MP trees (the baseline BIER is compared with; draft-ietf-pim-sr-p2mp-policy) ---- */

/* One replica of a replication segment: the downstream replication node's node SID and replication SID
 * (the two labels the replica carries) and the first hop toward that node (the controller resolves it from
 * the domain's shortest paths: the replica reaches a node that is not a neighbour over SR unicast). */
struct tree_replica {
	__u32 node_sid;
	__u32 rep_sid;
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
};

/* tree_segment: key a replication SID (host order) -> this node's replication segment for that tree: its
 * replicas and whether it is a leaf (delivers locally). Written by dinet per tree; the state that grows
 * with the jobs and their destination sets. */
struct tree_segment {
	__u32 n;
	__u8 local;
	__u8 pad[3];
	struct tree_replica r[TREE_MAX_REPLICAS];
};

/* tree_node: key a node SID (host order) -> how this node forwards a frame whose top label it is: to the
 * next hop toward that node, or (local) to its own replication segments. Written by dinet from the
 * domain's shortest paths: one entry per node of the domain, whatever the trees (the IGP's state). */
struct tree_hop {
	__u32 ifindex;
	__u8 local;
	__u8 pad;
	__u8 smac[6];
	__u8 dmac[6];
	__u16 pad2;
};

/* tree_root: key the traffic a tree carries (the bfir_key lookups, same order) -> the root's own
 * replication SID of that tree. Written by dinet per job at the tree's root. */
struct tree_root {
	__u32 rep_sid;
	__u32 pad;
};

#endif /* DINET_BIER_H */
