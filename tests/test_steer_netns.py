"""End to end on the XDP data plane: real TCP and UDP clients, an ingress steering node, sites and
instances in network namespaces. Packets are captured and decoded with scapy."""

from __future__ import annotations

import select
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from conftest import needs_bcc, needs_root

pytestmark = [needs_root, needs_bcc]


@pytest.fixture(scope="module")
def edge(bpffs_root: Path) -> Iterator:
    from conftest import NS_PREFIX
    from topo.cloud_edge import CloudEdge

    with CloudEdge(f"{NS_PREFIX}e", sites=2, per_site=2, bpffs_root=bpffs_root) as ce:
        ce.install()
        yield ce


def ask(edge, fn, *args):
    from dinet.targets import netns

    with netns.entered(edge.client_ns):
        return fn(*args)


@pytest.mark.parametrize("vip", ["10.99.0.1", "fd00:99::1"])
def test_tcp_reaches_instances_and_counters_agree(edge, vip: str) -> None:
    from topo.httpclient import get_once

    svc = edge.services()["web4" if ":" not in vip else "web6"]
    _, before = edge.steer.service_counters(svc)
    answers = Counter(ask(edge, lambda: [get_once(vip) for _ in range(40)]))
    assert set(answers) <= {h.name for h in edge.hosts} and len(answers) >= 2
    _, after = edge.steer.service_counters(svc)
    by_id = {h.instance_id: h.name for h in edge.hosts}
    new_flows = {by_id[i]: after[i].new_flows - before[i].new_flows for i in after}
    assert {k: v for k, v in new_flows.items() if v} == dict(answers)


@pytest.mark.parametrize("vip,outer", [("10.99.0.1", IP), ("fd00:99::1", IPv6)])
def test_udp_is_tunnelled_to_the_site_and_delivered_unchanged(edge, vip: str, outer) -> None:
    """Captured on the site routers' uplinks: the outer header names an instance endpoint and the inner
    datagram is the client's, byte for byte; the instance answers with its name."""
    from dinet.targets import netns
    from topo.httpclient import udp_ask

    socks = {k: netns.l2_socket("up0", edge.topo.ns(f"s{k}")) for k in (1, 2)}
    try:
        payload = b"dinet-probe-" + vip.encode()
        who = ask(edge, udp_ask, vip, edge.udp_port, payload)
        host = edge.host(who)
        # the answer came back, so the request already crossed the site's uplink: read what it queued
        sock = socks[host.site]
        seen = []
        endpoints = (str(host.endpoint4), str(host.endpoint6))
        while select.select([sock], [], [], 2.0)[0]:
            p = Ether(sock.recv(65535))
            seen.append(p)
            if outer in p and p[outer].dst in endpoints:
                break
    finally:
        for s in socks.values():
            s.close()
    tunnelled = [p for p in seen if outer in p and p[outer].dst in (str(host.endpoint4), str(host.endpoint6))]
    assert tunnelled, f"no tunnelled packet toward {who}"
    p = tunnelled[0]
    inner = p[outer].payload
    assert inner.dst == vip and UDP in inner and bytes(inner[UDP].payload) == payload
    assert p[outer].src in ("10.0.0.1", "fd00::1")


def test_established_connections_survive_weight_change_drain_and_restart(edge, bpffs_root: Path) -> None:
    from dinet.targets import netns
    from dinet.targets.xdp import SteeringNode
    from topo.httpclient import KeepAlive, get_once

    svc = edge.services()["web4"]
    with netns.entered(edge.client_ns):
        conns = [KeepAlive("10.99.0.1") for _ in range(16)]
    try:
        first = [c.get() for c in conns]
        drained = Counter(first).most_common(1)[0][0]
        edge.steer.set_weight(svc, edge.host(drained).instance_id, 5)
        edge.steer.drain(svc, edge.host(drained).instance_id)
        assert [c.get() for c in conns] == first
        fresh = Counter(ask(edge, lambda: [get_once("10.99.0.1") for _ in range(30)]))
        assert drained not in fresh
        # the control process goes away and comes back: the attached program and pinned maps stayed
        name, sizes = edge.steer.node, edge.steer.sizes
        edge.steer.close()
        edge.steer = SteeringNode(name, sizes, bpffs_root=bpffs_root)
        assert [c.get() for c in conns] == first
        edge.steer.set_state(svc, edge.host(drained).instance_id, edge.steer.service(svc).instances[0].state.UP)
    finally:
        for c in conns:
            c.close()


