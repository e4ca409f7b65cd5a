"""What decides in a lab, read from its Prometheus endpoints in the scenario's names: the weights it installed,
what the ingress nodes' data planes counted per instance, and how fresh its metric reports are. A Lab holds one
(`lab.view`); it reads nothing but those endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DinetError
from ..promtext import fetch, samples

Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class ControllerView:
    urls: Callable[[], list[str]]  # the endpoints of what decides now (one in mode central, one per decider)
    service_keys: dict[str, str]  # scenario service name -> VIP:PORT/PROTO, as the metrics label it
    instance_ids: dict[str, int]  # scenario instance name -> its id
    ingress: list[str]  # the ingress nodes' names, in `dinet run`'s numbering
    report_fresh_s: float  # a report younger than this is fresh (half the collector's timeout)

    def prometheus(self, urls: list[str] | None = None) -> Samples:
        """The samples by name of what decides (every decider's, merged: their node labels differ)."""
        out: Samples = {}
        for url in self.urls() if urls is None else urls:
            for name, labels, value in samples(fetch(url, timeout=15)):
                out.setdefault(name, []).append((labels, value))
        return out

    def _names(self) -> dict[str, str]:
        return {str(i): n for n, i in self.instance_ids.items()}

    def by_instance(self, metric: str, service: str, ingress: str | None = None) -> dict[str, float]:
        """Instance name -> the metric's value for the service (on the ingress node, first one unless named)."""
        key = self.service_keys[service]
        names = self._names()
        node = str(self.ingress.index(ingress or self.ingress[0]))  # `dinet run` numbers its nodes from 0
        return {
            names[lab["instance"]]: v
            for lab, v in self.prometheus().get(metric, [])
            if lab.get("service") == key and lab.get("node") == node
        }

    def decisions(self) -> dict[tuple[str, str], dict[str, int]]:
        """(service, ingress) -> instance name -> installed weight, from one read."""
        names = self._names()
        keys = {v: k for k, v in self.service_keys.items()}
        out: dict[tuple[str, str], dict[str, int]] = {}
        for lab, v in self.prometheus().get("dinet_instance_weight", []):
            out.setdefault((keys[lab["service"]], self.ingress[int(lab["node"])]), {})[names[lab["instance"]]] = int(v)
        return out

    def _ints(self, metric: str, service: str, ingress: str | None) -> dict[str, int]:
        return {k: int(v) for k, v in self.by_instance(metric, service, ingress).items()}

    def weights(self, service: str, ingress: str | None = None) -> dict[str, int]:
        """Instance name -> installed weight (of the first ingress node unless named)."""
        return self._ints("dinet_instance_weight", service, ingress)

    def packets(self, service: str, ingress: str | None = None) -> dict[str, int]:
        """Instance name -> packets the ingress node's data plane steered to it (its counters, read back)."""
        return self._ints("dinet_instance_packets_total", service, ingress)

    def new_flows(self, service: str, ingress: str | None = None) -> dict[str, int]:
        """Instance name -> flows the ingress node's data plane placed on it (its counters, read back)."""
        return self._ints("dinet_instance_new_flows_total", service, ingress)

    def up_flags(self, service: str, ingress: str | None = None) -> dict[str, int]:
        """Instance name -> 1 if it takes new flows on the ingress node (weight > 0 and up)."""
        return self._ints("dinet_instance_up", service, ingress)

    def session_counts(self, service: str, ingress: str | None = None) -> dict[str, int]:
        """What the ingress node's data plane did with the service's sessions, over all its instances: sessions
        placed, placed again (their instance had left), new flows that found their session's instance."""
        return {
            kind: int(sum(self.by_instance(f"dinet_instance_{kind}_total", service, ingress).values()))
            for kind in ("sessions", "sessions_replaced", "session_flows")
        }

    def wait_reports(self, names: set[str], timeout: float = 30.0) -> None:
        """Returns once what decides (`dinet run`, or every decider) has a fresh report of each named instance
        (none of them expired)."""
        ids = {str(self.instance_ids[n]) for n in names}
        deadline = time.monotonic() + timeout
        while True:
            have = set(ids)
            for url in self.urls():
                ages = self.prometheus([url]).get("dinet_metric_age_seconds", [])
                have &= {lab["instance"] for lab, age in ages if age < self.report_fresh_s}
            if ids <= have:
                return
            if time.monotonic() > deadline:
                missing = sorted(n for n in names if str(self.instance_ids[n]) not in have)
                raise DinetError(f"no metric report from {missing} within {timeout:.0f} s")
            time.sleep(0.1)
