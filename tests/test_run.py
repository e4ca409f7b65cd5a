"""`dinet run FILE` end to end: the controller process takes reports from an agent over gRPC and installs
weights on an XDP node; `dinet status` reads them back from its Prometheus endpoint."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RUN_ID, dinet_process, forget_node, free_port, needs_bcc, needs_root
from dinet.errors import ConfigError
from dinet.model import ServiceKey
from dinet.policy.scores import Level0
from dinet.services.collect import Agent
from dinet.services.intent import load

pytestmark = [needs_root, needs_bcc]


def intent(tmp_path: Path, node: str, col: int, prom: int) -> Path:
    text = (Path(__file__).parents[1] / "topo" / "intent-example.yaml").read_text()
    text = text.replace("name: default", f"name: {node}").replace("127.0.0.1:50051", f"127.0.0.1:{col}")
    text = text.replace("127.0.0.1:9464", f"127.0.0.1:{prom}")
    p = tmp_path / "intent.yaml"
    p.write_text(text)
    return p


def test_bad_intent_files_are_refused(tmp_path: Path) -> None:
    for text, msg in [
        ("node: {target: dpdk}\nservices: []", "node.target must be xdp, bmv2 or agent"),
        ("node: {target: xdp}", "missing 'services'"),
        ("node: {target: xdp}\nservices: [{service: 'x:1/tcp', instances: []}]", "not an IPv4"),
        ("node: {target: xdp}\nservices: [{service: '10.0.0.1:80/tcp', class: fast, instances: []}]", "class must be"),
    ]:
        p = tmp_path / "bad.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load(p)


def test_run_and_status(tmp_path: Path) -> None:
    node = f"runtest{RUN_ID}"
    col, prom = free_port(), free_port()
    path = intent(tmp_path, node, col, prom)
    try:
        with dinet_process("run", str(path), ready="dinet: collector on"):
            edge, cloud = Agent(f"127.0.0.1:{col}", "edge-a-secret"), Agent(f"127.0.0.1:{col}", "cloud-a-secret")
            ack = edge.send([edge.report("10.99.0.1:80/tcp", 11, Level0(cpu_load=0.95))])
            assert ack.accepted == 1
            cloud.send([cloud.report("10.99.0.1:80/tcp", 21, Level0(cpu_load=0.1))])
            bad = Agent(f"127.0.0.1:{col}", "edge-a-secret")
            bad.seq = 100
            assert bad.send([bad.report("10.99.0.1:80/tcp", 21, Level0())]).rejected == 1  # not edge-a's instance
            for a in (edge, cloud, bad):
                a.close()
            res = subprocess.run(
                [sys.executable, "-m", "dinet.cli", "status", "--url", f"http://127.0.0.1:{prom}/metrics", "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            st = json.loads(res.stdout)
            by_id = {row["instance"]: row for row in st["instances"]}
            assert by_id["11"]["dinet_instance_weight"] == 0 and by_id["21"]["dinet_instance_weight"] > 0
            assert st["totals"]["rejected unknown_instance"] == 1
            table = subprocess.run(
                [sys.executable, "-m", "dinet.cli", "status", "--url", f"http://127.0.0.1:{prom}/metrics"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "10.99.0.1:80/tcp" in table and "weight" in table
    finally:
        forget_node(node)
    bad = subprocess.run(
        [sys.executable, "-m", "dinet.cli", "status", "--url", f"http://127.0.0.1:{prom}/metrics"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no dinet controller answers" in bad.stderr


def test_run_installs_a_bier_domain(tmp_path: Path) -> None:
    """A `bier:` section: BIFTs computed from the links and written to every node, BFIR entries for groups."""
    from dinet.packets import bift_id
    from dinet.targets.tc import BierNode

    names = {k: f"bierrun{RUN_ID}{k}" for k in "abc"}
    path = tmp_path / "bier.yaml"
    path.write_text(f"""
node: {{target: xdp, name: steerrun{RUN_ID}}}
services: []
prometheus: {{listen: null}}
nodes:
  a: {{target: local, name: {names["a"]}}}
  b: {{target: local, name: {names["b"]}}}
  c: {{target: local, name: {names["c"]}}}
bier:
  bsl: 64
  bfrs: {{a: 10, b: 1, c: 2}}
  links:
    - {{a: a, b: b, a_port: [lo, "02:00:00:00:0a:0b"], b_port: [lo, "02:00:00:00:0b:0a"]}}
    - {{a: b, b: c, a_port: [lo, "02:00:00:00:0b:0c"], b_port: [lo, "02:00:00:00:0c:0b"]}}
  groups:
    - {{bfir: a, dst: 10.200.0.1, udp_port: 9000, to: [b, c]}}
