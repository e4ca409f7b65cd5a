"""The RFC 8296 layers and the BIFT computation: pure Python, no kernel needed."""

from __future__ import annotations

import random

import pytest
import scapy.contrib.bier as draft
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dinet import consts
from dinet.errors import ConfigError
from dinet.lab.bier_domain import diamond, random_domain, tree
from dinet.packets import BIER, BSL_BITS, BIFTId, bift_id, bitstring, bitstring_ids, si_bit, split_bift_id
from dinet.policy.bift import (
    BierIntent,
    BierTopology,
    BiftPlanner,
    BiftSet,
    DomainPlanner,
    Port,
    check_disjoint,
    compute_bifts,
    next_hops,
    walk,
)
from dinet.policy.p2mp import node_routes, node_sid, p2mp_tree, rep_sid, tree_links
from dinet.services.trees import TreeController, TreeJob
from dinet.targets.base import TreeHopPort


def frame(bsl: int = 1, ids=(1, 3), si: int = 0, ttl: int = 64):
    return (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / BIFTId(bift_id=bift_id(bsl, si), ttl=ttl)
        / BIER(bsl=bsl, entropy=0xABCDE, dscp=10, proto=4, bfir_id=77, bitstring=bitstring(ids, bsl, si))
        / IP(src="10.50.0.2", dst="10.200.0.1")
        / UDP(dport=9000)
        / b"x"
    )


@pytest.mark.parametrize("bsl", [1, 2, 3])
def test_layout_matches_scapy_contrib_field_for_field(bsl: int) -> None:
    """scapy.contrib.bier has the RFC 8296 layout with draft-era values: the fields sit at the same bits,
    only what BSL and Proto numbers mean differs (there 0 = 64 bits and 5 = IPv6)."""
    raw = bytes(frame(bsl))[14:]
    ours_bift, theirs_bift = BIFTId(raw), draft.BIFT(raw)
    assert ours_bift.bift_id == (theirs_bift.bsl << 16) | (theirs_bift.sd << 8) | theirs_bift.set
    assert (ours_bift.tc, ours_bift.s, ours_bift.ttl) == (theirs_bift.cos, theirs_bift.s, theirs_bift.ttl)
    ours, theirs = BIER(raw[4:]), draft.BIER(raw[4:])
    assert (ours.nibble, ours.version, ours.bsl, ours.entropy) == (
        theirs.id,
        theirs.version,
        theirs.length,
        theirs.entropy,
    )
    assert (ours.oam, ours.rsv, ours.dscp, ours.proto, ours.bfir_id) == (
        theirs.OAM,
        theirs.RSV,
        theirs.DSCP,
        theirs.Proto,
        theirs.BFRID,
    )
    # the values are RFC 8296's, not the draft's
    assert len(ours.bitstring) * 8 == {1: 64, 2: 128, 3: 256}[bsl]
    assert len(theirs.BitString) * 8 == {1: 128, 2: 256, 3: 512}[bsl] or len(raw) < 12 + 8 * 2**bsl
    assert ours.proto == 4 and IP in ours


def test_constants_come_from_the_shared_header() -> None:
    c = consts.load()
    assert c["DINET_ETHERTYPE_BIER"] == 0xAB37
    assert BSL_BITS == {1: 64, 2: 128, 3: 256, 4: 512, 5: 1024, 6: 2048, 7: 4096}
    assert (c["BIER_PROTO_IPV4"], c["BIER_PROTO_IPV6"]) == (4, 6)
    assert Ether(bytes(frame())).type == 0xAB37 and BIER in Ether(bytes(frame()))


def test_bfr_id_bits_and_sets() -> None:
    assert si_bit(1, 64) == (0, 1) and si_bit(64, 64) == (0, 64) and si_bit(65, 64) == (1, 1)
    raw = bitstring([1, 3, 64], 1, 0)
    assert raw == (1 << 63 | 0b101).to_bytes(8, "big")  # bit 1 is the last byte's low bit (RFC 8279 s3)
    assert bitstring_ids(raw) == [1, 3, 64]
    assert bitstring_ids(bitstring([65, 70], 1, 1), 1) == [65, 70]
    assert bitstring([65], 1, 0) == bytes(8)  # another set's BFR-id is not in this bitstring
    assert split_bift_id(bift_id(3, 2, 1)) == (3, 1, 2)
    with pytest.raises(ConfigError):
        si_bit(0, 64)
    with pytest.raises(ConfigError):
        bift_id(9, 0)


