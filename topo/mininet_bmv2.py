"""Mininet switch class for BMv2 simple_switch_grpc, programmed by dinet over P4Runtime.

    from mininet.net import Mininet
    from topo.mininet_bmv2 import Bmv2GrpcSwitch
    net = Mininet(switch=Bmv2GrpcSwitch, controller=None)
    s1 = net.addSwitch("s1", device_id=1, pcap_dir="/tmp/pcaps")

Each interface's Mininet port number is its BMv2 port number. The P4Runtime server listens on a unix socket
(`switch.grpc_address`), reachable from any namespace; `stop()` ends the process and removes its files.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from mininet.node import Switch

from dinet.bmv2 import missing_tools


class Bmv2GrpcSwitch(Switch):
    def __init__(self, name: str, device_id: int = 0, pcap_dir: str | None = None, log: bool = False, **kw: object):
        super().__init__(name, **kw)
        self.device_id = device_id
        self.pcap_dir = pcap_dir
        self.log = log
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dinet-{name}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_address(self) -> str:
        return f"unix:{self.workdir / 'p4rt.sock'}"

    def start(self, controllers: object) -> None:
        if missing_tools():
            raise RuntimeError(f"{', '.join(missing_tools())} not on PATH (see the README: P4 toolchain)")
        cmd = ["simple_switch_grpc", "--device-id", str(self.device_id), "--no-p4",
               "--thrift-port", str(9090 + self.device_id)]
        for intf in self.intfList():
            port = self.ports[intf]
            if intf.name != "lo" and port > 0:
                cmd += ["-i", f"{port}@{intf.name}"]
        if self.pcap_dir:
            cmd += ["--pcap", self.pcap_dir]
        if self.log:
            cmd += ["--log-file", str(self.workdir / "switch"), "--log-flush"]
        cmd += ["--", "--grpc-server-addr", self.grpc_address]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr", "wb"))

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        super().stop(deleteIntfs)
