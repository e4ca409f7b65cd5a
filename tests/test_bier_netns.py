"""BIER on the eBPF data plane, end to end in namespace domains: a source behind the BFIR sends UDP, BFERs
receive it; copies are captured on the links and decoded with the project's RFC 8296 layers."""

from __future__ import annotations

import contextlib
import select
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from conftest import NS_PREFIX, needs_bcc, needs_root, wait_for
from dinet.lab.bier_domain import SYNC_ADDR, SYNC_PORT, BierDomain, diamond, tree
from dinet.packets import BIER, BIFTId, bift_id, bitstring
from dinet.policy.bift import compute_bifts, walk
from dinet.targets import netns

pytestmark = [needs_root, needs_bcc]


@contextlib.contextmanager
def captures(dom: BierDomain, links: list[tuple[str, str]]) -> Iterator[dict[tuple[str, str], object]]:
    """L2 sockets on the sending end of each link frm -> to, opened before any traffic. (A frame that a node
    forwards in XDP never reaches a packet socket on the receiving side; these links' senders use TC.)"""
    socks = {}
    try:
        for frm, to in links:
            socks[(frm, to)] = netns.l2_socket(to, dom.net.ns(frm))
        yield socks
    finally:
        for s in socks.values():
            s.close()


def bier_frames(sock) -> list:
    """What the socket has queued (the deliveries already came back, so the copies have crossed)."""
    out = []
    while select.select([sock], [], [], 0)[0]:
        data, addr = sock.recvfrom(65535)
        p = Ether(data)
        if BIER in p and addr[2] == 4:  # PACKET_OUTGOING: what this end sent
            out.append(p)
    return out


def exactly_once(got: dict[str, list[int]], targets: set[str], n: int) -> None:
    for name, seqs in got.items():
        want = list(range(n)) if name in targets else []
        assert sorted(seqs) == want, f"{name}: got {Counter(seqs)} for {n} packets (targeted: {name in targets})"


@pytest.mark.parametrize("bsl", [1, 2, 3], ids=["bsl64", "bsl128", "bsl256"])
def test_diamond_delivers_exactly_once_with_rfc_bitstrings(bsl: int, bpffs_root: Path) -> None:
    with BierDomain(f"{NS_PREFIX}d{bsl}", diamond(), bsl, bpffs_root=bpffs_root) as d:
        targets = {"b", "c", "d"}
        d.install_bfir(targets)
        links = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
        with captures(d, links) as socks:
            d.send(20)
            exactly_once(d.received({t: 20 for t in targets}), targets, 20)
            frames = {link: bier_frames(s) for link, s in socks.items()}
        expected, delivered = walk(compute_bifts(d.topo, bsl), "a", 0, 0b111)
        assert delivered == targets
        want = {(c.frm, c.to): c for c in expected}
        for link, got in frames.items():
            if link not in want:
                assert got == [], f"{link}: no copy should cross"
                continue
            assert len(got) == 20, f"{link}: {len(got)} copies for 20 packets"
            for p in got:
                assert p[BIER].bsl == bsl and p[BIER].nibble == 5 and p[BIER].proto == 4
                assert bytes(p[BIER].bitstring) == want[link].mask.to_bytes(8 << (bsl - 1), "big")
                assert p[BIFTId].ttl == want[link].ttl and p[BIFTId].bift_id == bift_id(bsl, 0)
                assert p[BIER].bfir_id == 10 and p[IP].dst == str(SYNC_ADDR) and p[UDP].dport == SYNC_PORT
        a = d.nodes["a"].counters()
        assert a["bfir_push"] == 20 and a["copies"] == 40
        assert all(v == 0 for k, v in a.items() if k.startswith("drop"))


def test_subset_and_link_removal_stay_exactly_once(bpffs_root: Path) -> None:
    with BierDomain(f"{NS_PREFIX}dl", diamond(), 1, bpffs_root=bpffs_root) as d:
        d.install_bfir({"d"})
        d.send(10)
        exactly_once(d.received({"d": 10}), {"d"}, 10)
        assert d.nodes["c"].counters()["rx"] == 0  # d is reached through b only
        d.remove_link("b", "d")
        assert d.nodes["a"].bifts()[bift_id(1, 0)].neighbors[1].fbm == 0b110  # toward c now: c and d
        d.install_bfir({"b", "c", "d"})
        d.send(10, start=10)
        got = d.received({"b": 10, "c": 10, "d": 10})
        assert sorted(got["d"]) == list(range(10, 20)) and sorted(got["b"]) == list(range(10, 20))
        assert sorted(got["c"]) == list(range(10, 20))


