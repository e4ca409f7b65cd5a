"""Measured network metrics: probes toward sites in namespaces, and the decisions that follow them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NS_PREFIX, needs_bcc, needs_root
from dinet.lab.namespaces import Topology
from dinet.model import Instance, ServiceKey
from dinet.policy.decide import TrafficClass
from dinet.policy.scores import Level0
from dinet.services.controller import Controller, ServiceIntent, SitePath
from dinet.services.probe import Probe

pytestmark = [needs_root]


@pytest.fixture
def net(ns_prefix: str) -> Iterator[Topology]:
    with Topology(f"{ns_prefix}p") as t:
        t.add_ns("a")
        t.add_ns("b")
        t.link("a", "eth0", "b", "eth0")
        t.addr("a", "eth0", "10.77.0.1/24")
        t.addr("b", "eth0", "10.77.0.2/24")
        yield t


def test_probe_measures_a_live_and_a_dead_site(net: Topology) -> None:
    live = Probe("10.77.0.2", net.ns("a"), count=3, interval=0.05).measure()
    assert live.loss == 0.0 and 0 < live.delay_ms < 50
    dead = Probe("10.77.0.9", net.ns("a"), count=2, interval=0.05).measure()
    assert dead.loss == 1.0


@needs_bcc
def test_a_site_that_stops_answering_loses_its_delay_sensitive_traffic(net: Topology, bpffs_root: Path) -> None:
    from dinet.targets.base import SteerSizes
    from dinet.targets.xdp import SteeringNode

    svc = ServiceKey.parse("10.99.0.5:80/tcp")
    node = SteeringNode(
        f"{NS_PREFIX}probe", SteerSizes(max_services=4, max_instances=4, affinity_entries=64), bpffs_root=bpffs_root
    )
    try:
        node.configure(src4="192.0.2.1")
        intent = [
            ServiceIntent(
                svc,
                TrafficClass.DELAY_SENSITIVE,
                (Instance(1, "192.0.2.11", 1, site_id=1), Instance(2, "192.0.2.12", 1, site_id=2)),
            )
        ]
        ctl = Controller(node, intent, {1: SitePath(delay_ms=1), 2: SitePath(delay_ms=20)})
        ctl.start()
        ctl.collector.observe((svc, 1), Level0(cpu_load=0.2))
        ctl.collector.observe((svc, 2), Level0(cpu_load=0.2))
        assert {i.instance_id: i.weight > 0 for i in node.service(svc).instances.values()} == {1: True, 2: False}
        # site 1 is measured now: its probe address is gone, site 2's answers
        measured = {
            1: Probe("10.77.0.9", net.ns("a"), count=2, interval=0.05).measure(),
            2: Probe("10.77.0.2", net.ns("a"), count=2, interval=0.05).measure(),
        }
        assert ctl.update_sites(measured) == 1
        assert {i.instance_id: i.weight > 0 for i in node.service(svc).instances.values()} == {1: False, 2: True}
    finally:
        node.destroy()


def test_a_probe_takes_an_address_only() -> None:
    from dinet.errors import ConfigError
    from dinet.services.probe import Probe

    for bad in ("-f", "example.com", "10.0.0.1; reboot", ""):
        with pytest.raises(ConfigError, match="not an IPv4 or IPv6 address"):
            Probe(bad)
    assert Probe("2001:db8::1").address == "2001:db8::1"
