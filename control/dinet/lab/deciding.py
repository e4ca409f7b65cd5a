"""What decides for a lab's ingress nodes: one `dinet run` (mode central) or a decider per ingress node
(mode distributed, `dinet run --node K`), on the management network with ports of their own; started
together, one killed (no goodbye) and started again; where their Prometheus endpoints are and where the
instances' agents report."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DinetError
from ..netutil import free_port
from ..services.intent import CollectorSpec, DeciderSpec, PrometheusSpec
from .linkem import stop_processes
from .processes import Processes

MGMT_ROOT = "172.31.255.254"  # the root namespace on the management network


class Deciding:
    def __init__(self, mode: str, ingress: list[str], procs: Processes, collector_timeout: float):
        self.mode, self.ingress, self.procs, self.collector_timeout = mode, ingress, procs, collector_timeout
        self.collector_port, self.prometheus_port = free_port(), free_port()  # mode central
        self.decider_ports = {name: (free_port(), free_port()) for name in ingress}  # (collector, Prometheus)
        self.controller: subprocess.Popen[str] | None = None  # mode central
        self.deciders: dict[str, subprocess.Popen[str]] = {}  # mode distributed: ingress name -> its decider
        self.path: Path | None = None  # the intent they run on

    def start(self, path: Path, meanwhile: Callable[[], None] = lambda: None) -> None:
        """Everything that decides, on the intent at `path`, started at once; `meanwhile` runs while they
        start (seconds: the steering program's compile), before they are waited for."""
        self.path = path
        if self.mode == "central":
            self.controller = self._spawn(path, [], "controller")
        else:
            self.deciders = {
                n: self._spawn(path, ["--node", str(k)], f"decider-{n}") for k, n in enumerate(self.ingress)
            }
        meanwhile()
        if self.controller is not None:
            self._ready(self.controller, "controller")
        for name, p in self.deciders.items():
            self._ready(p, f"decider-{name}")

    def stop(self, ingress: str | None = None) -> None:
        """The process deciding for an ingress node dies (SIGKILL, no goodbye): in mode central the one
        controller (every node keeps the weights it last installed), in mode distributed that node's decider."""
        if self.mode == "central":
            proc, self.controller = self.controller, None
        else:
            proc = self.deciders.pop(ingress or self.ingress[0], None)
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """What stop() killed starts again (it adopts what the data plane holds: no flow moves)."""
        path = self.path
        assert path is not None, "restart() after start()"
        if self.mode == "central":
            if self.controller is None:
                self.controller = self._ready(self._spawn(path, [], "controller"), "controller")
            return
        for k, name in enumerate(self.ingress):
            if name not in self.deciders:
                log = f"decider-{name}"
                self.deciders[name] = self._ready(self._spawn(path, ["--node", str(k)], log), log)

    def close(self) -> None:
        stop_processes([self.controller] if self.controller is not None else [])
        stop_processes(list(self.deciders.values()))
        self.controller, self.deciders = None, {}

    def nodes(self) -> list[str]:
        """The ingress nodes something decides for now."""
        if self.mode == "central":
            return list(self.ingress) if self.controller is not None else []
        return list(self.deciders)

    def metrics_urls(self) -> list[str]:
        """The Prometheus endpoints of what decides (one in mode central; one per live decider)."""
        if self.mode == "central":
            return [self.metrics_url] if self.controller is not None else []
        live = list(self.deciders)  # one copy: stop() may take one out from another thread meanwhile
        return [f"http://{MGMT_ROOT}:{self.decider_ports[n][1]}/metrics" for n in live]

    @property
    def metrics_url(self) -> str:
        """The Prometheus endpoint of the controller (mode distributed: the first ingress node's decider)."""
        return self.ingress_metrics_url(self.ingress[0])

    def ingress_metrics_url(self, ingress: str) -> str:
        """The Prometheus endpoint that shows the ingress node's decisions."""
        if self.mode == "distributed":
            return f"http://{MGMT_ROOT}:{self.decider_ports[ingress][1]}/metrics"
        return f"http://{MGMT_ROOT}:{self.prometheus_port}/metrics"

    def collectors(self) -> list[str]:
        """Where the agents report: `dinet run`'s collector, or every ingress node's decider."""
        if self.mode == "central":
            return [f"{MGMT_ROOT}:{self.collector_port}"]
        return [f"{MGMT_ROOT}:{col}" for col, _ in self.decider_ports.values()]

    def reporter(self, instance: str) -> Any:
        """A collect.Agent with the instance's credentials (for a lab started with agents=False), reporting to
        every collector (a collect.Fanout in mode distributed)."""
        from ..services.collect import Agent, Fanout

        agents = [Agent(c, f"token-{instance}") for c in self.collectors()]
        return agents[0] if len(agents) == 1 else Fanout(agents)

    def intent(self) -> dict[str, Any]:
        """The intent's keywords for mode central: the controller's collector and Prometheus endpoint (where
        devices read it too)."""
        return {
            "collector": CollectorSpec(listen=f"{MGMT_ROOT}:{self.collector_port}", timeout=self.collector_timeout),
            "prometheus": PrometheusSpec(listen=f"{MGMT_ROOT}:{self.prometheus_port}"),
        }

    def node_intent(self, ingress: str) -> dict[str, Any]:
        """mode distributed: the ingress node's own decider (collector and metrics), as a node's keyword."""
        if self.mode != "distributed":
            return {}
        col, prom = self.decider_ports[ingress]
        return {
            "decider": DeciderSpec(
                collector=CollectorSpec(listen=f"{MGMT_ROOT}:{col}", timeout=self.collector_timeout),
                prometheus=PrometheusSpec(listen=f"{MGMT_ROOT}:{prom}"),
            )
        }

    def _spawn(self, path: Path, args: list[str], log_name: str) -> subprocess.Popen[str]:
        return self.procs.spawn(["run", str(path), "--insecure", *args], log_name)

    def _ready(self, p: subprocess.Popen[str], log_name: str) -> subprocess.Popen[str]:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("dinet: collector on"):
                return p
        raise DinetError(f"dinet run did not start (see {self.procs.logs}/{log_name}.log)")
