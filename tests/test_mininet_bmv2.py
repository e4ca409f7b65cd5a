"""A Mininet network with a BMv2 switch from topo/mininet_bmv2.py, programmed by dinet: two hosts reach each
other through it (the program passes what it does not steer from one port to the other)."""

from __future__ import annotations

from conftest import bmv2_tools_or_skip, mininet_or_skip, needs_root

pytestmark = [needs_root]


def test_hosts_talk_through_a_bmv2_switch_in_mininet() -> None:
    bmv2_tools_or_skip()
    mininet_net = mininet_or_skip()
    from dinet import consts
    from dinet.lab.mininet_nodes import Bmv2GrpcSwitch
    from dinet.targets.bmv2 import compile_p4
    from dinet.targets.p4node import P4Node
    from dinet.targets.p4rt import P4RuntimeSwitch
    from tests.bmv2_harness import DEFINES, SIZES

    pipe = compile_p4(DEFINES)
    net = mininet_net.Mininet(switch=Bmv2GrpcSwitch, controller=None, autoSetMacs=True)
    try:
        h1, h2 = net.addHost("h1", ip="10.0.0.1/24"), net.addHost("h2", ip="10.0.0.2/24")
        s1 = net.addSwitch("s1", device_id=3)
        net.addLink(h1, s1, port2=1)
        net.addLink(h2, s1, port2=2)
        net.start()
        with P4RuntimeSwitch(s1.grpc_address, device_id=3, name="s1") as p4rt:
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            P4Node(p4rt, SIZES).configure(pass_ports={1: 2, 2: 1})
            assert net.ping([h1, h2], timeout="2") == 0.0
            counts = p4rt.read_counters("steering.verdicts")
            assert counts[consts.get("DINET_PASS_NOT_SERVICE")][0] > 0  # ARP and ICMP went through the program
    finally:
        net.stop()