def test_diamond_bift() -> None:
    b = compute_bifts(diamond(), 1)
    assert b["a"][0].fbm == {"b": 0b101, "c": 0b010}  # d (bit 3) via b: equal cost, smaller name
    assert b["a"][0].local == 1 << 9 and b["b"][0].local == 0b001  # a is BFR-id 10
    assert b["b"][0].fbm == {"a": 1 << 9 | 0b010, "d": 0b100}
    check_disjoint(b)
    copies, got = walk(b, "a", 0, 0b111)
    assert got == {"b", "c", "d"}
    assert sorted((c.frm, c.to, c.mask, c.ttl) for c in copies) == [
        ("a", "b", 0b101, 64),
        ("a", "c", 0b010, 64),
        ("b", "d", 0b100, 63),
    ]


def test_recomputed_after_a_link_or_node_goes() -> None:
    t = diamond().without_link("b", "d")
    b = compute_bifts(t, 1)
    assert b["a"][0].fbm == {"b": 0b001, "c": 0b110}
    assert walk(b, "a", 0, 0b111)[1] == {"b", "c", "d"}
    b = compute_bifts(diamond().without_node("c").without_link("b", "d"), 1)
    assert b["a"][0].fbm == {"b": 0b001}  # d is unreachable: no neighbour serves its bit
    assert walk(b, "a", 0, 0b101)[1] == {"b"}


def test_tree_two_sets_each_bfer_exactly_once() -> None:
    t = tree(second_set_from=5)
    b = compute_bifts(t, 1)
    check_disjoint(b)
    assert set(b["r"]) == {0, 1}
    reached: list[str] = []
    for si, mask in ((0, 0b1111), (1, 0b11110000)):
        copies, got = walk(b, "r", si, mask)
        reached += sorted(got)
        links = [(c.frm, c.to) for c in copies]
        assert len(links) == len(set(links)), "one copy per link"
    assert sorted(reached) == [f"e{i}" for i in range(1, 9)]


def test_bad_topologies_are_refused() -> None:
    t = BierTopology()
    t.add_node("x", 1)
    with pytest.raises(ConfigError, match="already"):
        t.add_node("y", 1)
    with pytest.raises(ConfigError, match="no node"):
        t.add_link("x", "z")
    t.add_node("y", 2)
    with pytest.raises(ConfigError, match="positive"):
        t.add_link("x", "y", 0)


def test_bfr_ids_become_one_bitstring_per_set() -> None:
    """RFC 8279 s3, hand-worked with BSL 64: BFR-ids 1, 3 and 64 are set 0's bits 1, 3 and 64; 65 and 130 are
    set 1's bit 1 and set 2's bit 2. BIFT-id = BSL code 1 << 16 | SD << 8 | SI."""
    from dinet.policy.bift import bfir_sets

    assert bfir_sets([1, 3, 64, 65, 130], 1) == {
        1 << 16 | 0: 1 | 1 << 2 | 1 << 63,
        1 << 16 | 1: 1,
        1 << 16 | 2: 1 << 1,
    }
    assert bfir_sets([5], 1, sd=7) == {1 << 16 | 7 << 8: 1 << 4}
    assert bfir_sets([], 1) == {}


