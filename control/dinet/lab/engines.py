"""A lab's model servers: per instance of the scenario its `dinet serve` (a port per service it answers, its
answers marked with the service's class, its certificate) and its metrics agent (one scrape, a report per
service, to every collector); started together, one killed (no goodbye) and started again, a pool instance
joining and leaving."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from ..errors import ConfigError
from ..netutil import dscp_of
from ..targets import netns
from ..workload.metrics_agent import parse, scrape
from .context import LabContext
from .linkem import stop_processes


class Engines:
    def __init__(self, context: LabContext, collectors: Callable[[], list[str]], agents: bool):
        """collectors: where the agents report (what decides); agents=False: no metrics agent (a test or an
        experiment reports for the instances). The agents' token files are in the lab's work folder; a
        service is named in the reports by its key (VIP:port/tcp, context.service_keys)."""
        self.spec, self.instances, self.procs, self.pki = context.spec, context.instances, context.procs, context.pki
        self.collectors, self.service_keys, self.agents = collectors, context.service_keys, agents
        self.tokens = context.workdir

    def spawn(self, names: list[str]) -> None:
        """The engines' `dinet serve`, started at once (a second or two each to start); ready() waits for
        each and then starts its agent."""
        for name in names:  # in procs at once: a failed build's close() stops them
            self.instances[name].procs = [self.procs.start(name, self._serve_cmd(name), f"{name}-serve")]

    def ready(self, names: list[str]) -> None:
        for name in names:
            inst = self.instances[name]
            self.procs.ready(inst.procs[0], f"{name}-serve", f"dinet serve on {name}")
            if self.agents:
                inst.procs.append(self._start_agent(name))

    def start(self, name: str) -> None:
        """The instance's `dinet serve` and its metrics agent (a pool instance joins this way)."""
        self.spawn([name])
        self.ready([name])

    def kill(self, name: str, which: str = "serve") -> None:
        """SIGKILL, no goodbye: the instance's model server (`serve`) or its metrics agent (`agent`)."""
        inst = self.instances[name]
        k = ("serve", "agent").index(which)
        if k >= len(inst.procs):
            raise ConfigError(f"{name} runs no {which}")
        inst.procs[k].kill()
        inst.procs[k].wait(timeout=10)

    def restart(self, name: str, which: str = "serve") -> None:
        """What kill() stopped starts again (the same address, port and identity)."""
        inst = self.instances[name]
        k = ("serve", "agent").index(which)
        if k >= len(inst.procs) or inst.procs[k].poll() is None:
            raise ConfigError(f"{name}'s {which} is running (or never ran): kill it first")
        if which == "serve":
            inst.procs[k] = self.procs.start_ready(
                name, self._serve_cmd(name), f"{name}-serve", f"dinet serve on {name}"
            )
        else:
            inst.procs[k] = self._start_agent(name)

    def stop(self, name: str) -> None:
        inst = self.instances[name]
        stop_processes(inst.procs)
        inst.procs = []

    def join(self, name: str) -> None:
        """A pool instance joins: its server starts and its agent announces it to what decides."""
        if not self.instances[name].spec.pool:
            raise ConfigError(f"{name} is not a pool instance (pool: true in the scenario)")
        self.start(name)

    def leave(self, name: str, drain_timeout: float = 60.0) -> None:
        """A pool instance leaves: its agent announces it (no new flow from then on), its open requests
        finish (up to drain_timeout), then its server stops; silent, it is removed from the service."""
        inst = self.instances[name]
        serve, agents = inst.procs[0], inst.procs[1:]
        stop_processes(agents)  # SIGTERM: the agent's last report says `leaving`
        url = f"{self.pki.scheme}://127.0.0.1:{self.spec.service(inst.spec.service).port}/metrics"
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            with netns.entered(self.procs.ns(name)):
                if parse(scrape(url, ca=self.pki.ca)).get("vllm:num_requests_running", 0.0) == 0:
                    break
            time.sleep(0.1)
        stop_processes([serve])
        inst.procs = []

    def close(self) -> None:
        for name in self.instances:
            self.stop(name)

    def _serve_cmd(self, name: str) -> list[str]:
        inst = self.instances[name]
        serve = [sys.executable, "-m", "dinet.cli", "serve", "--profile", inst.spec.profile, "--name", name]
        for other in inst.spec.services:  # one engine, a port per service, answers marked with its class
            svc = self.spec.service(other)
            serve += ["--listen", f"0.0.0.0:{svc.port}", "--dscp", str(dscp_of(svc.class_))]
        if inst.spec.model:
            serve += ["--model", inst.spec.model]
        for opt in ("kv_tokens", "max_batch"):
            if getattr(inst.spec, opt):
                serve += [f"--{opt.replace('_', '-')}", str(getattr(inst.spec, opt))]
        if inst.spec.role != "both":
            serve += ["--role", inst.spec.role]
        if inst.spec.prefix_caching:
            serve += ["--prefix-caching"]
        if inst.spec.decode_service:
            d = self.spec.service(inst.spec.decode_service)
            serve += ["--decode-url", f"{self.pki.scheme}://{d.vip}:{d.port}", *self.pki.args()]
            serve += ["--kv-dscp", str(dscp_of("kv"))]
        return serve + self.pki.server_args(name)

    def _start_agent(self, name: str) -> subprocess.Popen[str]:
        inst = self.instances[name]
        svc = self.spec.service(inst.spec.service)
        who = f"pool-{svc.name}" if inst.spec.pool else name  # a pool instance reports with its pool's token
        token = self.tokens / f"token-{who}"
        token.write_text(f"token-{who}\n")
        url = f"{self.pki.scheme}://127.0.0.1:{svc.port}/metrics"
        agent = [sys.executable, "-m", "dinet.cli", "metrics-agent", "--url", url, *self.pki.args()]
        if inst.spec.pool:
            agent += ["--announce", inst.endpoint, "--site", str(inst.site_id)]
        for other in inst.spec.services:  # one scrape of its engine, a report for each service it answers
            agent += ["--service", self.service_keys[other]]
        agent += ["--instance", str(inst.id), "--no-host-cpu"]
        for c in self.collectors():
            agent += ["--collector", c]
        agent += ["--token-file", str(token), "--insecure", "--interval", str(self.spec.report_interval)]
        return self.procs.start(name, agent, f"{name}-agent")
