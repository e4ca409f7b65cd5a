/* bier.p4: BIER (RFC 8279) with the RFC 8296 encapsulation, the same behaviour as ebpf/bier.bpf.c.
 * Replication is one pass through the packet replication engine: ingress finds the neighbours whose F-BM
 * intersects the bitstring (and whether the node's own bit is set) and picks the multicast group made for
 * exactly that set of neighbours; egress rewrites each replica by its egress_rid: bitstring AND that
 * neighbour's F-BM, TTL minus one, the neighbour's MAC addresses; or, for the local replica, removes the
 * BIER header. F-BMs of one BFR are disjoint (dinet.bift builds them so), which makes the per-replica AND
 * the same as RFC 8279 s6.5's sequential clearing. No recirculation.
 * A BFIR entry names up to four sets. The first pass sends set 0; while sets remain, the pass also clones
 * the packet as it came in (I2E, session BIER_BFIR_CLONE_SESSION) with the next set's index, and egress
 * recirculates that clone into ingress for its own pass: at most three recirculations per packet, because
 * one pass through the replication engine can carry only one BIER header.
 * Fast reroute (as ebpf/bier.bpf.c's): v1model has no port state, so the node's own link monitor (dinet's
 * P4Node, netlink in the switch's namespace) writes the ports that are down into bier_port_state's default
 * action, one write and no planning. While a port of the entry's neighbours is down, the entry dinet planned
 * for that failure (bift_backup: the neighbour's bits moved to its loop-free alternates) replaces it; its
 * replicas take the multicast groups of the entry (both list the same neighbour slots) and egress picks their
 * F-BMs by the failed port. One failure at a time is covered: the lowest down port of the entry decides. */
#ifndef DINET_BIER_P4
#define DINET_BIER_P4

#include "headers.p4"

#define BIER_LOCAL_RID 0xFFFF
#define BIER_BFIR_CLONE_SESSION 500
#define PKT_INSTANCE_TYPE_INGRESS_CLONE 1

