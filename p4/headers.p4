/* headers.p4: packet headers and metadata of the dinet v1model program. The formats mirror ebpf/steer.h,
 * ebpf/bier.h and RFC 8296; constants come from ebpf/dinet_consts.h, shared with the eBPF programs. */
#ifndef DINET_HEADERS_P4
#define DINET_HEADERS_P4

#include "../ebpf/dinet_consts.h"

#ifndef DINET_P4_AFFINITY_SIZE
#define DINET_P4_AFFINITY_SIZE 262144
#endif
#define INST_INDEXES (DINET_MAX_SERVICES * DINET_MAX_INSTANCES)

typedef bit<48> mac_t;
typedef bit<9> port_t;

header ethernet_h {
    mac_t dst;
    mac_t src;
    bit<16> ether_type;
}

header ipv4_h {
    bit<4> version;
    bit<4> ihl;
    bit<8> tos;
    bit<16> total_len;
    bit<16> identification;
    bit<3> flags;
    bit<13> frag_offset;
    bit<8> ttl;
    bit<8> protocol;
    bit<16> hdr_checksum;
    bit<32> src;
    bit<32> dst;
}

header ipv4_opts_h {
    varbit<320> options;
}

header ipv6_h {
    bit<4> version;
    bit<8> traffic_class;
    bit<20> flow_label;
    bit<16> payload_len;
    bit<8> next_hdr;
    bit<8> hop_limit;
    bit<128> src;
    bit<128> dst;
}

/* RFC 8200 s4.3-4.6: hop-by-hop, routing, destination options: 8 + 8 * hdr_ext_len bytes. */
header ipv6_ext_h {
    bit<8> next_hdr;
    bit<8> hdr_ext_len;
    varbit<(DINET_IPV6_EXT_MAX_LEN * 8 - 16)> data;
}

/* TCP and UDP both begin with the two ports. */
header l4_ports_h {
    bit<16> sport;
    bit<16> dport;
}

/* TCP's header after its ports, through its flags (parsed where the datagram holds it: a SYN to a
 * session-affine service is a new connection of its session). */
header tcp_more_h {
    bit<32> seq;
    bit<32> ack;
    bit<8> offset_reserved;
    bit<8> flags;
}

/* RFC 8296 s2.1.1: the BIFT-id word, then the BIER header proper. */
header bift_word_h {
    bit<20> bift_id;
    bit<3> tc;
    bit<1> s;
    bit<8> ttl;
}

header bier_h {
    bit<4> nibble;
    bit<4> version;
    bit<4> bsl;
    bit<20> entropy;
    bit<2> oam;
    bit<2> rsv;
    bit<6> dscp;
    bit<6> proto;
    bit<16> bfir_id;
}

/* RFC 3032 s2.1: an MPLS label stack entry (the SR-P2MP tree baseline's two labels). */
header mpls_h {
    bit<20> label;
    bit<3> tc;
    bit<1> s;
    bit<8> ttl;
}

header bs64_h { bit<64> bits; }
header bs128_h { bit<128> bits; }
header bs256_h { bit<256> bits; }

struct headers_t {
    ethernet_h ethernet;
    ipv4_h outer_ipv4;
    ipv6_h outer_ipv6;
    bift_word_h bift;
    bier_h bier;
    bs64_h bs64;
    bs128_h bs128;
    bs256_h bs256;
    mpls_h mpls0;  /* a tree's node SID */
    mpls_h mpls1;  /* a tree's replication SID (bottom of stack) */
    ipv4_h ipv4;
    ipv4_opts_h ipv4_opts;
    ipv6_h ipv6;
    ipv6_ext_h ext1;
    ipv6_ext_h ext2;
    l4_ports_h l4;
    tcp_more_h tcp;
}

struct metadata_t {
    bit<8> l4_proto;
    /* the IP header's length with the extension headers parsed: where L4 starts within the datagram */
    bit<16> l3_len;
    bit<16> dgram_len;  /* the IP datagram's own length (IPv4 total length; IPv6 payload length + 40) */
    bit<1> bad_ihl;
    bit<1> fragment;
    bit<1> ext_unsupported;
    bit<16> svc_id;
    bit<1> ring_sel;
    bit<32> gen;
    bit<8> svc_flags;  /* DINET_SVC_* */
    bit<16> slot;
    bit<32> ring_idx;
    bit<32> aff_idx;
    bit<32> aff_idx2;
    bit<1> new_flow;
    bit<8> inst_family;
    bit<128> endpoint;
    bit<16> inner_len;
    /* BIER */
    bit<256> bs;
    bit<1> bier_bfir;
    /* fast reroute: the port (as a one-bit mask, 0: none) whose failure the entry in use was planned for;
     * every replica carries it to egress, where it selects the replicas' F-BMs */
    bit<64> bier_failed;
    /* the set a BFIR pass sends (0 first); kept across the clone and recirculation of the next pass */
    @field_list(1)
    bit<8> bfir_set;
    /* SR-P2MP trees: the replication SID whose segment replicates (kept in every replica for egress), the
     * TTL the replicas carry, the IP version after the label stack (what a leaf delivers) */
    bit<20> tree_rep;
    bit<8> tree_ttl;
    bit<4> tree_inner_ver;
}

#endif
