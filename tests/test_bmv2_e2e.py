"""End to end through BMv2 simple_switch_grpc programmed by dinet over P4Runtime:
- steering: a client reaches a service through the switch (bump in the wire before a router), instances
  behind the router decapsulate with the XDP decap program; established connections stay put while the
  weights change;
- BIER: the switch is BFIR and BFR for three Linux BFERs running the TC program; every targeted BFER gets
  each packet once, the others none."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import NS_PREFIX, bmv2_tools_or_skip, needs_bcc, needs_root, wait_for
from dinet.lab.namespaces import Topology

pytestmark = [needs_root, needs_bcc]


@pytest.fixture
def switch(request: pytest.FixtureRequest) -> Iterator:
    bmv2_tools_or_skip()
    yield


@contextlib.contextmanager
def steer_topology(prefix: str, bpffs_root: Path) -> Iterator[Any]:
    """A client (c) behind a switch namespace (sw: ports p0, p1), a router (r) and two instances (i1, i2)
    serving HTTP on the VIP 10.99.0.1 behind the XDP decap program."""
    import subprocess
    import sys

    from dinet.targets.xdp import DecapNode

    t = Topology(prefix)
    servers = []
    decap = None
    try:
        for n in ("c", "sw", "r", "i1", "i2"):
            t.add_ns(n)
        t.forwarding("r")
        t.link("c", "eth0", "sw", "p0", mtu=1600)
        t.link("sw", "p1", "r", "e0", mtu=1600)
        t.addr("c", "eth0", "10.0.0.2/24")
        t.addr("r", "e0", "10.0.0.1/24")
        t.sh("c", "ip", "route", "add", "default", "via", "10.0.0.1")
        for k in (1, 2):
            t.link("r", f"i{k}", f"i{k}", "eth0", mtu=1600)
            t.addr("r", f"i{k}", f"10.11.{k}.1/24")
            t.addr(f"i{k}", "eth0", f"10.11.{k}.2/24")
            t.addr(f"i{k}", "lo", "10.99.0.1/32")
            t.sh(f"i{k}", "ip", "route", "add", "default", "via", f"10.11.{k}.1")
        decap = DecapNode(f"{prefix}decap", bpffs_root=bpffs_root)
        for k in (1, 2):
            decap.add_endpoint(f"10.11.{k}.2")
            decap.attach("eth0", t.ns(f"i{k}"))
        server = str(Path(__file__).resolve().parents[1] / "topo" / "instance_server.py")
        for k in (1, 2):
            p = subprocess.Popen(
                ["ip", "netns", "exec", t.ns(f"i{k}"), sys.executable, server, "--name", f"i{k}", "--tcp", "80"],
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(p)
            assert p.stdout and p.stdout.readline().strip() == "ready"
        yield t
    finally:
        for p in servers:
            p.terminate()
            p.wait()
            if p.stdout:
                p.stdout.close()
        t.close()
        if decap:
            decap.destroy()


def test_steering_through_bmv2_keeps_established_flows(switch, bpffs_root: Path) -> None:
    from dinet.model import Instance, ServiceKey
    from dinet.targets import netns
    from dinet.targets.bmv2 import Bmv2Switch, compile_p4
    from dinet.targets.p4node import P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from tests.bmv2_harness import DEFINES, SIZES
    from topo.httpclient import KeepAlive, get_once

    pipe = compile_p4(DEFINES)
    with steer_topology(f"{NS_PREFIX}ps", bpffs_root) as t:
        router_mac = netns.mac_of("e0", t.ns("r"))
        with Bmv2Switch("ps", {0: "p0", 1: "p1"}, t.ns("sw")) as sw, P4RuntimeSwitch(sw.address, name="ps") as p4rt:
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            node = P4Node(p4rt, SIZES)
            node.configure(
                src4="10.0.0.100", static_next_hop=(1, "02:00:00:00:00:64", router_mac), pass_ports={0: 1, 1: 0}
            )
            svc = ServiceKey.parse("10.99.0.1:80/tcp")
            node.add_service(svc)
            node.set_instances(svc, [Instance(1, "10.11.1.2", 1), Instance(2, "10.11.2.2", 1)])
            with netns.entered(t.ns("c")):
                conns = [KeepAlive("10.99.0.1") for _ in range(12)]
                try:
                    first = [c.get() for c in conns]
                    assert set(first) == {"i1", "i2"}, first
                    node.set_weight(svc, 1, 0)  # every new flow to i2 now
                    assert [c.get() for c in conns] == first
                    fresh = Counter(get_once("10.99.0.1") for _ in range(12))
                    assert fresh == {"i2": 12}
                finally:
                    for c in conns:
                        c.close()
            total, per = node.service_counters(svc)
            assert total.new_flows == 24 and per[1].new_flows + per[2].new_flows == 24
            v = node.verdicts()
            assert v["drop_no_instance"] == 0 and v["affinity_collision"] == 0


def test_a_restarted_dinet_run_adopts_a_live_bmv2_switch_writes_nothing_and_moves_no_flow(
    switch, bpffs_root: Path, tmp_path: Path
) -> None:
    """`dinet run` (a process of its own) programs a BMv2 switch; connections open through it; `dinet run`
    is stopped and started again: it reads the switch back over P4Runtime, keeps the running pipeline (the
    affinity registers with it), writes nothing, and every connection stays on its instance. The intent
    names the switch's ports and next hop as they already are: configuring them again is no error."""
    from conftest import dinet_process, free_port
    from dinet.targets import netns
    from dinet.targets.bmv2 import Bmv2Switch, compile_p4
    from dinet.targets.p4node import P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from tests.bmv2_harness import SIZES
    from topo.httpclient import KeepAlive, get_once

    pipe = compile_p4(SIZES.defines())  # what `dinet run` compiles for these sizes
    with steer_topology(f"{NS_PREFIX}pr", bpffs_root) as t:
        router_mac = netns.mac_of("e0", t.ns("r"))
        with Bmv2Switch("pr", {0: "p0", 1: "p1"}, t.ns("sw")) as sw:
            with P4RuntimeSwitch(sw.address, name="pr", election_id=5) as p4rt:  # the site's own forwarding
                p4rt.set_pipeline(pipe.p4info, pipe.json)
                P4Node(p4rt, SIZES).configure(
                    src4="10.0.0.100", static_next_hop=(1, "02:00:00:00:00:64", router_mac), pass_ports={0: 1, 1: 0}
                )
            intent = tmp_path / "bmv2.yaml"
            intent.write_text(f"""
node: {{target: bmv2, name: pr, address: "{sw.address}", src4: 10.0.0.100, pass_ports: {{0: 1, 1: 0}},
        next_hop: {{port: 1, smac: "02:00:00:00:00:64", dmac: "{router_mac}"}},
        sizes: {{max_services: {SIZES.max_services}, max_instances: {SIZES.max_instances},
                 ring_size: {SIZES.ring_size}, affinity_entries: {SIZES.affinity_entries}}}}}
collector: {{listen: "127.0.0.1:{free_port()}"}}
prometheus: {{listen: "127.0.0.1:{free_port()}"}}
services:
  - service: 10.99.0.1:80/tcp
    instances:
      - {{id: 1, endpoint: 10.11.1.2, weight: 1}}
      - {{id: 2, endpoint: 10.11.2.2, weight: 1}}
""")

            def tables() -> dict[str, list[Any]]:
                with P4RuntimeSwitch(sw.address, name="pr", arbitrate=False) as ro:
                    ro.use_pipeline(pipe.p4info)
                    return {n: sorted(map(repr, ro.read_table(n))) for n in ("services_v4", "instances", "ring")}

            with dinet_process("run", "--insecure", str(intent), ready="dinet: collector on") as run:
                assert any("1 write(s)" in line for line in run.head), run.head
            before = tables()
            with netns.entered(t.ns("c")):
                conns = [KeepAlive("10.99.0.1") for _ in range(12)]
                try:
                    first = [c.get() for c in conns]
                    assert set(first) == {"i1", "i2"}, first
                    with dinet_process("run", "--insecure", str(intent), ready="dinet: collector on") as run:
                        assert any("0 write(s) (adopted" in line for line in run.head), run.head
                        assert [c.get() for c in conns] == first  # no connection moved
                        assert tables() == before  # nothing written: same entries, same live ring half
                        assert {get_once("10.99.0.1") for _ in range(8)} <= {"i1", "i2"}
                    assert [c.get() for c in conns] == first
                finally:
                    for c in conns:
                        c.close()


