"""A lab's processes: each started in a node's named network namespace (or, for `dinet` itself on the
management network, in the root namespace), its stderr in the lab's log folder (a restarted process's log
follows its predecessor's), its pid in the lab's state file from the moment it runs (`dinet lab down` finds
it after the runner died), and for a server the check that it came up (`ready` on its first line)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import DinetError
from .linkem import stop_processes


class Processes:
    def __init__(self, logs: Path, ns: Callable[[str], str], record: Callable[[int], None]):
        """logs: the folder of the processes' logs; ns: a node's named namespace; record: keeps a pid in the
        lab's state."""
        self.logs, self.ns, self.record = logs, ns, record
        self._logged: set[str] = set()  # logs opened (a restarted process appends to its log)
        self._services: list[subprocess.Popen[str]] = []  # what start() and spawn() started, still running

    def _keep(self, p: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self.record(p.pid)
        self._services = [q for q in self._services if q.poll() is None] + [p]
        return p

    def stop_all(self, also: list[subprocess.Popen[Any]]) -> None:
        """Every service still running, and `also`, told to stop at once (a teardown waits for the slowest,
        not for their sum)."""
        stop_processes(self._services + also)
        self._services = []

    def popen(self, node: str, args: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """A process in a node's network namespace (by its name: Mininet's own popen attaches to the node's
        mount namespace too, which leaves a chroot; `ip netns exec` does not)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns(node), *args], **kw)

    @staticmethod
    def env() -> dict[str, str]:
        """The lab's services' environment: their log lines carry the time (they line up across logs)."""
        return {**os.environ, "DINET_LOG_TIME": "1"}

    def log(self, log_name: str) -> IO[str]:
        mode = "a" if log_name in self._logged else "w"
        self._logged.add(log_name)
        return open(self.logs / f"{log_name}.log", mode)  # noqa: SIM115 - lives as long as the process

    def start(self, node: str, args: list[str], log_name: str) -> subprocess.Popen[str]:
        """A service on a node: its stdout read by the lab, its stderr in its log, its pid recorded."""
        logf = self.log(log_name)
        p = self.popen(node, args, stdout=subprocess.PIPE, stderr=logf, text=True, env=self.env())
        logf.close()
        return self._keep(p)

    def spawn(self, args: list[str], log_name: str) -> subprocess.Popen[str]:
        """`dinet ARGS` in the root namespace (on the management network), its stderr in the lab's logs."""
        logf = self.log(log_name)
        cmd = [sys.executable, "-m", "dinet.cli", *args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, env=self.env())
        logf.close()
        return self._keep(p)

    def ready(self, p: subprocess.Popen[str], log_name: str, what: str) -> subprocess.Popen[str]:
        """p, once it said `ready` on its first line; stopped and a DinetError naming its log if it did not."""
        line = p.stdout.readline() if p.stdout else ""
        if not line.startswith("ready"):
            stop_processes([p])
            raise DinetError(f"{what} did not start (see {self.logs}/{log_name}.log)")
        return p

    def start_ready(self, node: str, cmd: list[str], log_name: str, what: str) -> subprocess.Popen[str]:
        """A server on a node that says `ready` on its first line (dinet serve, dinet route)."""
        return self.ready(self.start(node, cmd, log_name), log_name, what)