""")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "dinet.cli", "run", "--once", str(path)], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        assert "BIER: 4 BIFT and BFIR entries written to 3 node(s)" in res.stdout
        with BierNode(names["a"]) as a, BierNode(names["b"]) as b:
            ea, eb = a.bifts()[bift_id(1, 0)], b.bifts()[bift_id(1, 0)]
            assert [(n.dmac, n.fbm) for n in ea.neighbors] == [("02:00:00:00:0b:0a", 0b11)]  # b and c via b
            assert eb.local == 0b01 and [(n.dmac, n.fbm) for n in eb.neighbors] == [
                ("02:00:00:00:0a:0b", 1 << 9),
                ("02:00:00:00:0c:0b", 0b10),
            ]
            assert list(a.bfir_entries().values()) == [{bift_id(1, 0): 0b11}]
    finally:
        for n in (*names.values(), f"steerrun{RUN_ID}"):
            forget_node(n)
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("to: [b, c]", "to: [b, z]"))
    with pytest.raises(ConfigError, match="no BFR 'z'"):
        load(bad)


def test_each_ingress_node_decides_with_its_own_paths(tmp_path: Path) -> None:
    """Two ingress nodes, each nearer to another site: a delay-sensitive service stays on each node's
    nearest site, from the same reports."""
    from dinet.targets.xdp import SteeringNode

    names = [f"ingA{RUN_ID}", f"ingB{RUN_ID}"]
    col, prom = free_port(), free_port()
    path = tmp_path / "two.yaml"
    path.write_text(f"""
ingress:
  - {{target: xdp, name: {names[0]}, src4: 10.0.0.1, sites: {{1: {{delay_ms: 2}}, 2: {{delay_ms: 40}}}}}}
  - {{target: xdp, name: {names[1]}, src4: 10.0.1.1, sites: {{1: {{delay_ms: 40}}, 2: {{delay_ms: 2}}}}}}
collector: {{listen: "127.0.0.1:{col}", timeout: 600}}   # the test's own map reads take seconds (bcc)
prometheus: {{listen: "127.0.0.1:{prom}"}}
services:
  - service: 10.99.0.7:443/tcp
    class: delay-sensitive
    instances:
      - {{id: 1, endpoint: 10.11.1.2, site: 1, token: one}}
      - {{id: 2, endpoint: 10.12.1.2, site: 2, token: two}}
""")
    try:
        with dinet_process("run", str(path), ready="dinet: collector on"):
            for token, iid in (("one", 1), ("two", 2)):
                a = Agent(f"127.0.0.1:{col}", token)
                assert a.send([a.report("10.99.0.7:443/tcp", iid, Level0(cpu_load=0.3))]).accepted == 1
                a.close()
            svc = ServiceKey.parse("10.99.0.7:443/tcp")
            got = []
            for n in names:
                with SteeringNode(n) as node:
                    got.append({i.instance_id: i.weight for i in node.service(svc).instances.values()})
            assert got[0][1] > 0 and got[0][2] == 0 and got[1][2] > 0 and got[1][1] == 0, got
            st = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "dinet.cli",
                        "status",
                        "--url",
                        f"http://127.0.0.1:{prom}/metrics",
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            assert {(r["node"], r["instance"]) for r in st["instances"] if r.get("dinet_instance_weight")} == {
                ("0", "1"),
                ("1", "2"),
            }
    finally:
        for n in names:
            forget_node(n)


def test_run_measures_sites_with_probes(tmp_path: Path, ns_prefix: str) -> None:
    """Site 2's probe gets no answer (loss 1): a delay-sensitive service leaves it, though both sites are
    configured as equally near."""
    from dinet.targets.xdp import SteeringNode
    from topo.namespaces import Topology

    node, col = f"probe{RUN_ID}", free_port()
    with Topology(ns_prefix) as t:
        ns = t.add_ns("p")  # a namespace with only loopback: 127.0.0.1 answers, 10.77.9.9 cannot be reached
        path = tmp_path / "probe.yaml"
        path.write_text(f"""
node: {{target: xdp, name: {node}, src4: 10.0.0.1}}
collector: {{listen: "127.0.0.1:{col}", timeout: 600}}
prometheus: {{listen: null}}
probe_interval: 0.5
sites:
  1: {{probe: 127.0.0.1, probe_netns: {ns}}}
  2: {{probe: 10.77.9.9, probe_netns: {ns}}}
services:
  - service: 10.99.0.8:80/tcp
    class: delay-sensitive
    instances:
      - {{id: 1, endpoint: 10.11.1.2, site: 1, token: one}}
      - {{id: 2, endpoint: 10.12.1.2, site: 2, token: two}}
""")
        try:
            with dinet_process("run", str(path), ready="dinet: collector on"):
                for token, iid in (("one", 1), ("two", 2)):
                    a = Agent(f"127.0.0.1:{col}", token)
                    a.send([a.report("10.99.0.8:80/tcp", iid, Level0(cpu_load=0.2))])
                    a.close()
                svc = ServiceKey.parse("10.99.0.8:80/tcp")
                weights = {}
                with SteeringNode(node) as n:
                    for _ in range(100):  # the probes run every half second: wait for their verdict
                        weights = {i.instance_id: i.weight for i in n.service(svc).instances.values()}
                        if weights.get(2) == 0:
                            break
                        select.select([], [], [], 0.1)
                assert weights[1] > 0 and weights[2] == 0, weights
        finally:
            forget_node(node)
