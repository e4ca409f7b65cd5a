"""Affinity, weights, draining and restarts of the XDP steering node, through BPF_PROG_TEST_RUN."""

from __future__ import annotations

import ipaddress
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from conftest import ROOT, needs_bcc, needs_root
from tests.vectors import steering as sv

pytestmark = [needs_root, needs_bcc]

SVC = sv.WEB4
INSTANCES = [
    dict(instance_id=1, endpoint="192.0.2.101", weight=1),
    dict(instance_id=2, endpoint="192.0.2.102", weight=3),
    dict(instance_id=3, endpoint="192.0.2.103", weight=6),
]
SIZES = dict(max_services=4, max_instances=8, ring_size=4099, affinity_entries=65536)


def make_node(bpffs_root: Path, name: str):
    from dinet.targets.base import SteerSizes
    from dinet.targets.xdp import SteeringNode

    return SteeringNode(name, SteerSizes(**SIZES), bpffs_root=bpffs_root)


@pytest.fixture
def node(bpffs_root: Path, request: pytest.FixtureRequest) -> Iterator:
    from dinet.model import Instance

    n = make_node(bpffs_root, request.node.name[:40])
    try:
        n.configure(src4=sv.SRC4, src6=sv.SRC6, static_next_hop=(0, sv.NODE_MAC, sv.NEXT_HOP_MAC))
        n.add_service(SVC)
        n.set_instances(SVC, [Instance(**i) for i in INSTANCES])
        yield n
    finally:
        n.destroy()


def frame(i: int, flags: str = "S") -> bytes:
    """Flow i: a distinct client address and port for each i."""
    src = ipaddress.ip_address("10.64.0.0") + (i // 50000)
    return bytes(
        Ether(src=sv.CLIENT_MAC, dst=sv.NODE_MAC)
        / IP(src=str(src), dst=str(SVC.vip))
        / TCP(sport=1024 + i % 50000, dport=SVC.port, flags=flags)
    )


def endpoint_of(n, i: int, flags: str = "S") -> str:
    from dinet.targets.bpfsys import XDP_TX, test_run

    res = test_run(n.prog_fd, frame(i, flags))
    assert res.action == XDP_TX, f"flow {i}: {res.action_name}"
    return Ether(res.data)[IP].dst


def test_weights_split_new_flows(node) -> None:
    """10,000 new flows over weights 1:3:6. Each instance's share is binomial around w/sum with
    sigma = sqrt(p(1-p)/n) <= 0.5 percentage points at n = 10,000; the ring's own rounding adds at most
    1/4099 (0.025 pp). The tolerance, 2.5 pp, is five sigma: a correct split fails it about once in
    two million runs, a split that ignores the weights (33/33/33) fails it always."""
    n = 10_000
    got = Counter(endpoint_of(node, i) for i in range(n))
    total_w = sum(i["weight"] for i in INSTANCES)
    for inst in INSTANCES:
        share = got[inst["endpoint"]] / n
        want = inst["weight"] / total_w
        sigma = math.sqrt(want * (1 - want) / n)
        assert abs(share - want) <= max(0.025, 5 * sigma), f"instance {inst['instance_id']}: {share:.3f} vs {want:.3f}"
    c, per = node.service_counters(SVC)
    assert c.new_flows == n and sum(x.new_flows for x in per.values()) == n


def test_ring_matches_weights_and_moves_few_slots(node) -> None:
    from dinet.model import Instance

    ring = node.ring(SVC)
    slots = {slot: inst.instance_id for slot, inst in node.service(SVC).instances.items()}
    share = Counter(slots[s] for s in ring)
    for inst in INSTANCES:
        assert abs(share[inst["instance_id"]] / len(ring) - inst["weight"] / 10) < 0.002
    # instance 3 leaves: only its slots change hands (Maglev's minimal disruption)
    node.set_instances(SVC, [Instance(**i) for i in INSTANCES[:2]])
    after = node.ring(SVC)
    moved = sum(1 for a, b in zip(ring, after, strict=False) if a != b and slots[a] != 3)
    assert moved / len(ring) < 0.05, f"{moved} slots of surviving instances moved"


def test_affinity_holds_across_weight_changes_and_a_restart(node, bpffs_root: Path) -> None:
    flows = range(1000)
    first = {i: endpoint_of(node, i) for i in flows}
    assert len(set(first.values())) == 3
    # weights turned around: new flows follow them, placed flows stay
    node.set_weight(SVC, 3, 1)
    node.set_weight(SVC, 1, 6)
    assert {i: endpoint_of(node, i, "A") for i in flows} == first
    # the control process goes away; another process changes weights through the pinned maps
    name = node.node
    node.close()
    code = (
        "from pathlib import Path; from tests.test_steer_policy import *; "
        f"n = make_node(Path({str(bpffs_root)!r}), {name!r}); n.set_weight(SVC, 2, 9); n.close()"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}  # the module imports conftest
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
    again = make_node(bpffs_root, name)
    try:
        assert again.service(SVC).instances[1].weight == 9  # slot 1 = instance 2
        assert {i: endpoint_of(again, i, "A") for i in flows} == first
        assert len(list(again.affinity())) >= 1000
    finally:
        again.close()


def test_draining_takes_no_new_flow_and_keeps_old_ones(node) -> None:
    from dinet.model import InstanceState

    first = {i: endpoint_of(node, i) for i in range(600)}
    on_drained = [i for i, ep in first.items() if ep == "192.0.2.103"]
    assert on_drained
    node.drain(SVC, 3)
    assert node.service(SVC).instances[2].state == InstanceState.DRAINING
    new = Counter(endpoint_of(node, i) for i in range(10_000, 12_000))
    assert "192.0.2.103" not in new
    assert all(endpoint_of(node, i, "A") == "192.0.2.103" for i in on_drained)
    # down: new flows avoid it and its placed flows are placed anew elsewhere
    node.set_state(SVC, 3, InstanceState.DOWN)
    assert all(endpoint_of(node, i, "A") != "192.0.2.103" for i in on_drained)
    assert all(endpoint_of(node, i, "A") == first[i] for i in first if i not in on_drained)


def test_all_instances_draining_drops_new_flows_with_a_count(node) -> None:
    from dinet.targets.bpfsys import XDP_DROP, test_run

    for iid in (1, 2, 3):
        node.drain(SVC, iid)
    before = node.verdicts()["drop_no_instance"]
    assert test_run(node.prog_fd, frame(777)).action == XDP_DROP
    assert node.verdicts()["drop_no_instance"] == before + 1


def test_removed_service_passes_untouched_and_its_flows_are_forgotten(node) -> None:
    """Placed flows of a removed service pass untouched (their affinity entries are stale), also when
    another service takes the freed slot; re-adding the service places them anew."""
    from dinet.model import Instance
    from dinet.targets.bpfsys import XDP_PASS, test_run

    placed = {i: endpoint_of(node, i) for i in range(50)}
    assert len(placed) == 50
    node.remove_service(SVC)
    assert node.services() == []
    other = sv.DNS6
    assert node.add_service(other) == 0  # the freed slot
    node.set_instances(other, [Instance(9, "2001:db8::9")])
    for i in range(50):
        res = test_run(node.prog_fd, frame(i, "A"))
        assert res.action == XDP_PASS and res.data == frame(i, "A")
    node.add_service(SVC)
    node.set_instances(SVC, [Instance(4, "192.0.2.104")])
    assert {endpoint_of(node, i, "A") for i in range(50)} == {"192.0.2.104"}
    assert node.service_counters(SVC)[0].new_flows == 50
