/* steering.p4: CATS service-ID steering in ingress, the same behaviour as ebpf/steer.bpf.c.
 *
 * Affinity lives in the data plane, in registers: a two-way table indexed by two CRC-32s of the 5-tuple (over
 * two field orders). An entry holds the whole 5-tuple (so a hit is exact, never a hash match), the service
 * slot and its generation, the instance slot and id, and the time it was last used. A new flow whose two
 * entries both hold other flows still in use (seen within DINET_P4_AFFINITY_IDLE_US) is steered by the ring
 * but not remembered, and counted (DINET_AFFINITY_COLLISION); a later weight change may move it. Measured
 * (bench/p4_affinity.py, the program's own hashes) at the default 262,144 entries (55 bytes each, 14 MiB):
 * 0.05% of 10,000 live flows, 0.4% of 30,000, 1.1% of 50,000 are not remembered (a two-way table of 65,536
 * entries indexed by CRC-16, as before: 0.9%, 6.5%, 16%); a four-way table of
 * 65,536 entries leaves 0.9% / 6% out at 30,000 / 50,000, so the table is larger, not wider. The control-plane
 * alternative (a digest per new flow, then an exact entry) leaves every flow's first packets without
 * affinity until the controller has written the entry; this way a weight change can never move a
 * remembered flow, and no controller round trip sits on the packet path.
 * New flows take the slot the service's ring names at CRC-32(5-tuple) mod DINET_RING_SIZE (a session-affine
 * service's: CRC-32 over the session key in the 5-tuple's stead): the same hash and ring as the eBPF program,
 * so both data planes steer a given flow to the same instance. */
#ifndef DINET_STEERING_P4
#define DINET_STEERING_P4

#include "headers.p4"

#ifndef DINET_P4_AFFINITY_IDLE_US
#define DINET_P4_AFFINITY_IDLE_US 120000000
#endif

