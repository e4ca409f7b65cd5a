"""End to end through BMv2 simple_switch_grpc programmed by dinet over P4Runtime:
- steering: a client reaches a service through the switch (bump in the wire before a router), instances
  behind the router decapsulate with the XDP decap program; established connections stay put while the
  weights change;
- BIER: the switch is BFIR and BFR for three Linux BFERs running the TC program; every targeted BFER gets
  each packet once, the others none."""

from __future__ import annotations

import select
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NS_PREFIX, bmv2_tools_or_skip, needs_bcc, needs_root

pytestmark = [needs_root, needs_bcc]


@pytest.fixture
def switch(request: pytest.FixtureRequest) -> Iterator:
    bmv2_tools_or_skip()
    yield


def test_steering_through_bmv2_keeps_established_flows(switch, bpffs_root: Path) -> None:
    from bmv2_harness import DEFINES, SIZES

    from dinet import netns
    from dinet.bmv2 import Bmv2Switch, compile_p4
    from dinet.httpclient import KeepAlive, get_once
    from dinet.model import Instance, ServiceKey
    from dinet.targets.p4node import P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from dinet.targets.xdp import DecapNode

    pipe = compile_p4(DEFINES)
    t = netns.Topology(f"{NS_PREFIX}ps")
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
        decap = DecapNode(f"{NS_PREFIX}psdecap", bpffs_root=bpffs_root)
        for k in (1, 2):
            decap.add_endpoint(f"10.11.{k}.2")
            decap.attach("eth0", t.ns(f"i{k}"))
        import subprocess
        import sys

        for k in (1, 2):
            p = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    t.ns(f"i{k}"),
                    sys.executable,
                    "-m",
                    "dinet.instance_server",
                    "--name",
                    f"i{k}",
                    "--tcp",
                    "80",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(p)
            assert p.stdout and p.stdout.readline().strip() == "ready"
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
    finally:
        for p in servers:
            p.terminate()
            p.wait()
            if p.stdout:
                p.stdout.close()
        t.close()
        if decap:
            decap.destroy()


