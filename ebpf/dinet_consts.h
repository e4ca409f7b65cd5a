/* dinet_consts.h: the one definition of every constant shared by the eBPF programs (clang via bcc),
 * the P4 programs (p4c runs the C preprocessor) and the Python control plane (dinet.consts parses
 * this file). Plain #defines only: no types, no expressions other than integer literals.
 * Sizes may be overridden at compile time (-DDINET_MAX_SERVICES=...), hence the #ifndef guards. */
#ifndef DINET_CONSTS_H
#define DINET_CONSTS_H

/* EtherTypes (IEEE registry). RFC 8296 s2.2: BIER over Ethernet uses 0xAB37. */
#define DINET_ETHERTYPE_IPV4 0x0800
#define DINET_ETHERTYPE_IPV6 0x86DD
#define DINET_ETHERTYPE_BIER 0xAB37
/* RFC 3032: MPLS unicast; the SR-P2MP tree baseline's label stack (draft-ietf-pim-sr-p2mp-policy). */
#define DINET_ETHERTYPE_MPLS 0x8847

/* IP protocol numbers (IANA). The steering encapsulation is IP-in-IP: 4 = IPv4 inner, 41 = IPv6 inner. */
#define DINET_IPPROTO_HOPOPTS 0
#define DINET_IPPROTO_IPIP 4
#define DINET_IPPROTO_TCP 6
#define DINET_IPPROTO_UDP 17
#define DINET_IPPROTO_IPV6 41
#define DINET_IPPROTO_ROUTING 43
#define DINET_IPPROTO_FRAGMENT 44
#define DINET_IPPROTO_DSTOPTS 60
#define DINET_IPPROTO_ICMPV6 58
#define DINET_ENCAP_TTL 64

/* Address families as stored in map keys and values. */
#define DINET_AF_INET 4
#define DINET_AF_INET6 6

/* Steering table sizes. The ring (Maglev lookup table) size must be prime. */
#ifndef DINET_MAX_SERVICES
#define DINET_MAX_SERVICES 4096
#endif
#ifndef DINET_MAX_INSTANCES
#define DINET_MAX_INSTANCES 256
#endif
#ifndef DINET_RING_SIZE
#define DINET_RING_SIZE 4099
#endif
#ifndef DINET_AFFINITY_ENTRIES
#define DINET_AFFINITY_ENTRIES 1048576
#endif
#define DINET_MAX_VIP_ADDRS 8192
/* Entries of each CPU's flow cache (a power of two) and how often a cached flow refreshes its LRU entry. */
#define DINET_FLOW_CACHE_SIZE 4096
#define DINET_FLOW_CACHE_TOUCH 64
/* Next-hop cache of the steering program (per CPU, by tunnel endpoint): entries (a power of two), and how
 * long a FIB answer is reused: a route or neighbour change reaches steered traffic within this time. */
#define DINET_NH_CACHE_SIZE 256
#define DINET_NH_CACHE_NS 50000000
/* Entries of the VIP address filter (a power of two), and its 64-bit value: the VIP addresses that fold
 * there (low 32 bits), the session-affine services that do (16 bits), and an epoch bumped whenever the
 * latter changes (the top 16 bits; the steering program's flow cache keeps copies of one epoch only). */
#define DINET_VIP_FILTER_SIZE 65536
#define DINET_FILTER_VIPS 0xFFFFFFFF
#define DINET_FILTER_SESSIONS_SHIFT 32
#define DINET_FILTER_SESSIONS_MASK 0xFFFF
#define DINET_FILTER_EPOCH_SHIFT 48
#define DINET_MAX_ENDPOINTS 1024
/* IPv6 extension headers (hop-by-hop, routing, destination options) the steering path walks, on both data
 * planes, and the longest one it takes, in bytes (BMv2's varbit bounds it); beyond either:
 * DINET_DROP_IPV6_EXTHDR. */
#define DINET_IPV6_EXT_MAX 2
#define DINET_IPV6_EXT_MAX_LEN 256
/* Bytes of the client's packet quoted in an ICMPv6 Packet Too Big (a multiple of 4, at most 512). */
#define DINET_PTB_QUOTE 128
/* A ring slot holding this value names no instance (service with no usable instance). */
#define DINET_SLOT_NONE 0xFFFFFFFF

/* Session-affine services (service flag DINET_SVC_SESSION): a new flow is placed by its session key, not its
 * 5-tuple, so every connection of one conversation reaches the same instance. The key is, in this order:
 * the IPv6 flow label when nonzero (RFC 6437: set by the source, unchanged end to end), tagged
 * DINET_SESSION_TAG_LABEL; else the source port's group when the port is at least DINET_SESSION_PORT_MIN
 * (outside Linux's default ephemeral range 32768-60999; a client binds one of the 2^PORT_BITS ports of its
 * session's group), tagged DINET_SESSION_TAG_PORT; else none, and the 5-tuple places the flow. The hash is
 * CRC-32 over source, destination, the 32-bit key (tag << 24 | value, network order), destination port and
 * protocol. */
