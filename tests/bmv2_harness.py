"""A BMv2 switch for tests: simple_switch_grpc in a namespace with ports 0..n-1 (veths), their peers in a
tap namespace for injecting and capturing frames, programmed over P4Runtime with dinet's pipeline."""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from dinet.lab.namespaces import Topology
from dinet.targets import netns
from dinet.targets.base import SteerSizes
from dinet.targets.bmv2 import Bmv2Switch, Pipeline, compile_p4
from dinet.targets.p4node import P4Node
from dinet.targets.p4rt import P4RuntimeSwitch

SIZES = SteerSizes(max_services=16, max_instances=16, ring_size=251, affinity_entries=4096)
DEFINES = SIZES.defines() | {"DINET_P4_AFFINITY_SIZE": 4096}
PACKET_OUTGOING = 4


@dataclass
class Bmv2Rig:
    node: P4Node
    switch: Bmv2Switch
    taps: dict[int, socket.socket]
    pipe: Pipeline
    pending: dict[int, list[bytes]] = field(default_factory=dict)

    def inject(self, port: int, frame: bytes) -> None:
        self.taps[port].send(frame)

    def read(self, port: int, timeout: float) -> bytes | None:
        """The next frame the switch sent out of `port`, or None after `timeout` seconds of silence."""
        s = self.taps[port]
        while select.select([s], [], [], timeout)[0]:
            data, addr = s.recvfrom(65535)
            if addr[2] != PACKET_OUTGOING:
                return data
        return None

    def drain(self) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        for port in self.taps:
            while (f := self.read(port, 0)) is not None:
                out.setdefault(port, []).append(f)
        return out


@contextlib.contextmanager
def bmv2_rig(prefix: str, nports: int = 4) -> Iterator[Bmv2Rig]:
    pipe = compile_p4(DEFINES)
    topo = Topology(prefix)
    taps: dict[int, socket.socket] = {}
    try:
        for name in ("sw", "tap"):
            topo.add_ns(name)
            topo.sh(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        for p in range(nports):
            topo.link("sw", f"p{p}", "tap", f"t{p}", mtu=1600)
        with Bmv2Switch(f"{prefix}sw", {p: f"p{p}" for p in range(nports)}, topo.ns("sw")) as sw:
            p4rt = P4RuntimeSwitch(sw.address, name=f"{prefix}sw")
            try:
                p4rt.connect()
            except Exception:
                raise RuntimeError(f"simple_switch_grpc did not come up: {sw.stderr()}") from None
            try:
                p4rt.set_pipeline(pipe.p4info, pipe.json)
                taps = {p: netns.l2_socket(f"t{p}", topo.ns("tap")) for p in range(nports)}
                yield Bmv2Rig(P4Node(p4rt, SIZES), sw, taps, pipe)
            finally:
                p4rt.close()
    finally:
        for s in taps.values():
            s.close()
        topo.close()