def test_bier_from_bmv2_bfir_to_linux_bfers(switch, bpffs_root: Path) -> None:
    from bmv2_harness import DEFINES, SIZES

    from dinet import netns
    from dinet.bmv2 import Bmv2Switch, compile_p4
    from dinet.packets import bift_id
    from dinet.targets.p4node import P4Neighbor, P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from dinet.targets.tc import BierNode

    pipe = compile_p4(DEFINES)
    t = netns.Topology(f"{NS_PREFIX}pb")
    bfers: dict[int, BierNode] = {}
    socks: dict[int, socket.socket] = {}
    try:
        for n in ("src", "sw", "e1", "e2", "e3"):
            t.add_ns(n)
        t.link("src", "eth0", "sw", "p0")
        t.addr("src", "eth0", "10.50.0.2/24")
        t.sh("src", "ip", "route", "add", "default", "dev", "eth0")
        t.sh("src", "ip", "neigh", "replace", "10.200.0.1", "lladdr", "02:00:00:00:00:fe", "dev", "eth0")
        bid = bift_id(1, 0)
        for k in (1, 2, 3):
            t.link("sw", f"p{k}", f"e{k}", "up0")
            ns = t.ns(f"e{k}")
            node = BierNode(f"{NS_PREFIX}pbe{k}", bpffs_root=bpffs_root)
            bfers[k] = node
            node.attach("up0", ns)
            node.set_bift(bid, 1 << (k - 1), [])
            t.addr(f"e{k}", "lo", "10.200.0.1/32")
            with netns.entered(ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("10.200.0.1", 9000))
                s.setblocking(False)
            socks[k] = s
        with (
            Bmv2Switch("pb", {0: "p0", 1: "p1", 2: "p2", 3: "p3"}, t.ns("sw")) as sw,
            P4RuntimeSwitch(sw.address, name="pb") as p4rt,
        ):
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            node = P4Node(p4rt, SIZES)
            node.set_bift(
                bid,
                0,
                [
                    P4Neighbor(k, "02:00:00:00:00:10", netns.mac_of("up0", t.ns(f"e{k}")), 1 << (k - 1))
                    for k in (1, 2, 3)
                ],
                local_port=0,
            )
            assert len(p4rt.read_multicast_groups()) == 15  # every subset of three neighbours and the local port
            node.set_bfir("10.200.0.1", 1, 1, {bid: 0b101}, udp_port=9000)  # BFERs 1 and 3
            with netns.entered(t.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(20):
                    s.sendto(struct.pack("!I", i), ("10.200.0.1", 9000))
            got: dict[int, list[int]] = {k: [] for k in socks}
            while len(got[1]) < 20 or len(got[3]) < 20:
                if not select.select(list(socks.values()), [], [], 5)[0]:
                    break
                for k, sk in socks.items():
                    while True:
                        try:
                            got[k].append(struct.unpack("!I", sk.recv(64)[:4])[0])
                        except BlockingIOError:
                            break
            assert sorted(got[1]) == sorted(got[3]) == list(range(20)) and got[2] == []
            assert bfers[2].counters()["rx"] == 0 and bfers[1].counters()["local"] == 20
            assert node.bier_counters()["copies"] == 40 and node.bier_counters()["bfir_push"] == 20
    finally:
        for sk in socks.values():
            sk.close()
        t.close()
        for n in bfers.values():
            n.destroy()


def test_bmv2_bfir_sends_one_packet_per_set(switch, bpffs_root: Path) -> None:
    """BFERs in two sets (BSL 64: BFR-ids 1, 65, 66): the switch sends set 0 in the first pass and set 1 in a
    recirculated one; each BFER gets every packet once."""
    from bmv2_harness import DEFINES, SIZES

    from dinet import netns
    from dinet.bmv2 import Bmv2Switch, compile_p4
    from dinet.packets import bift_id, si_bit
    from dinet.targets.p4node import P4Neighbor, P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from dinet.targets.tc import BierNode

    pipe = compile_p4(DEFINES)
    t = netns.Topology(f"{NS_PREFIX}pm")
    bfers: dict[int, BierNode] = {}
    socks: dict[int, socket.socket] = {}
    ids = {1: 1, 2: 65, 3: 66}
    try:
        for n in ("src", "sw", "e1", "e2", "e3"):
            t.add_ns(n)
        t.link("src", "eth0", "sw", "p0")
        t.addr("src", "eth0", "10.50.0.2/24")
        t.sh("src", "ip", "route", "add", "default", "dev", "eth0")
        t.sh("src", "ip", "neigh", "replace", "10.200.0.1", "lladdr", "02:00:00:00:00:fe", "dev", "eth0")
        for k, bfr in ids.items():
            t.link("sw", f"p{k}", f"e{k}", "up0")
            ns = t.ns(f"e{k}")
            node = BierNode(f"{NS_PREFIX}pme{k}", bpffs_root=bpffs_root)
            bfers[k] = node
            node.attach("up0", ns)
            si, pos = si_bit(bfr, 64)
            node.set_bift(bift_id(1, si), 1 << (pos - 1), [])
            t.addr(f"e{k}", "lo", "10.200.0.1/32")
            with netns.entered(ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("10.200.0.1", 9000))
                s.setblocking(False)
            socks[k] = s
        with (
            Bmv2Switch("pm", {0: "p0", 1: "p1", 2: "p2", 3: "p3"}, t.ns("sw")) as sw,
            P4RuntimeSwitch(sw.address, name="pm") as p4rt,
        ):
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            node = P4Node(p4rt, SIZES)
            mac = {k: netns.mac_of("up0", t.ns(f"e{k}")) for k in ids}
            node.set_bift(bift_id(1, 0), 0, [P4Neighbor(1, "02:00:00:00:00:10", mac[1], 0b1)], local_port=0)
            node.set_bift(
                bift_id(1, 1),
                0,
                [P4Neighbor(2, "02:00:00:00:00:10", mac[2], 0b01), P4Neighbor(3, "02:00:00:00:00:10", mac[3], 0b10)],
                local_port=0,
            )
            node.set_bfir("10.200.0.1", 100, 1, {bift_id(1, 0): 0b1, bift_id(1, 1): 0b11}, udp_port=9000)
            with netns.entered(t.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(20):
                    s.sendto(struct.pack("!I", i), ("10.200.0.1", 9000))
            got: dict[int, list[int]] = {k: [] for k in socks}
            while any(len(v) < 20 for v in got.values()):
                if not select.select(list(socks.values()), [], [], 5)[0]:
                    break
                for k, sk in socks.items():
                    while True:
                        try:
                            got[k].append(struct.unpack("!I", sk.recv(64)[:4])[0])
                        except BlockingIOError:
                            break
            assert all(sorted(v) == list(range(20)) for v in got.values()), got
            assert node.bier_counters()["bfir_push"] == 40  # one push per set and packet
    finally:
        for sk in socks.values():
            sk.close()
        t.close()
        for n in bfers.values():
            n.destroy()