def test_unknown_service_traffic_passes_untouched(edge) -> None:
    """A ping to the ingress node and a TCP port the VIP does not serve: the kernel handles both."""
    before = edge.steer.verdicts()
    res = edge.topo.sh("c", "ping", "-c1", "-W2", "10.0.0.1", check=False)
    assert res.returncode == 0
    after = edge.steer.verdicts()
    assert after["pass_not_service"] > before["pass_not_service"]
    assert after["drop_malformed"] == before["drop_malformed"]


@pytest.mark.parametrize(
    "vip,v6_tunnel",
    [("10.99.0.1", False), ("10.99.0.1", True), ("fd00:99::1", False), ("fd00:99::1", True)],
    ids=["4in4", "4in6", "6in4", "6in6"],
)
def test_path_mtu_through_every_tunnel(edge, vip: str, v6_tunnel: bool) -> None:
    """Behind a next hop of MTU 1420, a 1 MB TCP upload to the VIP completes: the steering node answers the
    client's too-big segments with ICMP "fragmentation needed" (IPv4) or ICMPv6 Packet Too Big (RFC 8201)
    carrying 1420 less the outer header actually used (20 or 40), and the client's path MTU drops to it."""
    import socket as so
    import threading

    from dinet.model import ServiceKey
    from dinet.targets import netns

    port = 5001
    svc = ServiceKey.parse(f"[{vip}]:{port}/tcp" if ":" in vip else f"{vip}:{port}/tcp")
    host = edge.host("s1a")
    edge.steer.add_service(svc)
    edge.steer.set_instances(svc, [host.instance(v6=v6_tunnel)])
    fam = so.AF_INET6 if ":" in vip else so.AF_INET
    with netns.entered(edge.topo.ns(host.name)):
        server = so.socket(fam, so.SOCK_STREAM)
    server.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1)
    server.bind((vip, port))
    server.listen(1)
    server.settimeout(30)
    got: list[int] = []

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            n = 0
            while data := conn.recv(65536):
                n += len(data)
            got.append(n)

    t = threading.Thread(target=sink)
    t.start()
    edge.topo.sh("in", "ip", "link", "set", "dev", "s1", "mtu", "1420")
    try:
        before = edge.steer.verdicts()
        with netns.entered(edge.client_ns):
            c = so.socket(fam, so.SOCK_STREAM)
        try:
            c.settimeout(30)
            c.connect((vip, port))
            c.sendall(b"m" * 1_000_000)
            c.shutdown(so.SHUT_WR)
            c.recv(1)  # the server closes once it has read everything
            mtu = c.getsockopt(so.IPPROTO_IPV6, 24) if fam == so.AF_INET6 else c.getsockopt(so.IPPROTO_IP, 14)
        finally:
            c.close()
        t.join(30)
        assert got == [1_000_000]
        assert mtu == 1420 - (40 if v6_tunnel else 20), mtu
        after = edge.steer.verdicts()
        assert after["icmp_too_big"] > before["icmp_too_big"]
        assert after["drop_too_big"] == before["drop_too_big"]
    finally:
        server.close()
        edge.topo.sh("in", "ip", "link", "set", "dev", "s1", "mtu", "1600")
        edge.topo.sh("c", "ip", "route", "flush", "cache")
        edge.topo.sh("c", "ip", "-6", "route", "flush", "cache")
        edge.steer.remove_service(svc)
