"""The node agent: a `dinet agent` process owns a host's programs and maps; the controller drives it over
gRPC with the same calls as a local node, and its errors come back as the same exceptions."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from conftest import RUN_ID, dinet_process, forget_node, free_port, needs_bcc, needs_root
from dinet.errors import ConfigError, DataPlaneError, UnknownInstanceError, UnknownServiceError
from dinet.model import Instance, InstanceLoad, ServiceKey
from dinet.policy.decide import TrafficClass
from dinet.policy.scores import Level0
from dinet.services.controller import Controller, ServiceIntent, SitePath

pytestmark = [needs_root, needs_bcc]
SVC = ServiceKey.parse("10.98.0.1:443/tcp")


@pytest.fixture
def agent(certs, tmp_path) -> Iterator[tuple[str, str, str]]:
    """`dinet agent` over mutual TLS (identity `agent`, driven by `controller`), with a token file as its
    second factor."""
    node, port, prom = f"agenttest{RUN_ID}", free_port(), free_port()
    token = tmp_path / "token"
    token.write_text("ctl-secret\n")
    try:
        with dinet_process(
            "agent",
            *("--node", node, "--listen", f"127.0.0.1:{port}", "--certs", str(certs.dir), "--identity", "agent"),
            *("--controller", "controller", "--token-file", str(token), "--prometheus", f"127.0.0.1:{prom}"),
            ready="dinet agent: node",
        ):
            yield node, f"127.0.0.1:{port}", f"http://127.0.0.1:{prom}/metrics"
    finally:
        forget_node(node)


def remote_node(certs, address: str, name: str, token: str = "ctl-secret"):  # type: ignore[no-untyped-def]
    from dinet.targets.remote import RemoteNode

    return RemoteNode(address, token, name=name, identity=certs.identity("controller"), server="agent")


def test_controller_drives_a_node_agent(agent, certs) -> None:
    from dinet.targets.xdp import SteeringNode

    node, address, _ = agent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dinet.cli",
            "xdp",
            "attach",
            "--dev",
            "lo",
            "--mode",
            "generic",
            "--node",
            node,
            "--src4",
            "192.0.2.1",
        ],
        check=True,
        capture_output=True,
    )
    try:
        remote = remote_node(certs, address, node)
        intent = [
            ServiceIntent(
                SVC,
                TrafficClass.DELAY_SENSITIVE,
                (Instance(1, "192.0.2.11", 1, site_id=1), Instance(2, "192.0.2.12", 1, site_id=2)),
            )
        ]
        ctl = Controller(remote, intent, {1: SitePath(2), 2: SitePath(30)})
        ctl.start()
        ctl.collector.observe((SVC, 1), Level0(cpu_load=0.3))
        ctl.collector.observe((SVC, 2), Level0(cpu_load=0.3))
        got = {i.instance_id: i.weight for i in remote.service(SVC).instances.values()}
        assert got[1] > 0 and got[2] == 0  # delay-sensitive: the near site only
        with SteeringNode(node) as local:  # the same pinned maps, read directly
            assert {i.instance_id: i.weight for i in local.service(SVC).instances.values()} == got
        again = Controller(remote, intent, {1: SitePath(2), 2: SitePath(30)})
        again.start()
        assert again.writes == 0
        total, per = remote.service_counters(SVC)
        assert total.packets == 0 and set(per) == {1, 2}
        # two choices and instance loads cross the agent both ways, and reach the maps
        remote.add_service(SVC, two_choices=True)
        loaded = [Instance(1, "192.0.2.11", 1, site_id=1, load=InstanceLoad(4000, 250, 2, 7)),
                  Instance(2, "192.0.2.12", 1, site_id=2)]  # fmt: skip
        remote.set_instances(SVC, loaded)
        st = remote.service(SVC)
        assert st.two_choices and not st.session
        assert sorted(st.instances.values(), key=lambda i: i.instance_id) == loaded
        with SteeringNode(node) as local:
            assert {i.instance_id: i.load for i in local.service(SVC).instances.values()} == {
                1: loaded[0].load,
                2: None,
            }
        remote.add_service(SVC)
        with pytest.raises(UnknownServiceError, match="no service 10.98.0.9:443/tcp"):
            remote.service(ServiceKey.parse("10.98.0.9:443/tcp"))
        with pytest.raises(ConfigError, match="all weights"):
            remote.set_instances(SVC, [Instance(1, "192.0.2.11", 0)])
        with pytest.raises(UnknownInstanceError):
            remote.set_weight(SVC, 9, 1)
        with pytest.raises(DataPlaneError, match="UNAUTHENTICATED"):
            remote_node(certs, address, node, token="wrong").service(SVC)
        import urllib.request

        text = urllib.request.urlopen(agent[2], timeout=5).read().decode()  # its refusals, for Prometheus
        assert 'dinet_agent_refused_total{reason="token"} 1.0' in text and "dinet_insecure 0.0" in text
        remote.close()
    finally:
        subprocess.run(
            [sys.executable, "-m", "dinet.cli", "xdp", "detach", "--dev", "lo", "--mode", "generic"],
            capture_output=True,
        )


def test_bier_entries_through_the_agent(agent, certs) -> None:
    from dinet.packets import bift_id
    from dinet.targets.base import BfirEntry, BiftBackup, BiftEntry, BiftPort
    from dinet.targets.tc import BierNode

    node, address, _ = agent
    remote = remote_node(certs, address, node)
    backup = BiftBackup("lo", (BiftPort("lo", "02:00:00:00:00:03", 0b01),))  # fast reroute travels too
    remote.set_bift(BiftEntry(bift_id(1, 0), 1 << 2, (BiftPort("lo", "02:00:00:00:00:02", 0b11),), (backup,)))
    bfir = BfirEntry("10.200.0.1", 7, 1, ((bift_id(1, 0), 0b111),), udp_port=9000)
    remote.set_bfir(bfir)
    with BierNode(node) as local:
        entry = local.bifts()[bift_id(1, 0)]
        assert entry.local == 0b100 and entry.neighbors[0].fbm == 0b11 and entry.neighbors[0].ifindex == 1
        (key, frr), *_ = local.frr_entries().items()
        assert key == (bift_id(1, 0), 0) and [(n.dmac, n.fbm) for n in frr.neighbors] == [("02:00:00:00:00:03", 1)]
        assert list(local.bfir_entries().values()) == [{bift_id(1, 0): 0b111}]
    with pytest.raises(ConfigError, match="forwards BSL 64, 128 and 256"):
        remote.set_bift(BiftEntry(bift_id(5, 0), 1, ()))
    assert remote.ports_up(["lo", "no-such-if"]) == {"lo": True, "no-such-if": False}
    remote.remove_bfir(bfir)
    remote.remove_bift(bift_id(1, 0))
    with BierNode(node) as local:
        assert local.bifts() == {} and local.bfir_entries() == {} and local.frr_entries() == {}
    remote.close()


def test_an_unreachable_agent_is_named() -> None:
    from dinet.targets.remote import RemoteNode

    with pytest.raises(DataPlaneError, match="node agent far .*UNAVAILABLE"):
        RemoteNode(f"127.0.0.1:{free_port()}", name="far", timeout=2).service(SVC)
