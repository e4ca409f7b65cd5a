/* tree.p4: the SR-P2MP tree baseline (draft-ietf-pim-sr-p2mp-policy over SR-MPLS), the same behaviour as the
 * tree section of ebpf/bier.bpf.c. A tree's frame carries [node SID, replication SID (bottom of stack)]:
 * a node whose own node SID is not on top passes the frame toward that node (SR unicast, top TTL minus one);
 * at its own node SID it replicates by the replication segment: one pass through the packet replication
 * engine, the segment's group holding one replica per downstream replication node (replica ids 1..n) and,
 * at a leaf, the local port (BIER_LOCAL_RID); egress relabels each replica with that node's two SIDs. The
 * root pushes the two labels on an IP packet that matches a tree root entry and no BFIR entry. */
#ifndef DINET_TREE_P4
#define DINET_TREE_P4

#include "headers.p4"

control Tree(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std, out bit<1> handled) {
    /* tree_counters: BIER_EV_TREE_* / BIER_DROP_* (and BIER_EV_PASS) -> packets; the same indexes as the
     * eBPF program's bier_counters. */
    counter(BIER_COUNTERS, CounterType.packets) tree_counters;

    bit<1> own = 0;
    bit<1> at_root = 0;
    bit<16> grp = 0;
    bit<8> replicas = 0;
    bit<1> leaf = 0;
    port_t local_port = 0;

    action drop_for(bit<32> reason) {
        tree_counters.count(reason);
        mark_to_drop(std);
    }

    /* tree_node: node SID -> toward that node (port, MAC addresses), or own (this node's SID). Written by
     * dinet from the domain's shortest paths: one entry per node, whatever the trees. */
    action toward(port_t port, mac_t smac, mac_t dmac) {
        std.egress_spec = port;
        hdr.ethernet.src = smac;
        hdr.ethernet.dst = dmac;
    }
    action own_sid() {
        own = 1;
    }
    table tree_node {
        key = { hdr.mpls0.label: exact; }
        actions = { toward; own_sid; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_NODES;
    }

    /* tree_segment: replication SID -> this node's replication segment: the first of its two multicast
     * groups (group: the replicas; group + 1: the replicas and the local port), how many replicas, whether
     * it is a leaf and where a leaf delivers. Written by dinet per tree. */
    action segment(bit<16> group, bit<8> n, bit<1> is_leaf, port_t deliver_port) {
        grp = group;
        replicas = n;
        leaf = is_leaf;
        local_port = deliver_port;
    }
    table tree_segment {
        key = { meta.tree_rep: exact; }
        actions = { segment; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_SEGMENTS;
    }

    /* tree_root_*: (S,G), (*,G), (*, destination, UDP port) -> the root's replication SID of the tree.
     * Written by dinet per job at the tree's root. */
    action root(bit<20> rep_sid) {
        meta.tree_rep = rep_sid;
        at_root = 1;
    }
    table tree_root_sg_v4 {
        key = { hdr.ipv4.src: exact; hdr.ipv4.dst: exact; }
        actions = { root; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_ROOTS;
    }
    table tree_root_g_v4 {
        key = { hdr.ipv4.dst: exact; }
        actions = { root; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_ROOTS;
    }
    table tree_root_sync_v4 {
        key = { hdr.ipv4.dst: exact; hdr.l4.dport: exact; }
        actions = { root; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_ROOTS;
    }
    table tree_root_sg_v6 {
        key = { hdr.ipv6.src: exact; hdr.ipv6.dst: exact; }
        actions = { root; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_ROOTS;
    }
    table tree_root_g_v6 {
        key = { hdr.ipv6.dst: exact; }
        actions = { root; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_ROOTS;
    }
    table tree_root_sync_v6 {
        key = { hdr.ipv6.dst: exact; hdr.l4.dport: exact; }
        actions = { root; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_ROOTS;
    }

    apply {
        handled = 0;
        bit<8> ttl = BIER_DEFAULT_TTL;
        bit<32> frame = std.packet_length - 14;
        if (hdr.ethernet.ether_type == DINET_ETHERTYPE_MPLS) {
            handled = 1;
            tree_counters.count(BIER_EV_TREE_RX);
            if (!hdr.mpls0.isValid() || !hdr.mpls1.isValid()) {
                drop_for(BIER_DROP_TRUNCATED);
                return;
            }
            if (hdr.mpls0.s == 1 || hdr.mpls1.s == 0) {
                drop_for(BIER_DROP_TREE_STACK);  /* a tree's stack is exactly [node SID, replication SID(S)] */
                return;
            }
            if (!tree_node.apply().hit) {
                drop_for(BIER_DROP_TREE_ROUTE);
                return;
            }
            if (own == 0) {  /* on toward the replication node the top label names (toward() set the port) */
                if (hdr.mpls0.ttl <= 1) {
                    drop_for(BIER_DROP_TTL);
                    return;
                }
                hdr.mpls0.ttl = hdr.mpls0.ttl - 1;
                tree_counters.count(BIER_EV_TREE_UNICAST);
                return;
            }
            meta.tree_rep = hdr.mpls1.label;
            ttl = hdr.mpls0.ttl;
        } else if ((hdr.ipv4.isValid() || hdr.ipv6.isValid()) && !hdr.bift.isValid()) {
            bit<1> by_port = 0;
            if (hdr.ipv4.isValid()) {
                if (!tree_root_sg_v4.apply().hit && !tree_root_g_v4.apply().hit &&
                    meta.l4_proto == DINET_IPPROTO_UDP && hdr.l4.isValid()) {
                    if (tree_root_sync_v4.apply().hit) { by_port = 1; }
                }
            } else {
                if (!tree_root_sg_v6.apply().hit && !tree_root_g_v6.apply().hit &&
                    meta.l4_proto == DINET_IPPROTO_UDP && hdr.l4.isValid()) {
                    if (tree_root_sync_v6.apply().hit) { by_port = 1; }
                }
            }
            if (at_root == 0) {
                tree_counters.count(BIER_EV_PASS);  /* neither a BFIR's nor a tree root's */
                return;
            }
            handled = 1;
            /* a malformed datagram for a root entry is dropped and counted, as for a BFIR entry */
            if (hdr.ipv4.isValid() && (hdr.ipv4.version != 4 || meta.bad_ihl == 1 ||
                    hdr.ipv4.total_len < (bit<16>)hdr.ipv4.ihl * 4 || (bit<32>)hdr.ipv4.total_len > frame ||
                    (by_port == 1 && meta.l3_len + 8 > hdr.ipv4.total_len))) {
                drop_for(BIER_DROP_MALFORMED);
                return;
            }
            if (hdr.ipv6.isValid() && (hdr.ipv6.version != 6 || (bit<32>)hdr.ipv6.payload_len + 40 > frame ||
                    meta.l3_len > hdr.ipv6.payload_len + 40 ||
                    (by_port == 1 && meta.l3_len + 8 > hdr.ipv6.payload_len + 40))) {
                drop_for(BIER_DROP_MALFORMED);
                return;
            }
        } else {
            return;
        }
        if (!tree_segment.apply().hit) {
            drop_for(BIER_DROP_TREE_SEGMENT);
            return;
        }
        bit<1> copies = replicas > 0 ? 1w1 : 1w0;
        bit<1> deliver = leaf;
        if (at_root == 1) {
            hdr.mpls0.setValid();
            hdr.mpls1.setValid();
            hdr.ethernet.ether_type = DINET_ETHERTYPE_MPLS;
            tree_counters.count(BIER_EV_TREE_PUSH);
            meta.tree_ttl = BIER_DEFAULT_TTL;  /* the root's replicas carry the full TTL, as a BFIR's */
            deliver = 0;
        } else {
            if (copies == 1 && ttl <= 1) {
                tree_counters.count(BIER_DROP_TTL);
                copies = 0;
            }
            meta.tree_ttl = ttl - 1;
            if (deliver == 1 && meta.tree_inner_ver != 4 && meta.tree_inner_ver != 6) {
                tree_counters.count(BIER_DROP_PROTO);  /* the label stack does not name its payload: IP does */
                deliver = 0;
            } else if (deliver == 1 && std.packet_length < 14 + TREE_HLEN + (meta.tree_inner_ver == 4 ? 32w20 : 32w40)) {
                tree_counters.count(BIER_DROP_TRUNCATED);
                deliver = 0;
            }
        }
        if (copies == 1) {
            std.mcast_grp = deliver == 1 ? grp + 1 : grp;
        } else if (deliver == 1) {  /* a leaf with nothing to replicate: decapsulated here, to the local port */
            hdr.ethernet.ether_type = meta.tree_inner_ver == 4 ? (bit<16>)DINET_ETHERTYPE_IPV4
                                                              : (bit<16>)DINET_ETHERTYPE_IPV6;
            hdr.mpls0.setInvalid();
            hdr.mpls1.setInvalid();
            std.egress_spec = local_port;
            tree_counters.count(BIER_EV_LOCAL);
        } else {
            mark_to_drop(std);  /* nothing to send: consumed (the reason, if any, is counted above) */
        }
    }
}

control TreeEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    /* tree_copies: BIER_EV_TREE_COPIES / BIER_EV_LOCAL -> replicas sent. */
    counter(BIER_COUNTERS, CounterType.packets) tree_copies;

    /* tree_replica: (replication SID, replica id) -> the downstream replication node's two SIDs and the
     * first hop's MAC addresses. Written by dinet with the segment. */
    action relabel(bit<20> node_sid, bit<20> rep_sid, mac_t smac, mac_t dmac) {
        hdr.mpls0.setValid();  /* valid already (egress applies this only to a tree's replica) */
        hdr.mpls1.setValid();
        hdr.mpls0.label = node_sid;
        hdr.mpls0.tc = 0;
        hdr.mpls0.s = 0;
        hdr.mpls0.ttl = meta.tree_ttl;
        hdr.mpls1.label = rep_sid;
        hdr.mpls1.tc = 0;
        hdr.mpls1.s = 1;
        hdr.mpls1.ttl = meta.tree_ttl;
        hdr.ethernet.src = smac;
        hdr.ethernet.dst = dmac;
    }
    table tree_replica {
        key = { meta.tree_rep: exact; std.egress_rid: exact; }
        actions = { relabel; NoAction; }
        default_action = NoAction();
        size = TREE_MAX_SEGMENTS * 4;
    }

    apply {
        if (!hdr.mpls1.isValid() || std.egress_rid == 0) {
            return;
        }
        if (std.egress_rid == BIER_LOCAL_RID) {  /* a leaf's own copy: without the labels */
            hdr.ethernet.ether_type = meta.tree_inner_ver == 4 ? (bit<16>)DINET_ETHERTYPE_IPV4
                                                              : (bit<16>)DINET_ETHERTYPE_IPV6;
            hdr.mpls0.setInvalid();
            hdr.mpls1.setInvalid();
            tree_copies.count(BIER_EV_LOCAL);
            return;
        }
        if (!tree_replica.apply().hit) {
            mark_to_drop(std);
            return;
        }
        tree_copies.count(BIER_EV_TREE_COPIES);
    }
}

#endif