def test_tree_of_eight_bfers_in_two_sets(bpffs_root: Path) -> None:
    """BSL 64, BFR-ids 1-4 in SI 0 and 65-68 in SI 1: the BFIR sends one packet per set."""
    with BierDomain(f"{NS_PREFIX}t", tree(second_set_from=5), 1, bfir="r", bpffs_root=bpffs_root) as d:
        for name in ("m1", "m2", "n1", "n2", "n3", "n4"):
            d.nodes[name].set_xdp_min_fanout(1)  # the transit BFRs forward everything in XDP
        everyone = {f"e{i}" for i in range(1, 9)}
        d.install_bfir(everyone)
        assert set(d.nodes["r"].bfir_entries()[next(iter(d.nodes["r"].bfir_entries()))]) == {
            bift_id(1, 0),
            bift_id(1, 1),
        }
        with captures(d, [("r", "m1"), ("r", "m2")]) as socks:
            d.send(15)
            exactly_once(d.received({t: 15 for t in everyone}), everyone, 15)
            up = {link: bier_frames(s) for link, s in socks.items()}
        # e1..e4 (SI 0) sit under m1, e5..e8 (SI 1) under m2: each uplink carries its own set's 15 packets
        assert {link: {p[BIFTId].bift_id & 0xFF for p in ps} for link, ps in up.items()} == {
            ("r", "m1"): {0},
            ("r", "m2"): {1},
        }
        assert all(len(ps) == 15 for ps in up.values())
        # transit nodes forwarded in XDP (the fast path), the leaves delivered through TC
        assert d.nodes["m1"].counters()["fast"] == 15 and d.nodes["n3"].counters()["fast"] == 15
        assert d.nodes["e1"].counters()["fast"] == 0 and d.nodes["e1"].counters()["local"] == 15
        some = {"e2", "e3", "e7"}
        d.install_bfir(some)
        d.send(5, start=100)
        got = d.received({t: 5 for t in some})
        for name in everyone:
            assert sorted(got[name]) == (list(range(100, 105)) if name in some else []), name


def test_malformed_bier_is_dropped_counted_and_harmless(bpffs_root: Path) -> None:
    with BierDomain(f"{NS_PREFIX}m", diamond(), 1, bpffs_root=bpffs_root) as d:
        a = d.nodes["a"]
        mac_a = netns.mac_of("src", d.net.ns("a"))
        inner = IP(src="10.50.0.2", dst=str(SYNC_ADDR)) / UDP(sport=1, dport=SYNC_PORT) / b"probe"

        def bier(bsl=1, bid=None, ttl=64, ids=(1, 3), **kw):
            hdr = BIER(bsl=bsl, bitstring=bitstring(ids, min(bsl, 3)), **({"proto": 4} | kw))
            return Ether(dst=mac_a) / BIFTId(bift_id=bift_id(1, 0) if bid is None else bid, ttl=ttl) / hdr / inner

        inject = netns.l2_socket("eth0", d.net.ns("src"))
        cases = [
            ("drop_nibble", bier(nibble=4)),
            ("drop_version", bier(version=1)),
            ("drop_bsl", bier(bsl=4, bid=bift_id(4, 0))),  # 512 bits: not supported here
            ("drop_bsl", bier(bsl=2)),  # header BSL differs from BIFT-id's
            ("drop_truncated", Ether(bytes(bier())[: 14 + 10])),
            ("drop_truncated", Ether(bytes(bier(bsl=3, bid=bift_id(3, 0)))[: 14 + 12 + 8])),
            ("drop_zero_bitstring", bier(ids=())),
            ("drop_ttl", bier(ttl=1)),
            ("drop_bift_miss", bier(bid=bift_id(1, 5))),
            ("drop_proto", bier(ids=(10,), proto=5)),  # a's own bit, Proto 5 (OAM) to deliver
        ]
        for reason, pkt in cases:
            before = a.counters()
            inject.send(bytes(pkt))
            after = _wait_counter(a, reason, before[reason] + 1)
            moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            moved.pop("rx", None)
            assert moved == {reason: 1}, f"{reason}: {moved}"
        # bits nobody serves are counted while the rest is still forwarded
        before = a.counters()["copies"]
        inject.send(bytes(bier(ids=(1, 50))))
        assert _wait_counter(a, "drop_no_neighbor", 1)["copies"] == before + 1
        # the node still forwards well-formed traffic, exactly once
        d.install_bfir({"b", "c", "d"})
        d.send(10, start=1000)
        got = d.received({"b": 10, "c": 10, "d": 10})
        probe = int.from_bytes(b"prob", "big")  # the payload of the probe with bits 1 and 50 delivered to b
        assert sorted(got["b"]) == [*range(1000, 1010), probe]
        assert sorted(got["c"]) == sorted(got["d"]) == list(range(1000, 1010))
        inject.close()


