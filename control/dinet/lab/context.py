"""What every part of a lab reads: the scenario, its instances' place in the address plan (dinet.lab.net's
module docstring), the lab's names and work folder, the processes it starts and the certificates it issues,
and its state record (what `dinet lab down` removes, saved as it grows). One per lab (`lab.context`); the
network, the engines, the devices' servers, the node agents and the intent are built on it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DinetError
from .pki import Pki
from .processes import Processes
from .scenario import InstanceSpec, ScenarioSpec

POOL_IDS = (1000, 1099)  # the instance ids a service's pool agent may announce (within the table)


@dataclass
class InstanceHost:
    """An instance of the scenario as the lab places it: its id in the tables, its site's id, its address
    (endpoint), its site router's (gateway), its management address; its Mininet host and processes once
    they run."""

    spec: InstanceSpec
    id: int
    site_id: int
    endpoint: str
    gateway: str
    mgmt: str
    host: Any = None
    procs: list[subprocess.Popen[str]] = field(default_factory=list)  # its dinet serve, then its agent

    @property
    def running(self) -> bool:
        return bool(self.procs)


def place_instances(spec: ScenarioSpec) -> dict[str, InstanceHost]:
    """The address plan's instances: the j-th instance of site s at 10.(100+s).j.2 behind .1, management
    172.31.0.(n+1); ids from 1 in the file's order, a pool's from POOL_IDS."""
    out: dict[str, InstanceHost] = {}
    per_site: dict[str, int] = {}
    for n, i in enumerate(spec.instances):
        site = spec.site(i.site)
        j = per_site[i.site] = per_site.get(i.site, 0) + 1
        iid = POOL_IDS[0] + n if i.pool else n + 1  # a pool's ids are a range of their own
        out[i.name] = InstanceHost(
            i, iid, site.id, f"10.{100 + site.id}.{j}.2", f"10.{100 + site.id}.{j}.1", f"172.31.0.{n + 1}"
        )
    return out


class LabContext:
    def __init__(self, spec: ScenarioSpec, tag: str, workdir: Path, state_path: Path, tls: bool):
        """tag: the prefix of the lab's root-namespace names (and of its namespaces); state_path: the state
        record's file; tls: the model servers speak HTTPS with certificates of the lab's CA."""
        self.spec, self.tag, self.workdir, self.state_path = spec, tag, workdir, state_path
        self.instances = place_instances(spec)
        self.service_keys = {s.name: f"{s.vip}:{s.port}/tcp" for s in spec.services}  # names in the reports
        self.state: dict[str, Any] = {"pid": os.getpid(), "tag": tag, "netns": [], "root_links": [], "pins": []}
        self.state["pids"] = []
        self.procs = Processes(workdir / "logs", self.ns, self.record)
        self.pki = Pki(workdir / "tls", tls)

    def ns(self, node: str) -> str:
        """The named network namespace of a scenario node."""
        return f"{self.tag}-{node}"

    def steer_node_name(self, ingress: str) -> str:
        """The steering node's name on an ingress node (its pinned maps' folder)."""
        return f"{self.tag}-steer-{ingress}"

    def ingress_index(self, name: str) -> int:
        """An ingress node's number (from 1, in the file's order): its addresses' k."""
        return next(k for k, n in enumerate(self.spec.ingress, 1) if n.name == name)

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def record(self, pid: int) -> None:
        """A process the lab started, in the state record at once (a killed runner's `dinet lab down` finds
        it)."""
        self.state["pids"].append(pid)
        self.save()

    def wait_until(self, cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        """Polls cond (every 50 ms) until it holds; past the timeout an error naming the lab and `what`."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise DinetError(f"lab {self.spec.name}: no {what} within {timeout:.0f} s")
            time.sleep(0.05)