control Steering(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std,
                 out bit<1> handled) {
    /* verdicts: DINET_DROP_* / DINET_PASS_* -> packets. svc_stats: svc_id; inst_stats: svc_id * MAX_INSTANCES + slot. */
    counter(DINET_VERDICTS, CounterType.packets) verdicts;
    counter(DINET_MAX_SERVICES, CounterType.packets_and_bytes) svc_stats;
    counter(INST_INDEXES, CounterType.packets_and_bytes) inst_stats;
    counter(DINET_MAX_SERVICES, CounterType.packets) svc_new_flows;
    counter(INST_INDEXES, CounterType.packets) inst_new_flows;
    /* new flows of sessions: that found their session's instance; sessions placed; sessions placed again */
    counter(DINET_MAX_SERVICES, CounterType.packets) svc_session_flows;
    counter(INST_INDEXES, CounterType.packets) inst_session_flows;
    counter(DINET_MAX_SERVICES, CounterType.packets) svc_sessions;
    counter(INST_INDEXES, CounterType.packets) inst_sessions;
    counter(DINET_MAX_SERVICES, CounterType.packets) svc_sessions_replaced;
    counter(INST_INDEXES, CounterType.packets) inst_sessions_replaced;

    /* Affinity, indexed by CRC-16 of the 5-tuple; written here only. */
    register<bit<128>>(DINET_P4_AFFINITY_SIZE) aff_src;
    register<bit<128>>(DINET_P4_AFFINITY_SIZE) aff_dst;
    register<bit<40>>(DINET_P4_AFFINITY_SIZE) aff_ports_proto;
    register<bit<16>>(DINET_P4_AFFINITY_SIZE) aff_svc;
    register<bit<32>>(DINET_P4_AFFINITY_SIZE) aff_gen;
    register<bit<16>>(DINET_P4_AFFINITY_SIZE) aff_slot;
    register<bit<32>>(DINET_P4_AFFINITY_SIZE) aff_iid;
    register<bit<48>>(DINET_P4_AFFINITY_SIZE) aff_seen;

    /* Sessions of session-affine services, direct-mapped by CRC-32 of (client address, session key, service
     * slot); written here only: the key, the service's generation, and the instance slot and id the session
     * went to. A session that finds its entry taken by another is placed by the ring and takes the entry. */
    register<bit<128>>(DINET_P4_SESSION_SIZE) ses_src;
    register<bit<32>>(DINET_P4_SESSION_SIZE) ses_key;
    register<bit<16>>(DINET_P4_SESSION_SIZE) ses_svc;
    register<bit<32>>(DINET_P4_SESSION_SIZE) ses_gen;
    register<bit<16>>(DINET_P4_SESSION_SIZE) ses_slot;
    register<bit<32>>(DINET_P4_SESSION_SIZE) ses_iid;

    /* New flows placed on each instance of a two-choices service under the load of report `gen`
     * (dinet_consts.h, DINET_SVC_TWO_CHOICES), index svc_id * MAX_INSTANCES + slot; written here only. */
    register<bit<32>>(INST_INDEXES) placed_gen;
    register<bit<32>>(INST_INDEXES) placed_count;

    bit<16> slot_b = (bit<16>)DINET_SLOT_NONE;
    bit<32> ring_idx_b = 0;
    bit<64> load_a_value = 0;
    bit<32> load_a_step = 1;
    bit<32> load_a_free = 0;
    bit<32> load_a_gen = 0;
    bit<32> load_a_each = 0;
    bit<64> load_b_value = 0;
    bit<32> load_b_step = 1;
    bit<32> load_b_free = 0;
    bit<32> load_b_gen = 0;
    bit<32> load_b_each = 0;
    bit<8> inst_state = DINET_INST_DOWN;
    bit<32> inst_iid = 0;
    bit<8> chk_state = DINET_INST_DOWN;
    bit<32> chk_iid = 0;
    bit<128> tun_src4 = 0;
    bit<128> tun_src6 = 0;

    action drop_for(bit<32> reason) {
        verdicts.count(reason);
        mark_to_drop(std);
        handled = 1;
    }

    /* host_port: ingress port -> where traffic that is not steered goes, unchanged (the host's port, or the
     * other side of a bump in the wire). Written by dinet; the default sends it to port 1. */
    action pass_to(port_t port) {
        std.egress_spec = port;
    }
    table host_port {
        key = { std.ingress_port: exact; }
        actions = { pass_to; }
        default_action = pass_to(1);
        size = 512;
    }


    /* vip_v4 / vip_v6: VIP address -> hit. Written by dinet with every service. */
    table vip_v4 {
        key = { hdr.ipv4.dst: exact; }
        actions = { NoAction; }
        size = DINET_MAX_VIP_ADDRS;
    }
    table vip_v6 {
        key = { hdr.ipv6.dst: exact; }
        actions = { NoAction; }
        size = DINET_MAX_VIP_ADDRS;
    }

    /* services_v4 / services_v6: (VIP, protocol, port) -> slot, live ring half, generation, flags
     * (DINET_SVC_SESSION: new flows placed by their session key). Written by dinet. */
    action set_service(bit<16> svc_id, bit<1> ring_sel, bit<32> gen, bit<8> flags) {
        meta.svc_id = svc_id;
        meta.ring_sel = ring_sel;
        meta.gen = gen;
        meta.svc_flags = flags;
    }
    table services_v4 {
        key = { hdr.ipv4.dst: exact; meta.l4_proto: exact; hdr.l4.dport: exact; }
        actions = { set_service; NoAction; }
        default_action = NoAction();
        size = DINET_MAX_SERVICES;
    }
    table services_v6 {
        key = { hdr.ipv6.dst: exact; meta.l4_proto: exact; hdr.l4.dport: exact; }
        actions = { set_service; NoAction; }
        default_action = NoAction();
        size = DINET_MAX_SERVICES;
    }

    /* ring: (svc_id, ring half, CRC-32 mod DINET_RING_SIZE) -> instance slot. Written by dinet. */
    action set_slot(bit<16> slot) {
        meta.slot = slot;
    }
    table ring {
        key = { meta.svc_id: exact; meta.ring_sel: exact; meta.ring_idx: exact; }
        actions = { set_slot; NoAction; }
        default_action = NoAction();
        size = 65536;
    }

    /* ring_b: a two-choices service's ring again, for its second candidate: (svc_id, ring half, CRC-32 of the
     * reversed fields mod DINET_RING_SIZE) -> instance slot (a table is applied once per packet). Written by
     * dinet with `ring`, for two-choices services. */
    action set_slot_b(bit<16> slot) {
        slot_b = slot;
    }
    table ring_b {
        key = { meta.svc_id: exact; meta.ring_sel: exact; ring_idx_b: exact; }
        actions = { set_slot_b; NoAction; }
        default_action = NoAction();
        size = 65536;
    }

    /* load_a / load_b: (svc_id, slot) -> the load the controller last wrote for an instance that is up: its
     * value, step, free, report and each (dinet_consts.h, DINET_SVC_TWO_CHOICES); the first and the second
     * candidate's (the same entries in both). Written by dinet for two-choices services. */
    action set_load_a(bit<64> value, bit<32> step, bit<32> free, bit<32> gen, bit<32> each) {
        load_a_value = value;
        load_a_step = step;
        load_a_free = free;
        load_a_gen = gen;
        load_a_each = each;
    }
    table load_a {
        key = { meta.svc_id: exact; meta.slot: exact; }
        actions = { set_load_a; NoAction; }
        default_action = NoAction();
        size = INST_INDEXES;
    }
    action set_load_b(bit<64> value, bit<32> step, bit<32> free, bit<32> gen, bit<32> each) {
        load_b_value = value;
        load_b_step = step;
        load_b_free = free;
        load_b_gen = gen;
        load_b_each = each;
    }
    table load_b {
        key = { meta.svc_id: exact; slot_b: exact; }
        actions = { set_load_b; NoAction; }
        default_action = NoAction();
        size = INST_INDEXES;
    }

    /* instance_check: (svc_id, slot) -> state and id, to judge a remembered flow. Written by dinet
     * alongside `instances` (a table is applied once per packet, and a flow may need both). */
    action check(bit<8> state, bit<32> instance_id) {
        chk_state = state;
        chk_iid = instance_id;
    }
    table instance_check {
        key = { meta.svc_id: exact; meta.slot: exact; }
        actions = { check; NoAction; }
        default_action = NoAction();
        size = INST_INDEXES;
    }

    /* instances: (svc_id, slot) -> tunnel endpoint, state, id. Written by dinet. */
    action instance4(bit<32> endpoint, bit<8> state, bit<32> instance_id) {
        meta.endpoint = (bit<128>)endpoint;
        meta.inst_family = DINET_AF_INET;
        inst_state = state;
        inst_iid = instance_id;
    }
    action instance6(bit<128> endpoint, bit<8> state, bit<32> instance_id) {
        meta.endpoint = endpoint;
        meta.inst_family = DINET_AF_INET6;
        inst_state = state;
        inst_iid = instance_id;
    }
    table instances {
        key = { meta.svc_id: exact; meta.slot: exact; }
        actions = { instance4; instance6; NoAction; }
        default_action = NoAction();
        size = INST_INDEXES;
    }

    /* tunnel_source: keyless; this node's outer source addresses. Written by dinet. */
    action set_sources(bit<32> src4, bit<128> src6) {
        tun_src4 = (bit<128>)src4;
        tun_src6 = src6;
    }
    table tunnel_source {
        actions = { set_sources; }
        default_action = set_sources(0, 0);
    }

    /* next_hop: keyless; where tunnelled packets go: back out of the ingress port, or out of `port`. */
    action back_out(mac_t smac, mac_t dmac) {
        std.egress_spec = std.ingress_port;
        hdr.ethernet.src = smac;
        hdr.ethernet.dst = dmac;
    }
    action via(port_t port, mac_t smac, mac_t dmac) {
        std.egress_spec = port;
        hdr.ethernet.src = smac;
        hdr.ethernet.dst = dmac;
    }
    table next_hop {
        actions = { back_out; via; }
        default_action = back_out(0, 0);
    }

    apply {
        handled = 0;
        bit<1> is_ip = 0;
        bit<1> vip = 0;
        if (hdr.ethernet.ether_type == DINET_ETHERTYPE_IPV4) {
            is_ip = 1;
            if (!hdr.ipv4.isValid() || meta.bad_ihl == 1 || hdr.ipv4.version != 4) {
                drop_for(DINET_DROP_MALFORMED);
                return;
            }
            if (vip_v4.apply().hit) { vip = 1; }
        } else if (hdr.ethernet.ether_type == DINET_ETHERTYPE_IPV6) {
            is_ip = 1;
            if (!hdr.ipv6.isValid() || hdr.ipv6.version != 6) {
                drop_for(DINET_DROP_MALFORMED);
                return;
            }
            if (vip_v6.apply().hit) { vip = 1; }
        }
        if (is_ip == 0 || vip == 0) {
            verdicts.count(DINET_PASS_NOT_SERVICE);
            host_port.apply();
            handled = 1;
            return;
        }
        /* addressed to a VIP: anything the program cannot steer is dropped or passed, as in the eBPF program */
        bit<32> frame = std.packet_length - 14;
        if (hdr.ipv4.isValid()) {
            meta.inner_len = hdr.ipv4.total_len;
            if ((bit<32>)hdr.ipv4.total_len > frame || hdr.ipv4.total_len < (bit<16>)hdr.ipv4.ihl * 4) {
                drop_for(DINET_DROP_MALFORMED);
                return;
            }
        } else {
            meta.inner_len = hdr.ipv6.payload_len + 40;
            if ((bit<32>)hdr.ipv6.payload_len + 40 > frame) {
                drop_for(DINET_DROP_MALFORMED);
                return;
            }
        }
        if (meta.l3_len > meta.inner_len) {  /* extension headers run past the datagram (into padding) */
            drop_for(DINET_DROP_MALFORMED);
            return;
        }
        if (meta.fragment == 1) {
            drop_for(DINET_DROP_FRAGMENT);
            return;
        }
        if (meta.ext_unsupported == 1) {
            drop_for(DINET_DROP_IPV6_EXTHDR);
            return;
        }
        if (std.parser_error != error.NoError) {
            drop_for(DINET_DROP_MALFORMED);
            return;
        }
        if (!hdr.l4.isValid()) {
            verdicts.count(DINET_PASS_UNKNOWN_SERVICE);
            host_port.apply();
            handled = 1;
            return;
        }
        /* the L4 header's first 8 bytes (UDP's header; TCP's ports and sequence number) lie within the
         * datagram, as the eBPF program requires: what follows the datagram is padding, not L4 */
        if (meta.l3_len + 8 > meta.inner_len) {
            drop_for(DINET_DROP_MALFORMED);
            return;
        }
        bool svc_hit;
        if (hdr.ipv4.isValid()) {
            svc_hit = services_v4.apply().hit;
        } else {
            svc_hit = services_v6.apply().hit;
        }
        if (!svc_hit) {
            verdicts.count(DINET_PASS_UNKNOWN_SERVICE);
            host_port.apply();
            handled = 1;
            return;
        }

        bit<128> ksrc;
        bit<128> kdst;
        if (hdr.ipv4.isValid()) {
            ksrc = (bit<128>)hdr.ipv4.src;
            kdst = (bit<128>)hdr.ipv4.dst;
            hash(meta.ring_idx, HashAlgorithm.crc32, (bit<32>)0,
                 { hdr.ipv4.src, hdr.ipv4.dst, hdr.l4.sport, hdr.l4.dport, meta.l4_proto }, (bit<32>)DINET_RING_SIZE);
            hash(meta.aff_idx, HashAlgorithm.crc32, (bit<32>)0,
                 { hdr.ipv4.src, hdr.ipv4.dst, hdr.l4.sport, hdr.l4.dport, meta.l4_proto },
                 (bit<32>)DINET_P4_AFFINITY_SIZE);
            hash(meta.aff_idx2, HashAlgorithm.crc32, (bit<32>)0,
                 { hdr.l4.dport, hdr.l4.sport, hdr.ipv4.dst, hdr.ipv4.src, meta.l4_proto },
                 (bit<32>)DINET_P4_AFFINITY_SIZE);
        } else {
            ksrc = hdr.ipv6.src;
            kdst = hdr.ipv6.dst;
            hash(meta.ring_idx, HashAlgorithm.crc32, (bit<32>)0,
                 { hdr.ipv6.src, hdr.ipv6.dst, hdr.l4.sport, hdr.l4.dport, meta.l4_proto }, (bit<32>)DINET_RING_SIZE);
            hash(meta.aff_idx, HashAlgorithm.crc32, (bit<32>)0,
                 { hdr.ipv6.src, hdr.ipv6.dst, hdr.l4.sport, hdr.l4.dport, meta.l4_proto },
                 (bit<32>)DINET_P4_AFFINITY_SIZE);
            hash(meta.aff_idx2, HashAlgorithm.crc32, (bit<32>)0,
                 { hdr.l4.dport, hdr.l4.sport, hdr.ipv6.dst, hdr.ipv6.src, meta.l4_proto },
                 (bit<32>)DINET_P4_AFFINITY_SIZE);
        }
        bit<40> kports = hdr.l4.sport ++ hdr.l4.dport ++ meta.l4_proto;

        /* a session-affine service places a new flow by its session key where it has one (dinet_consts.h):
         * the IPv6 flow label, else the group of a source port at or above DINET_SESSION_PORT_MIN */
        bit<32> session = 0;
        if ((meta.svc_flags & DINET_SVC_SESSION) != 0) {
            if (hdr.ipv6.isValid() && hdr.ipv6.flow_label != 0) {
                session = ((bit<32>)DINET_SESSION_TAG_LABEL << 24) | (bit<32>)hdr.ipv6.flow_label;
            } else if (hdr.l4.sport >= DINET_SESSION_PORT_MIN) {
                session = ((bit<32>)DINET_SESSION_TAG_PORT << 24) |
                          (bit<32>)(hdr.l4.sport >> DINET_SESSION_PORT_BITS);
            }
        }
        if (session != 0) {
            if (hdr.ipv4.isValid()) {
                hash(meta.ring_idx, HashAlgorithm.crc32, (bit<32>)0,
                     { hdr.ipv4.src, hdr.ipv4.dst, session, hdr.l4.dport, meta.l4_proto }, (bit<32>)DINET_RING_SIZE);
            } else {
                hash(meta.ring_idx, HashAlgorithm.crc32, (bit<32>)0,
                     { hdr.ipv6.src, hdr.ipv6.dst, session, hdr.l4.dport, meta.l4_proto }, (bit<32>)DINET_RING_SIZE);
            }
        }

        /* an established flow first: two ways, so that a flow finds room unless both of its entries hold
         * other flows still in use */
        bit<32> idx1 = meta.aff_idx;
        bit<32> idx2 = meta.aff_idx2;
        bit<128> s1;
        bit<128> d1;
        bit<40> p1;
        bit<48> seen1;
        bit<128> s2;
        bit<128> d2;
        bit<40> p2;
        bit<48> seen2;
        aff_src.read(s1, idx1);
        aff_dst.read(d1, idx1);
        aff_ports_proto.read(p1, idx1);
        aff_seen.read(seen1, idx1);
        aff_src.read(s2, idx2);
        aff_dst.read(d2, idx2);
        aff_ports_proto.read(p2, idx2);
        aff_seen.read(seen2, idx2);
        bool m1 = s1 == ksrc && d1 == kdst && p1 == kports;
        bool m2 = s2 == ksrc && d2 == kdst && p2 == kports;
        bit<32> at = m1 ? idx1 : idx2;
        bit<16> r_svc;
        bit<32> r_gen;
        bit<16> r_slot;
        bit<32> r_iid;
        aff_svc.read(r_svc, at);
        aff_gen.read(r_gen, at);
        aff_slot.read(r_slot, at);
        aff_iid.read(r_iid, at);
        /* a TCP SYN (no ACK) to a session-affine service opens a new connection of its session: its
         * session's entry places it, whatever the affinity table remembers of the 5-tuple (a client reuses
         * its session's ports; as Katran skips its LRU for a SYN) */
        bool syn_of_session = session != 0 && hdr.tcp.isValid() && (hdr.tcp.flags & 0x12) == 0x02;
        bool remembered = (m1 || m2) && r_svc == meta.svc_id && r_gen == meta.gen && !syn_of_session;

        /* a new flow of a session: its session's entry, where the flow itself is not remembered */
        bit<32> ses_at = 0;
        bool ses_known = false;
        bool ses_match = false;
        bit<16> s_slot = 0;
        bit<32> s_iid = 0;
        if (session != 0 && !remembered) {
            hash(ses_at, HashAlgorithm.crc32, (bit<32>)0, { ksrc, session, meta.svc_id }, (bit<32>)DINET_P4_SESSION_SIZE);
            bit<128> q_src;
            bit<32> q_key;
            bit<16> q_svc;
            bit<32> q_gen;
            ses_src.read(q_src, ses_at);
            ses_key.read(q_key, ses_at);
            ses_svc.read(q_svc, ses_at);
            ses_gen.read(q_gen, ses_at);
            ses_slot.read(s_slot, ses_at);
            ses_iid.read(s_iid, ses_at);
            ses_known = q_src == ksrc && q_key == session && q_svc == meta.svc_id;
            ses_match = ses_known && q_gen == meta.gen;
        }
        bool hit = false;
        bool found = false;
        if (remembered || ses_match) {
            meta.slot = remembered ? r_slot : s_slot;
            instance_check.apply();
            /* the flow stays while its instance lives (up or draining, same occupant); a session's new flow
             * while its instance takes new flows (up) */
            if (chk_iid == (remembered ? r_iid : s_iid)) {
                hit = remembered && chk_state != DINET_INST_DOWN;
                found = !remembered && chk_state == DINET_INST_UP;
            }
        }
        if (!hit) {
            if (!found) {
                meta.slot = (bit<16>)DINET_SLOT_NONE;
                ring.apply();
                if ((meta.svc_flags & DINET_SVC_TWO_CHOICES) != 0 && session == 0) {
                    /* the second candidate: the ring at the reversed fields' hash; the lower load wins (the
                     * first on a tie), and the flow counts where it goes */
                    if (hdr.ipv4.isValid()) {
                        hash(ring_idx_b, HashAlgorithm.crc32, (bit<32>)0,
                             { hdr.l4.dport, hdr.l4.sport, hdr.ipv4.dst, hdr.ipv4.src, meta.l4_proto },
                             (bit<32>)DINET_RING_SIZE);
                    } else {
                        hash(ring_idx_b, HashAlgorithm.crc32, (bit<32>)0,
                             { hdr.l4.dport, hdr.l4.sport, hdr.ipv6.dst, hdr.ipv6.src, meta.l4_proto },
                             (bit<32>)DINET_RING_SIZE);
                    }
                    ring_b.apply();
                    bool a_up = load_a.apply().hit;
                    bool b_up = load_b.apply().hit;
                    bit<32> base = (bit<32>)meta.svc_id * DINET_MAX_INSTANCES;
                    bit<32> ia = base + (bit<32>)meta.slot;
                    bit<32> ib = base + (bit<32>)slot_b;
                    bit<32> ga = 0;
                    bit<32> na = 0;
                    bit<32> gb = 0;
                    bit<32> nb = 0;
                    if (a_up) {
                        placed_gen.read(ga, ia);
                        placed_count.read(na, ia);
                    }
                    if (b_up) {
                        placed_gen.read(gb, ib);
                        placed_count.read(nb, ib);
                    }
                    if (ga != load_a_gen) { na = 0; }
                    if (gb != load_b_gen) { nb = 0; }
                    bit<64> xa = load_a_value + (bit<64>)na * (bit<64>)load_a_each;
                    if (na > load_a_free) { xa = xa + (bit<64>)(na - load_a_free) * (bit<64>)load_a_step; }
                    bit<64> xb = load_b_value + (bit<64>)nb * (bit<64>)load_b_each;
                    if (nb > load_b_free) { xb = xb + (bit<64>)(nb - load_b_free) * (bit<64>)load_b_step; }
                    if (b_up && slot_b != meta.slot && (!a_up || xb < xa)) {
                        meta.slot = slot_b;
                        placed_gen.write(ib, load_b_gen);
                        placed_count.write(ib, nb + 1);
                    } else if (a_up) {
                        placed_gen.write(ia, load_a_gen);
                        placed_count.write(ia, na + 1);
                    }
                }
            }
            meta.new_flow = 1;
        }
        if (!instances.apply().hit) {
            drop_for(DINET_DROP_NO_INSTANCE);
            return;
        }
        bit<48> now = std.ingress_global_timestamp;
        if (meta.new_flow == 1) {
            if (inst_state != DINET_INST_UP) {
                drop_for(DINET_DROP_NO_INSTANCE);
                return;
            }
            bool free1 = m1 || (s1 == 0 && d1 == 0 && p1 == 0) || now - seen1 > DINET_P4_AFFINITY_IDLE_US;
            bool free2 = m2 || (s2 == 0 && d2 == 0 && p2 == 0) || now - seen2 > DINET_P4_AFFINITY_IDLE_US;
            if (session != 0 && !found) {  /* a session placed: its entry names where it went */
                ses_src.write(ses_at, ksrc);
                ses_key.write(ses_at, session);
                ses_svc.write(ses_at, meta.svc_id);
                ses_gen.write(ses_at, meta.gen);
                ses_slot.write(ses_at, meta.slot);
                ses_iid.write(ses_at, inst_iid);
            }
            if (free1 || free2) {
                at = free1 ? idx1 : idx2;
                aff_src.write(at, ksrc);
                aff_dst.write(at, kdst);
                aff_ports_proto.write(at, kports);
                aff_svc.write(at, meta.svc_id);
                aff_gen.write(at, meta.gen);
                aff_slot.write(at, meta.slot);
                aff_iid.write(at, inst_iid);
                aff_seen.write(at, now);
            } else {
                verdicts.count(DINET_AFFINITY_COLLISION);
            }
        } else {
            aff_seen.write(at, now);
        }

        bit<32> inst_index = (bit<32>)meta.svc_id * DINET_MAX_INSTANCES + (bit<32>)meta.slot;
        svc_stats.count((bit<32>)meta.svc_id);
        inst_stats.count(inst_index);
        if (meta.new_flow == 1) {
            svc_new_flows.count((bit<32>)meta.svc_id);
            inst_new_flows.count(inst_index);
            if (found) {
                svc_session_flows.count((bit<32>)meta.svc_id);
                inst_session_flows.count(inst_index);
            } else if (ses_known) {
                svc_sessions_replaced.count((bit<32>)meta.svc_id);
                inst_sessions_replaced.count(inst_index);
            } else if (session != 0) {
                svc_sessions.count((bit<32>)meta.svc_id);
                inst_sessions.count(inst_index);
            }
        }

        /* IP-in-IP toward the endpoint (RFC 2003 / RFC 2473), TTL 64, no options, no fragmentation; the outer
         * DS field is the inner one (RFC 2983's uniform model, RFC 6040's normal mode), as in the eBPF program */
        bit<8> ds = hdr.ipv4.isValid() ? hdr.ipv4.tos : hdr.ipv6.traffic_class;
        tunnel_source.apply();
        bit<8> inner_proto = hdr.ipv4.isValid() ? (bit<8>)DINET_IPPROTO_IPIP : (bit<8>)DINET_IPPROTO_IPV6;
        if (meta.inst_family == DINET_AF_INET) {
            hdr.outer_ipv4.setValid();
            hdr.outer_ipv4.version = 4;
            hdr.outer_ipv4.ihl = 5;
            hdr.outer_ipv4.tos = ds;
            hdr.outer_ipv4.total_len = meta.inner_len + 20;
            hdr.outer_ipv4.identification = 0;
            hdr.outer_ipv4.flags = 0;
            hdr.outer_ipv4.frag_offset = 0;
            hdr.outer_ipv4.ttl = DINET_ENCAP_TTL;
            hdr.outer_ipv4.protocol = inner_proto;
            hdr.outer_ipv4.src = tun_src4[31:0];
            hdr.outer_ipv4.dst = meta.endpoint[31:0];
            hdr.ethernet.ether_type = DINET_ETHERTYPE_IPV4;
        } else {
            hdr.outer_ipv6.setValid();
            hdr.outer_ipv6.version = 6;
            hdr.outer_ipv6.traffic_class = ds;
            hdr.outer_ipv6.flow_label = 0;
            hdr.outer_ipv6.payload_len = meta.inner_len;
            hdr.outer_ipv6.next_hdr = inner_proto;
            hdr.outer_ipv6.hop_limit = DINET_ENCAP_TTL;
            hdr.outer_ipv6.src = tun_src6;
            hdr.outer_ipv6.dst = meta.endpoint;
            hdr.ethernet.ether_type = DINET_ETHERTYPE_IPV6;
        }
        next_hop.apply();
        handled = 1;
    }
}

#endif