def _wait_counter(node, name: str, at_least: int, tries: int = 200) -> dict[str, int]:
    """Reads the counters until `name` reaches `at_least`: the frame is handed to the veth and processed
    at the peer asynchronously, so the test polls the counter it waits for, in 10 ms steps."""
    for _ in range(tries):
        c = node.counters()
        if c[name] >= at_least:
            return c
        select.select([], [], [], 0.01)
    raise AssertionError(f"counter {name} never reached {at_least}: {node.counters()}")


def test_a_link_failure_during_a_stream_is_routed_around(bpffs_root: Path) -> None:
    """The controller watches the domain; the link b-d fails while a stream runs to b, c and d: b and c never
    stop receiving, d receives again through c, nobody gets a datagram twice, and only the entries the
    failure changed are rewritten (a, b and d's; c's stay). No fast reroute: the controller's rewrite alone."""
    with BierDomain(f"{NS_PREFIX}fo", diamond(), 1, bpffs_root=bpffs_root, frr=False) as d:
        d.install_bifts()
        writes_c = d.ctl().record["c"]
        res = d.failover({"b", "c", "d"}, ("b", "d"), watch_interval=0.05, rate_pps=500, before_s=0.4, after_s=1.2)
        got, fail = res["received"], res["fail_seq"]
        assert isinstance(got, dict) and isinstance(fail, int)
        for name in ("b", "c", "d"):
            assert len(got[name]) == len(set(got[name])), f"{name}: duplicates"
            assert max(got[name]) == res["sent"] - 1, f"{name}: the end of the stream did not arrive"  # type: ignore[operator]
            assert set(range(fail)) <= set(got[name]), f"{name}: lost datagrams before the failure"
        for name in ("b", "c"):  # never on the failed link
            assert set(got[name]) == set(range(res["sent"])), f"{name}: lost datagrams"  # type: ignore[arg-type]
        assert res["recompute_ms"] is not None and res["entries_rewritten"] == 3
        assert d.ctl().record["c"] == writes_c  # c's plan is unchanged
        assert d.ctl().down_links == {frozenset(("b", "d"))}
        # d's datagrams now come through c: c forwarded them
        assert d.nodes["c"].counters()["copies"] > 0
        # the first of them: its own time on the way (kernel stamps) is a part of the time since the failure
        first, transit = res["first_packet_ms"]["d"], res["first_transit_ms"]["d"]  # type: ignore[index]
        assert first is not None and transit is not None and 0 < transit < first, (first, transit)


def test_fast_reroute_takes_the_backup_before_any_controller(bpffs_root: Path) -> None:
    """Diamond with the rung b-c: b's link to d fails and no controller runs. With fast reroute, b's link
    monitor marks the port down and b sends d's bit to c (its loop-free alternate), which delivers it: every
    datagram reaches every BFER once, the copies on the backup are counted at b, and the backup entry reads
    back as planned. Without it, d gets nothing until a controller rewrites the BIFTs."""
    for frr in (True, False):
        with BierDomain(f"{NS_PREFIX}fr{int(frr)}", diamond(rung=True), 1, bpffs_root=bpffs_root, frr=frr) as d:
            targets = {"b", "c", "d"}
            d.install_bfir(targets)
            b = d.nodes["b"]
            to_d, to_c = (netns.ifindex(d.ifname[("b", x)], d.net.ns("b")) for x in ("d", "c"))
            to_a = netns.ifindex(d.ifname[("b", "a")], d.net.ns("b"))
            primary = b.bifts()[bift_id(1, 0)]
            assert [(n.ifindex, n.fbm) for n in primary.neighbors] == [(to_a, 1 << 9), (to_c, 0b010), (to_d, 0b100)]
            if frr:  # while d's port (slot 2) is down: d's bit joins c's F-BM
                backup = b.frr_entries()[(bift_id(1, 0), 2)]
                assert [(n.ifindex, n.fbm) for n in backup.neighbors] == [(to_a, 1 << 9), (to_c, 0b110)]
                assert backup.local == primary.local == 0b001
            else:
                assert b.frr_entries() == {}
            d.send(10)
            exactly_once(d.received({t: 10 for t in targets}), targets, 10)
            d.fail_link("b", "d")
            # the monitor's mark is what the program reads: wait for it, not for time
            assert wait_for(lambda: to_d in b.ports_down()), "b's link monitor never marked the port"  # noqa: B023
            d.send(20, start=10)
            got = d.received({"b": 20, "c": 20} | ({"d": 20} if frr else {}), timeout=1.0)
            for name in ("b", "c"):
                assert sorted(got[name]) == list(range(10, 30)), name
            counters = b.counters()
            if frr:
                assert sorted(got["d"]) == list(range(10, 30)), "d: not every datagram came through c"
                assert counters["frr"] == 20 and counters["drop_port_down"] == 0  # every frame, on the backup entry
                assert d.nodes["c"].counters()["copies"] >= 20
            else:
                assert got["d"] == [] and counters["frr"] == 0 and counters["drop_port_down"] == 20
            d.restore_link("b", "d")
            assert wait_for(lambda: to_d not in b.ports_down()), "the port was not cleared when it came back"  # noqa: B023


