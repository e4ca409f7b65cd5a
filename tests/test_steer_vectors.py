"""The steering vectors through the XDP program with BPF_PROG_TEST_RUN: no topology needed."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import Ether

from conftest import needs_bcc, needs_root
from tests.vectors import Drop, Forward, Pass, Vector
from tests.vectors import steering as sv

pytestmark = [needs_root, needs_bcc]


@pytest.fixture(scope="module")
def node(bpffs_root: Path) -> Iterator:
    from dinet.targets.base import SteerSizes
    from dinet.targets.xdp import SteeringNode

    n = SteeringNode(
        "vectors",
        SteerSizes(max_services=16, max_instances=16, ring_size=251, affinity_entries=4096),
        bpffs_root=bpffs_root,
    )
    try:
        sv.install_scenario(n)
        yield n
    finally:
        n.destroy()


def endpoint(n, frame) -> str:  # type: ignore[no-untyped-def]
    """Where the node sends a frame: the tunnel endpoint of the instance it chose."""
    from dinet.targets.bpfsys import XDP_TX, test_run

    res = test_run(n.prog_fd, bytes(frame))
    assert res.action == XDP_TX, res.action_name
    return str(Ether(res.data).payload.dst)


def run_vector(n, v: Vector) -> None:
    from dinet.targets.bpfsys import XDP_DROP, XDP_PASS, XDP_TX, test_run

    before = n.verdicts()
    res = test_run(n.prog_fd, bytes(v.packet))
    after = n.verdicts()
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    if isinstance(v.expect, Forward):
        assert res.action == XDP_TX, f"{v.name}: action {res.action_name}, counters {changed}"
        got, want = Ether(res.data), v.expect.packet
        assert bytes(got) == bytes(want), f"{v.name}:\n got  {got!r}\n want {want!r}"
        assert changed == {}, f"{v.name}: a forwarded packet moved verdict counters {changed}"
    elif isinstance(v.expect, Drop):
        assert res.action == XDP_DROP, f"{v.name}: action {res.action_name}"
        assert changed == {v.expect.reason: 1}, f"{v.name}: counters {changed}"
    elif isinstance(v.expect, Pass):
        assert res.action == XDP_PASS, f"{v.name}: action {res.action_name}"
        assert res.data == bytes(v.packet), f"{v.name}: a passed packet was changed"
        assert changed == {v.expect.reason: 1}, f"{v.name}: counters {changed}"
    else:  # pragma: no cover - the vector table has no other kind
        raise AssertionError(v.expect)


def test_the_vector_table_covers_forwarding_passing_and_dropping() -> None:
    vs = sv.vectors(lambda svc, pkt: sv.SERVICES[svc][0].endpoint)
    assert len(vs) > 15 and len(set(sv.names())) == len(vs)  # one test each, by a name of its own
    assert {type(v.expect) for v in vs} == {Forward, Pass, Drop}


@pytest.mark.parametrize("name", sv.names())
def test_vector(node, name: str) -> None:
    run_vector(node, sv.named(sv.placement(node), name))


def test_vectors_steer_to_the_instances_of_their_service(node) -> None:
    """The expected endpoints come from the node's ring: check they are that service's instances,
    so the vectors do not merely agree with whatever the ring holds."""
    place = sv.placement(node)
    web = [i.endpoint for i in sv.SERVICES[sv.WEB4]]
    assert place(sv.WEB4, sv.client4()) in web
    seen = {place(sv.WEB4, sv.client4(sport=p)) for p in range(1000, 1200)}
    assert seen == set(web), "200 flows over weights 1:2:3 reach every instance"


def test_a_conversation_keeps_its_instance_and_conversations_spread(node) -> None:
    """A session-affine service: the ports of one session group, and the connections of one flow label, are
    placed on one instance (the data plane's own answer, not the reference model's); 64 groups and 64 labels
    reach every instance; the service reads back as session-affine; sessions placed and flows that found
    their session's instance are counted."""
    from dinet.policy.session import session_ports

    before = node.service_counters(sv.CHAT4)[0]  # a client of its own: no flow of the vectors' is met again
    for group in (500, 501):  # not among the 64 below: every flow here is new
        ports = list(session_ports(group))
        assert len({endpoint(node, sv.client4("10.99.0.4", p, 8000, src="10.0.0.9")) for p in ports}) == 1
    firsts = {endpoint(node, sv.client4("10.99.0.4", session_ports(g)[0], 8000, src="10.0.0.9")) for g in range(64)}
    assert firsts == {str(i.endpoint) for i in sv.SERVICES[sv.CHAT4]}
    for k, label in enumerate((1, 0xFFFFF)):  # new flows each (the affinity table keys on the 5-tuple)
        assert len({endpoint(node, sv.chat6(sport, label)) for sport in range(42000 + 16 * k, 42016 + 16 * k)}) == 1
    labels = {endpoint(node, sv.chat6(43000 + label, label)) for label in range(1, 65)}
    assert labels == {str(i.endpoint) for i in sv.SERVICES[sv.CHAT6]}
    after = node.service_counters(sv.CHAT4)[0]
    assert after.sessions - before.sessions == 2 + 64 and after.session_flows - before.session_flows == 2 * 7
    assert after.sessions_replaced == before.sessions_replaced
    assert node.service(sv.CHAT4).session and not node.service(sv.WEB4).session
    node.add_service(sv.WEB4, session=True)  # placement changed in place: the same slot, flows kept
    try:
        assert node.service(sv.WEB4).session
    finally:
        node.add_service(sv.WEB4)
    assert not node.service(sv.WEB4).session


