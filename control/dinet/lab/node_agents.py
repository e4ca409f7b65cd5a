"""A lab's node agents (`Lab(node_agents=True)`, target xdp): each ingress node's steering program attached and
pinned as a host's setup would leave it, and held by a `dinet agent` process of its own on the management
network, which `dinet run` drives over gRPC (target agent), as on a remote host. One killed (the program goes
on forwarding from its pinned maps) and started again."""

from __future__ import annotations

import subprocess
from typing import Any

from ..errors import DinetError
from ..netutil import free_port
from .context import LabContext
from .deciding import MGMT_ROOT
from .linkem import stop_processes

TOKEN = "token-node-agent"


class NodeAgents:
    def __init__(self, context: LabContext, enabled: bool):
        """enabled=False: none (every ingress node's program is the controller's own)."""
        self.context = context
        ingress = [i.name for i in context.spec.ingress]
        self.procs: dict[str, subprocess.Popen[str] | None] = dict.fromkeys(ingress, None) if enabled else {}
        self.ports = {name: free_port() for name in ingress}

    def __bool__(self) -> bool:
        return bool(self.procs)

    def address(self, ingress: str) -> str:
        return f"{MGMT_ROOT}:{self.ports[ingress]}"

    def start_all(self, hosts: dict[str, Any]) -> None:
        """Every ingress node's program attached to its interfaces (`hosts`: the Mininet hosts), then its
        agent."""
        for ingress in self.procs:
            self._attach(ingress, hosts[ingress])
            self.start(ingress)

    def _attach(self, ingress: str, host: Any) -> None:
        """The ingress node's steering program, attached to its interfaces and pinned, as a host's setup would
        leave it for its node agent (which loads the pinned maps and drives them)."""
        from ..targets.xdp import SteeringNode

        n = SteeringNode(self.context.steer_node_name(ingress))
        try:
            n.configure(src4=f"10.0.{self.context.ingress_index(ingress)}.1")
            for intf in host.intfList():
                n.attach(intf.name, self.context.ns(ingress))
        finally:
            n.close()

    def start(self, ingress: str) -> None:
        """`dinet agent` for the ingress node (again, after kill), on the management network."""
        token = self.context.workdir / TOKEN
        token.write_text(f"{TOKEN}\n")
        args = ["agent", "--node", self.context.steer_node_name(ingress), "--insecure"]
        args += ["--listen", self.address(ingress), "--token-file", str(token)]
        p = self.context.procs.spawn(args, f"node-agent-{ingress}")
        line = p.stdout.readline() if p.stdout else ""
        if not line.startswith("dinet agent"):
            raise DinetError(f"the node agent of {ingress} did not start (see {self.context.workdir}/logs)")
        self.procs[ingress] = p

    def kill(self, ingress: str) -> None:
        """The node agent dies (SIGKILL): its program goes on forwarding from the pinned maps."""
        p = self.procs.get(ingress)
        if p is not None:
            p.kill()
            p.wait(timeout=10)
            self.procs[ingress] = None

    def close(self) -> None:
        stop_processes([p for p in self.procs.values() if p is not None])
        self.procs = dict.fromkeys(self.procs, None)