control Bier(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std, out bit<1> handled) {
    /* bier_counters: BIER_EV_* / BIER_DROP_* -> packets. */
    counter(BIER_COUNTERS, CounterType.packets) bier_counters;

    bit<256> local_bits = 0;
    bit<256> f0 = 0;
    bit<256> f1 = 0;
    bit<256> f2 = 0;
    bit<256> f3 = 0;
    bit<256> f4 = 0;
    bit<256> f5 = 0;
    bit<256> f6 = 0;
    bit<256> f7 = 0;
    bit<16> grp_base = 0;
    bit<8> n_nbr = 0;
    bit<64> nbr_ports = 0;
    bit<64> down_ports = 0;
    bit<1> at_bfir = 0;

    action drop_for(bit<32> reason) {
        bier_counters.count(reason);
        mark_to_drop(std);
        handled = 1;
    }

    /* bift: BIFT-id -> this BFR's entry: its own bit(s), the F-BMs of up to 8 neighbours (in the order of
     * their replica ids 1..8), the first of the multicast groups made for the entry, and its neighbours' ports
     * below 64 as a mask (what fast reroute watches). Written by dinet. */
    action bift_entry(bit<16> group_base, bit<8> neighbors, bit<64> ports, bit<256> local, bit<256> fbm0, bit<256> fbm1, bit<256> fbm2, bit<256> fbm3, bit<256> fbm4, bit<256> fbm5, bit<256> fbm6, bit<256> fbm7) {
        grp_base = group_base;
        n_nbr = neighbors;
        nbr_ports = ports;
        local_bits = local;
        f0 = fbm0;
        f1 = fbm1;
        f2 = fbm2;
        f3 = fbm3;
        f4 = fbm4;
        f5 = fbm5;
        f6 = fbm6;
        f7 = fbm7;
    }
    table bift {
        key = { hdr.bift.bift_id: exact; }
        actions = { bift_entry; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BIFT;
    }

    /* bift_backup: (BIFT-id, the failed port as a one-bit mask) -> the F-BMs to use while that port is down,
     * slot by slot (the entry's neighbour slots and groups: dinet lists every backup neighbour in the entry
     * too, with an empty F-BM while no port is down). Written by dinet with the entry. */
    action backup_entry(bit<256> fbm0, bit<256> fbm1, bit<256> fbm2, bit<256> fbm3, bit<256> fbm4, bit<256> fbm5,
                        bit<256> fbm6, bit<256> fbm7) {
        f0 = fbm0;
        f1 = fbm1;
        f2 = fbm2;
        f3 = fbm3;
        f4 = fbm4;
        f5 = fbm5;
        f6 = fbm6;
        f7 = fbm7;
    }
    table bift_backup {
        key = { hdr.bift.bift_id: exact; meta.bier_failed: exact; }
        actions = { backup_entry; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BIFT * 8;
    }

    /* bier_port_state: no key; its default action holds the ports that are down (a bit per port below 64).
     * Written by the node's link monitor the moment a port loses its link, and again when it is back. */
    action ports_down(bit<64> down) {
        down_ports = down;
    }
    table bier_port_state {
        actions = { ports_down; }
        default_action = ports_down(0);
    }

    /* BFIR classification: (S,G), (*,G), (*, destination, UDP port) -> the header to push. Written by dinet. */
    bit<8> n_sets = 1;
    action push(bit<4> bsl, bit<16> bfir_id, bit<8> sets, bit<20> bift0, bit<256> bits0, bit<20> bift1,
                bit<256> bits1, bit<20> bift2, bit<256> bits2, bit<20> bift3, bit<256> bits3) {
        n_sets = sets;
        hdr.bift.setValid();
        hdr.bift.bift_id = meta.bfir_set == 3 ? bift3 : (meta.bfir_set == 2 ? bift2 : (meta.bfir_set == 1 ? bift1 : bift0));
        hdr.bift.tc = 0;
        hdr.bift.s = 1;
        hdr.bift.ttl = BIER_DEFAULT_TTL;
        hdr.bier.setValid();
        hdr.bier.nibble = BIER_NIBBLE;
        hdr.bier.version = BIER_VERSION;
        hdr.bier.bsl = bsl;
        hdr.bier.oam = 0;
        hdr.bier.rsv = 0;
        hdr.bier.bfir_id = bfir_id;
        meta.bs = meta.bfir_set == 3 ? bits3 : (meta.bfir_set == 2 ? bits2 : (meta.bfir_set == 1 ? bits1 : bits0));
        at_bfir = 1;
        meta.bier_bfir = 1;
    }
    table bfir_sg_v4 {
        key = { hdr.ipv4.src: exact; hdr.ipv4.dst: exact; }
        actions = { push; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BFIR;
    }
    table bfir_g_v4 {
        key = { hdr.ipv4.dst: exact; }
        actions = { push; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BFIR;
    }
    table bfir_sync_v4 {
        key = { hdr.ipv4.dst: exact; hdr.l4.dport: exact; }
        actions = { push; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BFIR;
    }
    table bfir_sg_v6 {
        key = { hdr.ipv6.src: exact; hdr.ipv6.dst: exact; }
        actions = { push; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BFIR;
    }
    table bfir_g_v6 {
        key = { hdr.ipv6.dst: exact; }
        actions = { push; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BFIR;
    }
    table bfir_sync_v6 {
        key = { hdr.ipv6.dst: exact; hdr.l4.dport: exact; }
        actions = { push; NoAction; }
        default_action = NoAction();
        size = BIER_MAX_BFIR;
    }

    apply {
        handled = 0;
        bit<1> by_port = 0;  /* matched as model sync, by UDP port */
        bit<32> frame = std.packet_length - 14;
        if (hdr.ipv4.isValid() && !hdr.bift.isValid()) {
            /* the port is parsed only from an unfragmented datagram: fragments match (S,G) and (*,G) only */
            if (!bfir_sg_v4.apply().hit && !bfir_g_v4.apply().hit && meta.l4_proto == DINET_IPPROTO_UDP &&
                hdr.l4.isValid()) {
                if (bfir_sync_v4.apply().hit) { by_port = 1; }
            }
            if (at_bfir == 0) {
                return;  /* no BFIR entry: a tree root's, or passed (Tree counts it) */
            }
            /* a malformed datagram for a BFIR entry is dropped and counted, as the eBPF BFIR does */
            if (hdr.ipv4.version != 4 || meta.bad_ihl == 1 || hdr.ipv4.total_len < (bit<16>)hdr.ipv4.ihl * 4 ||
                (bit<32>)hdr.ipv4.total_len > frame || (by_port == 1 && meta.l3_len + 8 > hdr.ipv4.total_len)) {
                drop_for(BIER_DROP_MALFORMED);
                return;
            }
            hdr.bier.dscp = hdr.ipv4.tos[7:2];
            hdr.bier.proto = BIER_PROTO_IPV4;
        } else if (hdr.ipv6.isValid() && !hdr.bift.isValid()) {
            if (!bfir_sg_v6.apply().hit && !bfir_g_v6.apply().hit && meta.l4_proto == DINET_IPPROTO_UDP &&
                hdr.l4.isValid()) {
                if (bfir_sync_v6.apply().hit) { by_port = 1; }
            }
            if (at_bfir == 0) {
                return;  /* no BFIR entry: a tree root's, or passed (Tree counts it) */
            }
            if (hdr.ipv6.version != 6 || (bit<32>)hdr.ipv6.payload_len + 40 > frame ||
                meta.l3_len > hdr.ipv6.payload_len + 40 ||
                (by_port == 1 && meta.l3_len + 8 > hdr.ipv6.payload_len + 40)) {
                drop_for(BIER_DROP_MALFORMED);
                return;
            }
            hdr.bier.dscp = hdr.ipv6.traffic_class[7:2];
            hdr.bier.proto = BIER_PROTO_IPV6;
        } else if (!hdr.bift.isValid()) {
            if (hdr.ethernet.ether_type == DINET_ETHERTYPE_BIER) {  /* not even a BIFT-id word */
                bier_counters.count(BIER_EV_RX);
                drop_for(BIER_DROP_TRUNCATED);
            }
            return;
        }
        handled = 1;
        if (at_bfir == 1) {
            bit<32> entropy;
            hash(entropy, HashAlgorithm.crc32, (bit<32>)0, { hdr.ipv4.src, hdr.ipv4.dst, hdr.ipv6.src, hdr.ipv6.dst },
                 (bit<32>)0x100000);
            hdr.bier.entropy = entropy[19:0];
            hdr.ethernet.ether_type = DINET_ETHERTYPE_BIER;
            if (hdr.bier.bsl == BIER_BSL_64) {
                hdr.bs64.setValid();
                hdr.bs64.bits = meta.bs[63:0];
            } else if (hdr.bier.bsl == BIER_BSL_128) {
                hdr.bs128.setValid();
                hdr.bs128.bits = meta.bs[127:0];
            } else {
                hdr.bs256.setValid();
                hdr.bs256.bits = meta.bs;
            }
            if (meta.bfir_set == 0) {
                bier_counters.count(BIER_EV_BFIR_PUSH);  /* once per packet, as the eBPF BFIR counts */
            }
            if (meta.bfir_set + 1 < n_sets && meta.bfir_set < BIER_MAX_SI_PER_GROUP - 1) {
                meta.bfir_set = meta.bfir_set + 1;  /* the next set, in a pass of its own */
                clone_preserving_field_list(CloneType.I2E, BIER_BFIR_CLONE_SESSION, 1);
            }
        } else {
            bier_counters.count(BIER_EV_RX);
            if (!hdr.bier.isValid()) {
                drop_for(BIER_DROP_TRUNCATED);
                return;
            }
            if (hdr.bier.nibble != BIER_NIBBLE) {
                drop_for(BIER_DROP_NIBBLE);
                return;
            }
            if (hdr.bier.version != BIER_VERSION) {
                drop_for(BIER_DROP_VERSION);
                return;
            }
            if (hdr.bier.bsl < BIER_BSL_64 || hdr.bier.bsl > BIER_BSL_256 ||
                hdr.bift.bift_id[19:16] != hdr.bier.bsl) {
                drop_for(BIER_DROP_BSL);
                return;
            }
            if (hdr.bs64.isValid()) {
                meta.bs = (bit<256>)hdr.bs64.bits;
            } else if (hdr.bs128.isValid()) {
                meta.bs = (bit<256>)hdr.bs128.bits;
            } else if (hdr.bs256.isValid()) {
                meta.bs = hdr.bs256.bits;
            } else {
                drop_for(BIER_DROP_TRUNCATED);
                return;
            }
        }
        if (meta.bs == 0) {
            drop_for(BIER_DROP_ZERO_BITSTRING);
            return;
        }
        if (!bift.apply().hit) {
            drop_for(BIER_DROP_BIFT_MISS);
            return;
        }
        bier_port_state.apply();
        bit<64> failed = down_ports & nbr_ports;
        if (failed != 0) {
            meta.bier_failed = failed & (~failed + 1);  /* the lowest one */
            if (bift_backup.apply().hit) {
                bier_counters.count(BIER_EV_FRR);
            } else {
                bier_counters.count(BIER_DROP_PORT_DOWN);  /* no backup planned: copies to that port are lost */
                meta.bier_failed = 0;
            }
        }
        bit<256> rem = meta.bs & ~local_bits;
        bit<16> mask = 0;
        if (rem != 0 && at_bfir == 0 && hdr.bift.ttl <= 1) {
            bier_counters.count(BIER_DROP_TTL); /* RFC 8296 s2.1.1.2: no copy leaves with TTL 0 */
            rem = 0;
        }
        if (n_nbr > 0 && (rem & f0) != 0) {
            mask = mask | 1;
            rem = rem & ~f0;
        }
        if (n_nbr > 1 && (rem & f1) != 0) {
            mask = mask | 2;
            rem = rem & ~f1;
        }
        if (n_nbr > 2 && (rem & f2) != 0) {
            mask = mask | 4;
            rem = rem & ~f2;
        }
        if (n_nbr > 3 && (rem & f3) != 0) {
            mask = mask | 8;
            rem = rem & ~f3;
        }
        if (n_nbr > 4 && (rem & f4) != 0) {
            mask = mask | 16;
            rem = rem & ~f4;
        }
        if (n_nbr > 5 && (rem & f5) != 0) {
            mask = mask | 32;
            rem = rem & ~f5;
        }
        if (n_nbr > 6 && (rem & f6) != 0) {
            mask = mask | 64;
            rem = rem & ~f6;
        }
        if (n_nbr > 7 && (rem & f7) != 0) {
            mask = mask | 128;
            rem = rem & ~f7;
        }
        if (rem != 0) {
            bier_counters.count(BIER_DROP_NO_NEIGHBOR);
        }
        if ((meta.bs & local_bits) != 0) {
            mask = mask | ((bit<16>)1 << n_nbr);
            /* what follows the BIER header must hold the inner packet's fixed header (a BFIR's own packet
             * was checked above) */
            bit<32> bier_len = 14 + 12 + (hdr.bier.bsl == BIER_BSL_64 ? 32w8 : (hdr.bier.bsl == BIER_BSL_128 ? 32w16 : 32w32));
            bit<32> fixed = hdr.bier.proto == BIER_PROTO_IPV4 ? 32w20 : 32w40;
            if (hdr.bier.proto != BIER_PROTO_IPV4 && hdr.bier.proto != BIER_PROTO_IPV6) {
                bier_counters.count(BIER_DROP_PROTO);
                mask = mask & ~((bit<16>)1 << n_nbr);
            } else if (at_bfir == 0 && std.packet_length < bier_len + fixed) {
                bier_counters.count(BIER_DROP_TRUNCATED);
                mask = mask & ~((bit<16>)1 << n_nbr);
            }
        }
        if (mask == 0) {
            mark_to_drop(std); /* nothing to send: consumed (the reason, if any, is counted above) */
            return;
        }
        std.mcast_grp = grp_base + mask;
    }
}

control BierEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    /* bier_copies: BIER_EV_COPIES / BIER_EV_LOCAL -> replicas sent. */
    counter(BIER_COUNTERS, CounterType.packets) bier_copies;
    bit<256> fbm = 0;
    bit<1> local = 0;

    /* bier_replica: (BIFT-id, failed port (0: none; fast reroute's entries), replica id) -> the neighbour's
     * F-BM and MAC addresses, or local delivery. */
    action nbr_copy(bit<256> f, mac_t smac, mac_t dmac) {
        fbm = f;
        hdr.ethernet.src = smac;
        hdr.ethernet.dst = dmac;
    }
    action local_copy() {
        local = 1;
    }
    table bier_replica {
        key = { hdr.bift.bift_id: exact; meta.bier_failed: exact; std.egress_rid: exact; }
        actions = { nbr_copy; local_copy; NoAction; }
        default_action = NoAction();
        size = 16384;
    }

    apply {
        if (std.instance_type == PKT_INSTANCE_TYPE_INGRESS_CLONE) {
            recirculate_preserving_field_list(1);  /* a BFIR's next set: back to ingress, as it came in */
            return;
        }
        if (!hdr.bift.isValid() || std.egress_rid == 0) {
            return;
        }
        if (!bier_replica.apply().hit) {
            mark_to_drop(std);
            return;
        }
        if (local == 1) {
            hdr.ethernet.ether_type = hdr.bier.proto == BIER_PROTO_IPV4 ? (bit<16>)DINET_ETHERTYPE_IPV4
                                                                       : (bit<16>)DINET_ETHERTYPE_IPV6;
            hdr.bift.setInvalid();
            hdr.bier.setInvalid();
            hdr.bs64.setInvalid();
            hdr.bs128.setInvalid();
            hdr.bs256.setInvalid();
            bier_copies.count(BIER_EV_LOCAL);
            return;
        }
        if (hdr.bs64.isValid()) {
            hdr.bs64.bits = hdr.bs64.bits & fbm[63:0];
        } else if (hdr.bs128.isValid()) {
            hdr.bs128.bits = hdr.bs128.bits & fbm[127:0];
        } else if (hdr.bs256.isValid()) {
            hdr.bs256.bits = hdr.bs256.bits & fbm;
        }
        if (hdr.bift.isValid() && meta.bier_bfir == 0) {
            hdr.bift.ttl = hdr.bift.ttl - 1;
        }
        bier_copies.count(BIER_EV_COPIES);
    }
}

#endif