def test_a_session_stays_with_its_instance_through_weight_changes_and_moves_when_it_drains(
    node,
) -> None:
    """The session table, not the ring, holds a session (tests.vectors.steering.session_story); its entry reads
    back with the instance it went to."""
    from dinet.policy.session import session_key, session_ports

    moved = sv.session_story(node, lambda f: endpoint(node, f))
    key = (node.service(sv.CHAT4).svc_id, ipaddress.ip_address(sv.STORY_CLIENT), session_key(session_ports(40)[0]))
    slot, _ = node.sessions()[key]
    assert str(node.service(sv.CHAT4).instances[slot].endpoint) == moved


def test_a_new_connection_on_a_tuple_placed_per_flow_follows_its_session_after_a_placement_change(node) -> None:
    """tests.vectors.steering.placement_change_story (a SYN on a tuple remembered from per-flow placement), and
    the VIP filter that tells the program where the session rules apply: a session-affine service counts in
    its address's entry, and every change of that count moves the entry's epoch on (so a CPU's flow cache
    keeps no copy from before: the story's last step reads what the LRU says, not the first step's copies)."""
    from dinet.targets.xdp import FilterEntry, vip_fold

    def entry() -> FilterEntry:
        t = node.vip_filter_t
        return FilterEntry.unpack(t[t.Key(vip_fold(ipaddress.ip_address("10.99.0.4")))].value)

    before = entry()
    assert (before.vips, before.sessions) == (1, 1)
    sv.placement_change_story(node, lambda f: endpoint(node, f))
    after = entry()
    assert (after.vips, after.sessions, after.epoch) == (1, 1, (before.epoch + 4) & 0xFFFF)
    web = FilterEntry.unpack(node.vip_filter_t[node.vip_filter_t.Key(vip_fold(sv.WEB4.vip))].value)
    assert web.vips == 1 and web.sessions == 0  # a per-flow service's packets skip the session rules


def test_two_choices_place_each_new_flow_on_the_lower_loaded_candidate_from_either_cpu(node) -> None:
    """tests.vectors.steering.two_choices_story, new flows alternating between two CPUs: the count of flows
    placed is one per instance for every CPU (added to atomically), so each CPU sees the other's placements;
    the loads written read back as written."""
    import os

    cpus = sorted(os.sched_getaffinity(0))
    home = os.sched_getaffinity(0)
    turn = iter(range(10**6))

    def on_both(frame) -> str:  # type: ignore[no-untyped-def]
        os.sched_setaffinity(0, {cpus[next(turn) % len(cpus)]})
        try:
            return endpoint(node, frame)
        finally:
            os.sched_setaffinity(0, home)

    assert sv.two_choices_story(node, on_both) > 0  # the second candidate took some
    st = node.service(sv.PICK4)
    assert st.two_choices and not st.session
    assert {i.instance_id: (i.load.value, i.load.step, i.load.free) for i in st.instances.values() if i.load} == {
        i.instance_id: (i.load.value, i.load.step, i.load.free) for i in sv.SERVICES[sv.PICK4] if i.load
    }