def _by_definition(topo: BierTopology, bsl: int) -> dict[str, dict[int, tuple[dict[str, int], int]]]:
    """RFC 8279 s6.5 one source at a time: next_hops' Dijkstra per BFR, F-BM = OR of the BFERs behind a
    neighbour (the reference the planner must equal)."""
    bits = BSL_BITS[bsl]
    sets = sorted({si_bit(b, bits)[0] for b in topo.bfr_ids.values() if b is not None})
    out = {}
    for node, own in topo.bfr_ids.items():
        hops = next_hops(topo, node)
        out[node] = {}
        for si in sets:
            fbm: dict[str, int] = {}
            for dest, bfr in topo.bfr_ids.items():
                if bfr is not None and dest in hops and si_bit(bfr, bits)[0] == si:
                    fbm[hops[dest]] = fbm.get(hops[dest], 0) | 1 << (si_bit(bfr, bits)[1] - 1)
            local = 1 << (si_bit(own, bits)[1] - 1) if own is not None and si_bit(own, bits)[0] == si else 0
            out[node][si] = (fbm, local)
    return out


def _plain(tables: dict[str, dict[int, BiftSet]]) -> dict[str, dict[int, tuple[dict[str, int], int]]]:
    return {n: {si: (e.fbm, e.local) for si, e in t.items()} for n, t in tables.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planner_equals_the_per_source_definition(seed: int) -> None:
    topo = random_domain(120, 209, seed, bfer_every=2)  # 60 BFERs over two sets of 64
    assert _plain(compute_bifts(topo, 1)) == _by_definition(topo, 1)


@pytest.mark.parametrize("seed", [4, 5])
def test_planner_after_changes_equals_planning_from_scratch(seed: int) -> None:
    """Links and BFRs go down and come back one change at a time: the incremental tables equal a plan of
    the topology as it is then, and the BFRs it names as changed are exactly those whose tables differ."""
    rng = random.Random(seed)
    topo = random_domain(80, 139, seed, bfer_every=2)
    planner = BiftPlanner(topo, 1)
    links = [frozenset((k.a, k.b)) for k in topo.links]
    down_links: set[frozenset[str]] = set()
    down_nodes: set[str] = set()
    for step in range(30):
        before = _plain(planner.tables())
        if step % 7 == 6:
            node = rng.choice(sorted(topo.bfr_ids))
            down_nodes ^= {node}
        elif down_links and rng.random() < 0.4:
            down_links.remove(rng.choice(sorted(down_links, key=sorted)))
        else:
            down_links.add(rng.choice(links))
        changed = planner.set_state(down_links, down_nodes)
        now = topo
        for n in sorted(down_nodes):
            now = now.without_node(n)
        for link in sorted(down_links, key=sorted):
            now = now.without_link(*sorted(link))
        after = _plain(planner.tables())
        assert after == _by_definition(now, 1), f"step {step}"
        assert changed == {n for n in after if before.get(n) != after[n]}, f"step {step}"


def test_fast_reroute_backups_are_loop_free_alternates() -> None:
    """The diamond has no loop-free alternate for b's link to d (a's path to d runs through b); with the
    rung b-c, c is one: it reaches d without b. b's link to a protects c's bit through d."""
    assert "d" not in BiftPlanner(diamond(), 1).backups("b")
    assert BiftPlanner(diamond(), 1).backups("b")["a"] == {0: {"d": 0b010}}  # c, behind a, through d
    rung = diamond()
    rung.add_link("b", "c")
    p = BiftPlanner(rung, 1)
    assert p.backups("b")["d"] == {0: {"c": 0b100}}
    assert p.backups("a")["b"] == {0: {"c": 0b101}}  # b and d, both through c
    # every backup delivers where the primary would have, with the protected link gone
    for node in rung.bfr_ids:
        for nbr, per in p.backups(node).items():
            cut = BiftPlanner(rung.without_link(node, nbr), 1).tables()
            for si, by in per.items():
                for backup, fbm in by.items():
                    copies, got = walk(cut, backup, si, fbm)
                    assert node not in {c.to for c in copies}, f"{node}->{backup} loops back"


def _backups_by_definition(p: BiftPlanner, src: str) -> dict[str, dict[int, dict[str, int]]]:
    """RFC 5286's loop-free alternate per BFER, one BFER at a time, from the planner's distances and next hops."""
    names, dist = p.names, p._dist
    s = names.index(src)
    out: dict[str, dict[int, dict[str, int]]] = {}
    nbrs = sorted(p._adj[s], key=lambda i: names[i])
    for d in range(len(names)):
        n = int(p._hop[s, d])
        if n < 0 or p._si[d] < 0:
            continue
        best = None
        for b in nbrs:  # by name: a later one must be strictly cheaper
            if b != n and dist[b, d] < dist[b, s] + dist[s, d]:
                cost = p._adj[s][b] + dist[b, d]
                if best is None or cost < best[0]:
                    best = (cost, b)
        if best is not None:
            per = out.setdefault(names[n], {}).setdefault(int(p._si[d]), {})
            per[names[best[1]]] = per.get(names[best[1]], 0) | 1 << (int(p._pos[d]) - 1)
    return out


def test_backups_of_every_bfr_at_once_are_the_loop_free_alternates_by_definition() -> None:
    """BiftPlanner.backups_of (a block of BFRs in one pass) gives, for every BFR of random domains with two
    sets, before and after links fail, what the per-BFER definition gives."""
    for seed in (1, 2, 3):
        topo = random_domain(90, 170, seed, bfer_every=1)
        p = BiftPlanner(topo, 1)  # BSL 64: 90 BFERs fill two sets
        links = [frozenset((k.a, k.b)) for k in topo.links]
        for down in (set(), set(random.Random(seed).sample(links, 8))):
            p.set_state(down, set())
            got = p.backups_of(list(topo.bfr_ids))
            for node in topo.bfr_ids:
                assert got[node] == _backups_by_definition(p, node), (seed, node)
            assert any(len(per) > 1 for b in got.values() for per in b.values()), "no second set exercised"


@pytest.mark.parametrize("seed", [7, 8])
def test_backups_kept_up_to_date_equal_a_fresh_plan_and_name_every_bfr_they_moved(seed: int) -> None:
    """Once made, the backups follow each link change where what they read moved: after every change they
    equal those of a planner made for the topology without the failed links, and backups_stale names every
    BFR whose backups differ from before the change."""
    topo = random_domain(90, 160, seed, bfer_every=2)
    p = BiftPlanner(topo, 1)
    names = list(topo.bfr_ids)
    rng = random.Random(seed)
    links = [frozenset((k.a, k.b)) for k in topo.links]
    down: set[frozenset[str]] = set()
    before = p.backups_of(names)
    for step in range(25):
        down ^= {rng.choice(links)}
        p.set_state(set(down), set())
        got = p.backups_of(names)
        now = topo
        for link in sorted(down, key=sorted):
            now = now.without_link(*sorted(link))
        assert got == BiftPlanner(now, 1).backups_of(names), f"step {step}"
        assert {n for n in names if got[n] != before[n]} <= p.backups_stale(), f"step {step}"
        before = got


def test_sr_p2mp_trees_hold_state_where_they_branch() -> None:
    """The tree baseline: a model to e1, e2 and e5 from r follows the BIFTs' shortest paths; SR-P2MP holds a
    replication segment at the root, where the tree branches and at the leaves (m1 and m2 pass it on),
    the per-node trees of PIM or mLDP at every node on it; the bitstring needs none of it."""
    t = tree()
    p = BiftPlanner(t, 1)
    links = tree_links(p, "r", {"e1", "e2", "e5"})
    assert links == {("r", "m1"), ("m1", "n1"), ("n1", "e1"), ("n1", "e2"), ("r", "m2"), ("m2", "n3"), ("n3", "e5")}
    sr = p2mp_tree(p, 7, "r", {"e1", "e2", "e5"})
    assert {n: (s.downstream, s.local) for n, s in sr.items()} == {
        "r": (("e5", "n1"), False),  # m1 and m2, n3 pass through: r's replicas go to n1 and e5 over unicast
        "n1": (("e1", "e2"), False),
        "e1": ((), True),
        "e2": ((), True),
        "e5": ((), True),
    }
    assert sr["r"].via == ("m2", "m1")  # each replica leaves toward the tree's child on its way
    assert sr["n1"].via == ("e1", "e2")
    assert len(p2mp_tree(p, 7, "r", {"e1", "e2", "e5"}, per_node=True)) == 8  # every node on the tree
    # the same copies as BIER: one per tree link
    copies, got = walk(p.tables(), "r", 0, 0b10011)
    assert {(c.frm, c.to) for c in copies} == links and got == {"e1", "e2", "e5"}


@pytest.mark.parametrize(("bfrs", "links", "bfer_every", "sets"), [(60, 110, 2, 1), (150, 260, 1, 3)])
def test_domain_plans_with_fast_reroute_stay_equal_to_fresh_ones(
    bfrs: int, links: int, bfer_every: int, sets: int
) -> None:
    """The controller's planner remakes tables, backups and entries only for the (BFR, SI)s next to what
    moved: after every random change (links, and BFRs every few steps) its entries, backups included, equal
    those of a planner made for that state from scratch; with one set and with three."""
    rng = random.Random(bfrs)
    topo = random_domain(bfrs, links, bfrs, bfer_every=bfer_every)
    ports = {}
    for link in topo.links:
        for x, y in ((link.a, link.b), (link.b, link.a)):
            ports[(x, y)] = Port(f"to-{y}", f"02:00:00:00:{int(x[1:]) >> 8:02x}:{int(x[1:]) & 255:02x}")
    intent = BierIntent(1, topo, ports)  # BSL 64
    live = DomainPlanner(intent)
    every = [frozenset((k.a, k.b)) for k in topo.links]
    down: set[frozenset[str]] = set()
    nodes: set[str] = set()
    for step in range(24):
        if step % 6 == 5:
            nodes ^= {rng.choice(sorted(topo.bfr_ids))}
        elif down and rng.random() < 0.4:
            down.remove(rng.choice(sorted(down, key=sorted)))
        else:
            down.add(rng.choice(every))
        got = {n: p.bifts for n, p in live.plan(down, nodes).items()}
        want = {n: p.bifts for n, p in DomainPlanner(intent).plan(down, nodes).items()}
        assert got == want, f"step {step}"
        assert any(e.backups for p in got.values() for e in p.values()), "no backup exercised"
    assert {e.bift_id & 0xFF for p in got.values() for e in p.values()} == set(range(sets))  # every set exercised


def test_planning_leaves_the_collector_as_it_was_and_its_entries_in_the_oldest_generation() -> None:
    """The planner pauses the cyclic collector while it plans and moves what it made straight to the oldest
    generation (no young collection walks it after): the collector is on after a plan if it was on before,
    off if it was off, and a new entry is in generation 2."""
    import gc

    topo = diamond()
    ports = {(x, y): Port(f"to-{y}", "02:00:00:00:00:01") for k in topo.links for x, y in ((k.a, k.b), (k.b, k.a))}
    planner = DomainPlanner(BierIntent(1, topo, ports))
    was = gc.isenabled()
    try:
        gc.enable()
        entries = planner.plan({frozenset(("b", "d"))})["a"].bifts
        assert gc.isenabled()
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert all(id(e) in oldest for e in entries.values())
        gc.disable()
        planner.plan(set())
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_node_routes_are_every_node_s_next_hop_toward_every_node_sid() -> None:
    """What the tree's SR unicast needs: per node, the neighbour toward each node (None: its own SID); a
    failure moves the routes that crossed it."""
    p = BiftPlanner(diamond(), 1)
    r = node_routes(p, ["a", "b", "c", "d"])
    assert r["a"] == {"a": None, "b": "b", "c": "c", "d": "b"}  # tie a-b-d / a-c-d: the BIFTs' choice
    assert r["d"] == {"d": None, "b": "b", "c": "c", "a": "b"}
    p.set_state({frozenset(("b", "d"))}, set())
    r = node_routes(p, ["a", "b", "c", "d"])
    assert r["a"]["d"] == "c" and r["b"]["d"] == "a" and r["d"]["b"] == "c"
    assert node_sid(0) == 16000 and rep_sid(3) == 100003
    with pytest.raises(ConfigError):
        rep_sid(1 << 20)


class RecordingTreeTarget:
    """A TreeTarget that records what it is written (what the controller's plan reaches a node as)."""

    def __init__(self) -> None:
        self.nodes: dict[int, object] = {}
        self.segments: dict[int, tuple] = {}
        self.roots: dict[tuple, int] = {}
        self.log: list[str] = []

    def set_tree_node(self, node_sid, hop) -> None:  # type: ignore[no-untyped-def]
        self.nodes[node_sid] = hop
        self.log.append("node")

    def remove_tree_node(self, node_sid) -> None:  # type: ignore[no-untyped-def]
        del self.nodes[node_sid]
        self.log.append("-node")

    def set_tree_segment(self, rep_sid, replicas, leaf) -> None:  # type: ignore[no-untyped-def]
        self.segments[rep_sid] = (tuple(replicas), leaf)
        self.log.append("segment")

    def remove_tree_segment(self, rep_sid) -> None:  # type: ignore[no-untyped-def]
        del self.segments[rep_sid]
        self.log.append("-segment")

    def set_tree_root(self, root) -> None:  # type: ignore[no-untyped-def]
        self.roots[(root.dst, root.udp_port)] = root.rep_sid
        self.log.append("root")

    def remove_tree_root(self, root) -> None:  # type: ignore[no-untyped-def]
        del self.roots[(root.dst, root.udp_port)]
        self.log.append("-root")


def test_tree_controller_writes_segments_before_the_root_and_repairs_only_what_changed() -> None:
    """dinet.services.trees against recording targets: routes to every node SID; a job's segments where the
    tree branches and at its leaves, each replica with the downstream node's SIDs and the first hop's MACs,
    the root entry last; a failure rewrites changed routes and segments only; a stop removes all of it."""
    t = diamond(rung=True)
    ports = {
        (x, y): Port(f"{x}-{y}", f"02:00:00:00:{ord(x):02x}:{ord(y):02x}")
        for k in t.links
        for x, y in ((k.a, k.b), (k.b, k.a))
    }
    targets = {n: RecordingTreeTarget() for n in t.bfr_ids}
    ctl = TreeController(BierIntent(1, t, ports), targets)  # type: ignore[arg-type]
    assert ctl.install_routes() == 16 and ctl.install_routes() == 0  # 4 nodes x 4 SIDs, once
    sid = rep_sid(2)
    assert ctl.start(TreeJob(2, "a", frozenset({"b", "c", "d"}), "10.200.0.1", 9000)) == 5
    a = targets["a"]
    assert a.log[-2:] == ["segment", "root"] and a.roots == {("10.200.0.1", 9000): sid}
    (b_rep, c_rep), leaf = a.segments[sid]
    assert not leaf and (b_rep.node_sid, c_rep.node_sid) == (node_sid(1), node_sid(2))
    assert b_rep.hop == TreeHopPort("a-b", ports[("b", "a")].mac, ports[("a", "b")].mac)
    assert targets["b"].segments[sid][1] and targets["b"].segments[sid][0][0].node_sid == node_sid(3)
    assert targets["d"].segments[sid] == ((), True)
    before = {n: list(x.log) for n, x in targets.items()}
    written = ctl.link_down("b", "d")
    new = {n: x.log[len(before[n]) :] for n, x in targets.items()}
    assert new["b"].count("segment") == 1 and new["c"].count("segment") == 1  # d moves from b's segment to c's
    assert "segment" not in new["a"] and "segment" not in new["d"]
    assert written == sum(len(v) for v in new.values())
    assert not targets["b"].segments[sid][0] and targets["c"].segments[sid][0][0].node_sid == node_sid(3)
    assert ctl.stop(2) == 5
    assert all(not x.segments and not x.roots for x in targets.values())
    ctl.link_down("c", "d")  # d is cut off (b-d is down already): no route to it is left, nor from it
    assert all(node_sid(3) not in targets[n].nodes for n in "abc") and set(targets["d"].nodes) == {node_sid(3)}
    assert ctl.writes == sum(len(x.log) for x in targets.values())  # every write counted once
    with pytest.raises(ConfigError):
        ctl.stop(2)
    with pytest.raises(ConfigError):
        ctl.start(TreeJob(3, "a", frozenset({"zz"}), "10.200.0.1", 9000))