@dataclass
class BierRig:
    """A source behind a BMv2 switch (port 0) and Linux BFERs e1..e3 (ports 1..3, TC program, a UDP socket
    on the model-sync address), with the switch programmed over P4Runtime."""

    topo: Any
    node: Any  # P4Node
    bfers: dict[int, Any]  # BierNode per port
    socks: dict[int, socket.socket]

    def mac(self, k: int) -> str:
        from dinet.targets import netns

        return netns.mac_of("up0", self.topo.ns(f"e{k}"))

    def send(self, n: int) -> None:
        from dinet.targets import netns

        with netns.entered(self.topo.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(struct.pack("!I", i), ("10.200.0.1", 9000))

    def received(self, want: dict[int, int]) -> dict[int, list[int]]:
        """Sequence numbers per BFER, read until each in `want` has its count or 5 s pass in silence."""
        got: dict[int, list[int]] = {k: [] for k in self.socks}
        while any(len(got[k]) < n for k, n in want.items()):
            if not select.select(list(self.socks.values()), [], [], 5)[0]:
                break
            for k, sk in self.socks.items():
                while True:
                    try:
                        got[k].append(struct.unpack("!I", sk.recv(64)[:4])[0])
                    except BlockingIOError:
                        break
        return got


@contextlib.contextmanager
def bier_rig(name: str, bfr_ids: dict[int, int], bpffs_root: Path) -> Iterator[BierRig]:
    from dinet.packets import bift_id, si_bit
    from dinet.targets import netns
    from dinet.targets.bmv2 import Bmv2Switch, compile_p4
    from dinet.targets.p4node import P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from dinet.targets.tc import BierNode
    from tests.bmv2_harness import DEFINES, SIZES

    pipe = compile_p4(DEFINES)
    t = Topology(f"{NS_PREFIX}{name}")
    bfers: dict[int, BierNode] = {}
    socks: dict[int, socket.socket] = {}
    try:
        for n in ("src", "sw", *(f"e{k}" for k in bfr_ids)):
            t.add_ns(n)
        t.link("src", "eth0", "sw", "p0")
        t.addr("src", "eth0", "10.50.0.2/24")
        t.sh("src", "ip", "route", "add", "default", "dev", "eth0")
        t.sh("src", "ip", "neigh", "replace", "10.200.0.1", "lladdr", "02:00:00:00:00:fe", "dev", "eth0")
        for k, bfr in bfr_ids.items():
            t.link("sw", f"p{k}", f"e{k}", "up0")
            ns = t.ns(f"e{k}")
            bfers[k] = BierNode(f"{NS_PREFIX}{name}e{k}", bpffs_root=bpffs_root)
            bfers[k].attach("up0", ns)
            si, pos = si_bit(bfr, 64)
            bfers[k].set_bift(bift_id(1, si), 1 << (pos - 1), [])
            t.addr(f"e{k}", "lo", "10.200.0.1/32")
            with netns.entered(ns):
                socks[k] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks[k].bind(("10.200.0.1", 9000))
            socks[k].setblocking(False)
        ports = {0: "p0", **{k: f"p{k}" for k in bfr_ids}}
        with Bmv2Switch(name, ports, t.ns("sw")) as sw, P4RuntimeSwitch(sw.address, name=name) as p4rt:
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            yield BierRig(t, P4Node(p4rt, SIZES), bfers, socks)
    finally:
        for sk in socks.values():
            sk.close()
        t.close()
        for b in bfers.values():
            b.destroy()


def test_bier_from_bmv2_bfir_to_linux_bfers(switch, bpffs_root: Path) -> None:
    from dinet.packets import bift_id
    from dinet.targets.p4node import P4Neighbor

    bid = bift_id(1, 0)
    with bier_rig("pb", {1: 1, 2: 2, 3: 3}, bpffs_root) as r:
        r.node.write_bift(
            bid, 0, [P4Neighbor(k, "02:00:00:00:00:10", r.mac(k), 1 << (k - 1)) for k in (1, 2, 3)], local_port=0
        )
        assert len(r.node.sw.read_multicast_groups()) == 15  # every subset of three neighbours and the local port
        r.node.write_bfir("10.200.0.1", 1, 1, {bid: 0b101}, udp_port=9000)  # BFERs 1 and 3
        r.send(20)
        got = r.received({1: 20, 3: 20})
        assert sorted(got[1]) == sorted(got[3]) == list(range(20)) and got[2] == []
        assert r.bfers[2].counters()["rx"] == 0 and r.bfers[1].counters()["local"] == 20
        assert r.node.bier_counters()["copies"] == 40 and r.node.bier_counters()["bfir_push"] == 20


def test_bmv2_bfir_sends_one_packet_per_set(switch, bpffs_root: Path) -> None:
    """BFERs in two sets (BSL 64: BFR-ids 1, 65, 66): the switch sends set 0 in the first pass and set 1 in a
    recirculated one; each BFER gets every packet once."""
    from dinet.packets import bift_id
    from dinet.targets.p4node import P4Neighbor

    with bier_rig("pm", {1: 1, 2: 65, 3: 66}, bpffs_root) as r:
        r.node.write_bift(bift_id(1, 0), 0, [P4Neighbor(1, "02:00:00:00:00:10", r.mac(1), 0b1)], local_port=0)
        r.node.write_bift(
            bift_id(1, 1),
            0,
            [P4Neighbor(2, "02:00:00:00:00:10", r.mac(2), 0b01), P4Neighbor(3, "02:00:00:00:00:10", r.mac(3), 0b10)],
            local_port=0,
        )
        r.node.write_bfir("10.200.0.1", 100, 1, {bift_id(1, 0): 0b1, bift_id(1, 1): 0b11}, udp_port=9000)
        r.send(20)
        got = r.received({1: 20, 2: 20, 3: 20})
        assert all(sorted(v) == list(range(20)) for v in got.values()), got
        assert r.node.bier_counters()["bfir_push"] == 20  # one push per packet, however many sets (as eBPF)


def test_bier_domain_of_bmv2_switches_routes_around_a_cut_link(switch) -> None:
    """Four BMv2 BFRs (p4/dinet.p4) in a diamond, programmed through the BierTarget contract by the BIER
    controller, which watches their ports: the cable b-d is cut during a stream to b, c and d; every BFER
    receives again (d through c), none twice, and only the entries the failure changed are rewritten."""
    from dinet.lab.bier_domain import BierDomain, diamond

    with BierDomain(f"{NS_PREFIX}pb", diamond(), 1, target="bmv2", frr=False) as d:
        d.install_bifts()
        res = d.failover({"b", "c", "d"}, ("b", "d"), watch_interval=0.2, rate_pps=200, before_s=0.5, after_s=2.0)
        got, fail, sent = res["received"], res["fail_seq"], res["sent"]
        assert isinstance(got, dict) and isinstance(fail, int) and isinstance(sent, int)
        for name in ("b", "c", "d"):
            assert len(got[name]) == len(set(got[name])), f"{name}: duplicates"
            assert any(q > fail + 200 for q in got[name]), f"{name}: nothing long after the failure"
            assert sent - 1 in got[name], f"{name}: the end of the stream did not arrive"
        assert res["entries_rewritten"] == 3 and d.ctl().down_links == {frozenset(("b", "d"))}
        c = d.switches["c"][2].bier_counters()
        assert c["copies"] > 0  # d's datagrams cross c now
        # no backups written (frr off): until the rewrite, b's frames for d were counted lost at the port
        b = d.switches["b"][2].bier_counters()
        assert b["frr"] == 0 and b["drop_port_down"] > 0


def test_fast_reroute_on_bmv2_takes_the_backup_before_any_controller(switch) -> None:
    """BIER fast reroute on BMv2 (p4/bier.p4's bift_backup and bier_port_state): a diamond with the rung b-c,
    BIFTs written once and no controller acting after. The cable b-d is cut: b's own link monitor writes the
    port down, and b sends d's bit to c (its loop-free alternate) with the backup F-BM, c delivers it: every
    datagram reaches every BFER once, each counted as rerouted at b, none dropped for the port. The backup read
    back from the switch is keyed by the port and names c with d's bit. When the cable is back, the monitor
    clears the port and b forwards on its entry again."""
    from dinet.lab.bier_domain import BierDomain, diamond
    from dinet.packets import bift_id

    with BierDomain(f"{NS_PREFIX}pf", diamond(rung=True), 1, target="bmv2") as d:
        d.install_bifts()
        targets = {"b", "c", "d"}
        d.install_bfir(targets)
        b = d.switches["b"][2]
        to_c, to_d = d.port_no[("b", "c")], d.port_no[("b", "d")]
        (entry,) = (e for e in b.sw.read_table("bift") if dict(e.match)["hdr.bift.bift_id"] == bift_id(1, 0))
        backups = {dict(e.match)["meta.bier_failed"]: e for e in b.sw.read_table("bift_backup")}
        backup = backups[1 << to_d]  # keyed by the port's bit
        prm, bprm = dict(entry.params), dict(backup.params)
        slot = {g: rid for g, rid in b._groups[prm["group_base"] + (1 << prm["neighbors"]) - 1]}
        assert prm[f"fbm{slot[to_d] - 1}"] == 0b100 and bprm[f"fbm{slot[to_d] - 1}"] == 0
        assert bprm[f"fbm{slot[to_c] - 1}"] == prm[f"fbm{slot[to_c] - 1}"] | 0b100  # d's bit joins c's F-BM
        assert prm["ports"] & (1 << to_d) and prm["ports"] & (1 << to_c)
        d.send(10)
        got = d.received({t: 10 for t in targets})
        assert all(sorted(got[t]) == list(range(10)) for t in targets), got
        d.fail_link("b", "d")
        # the monitor's mark is what the switch is told: wait for it, not for time
        assert wait_for(lambda: to_d in b.ports_down()), "b's link monitor never marked the port"
        d.send(20, start=10)
        got = d.received({t: 20 for t in targets})
        assert all(sorted(got[t]) == list(range(10, 30)) for t in targets), got
        counters = b.bier_counters()
        assert counters["frr"] == 20 and counters["drop_port_down"] == 0  # every frame, on the backup
        assert d.switches["c"][2].bier_counters()["copies"] >= 20
        d.restore_link("b", "d")
        assert wait_for(lambda: to_d not in b.ports_down()), "the port was not cleared when it came back"
        d.send(10, start=30)
        got = d.received({t: 10 for t in targets})
        assert all(sorted(got[t]) == list(range(30, 40)) for t in targets), got
        assert b.bier_counters()["frr"] == 20  # on the entry again


def test_an_sr_p2mp_tree_on_bmv2_switches_delivers_and_is_repaired(switch) -> None:
    """The tree baseline on BMv2 (p4/tree.p4) through the TreeTarget contract: a tree from a to b, c and d in
    a diamond with the rung b-c; every leaf gets each datagram once; the cable b-d is cut, the tree repaired
    by the controller, and d receives again; the switches' tree tables read back hold the segments."""
    from dinet.lab.bier_domain import SYNC_ADDR, SYNC_PORT, BierDomain, diamond
    from dinet.policy.p2mp import rep_sid
    from dinet.services.trees import TreeJob

    with BierDomain(f"{NS_PREFIX}pt", diamond(rung=True), 1, target="bmv2") as d:
        trees = d.trees()
        leaves = {"b", "c", "d"}
        written = trees.start(TreeJob(2, "a", frozenset(leaves), str(SYNC_ADDR), SYNC_PORT))
        segs = {n: d.switches[n][2].tree_entries()["tree_segment"] for n in d.topo.bfr_ids}
        assert written == 1 + sum(len(s) for s in segs.values())
        assert all(dict(e.match)["meta.tree_rep"] == rep_sid(2) for s in segs.values() for e in s)
        d.send(20)
        got = d.received({t: 20 for t in leaves})
        assert all(sorted(got[t]) == list(range(20)) for t in leaves), got
        assert d.switches["a"][2].bier_counters()["tree_push"] == 20
        d.fail_link("b", "d")
        assert trees.link_down("b", "d") > 0
        d.send(20, start=20)
        got = d.received({t: 20 for t in leaves})
        assert all(sorted(got[t]) == list(range(20, 40)) for t in leaves), got
