"""The steering vectors through the XDP program with BPF_PROG_TEST_RUN: no topology needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import Ether

from conftest import needs_bcc, needs_root
from vectors import Drop, Forward, Pass, Vector
from vectors import steering as sv

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


def test_every_vector(node) -> None:
    vs = sv.vectors(sv.placement(node))
    assert len(vs) > 15
    for v in vs:
        run_vector(node, v)


def test_vectors_steer_to_the_instances_of_their_service(node) -> None:
    """The expected endpoints come from the node's ring: check they are that service's instances,
    so the vectors do not merely agree with whatever the ring holds."""
    place = sv.placement(node)
    web = [i.endpoint for i in sv.SERVICES[sv.WEB4]]
    assert place(sv.WEB4, sv.client4()) in web
    seen = {place(sv.WEB4, sv.client4(sport=p)) for p in range(1000, 1200)}
    assert seen == set(web), "200 flows over weights 1:2:3 reach every instance"
