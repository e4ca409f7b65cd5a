"""Synthetic metric reports for a lab started with agents=False: a test or an experiment says what each
instance reports (a Level 0), and it is streamed every interval, with the instance's credentials, to
whatever takes reports (`dinet run`'s collector, or every decider in mode distributed)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from ..policy.scores import Level0

log = logging.getLogger(__name__)


class Reports:
    """Streams `says[name]` for each named instance every `interval` seconds until the context ends; change
    `says` at any time (an event: an instance reports overload)."""

    def __init__(self, lab: Any, says: dict[str, Level0], interval: float = 0.2):
        self.lab, self.says, self.interval = lab, dict(says), interval
        self.stop = threading.Event()
        self.agents = {n: lab.deciding.reporter(n) for n in says}
        self.failed = 0  # reports nothing took (every collector down)
        self.thread = threading.Thread(target=self._run, daemon=True, name="reports")

    def _run(self) -> None:
        while not self.stop.is_set():
            for name, m in list(self.says.items()):
                inst = self.lab.instances[name]
                a = self.agents[name]
                try:
                    a.send([a.report(self.lab.service_keys[inst.spec.service], inst.id, m)])
                except grpc.RpcError as e:
                    self.failed += 1
                    log.debug("report of %s: %s", name, e.code().name)
            self.stop.wait(self.interval)

    def __enter__(self) -> Reports:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for a in self.agents.values():
            a.close()