def test_a_load_alone_rewrites_no_ring(node, bpffs_root: Path) -> None:
    """A new report's loads change the instance entries only: the live ring half stays (the weights did not move),
    while a weight change switches halves."""
    from dataclasses import replace

    st = node.service(sv.PICK4)
    insts = list(st.instances.values())
    node.set_instances(sv.PICK4, [replace(i, load=replace(i.load, value=i.load.value + 1, seq=i.load.seq + 1))
                                  for i in insts])  # fmt: skip
    again = node.service(sv.PICK4)
    assert again.ring_sel == st.ring_sel
    assert {i.load.value for i in again.instances.values()} == {i.load.value + 1 for i in insts}
    node.set_instances(sv.PICK4, [replace(i, weight=i.weight + 1) for i in again.instances.values()])
    assert node.service(sv.PICK4).ring_sel != st.ring_sel
    seq = max(i.load.seq for i in again.instances.values()) + 1  # seqs never repeat on a node: counts restart
    node.set_instances(sv.PICK4, [replace(i, load=replace(i.load, seq=seq)) for i in sv.SERVICES[sv.PICK4]])
    # a process that did not write the ring itself (a new one on the pinned maps, or one whose write was cut
    # short) writes it again, loads alone or not: the ring may not be the one the instance entries make
    from dinet.targets.xdp import SteeringNode

    held = node.service(sv.PICK4)
    with SteeringNode(node.node, bpffs_root=bpffs_root) as other:
        other.set_instances(sv.PICK4, [replace(i, load=replace(i.load, seq=seq + 1)) for i in held.instances.values()])
        assert other.service(sv.PICK4).ring_sel != held.ring_sel


def test_too_big_for_the_static_next_hop_is_answered_per_family(node) -> None:
    """XDP only (the P4 program has no path-MTU function): with the static next hop's MTU at 1400, a client
    packet that would not fit once encapsulated is answered from the node's tunnel source with what fits:
    1400 less the outer header used (20 toward an IPv4 endpoint, 40 toward an IPv6 one); ICMP "fragmentation
    needed" for IPv4 with DF, an ICMPv6 Packet Too Big (RFC 4443 s3.2) for IPv6; IPv4 without DF is dropped
    and counted (the node cannot fragment and may not ask the client to)."""
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import UDP as UDP6
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
    from scapy.packet import Raw

    from dinet.targets.bpfsys import XDP_DROP, XDP_TX, test_run

    node.configure(static_next_hop=(0, sv.NODE_MAC, sv.NEXT_HOP_MAC), static_mtu=1400)
    try:
        cases = [
            (sv.client4(sport=41000) / Raw(b"x" * 1360), 1380),
            (sv.client4(dst="10.99.0.2", dport=8080, sport=41001) / Raw(b"x" * 1340), 1360),
        ]
        for pkt, mtu in cases:
            pkt[IP].flags = "DF"
            before = node.verdicts()
            res = test_run(node.prog_fd, bytes(Ether(bytes(pkt))))
            assert res.action == XDP_TX
            got = Ether(res.data)
            assert got.dst == sv.CLIENT_MAC and got[IP].src == str(sv.SRC4) and got[IP].dst == "10.0.0.2"
            assert (got[ICMP].type, got[ICMP].code, got[ICMP].nexthopmtu) == (3, 4, mtu)
            assert bytes(got[ICMP].payload)[:28] == bytes(pkt[IP])[:28]  # the client's header and 8 bytes
            again = IP(bytes(got[IP]))
            again.chksum = None
            assert IP(bytes(again)).chksum == got[IP].chksum
            assert node.verdicts()["icmp_too_big"] - before["icmp_too_big"] == 1
        no_df = sv.client4(sport=41002) / Raw(b"x" * 1400)
        before = node.verdicts()
        assert test_run(node.prog_fd, bytes(no_df)).action == XDP_DROP
        assert node.verdicts()["drop_too_big"] - before["drop_too_big"] == 1
        six = (
            Ether(src=sv.CLIENT_MAC, dst=sv.NODE_MAC)
            / IPv6(src="fd00::2", dst="fd00:99::53")
            / UDP6(sport=5400, dport=53)
            / Raw(b"q" * 1360)
        )
        res = test_run(node.prog_fd, bytes(six))
        assert res.action == XDP_TX
        got = Ether(res.data)
        ptb = got[ICMPv6PacketTooBig]
        assert got[IPv6].src == str(sv.SRC6) and got[IPv6].dst == "fd00::2" and got.dst == sv.CLIENT_MAC
        assert ptb.mtu == 1360 and bytes(ptb.payload) == bytes(six[IPv6])[:128]
        rebuilt = IPv6(bytes(got[IPv6]))
        rebuilt[ICMPv6PacketTooBig].cksum = None  # scapy computes it again over the pseudo-header
        assert IPv6(bytes(rebuilt))[ICMPv6PacketTooBig].cksum == ptb.cksum
        small = sv.client4(sport=41003) / Raw(b"x" * 100)  # fits: forwarded as before
        res = test_run(node.prog_fd, bytes(small))
        assert res.action == XDP_TX and TCP in Ether(res.data)
    finally:
        node.configure(static_next_hop=(0, sv.NODE_MAC, sv.NEXT_HOP_MAC))