#define DINET_SVC_SESSION 1
/* Sessions remembered per steering node: key (service slot, client address, session key) -> the instance the
 * session's first flow took. A session's next flow goes there while the instance lives (up or draining, the
 * same occupant of the slot), whatever the weights say since; a session whose instance left is placed anew
 * (by its key on the ring) and counted as re-placed. The eBPF map is an LRU; the P4 table is direct-mapped by
 * CRC-32 of the key (a colliding session takes the entry: the one it replaced is placed by the ring again). */
#ifndef DINET_SESSION_ENTRIES
#define DINET_SESSION_ENTRIES 65536
#endif
#ifndef DINET_P4_SESSION_SIZE
#define DINET_P4_SESSION_SIZE 65536
#endif
#define DINET_SESSION_PORT_MIN 61440
#define DINET_SESSION_PORT_BITS 3
#define DINET_SESSION_TAG_LABEL 1
#define DINET_SESSION_TAG_PORT 2

/* Two-choices services (service flag DINET_SVC_TWO_CHOICES; not with DINET_SVC_SESSION): a new flow takes two
 * candidates from the weighted ring, the first at CRC-32 over (source, destination, source port, destination
 * port, protocol) as every flow, the second at CRC-32 over the same fields in the reverse order (destination
 * port, source port, destination, source, protocol), and goes to the one whose load is lower (the first on a
 * tie). An instance's load is what the controller last wrote for it (inst_value.load: dinet writes predicted
 * TTFT in microseconds) plus what the new flows the data plane placed there since add: each new flow adds
 * `load_each` (dinet: its prefill, which delays the first tokens of those after it), and each beyond `load_free`
 * also `load_step` (n placed: load + n x load_each + max(0, n - load_free) x load_step). The count of placed
 * flows restarts whenever the controller writes a load of another report (load_gen). */
#define DINET_SVC_TWO_CHOICES 2

/* Traffic classes on the wire (draft-song-dmsc-problem-statement s5.2: performance isolation): the DSCP each kind
 * of traffic is marked with where it starts (dinet serve, dinet load, the KV hand-over, dinet sync), after RFC
 * 4594's service classes; the steering tunnels copy it to the outer header, and a link's classes (the lab's
 * link emulation: HTB, an eBPF classifier at TC) queue by it. */
#define DINET_DSCP_SENSITIVE 32 /* CS4, real-time interactive: delay-sensitive inference */
#define DINET_DSCP_KV 18        /* AF21, low-latency data: a KV cache handed from prefill to decode */
#define DINET_DSCP_TOLERANT 10  /* AF11, high-throughput data: delay-tolerant inference */
#define DINET_DSCP_SYNC 1       /* LE, lower effort (RFC 8622): model synchronisation */

/* Instance states in the instance table. */
#define DINET_INST_DOWN 0
#define DINET_INST_UP 1
#define DINET_INST_DRAINING 2

/* Forwarding modes of the ingress node (config map). */
#define DINET_FWD_FIB 0
#define DINET_FWD_STATIC 1

/* Steering verdict counters (index into the per-CPU `verdicts` array). Drops first, then passes. */
#define DINET_DROP_MALFORMED 0
#define DINET_DROP_FRAGMENT 1
#define DINET_DROP_IPV6_EXTHDR 2
#define DINET_DROP_NO_INSTANCE 3
#define DINET_DROP_ENCAP 4
#define DINET_DROP_TOO_BIG 5
#define DINET_PASS_NOT_SERVICE 6
#define DINET_PASS_UNKNOWN_SERVICE 7
#define DINET_PASS_SLOW_PATH 8
#define DINET_DECAP_OK 9
#define DINET_DROP_DECAP_MALFORMED 10
/* P4 only: a new flow whose two affinity entries both hold live flows (steered, not remembered). */
#define DINET_AFFINITY_COLLISION 11
/* an ICMP "fragmentation needed" sent back for a packet that would not fit once encapsulated */
#define DINET_ICMP_TOO_BIG 12
#define DINET_VERDICTS 16

