/* parser.p4: Ethernet, then IPv4 (with options) / IPv6 (with up to DINET_IPV6_EXT_MAX = 2 extension headers
 * of at most DINET_IPV6_EXT_MAX_LEN bytes each, as the eBPF program) / BIER / a tree's MPLS label stack. */
#ifndef DINET_PARSER_P4
#define DINET_PARSER_P4

#include "headers.p4"

parser DinetParser(packet_in pkt, out headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            DINET_ETHERTYPE_IPV4: parse_ipv4;
            DINET_ETHERTYPE_IPV6: parse_ipv6;
            DINET_ETHERTYPE_BIER: parse_bier;
            DINET_ETHERTYPE_MPLS: parse_mpls;
            default: accept;
        }
    }

    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        meta.l3_len = ((bit<16>)hdr.ipv4.ihl) << 2;
        meta.dgram_len = hdr.ipv4.total_len;
        transition select(hdr.ipv4.ihl) {
            0 &&& 0xC: bad_ihl;  /* 0-3 */
            4: bad_ihl;
            5: parse_ipv4_l4;
            default: parse_ipv4_opts;
        }
    }

    state bad_ihl {
        meta.bad_ihl = 1;
        transition accept;
    }

    state parse_ipv4_opts {
        pkt.extract(hdr.ipv4_opts, ((bit<32>)hdr.ipv4.ihl - 5) * 32);
        transition parse_ipv4_l4;
    }

    state parse_ipv4_l4 {
        meta.l4_proto = hdr.ipv4.protocol;
        transition select(hdr.ipv4.flags[0:0], hdr.ipv4.frag_offset) {
            (0, 0): parse_l4_if_ports;
            default: fragment;
        }
    }

    state fragment {
        meta.fragment = 1;
        transition accept;
    }

    state parse_ipv6 {
        pkt.extract(hdr.ipv6);
        meta.l3_len = 40;
        meta.dgram_len = hdr.ipv6.payload_len + 40;
        meta.l4_proto = hdr.ipv6.next_hdr;
        transition select(hdr.ipv6.next_hdr) {
            DINET_IPPROTO_HOPOPTS: parse_ext1;
            DINET_IPPROTO_ROUTING: parse_ext1;
            DINET_IPPROTO_DSTOPTS: parse_ext1;
            DINET_IPPROTO_FRAGMENT: fragment;
            default: parse_l4_if_ports;
        }
    }

    state parse_ext1 {
        bit<16> la = pkt.lookahead<bit<16>>();
        transition select(la[7:0]) {
            0 &&& 0xE0: parse_ext1_body;  /* (hdr_ext_len + 1) * 8 <= DINET_IPV6_EXT_MAX_LEN (256) */
            default: ext_unsupported;
        }
    }

    state parse_ext1_body {
        bit<16> la = pkt.lookahead<bit<16>>();
        pkt.extract(hdr.ext1, (bit<32>)la[7:0] * 64 + 48);
        meta.l3_len = meta.l3_len + (((bit<16>)hdr.ext1.hdr_ext_len) << 3) + 8;
        meta.l4_proto = hdr.ext1.next_hdr;
        transition select(hdr.ext1.next_hdr) {
            DINET_IPPROTO_HOPOPTS: parse_ext2;
            DINET_IPPROTO_ROUTING: parse_ext2;
            DINET_IPPROTO_DSTOPTS: parse_ext2;
            DINET_IPPROTO_FRAGMENT: fragment;
            default: parse_l4_if_ports;
        }
    }

    state parse_ext2 {
        bit<16> la = pkt.lookahead<bit<16>>();
        transition select(la[7:0]) {
            0 &&& 0xE0: parse_ext2_body;  /* (hdr_ext_len + 1) * 8 <= DINET_IPV6_EXT_MAX_LEN (256) */
            default: ext_unsupported;
        }
    }

    state parse_ext2_body {
        bit<16> la = pkt.lookahead<bit<16>>();
        pkt.extract(hdr.ext2, (bit<32>)la[7:0] * 64 + 48);
        meta.l3_len = meta.l3_len + (((bit<16>)hdr.ext2.hdr_ext_len) << 3) + 8;
        meta.l4_proto = hdr.ext2.next_hdr;
        transition select(hdr.ext2.next_hdr) {
            DINET_IPPROTO_HOPOPTS: ext_unsupported;
            DINET_IPPROTO_ROUTING: ext_unsupported;
            DINET_IPPROTO_DSTOPTS: ext_unsupported;
            DINET_IPPROTO_FRAGMENT: fragment;
            default: parse_l4_if_ports;
        }
    }

    state ext_unsupported {
        meta.ext_unsupported = 1;
        transition accept;
    }

    state parse_l4_if_ports {
        transition select(meta.l4_proto) {
            DINET_IPPROTO_TCP: parse_l4;
            DINET_IPPROTO_UDP: parse_l4;
            default: accept;
        }
    }

    state parse_l4 {
        pkt.extract(hdr.l4);
        transition select(meta.l4_proto) {
            DINET_IPPROTO_TCP: tcp_room;
            default: accept;
        }
    }

    /* TCP's flags where the datagram holds its first 14 bytes (as the eBPF program reads them) */
    state tcp_room {
        bit<16> room = meta.dgram_len - meta.l3_len;
        transition select(room) {
            0 .. 13: accept;
            default: parse_tcp;
        }
    }

    state parse_tcp {
        pkt.extract(hdr.tcp);
        transition accept;
    }

    state parse_bier {
        pkt.extract(hdr.bift);
        pkt.extract(hdr.bier);
        transition select(hdr.bier.bsl) {
            BIER_BSL_64: parse_bs64;
            BIER_BSL_128: parse_bs128;
            BIER_BSL_256: parse_bs256;
            default: accept;
        }
    }

    /* a tree's frame: two labels, then an IP packet left unparsed (only its version is read) */
    state parse_mpls {
        pkt.extract(hdr.mpls0);
        pkt.extract(hdr.mpls1);
        meta.tree_inner_ver = pkt.lookahead<bit<4>>();
        transition accept;
    }

    state parse_bs64 {
        pkt.extract(hdr.bs64);
        transition accept;
    }

    state parse_bs128 {
        pkt.extract(hdr.bs128);
        transition accept;
    }

    state parse_bs256 {
        pkt.extract(hdr.bs256);
        transition accept;
    }
}

control DinetDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.outer_ipv4);
        pkt.emit(hdr.outer_ipv6);
        pkt.emit(hdr.bift);
        pkt.emit(hdr.bier);
        pkt.emit(hdr.bs64);
        pkt.emit(hdr.bs128);
        pkt.emit(hdr.bs256);
        pkt.emit(hdr.mpls0);
        pkt.emit(hdr.mpls1);
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.ipv4_opts);
        pkt.emit(hdr.ipv6);
        pkt.emit(hdr.ext1);
        pkt.emit(hdr.ext2);
        pkt.emit(hdr.l4);
        pkt.emit(hdr.tcp);
    }
}

#endif