def test_established_flows_stay_put_on_every_cpu_through_set_changes(node) -> None:
    """Two CPUs, each with its own flow cache: after an instance leaves (its flows are placed anew on one
    CPU), another joins, and one is drained, every flow goes to the same instance from both CPUs, and no
    flow whose instance stayed up or draining ever moved."""
    import dataclasses
    import os

    from scapy.layers.inet import IP

    from dinet.model import Instance, InstanceState, ServiceKey
    from dinet.targets.bpfsys import XDP_TX, test_run

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    svc = ServiceKey.parse("10.99.0.9:443/tcp")
    a, b, c, d = (Instance(40 + i, f"192.0.2.{40 + i}", 1, site_id=1) for i in range(4))
    node.add_service(svc)
    flows = [sv.client4(dst="10.99.0.9", dport=443, sport=20000 + i) for i in range(300)]
    home = os.sched_getaffinity(0)

    def where(cpu: int) -> list[str]:
        os.sched_setaffinity(0, {cpu})  # BPF_PROG_TEST_RUN runs on the calling thread's CPU
        try:
            out = []
            for f in flows:
                res = test_run(node.prog_fd, bytes(f))
                assert res.action == XDP_TX
                out.append(Ether(res.data)[IP].dst)
            return out
        finally:
            os.sched_setaffinity(0, home)

    try:
        node.set_instances(svc, [a, b, c])
        first = where(cpus[0])
        assert where(cpus[1]) == first  # both CPUs have every flow cached now
        node.set_instances(svc, [a, b])  # c leaves: its flows are placed anew ...
        after_leave = where(cpus[0])  # ... on the first CPU
        node.set_instances(svc, [a, b, d])  # d joins: the ring changes again
        second = where(cpus[1])  # the second CPU's copies of c's flows no longer hold
        assert second == after_leave, "a flow went to another instance on the other CPU"
        assert where(cpus[0]) == second
        for before, now in zip(first, second, strict=True):
            if before != str(c.endpoint):
                assert now == before, "a flow whose instance stayed up moved"
        node.set_instances(svc, [dataclasses.replace(a, state=InstanceState.DRAINING), b, d])
        assert where(cpus[1]) == second and where(cpus[0]) == second  # draining moves no established flow
        # an instance that leaves and comes back (into the slot it had): the CPU that placed its flows anew
        # and the one whose cache still names the instance must agree (the slot's epoch tells them apart)
        node.set_instances(svc, [b, d])
        gone = where(cpus[0])
        node.set_instances(svc, [a, b, d])
        assert where(cpus[1]) == gone and where(cpus[0]) == gone
    finally:
        node.remove_service(svc)


def test_a_session_flow_re_placed_on_one_cpu_is_followed_on_the_other(node) -> None:
    """A SYN on a session port re-places its 5-tuple (the session moved: its instance drains); the next packets
    of that connection, handled by the other CPU, follow it there: that CPU's copy of the old placement is
    never used for a flow a session key placed (the LRU, shared, is read)."""
    import os

    from scapy.layers.inet import TCP

    from dinet.model import Instance, InstanceState

    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("one CPU")
    home_cpus = os.sched_getaffinity(0)

    def on(cpu: int, frame) -> str:  # type: ignore[no-untyped-def]
        os.sched_setaffinity(0, {cpu})
        try:
            return endpoint(node, frame)
        finally:
            os.sched_setaffinity(0, home_cpus)

    svc, insts = sv.CHAT4, sv.SERVICES[sv.CHAT4]
    syn = sv.client4("10.99.0.4", 63000, 8000, src="10.0.0.88")
    ack = sv.client4("10.99.0.4", 63000, 8000, src="10.0.0.88")
    ack[TCP].flags = "A"
    home = on(cpus[0], syn)
    assert on(cpus[1], ack) == home  # the other CPU has the flow too now
    mine = next(i for i in insts if str(i.endpoint) == home)
    try:
        node.set_instances(svc, [Instance(i.instance_id, i.endpoint, 1, InstanceState.DRAINING if i is mine
                                          else InstanceState.UP, i.site_id) for i in insts])  # fmt: skip
        moved = on(cpus[0], syn)  # a new connection on the same port: its session is placed anew
        assert moved != home
        assert on(cpus[1], ack) == moved and on(cpus[0], ack) == moved
    finally:
        node.set_instances(svc, insts)