# ---- the SR-P2MP tree baseline on the same nodes ----------------------------------------------------------
def test_an_sr_p2mp_tree_delivers_exactly_once_and_is_repaired_after_a_link_failure(bpffs_root: Path) -> None:
    """A job's tree from r to e1, e2 and e5 (dinet.services.trees on the TC program): segments at the root,
    the branching node n1 and the leaves only, read back from the maps; the pass-through nodes forward by node
    SID; each leaf gets every datagram once, nobody else any. The link m2-n3 under the tree fails: the node-SID
    routes that crossed it are rewritten (the segments stay: SR unicast carries the replica to e5 around it),
    not the whole domain's, and e5 receives again; stopping the job leaves no tree state. (A failure that
    changes a segment: the BMv2 diamond test.)"""
    from dinet.policy.p2mp import node_sid, rep_sid
    from dinet.services.trees import TreeJob

    with BierDomain(f"{NS_PREFIX}tr", tree(redundant=True), 1, bpffs_root=bpffs_root) as d:
        trees = d.trees()
        routes = d.nodes["m1"].tree_nodes()
        assert len(routes) == len(d.topo.bfr_ids) and routes[node_sid(trees.index["m1"])].local
        leaves = {"e1", "e2", "e5"}
        assert trees.start(TreeJob(1, "r", frozenset(leaves), str(SYNC_ADDR), SYNC_PORT)) == 6  # 5 segments, a root
        sid = rep_sid(1)
        held = {n: node.tree_segments() for n, node in d.nodes.items()}
        assert {n for n, segs in held.items() if segs} == {"r", "n1", *leaves}
        reps, leaf = held["n1"][sid]
        assert not leaf and sorted(r.node_sid for r in reps) == sorted(node_sid(trees.index[e]) for e in ("e1", "e2"))
        assert {r.rep_sid for r in reps} == {sid}
        reps, leaf = held["r"][sid]
        assert not leaf and sorted(r.node_sid for r in reps) == sorted(node_sid(trees.index[x]) for x in ("n1", "e5"))
        assert held["e5"][sid] == ((), True)
        assert list(d.nodes["r"].tree_roots().values()) == [sid]
        d.send(20)
        exactly_once(d.received({t: 20 for t in leaves}), leaves, 20)
        c = {n: node.counters() for n, node in d.nodes.items()}
        assert c["r"]["tree_push"] == 20 and c["r"]["tree_copies"] == 40
        assert c["m1"]["tree_unicast"] == 20 and c["n1"]["tree_copies"] == 40 and c["e5"]["local"] == 20
        assert all(c[n]["tree_rx"] == 0 for n in ("e3", "e4", "e6", "e7", "e8"))

        d.fail_link("m2", "n3")
        written = trees.link_down("m2", "n3")
        assert 0 < written < sum(len(r) for r in trees.routes.values())  # not the whole domain again
        d.send(20, start=20)
        got = d.received({t: 20 for t in leaves})
        for name in leaves:
            assert sorted(got[name]) == list(range(20, 40)), f"{name} after the repair: {Counter(got[name])}"

        assert trees.stop(1) == 6
        assert all(not node.tree_segments() for node in d.nodes.values())
        assert not d.nodes["r"].tree_roots()
