"""Mininet switch class for BMv2 simple_switch_grpc, programmed by dinet over P4Runtime.

    from mininet.net import Mininet
    from dinet.lab.mininet_nodes import Bmv2GrpcSwitch
    net = Mininet(switch=Bmv2GrpcSwitch, controller=None)
    s1 = net.addSwitch("s1", device_id=1, pcap_dir="/tmp/pcaps")

Each interface's Mininet port number is its BMv2 port number. The P4Runtime server listens on a unix socket
(`switch.grpc_address`), reachable from any namespace; `stop()` ends the process and removes its files.
"""

from __future__ import annotations

from pathlib import Path

from mininet.node import Switch

from ..targets.bmv2 import Bmv2Switch


class Bmv2GrpcSwitch(Switch):
    def __init__(self, name: str, device_id: int = 0, pcap_dir: str | None = None, log: bool = False, **kw: object):
        super().__init__(name, **kw)
        self.bmv2 = Bmv2Switch(
            name, {}, None, device_id, log_console=log, pcap_dir=Path(pcap_dir) if pcap_dir else None
        )

    @property
    def grpc_address(self) -> str:
        return self.bmv2.address

    def start(self, controllers: object) -> None:
        self.bmv2.ports = {self.ports[i]: i.name for i in self.intfList() if i.name != "lo" and self.ports[i] > 0}
        self.bmv2.start()

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        self.bmv2.stop()
        super().stop(deleteIntfs)