/* RFC 8296 s2.1.2: BSL encoding, 1 = 64 bits ... 7 = 4096 bits. */
#define BIER_BSL_64 1
#define BIER_BSL_128 2
#define BIER_BSL_256 3
#define BIER_BSL_512 4
#define BIER_BSL_1024 5
#define BIER_BSL_2048 6
#define BIER_BSL_4096 7
/* RFC 8296 s2.1.2: Proto values (IANA "BIER Next Protocol Identifiers"). */
#define BIER_PROTO_MPLS_DOWN 1
#define BIER_PROTO_MPLS_UP 2
#define BIER_PROTO_ETHERNET 3
#define BIER_PROTO_IPV4 4
#define BIER_PROTO_OAM 5
#define BIER_PROTO_IPV6 6
#define BIER_NIBBLE 5
#define BIER_VERSION 0
/* BIER header without bitstring: 8 bytes of fixed fields (RFC 8296 s2.1); the BIFT-id word is 4 more. */
#define BIER_FIXED_LEN 8
#define BIER_BIFT_WORD_LEN 4

/* RFC 8296 s2.1.1.1 / draft-ietf-bier-non-mpls-bift-encoding: BIFT-id = BSL(4) | SD(8) | SI(8). */
#define BIER_BIFT_BSL_SHIFT 16
#define BIER_BIFT_SD_SHIFT 8
#define BIER_DEFAULT_TTL 64
#define BIER_MAX_BSL_WORDS 4
#define BIER_MAX_NEIGHBORS 16
#define BIER_MAX_BIFT 1024
#define BIER_MAX_BFIR 1024
/* fast reroute: the entry for "neighbour slot i's port is down" is kept in `bift` under the BIFT-id with
 * i + 1 above its 20 bits; ports a node can see down */
#define BIER_FRR_KEY_SHIFT 20
#define BIER_MAX_PORTS 256
#define BIER_MAX_SI_PER_GROUP 4
/* The XDP fast path takes a transit frame with at least this many copies to send (bier_cfg overrides):
 * below it a clone per copy in TC is faster (bench/bier.py). */
#define BIER_XDP_MIN_FANOUT 3
/* skb->mark bit of a decapsulated packet handed back to the stack (so it is not classified again). */
#define BIER_MARK_LOCAL 0x0B1E0000

/* BIER counters (index into the per-CPU `bier_counters` array): events, then drops. */
#define BIER_EV_RX 0
#define BIER_EV_COPIES 1
#define BIER_EV_LOCAL 2
#define BIER_EV_BFIR_PUSH 3
#define BIER_EV_PASS 4
/* frames forwarded by the XDP fast path (transit: no bit of this node's) */
#define BIER_EV_FAST 5
/* frames replicated with a fast-reroute entry (a neighbour's port was down) */
#define BIER_EV_FRR 6
#define BIER_DROP_NIBBLE 8
#define BIER_DROP_VERSION 9
#define BIER_DROP_BSL 10
#define BIER_DROP_TRUNCATED 11
#define BIER_DROP_ZERO_BITSTRING 12
#define BIER_DROP_TTL 13
#define BIER_DROP_BIFT_MISS 14
#define BIER_DROP_NO_NEIGHBOR 15
#define BIER_DROP_PROTO 16
#define BIER_DROP_REDIRECT 17
#define BIER_DROP_ENCAP 18
/* an IP packet that matches a BFIR entry but is malformed (version, header or total length, UDP header
 * beyond the datagram): dropped, not encapsulated */
#define BIER_DROP_MALFORMED 19
/* frames with a neighbour whose port is down and no fast-reroute entry for it (that copy is lost) */
#define BIER_DROP_PORT_DOWN 20
/* The SR-P2MP tree baseline, forwarded by the same program (tree_*: see bier.bpf.c's tree section):
 * frames with a tree's label stack received, replicas sent, frames passed on by node SID (SR unicast toward
 * the next replication node), IP packets a tree root put on a tree; drops: no replication segment for the
 * replication SID, no route for the node SID, a label stack that is not [node SID, replication SID(S)]. */
#define BIER_EV_TREE_PUSH 7
#define BIER_EV_TREE_RX 21
#define BIER_EV_TREE_COPIES 22
#define BIER_EV_TREE_UNICAST 23
#define BIER_DROP_TREE_SEGMENT 24
#define BIER_DROP_TREE_ROUTE 25
#define BIER_DROP_TREE_STACK 26
#define BIER_COUNTERS 32

/* SR-P2MP trees (draft-ietf-pim-sr-p2mp-policy) over SR-MPLS: every frame of a tree carries two labels,
 * the node SID of the next replication node and that node's replication SID (bottom of stack). Node SIDs
 * are TREE_NODE_SID_BASE + the node's index (an SRGB); replication SIDs are the controller's, one per tree
 * and node, from TREE_REP_SID_BASE. A replication segment has at most TREE_MAX_REPLICAS downstream nodes. */
#define TREE_HLEN 8
#define TREE_NODE_SID_BASE 16000
#define TREE_REP_SID_BASE 100000
#define TREE_MAX_REPLICAS 16
#define TREE_MAX_SEGMENTS 4096
#define TREE_MAX_NODES 4096
#define TREE_MAX_ROOTS 1024

#endif /* DINET_CONSTS_H */
