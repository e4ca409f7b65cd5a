/* dinet.p4: the v1model program for BMv2 simple_switch_grpc: BIER (BFIR, BFR, BFER), the SR-P2MP tree
 * baseline, and CATS steering,
 * the same behaviour and packet formats as the eBPF programs in ebpf/. */
#include <core.p4>
#include <v1model.p4>

#include "headers.p4"
#include "parser.p4"
#include "steering.p4"
#include "bier.p4"
#include "tree.p4"

control DinetVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

control DinetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    Bier() bier;
    Tree() tree;
    Steering() steering;

    apply {
        bit<1> handled;
        bier.apply(hdr, meta, std, handled);
        if (handled == 0) {
            tree.apply(hdr, meta, std, handled);
        }
        if (handled == 0) {
            steering.apply(hdr, meta, std, handled);
        }
    }
}

control DinetEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    BierEgress() bier_egress;
    TreeEgress() tree_egress;

    apply {
        bier_egress.apply(hdr, meta, std);
        tree_egress.apply(hdr, meta, std);
    }
}

control DinetComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(hdr.outer_ipv4.isValid(),
            { hdr.outer_ipv4.version, hdr.outer_ipv4.ihl, hdr.outer_ipv4.tos, hdr.outer_ipv4.total_len,
              hdr.outer_ipv4.identification, hdr.outer_ipv4.flags, hdr.outer_ipv4.frag_offset, hdr.outer_ipv4.ttl,
              hdr.outer_ipv4.protocol, hdr.outer_ipv4.src, hdr.outer_ipv4.dst },
            hdr.outer_ipv4.hdr_checksum, HashAlgorithm.csum16);
    }
}

V1Switch(DinetParser(), DinetVerifyChecksum(), DinetIngress(), DinetEgress(), DinetComputeChecksum(),
         DinetDeparser()) main;
