"""The controller: intent (services, instances, sites) and live metrics in; weights decided; the data plane
reconciled to them, writing only what differs.

A service's weights are decided from its instances' Level 1 scores and its traffic class (dinet.policy.decide),
damped against what is installed. A report that changes nothing installs nothing. An instance whose agent
expired is set DOWN (its flows are placed anew); an overloaded one gets weight 0 (its flows stay). On start
the controller reads the data plane back and keeps what is there when it matches the intent's instances, so
a restarted controller rewrites nothing and moves no flow."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..errors import UnknownServiceError
from ..model import Instance, InstanceState, ServiceKey
from ..policy.decide import Candidate, Policy, TrafficClass, damp, target_weights
from ..policy.scores import Level0, ScoreModel
from .collect import Collector, InstanceRef

log = logging.getLogger(__name__)


class SteeringTarget(Protocol):
    """What the controller needs of a data plane: the XDP SteeringNode and the P4Node both provide it."""

    def add_service(self, svc: ServiceKey) -> int: ...
    def service(self, svc: ServiceKey) -> Any: ...
    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None: ...
    def service_counters(self, svc: ServiceKey) -> Any: ...


@dataclass(frozen=True)
class ServiceIntent:
    key: ServiceKey
    cls: TrafficClass
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class SitePath:
    """Network metrics from this ingress node to a site: the configured or measured delay, and loss."""

    delay_ms: float = 0.0
    loss: float = 0.0


@dataclass
class Controller:
    target: SteeringTarget
    services: list[ServiceIntent]
    sites: dict[int, SitePath] = field(default_factory=dict)
    model: ScoreModel = field(default_factory=ScoreModel)
    policy: Policy = field(default_factory=Policy)
    metrics: dict[InstanceRef, Level0] = field(default_factory=dict)
    expired: set[InstanceRef] = field(default_factory=set)
    writes: int = 0
    decisions: list[float] = field(default_factory=list)  # seconds per decision, most recent last
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def intent(self, svc: ServiceKey) -> ServiceIntent:
        for s in self.services:
            if s.key == svc:
                return s
        raise UnknownServiceError(f"no service {svc} in the intent")

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Installs every service; keeps what the data plane already holds where it matches the intent."""
        for s in self.services:
            self.target.add_service(s.key)
            have = self._installed(s.key)
            same_members = {(i.instance_id, i.endpoint, i.site_id) for i in have} == {
                (i.instance_id, i.endpoint, i.site_id) for i in s.instances
            }
            if not same_members:
                self._write(s.key, list(s.instances))

    def attach(self, collector: Collector) -> None:
        collector.on_report = self.on_report
        collector.on_expire = self.on_expire

    def _installed(self, svc: ServiceKey) -> list[Instance]:
        return sorted(self.target.service(svc).instances.values(), key=lambda i: i.instance_id)

    def _write(self, svc: ServiceKey, instances: list[Instance]) -> None:
        self.target.set_instances(svc, instances)
        self.writes += 1
        log.info("%s: installed %s", svc, {i.instance_id: (i.weight, i.state.name.lower()) for i in instances})

    # ---- decisions ------------------------------------------------------------------------------------
    def desired(self, svc: ServiceKey) -> list[Instance]:
        s = self.intent(svc)
        have = {i.instance_id: i for i in self._installed(svc)}
        cands = []
        for inst in s.instances:
            ref = (svc, inst.instance_id)
            m = self.metrics.get(ref, Level0())
            path = self.sites.get(inst.site_id, SitePath())
            up = ref not in self.expired and m.healthy
            cands.append(Candidate(inst.instance_id, inst.site_id, self.model.level1(m, path.delay_ms, path.loss), up))
        if not any(ref[0] == svc for ref in self.metrics):
            # no metrics yet: keep what the data plane holds if it is this intent's instance set (a restart),
            # else the intent's own weights
            members = {(i.instance_id, i.endpoint, i.site_id) for i in s.instances}
            if have and {(i.instance_id, i.endpoint, i.site_id) for i in have.values()} == members:
                return list(have.values())
            return list(s.instances)
        target = target_weights(cands, s.cls, self.policy)
        current = {iid: i.weight for iid, i in have.items() if i.state != InstanceState.DOWN}
        weights = damp(current, target, self.policy)
        out = []
        for inst in s.instances:
            ref = (svc, inst.instance_id)
            state = (
                InstanceState.DOWN
                if ref in self.expired
                else (InstanceState.DRAINING if inst.state == InstanceState.DRAINING else InstanceState.UP)
            )
            out.append(replace(inst, weight=weights[inst.instance_id], state=state))
        if all(i.weight == 0 or i.state != InstanceState.UP for i in out):
            live = [i for i in out if i.state == InstanceState.UP]
            if live:  # a data plane refuses all-zero weights: keep a trickle on the least loaded live one
                best = min(
                    live, key=lambda i: (self.metrics.get((svc, i.instance_id), Level0()).cpu_load, i.instance_id)
                )
                out = [replace(i, weight=1) if i is best else i for i in out]
        return out

    def reconcile(self, svc: ServiceKey) -> bool:
        """Writes the service's desired instances if they differ from what is installed; True if it wrote."""
        with self._lock:
            t0 = time.perf_counter()
            want = sorted(self.desired(svc), key=lambda i: i.instance_id)
            wrote = want != self._installed(svc)
            if wrote:
                self._write(svc, want)
            self.decisions.append(time.perf_counter() - t0)
            del self.decisions[:-1000]
            return wrote

    def update_sites(self, sites: dict[int, SitePath]) -> int:
        """New network metrics toward sites (measured); every service is decided again. Returns writes."""
        with self._lock:
            before = self.writes
            self.sites.update(sites)
            for s in self.services:
                self.reconcile(s.key)
            return self.writes - before

    def on_report(self, ref: InstanceRef, m: Level0) -> None:
        with self._lock:
            self.metrics[ref] = m
            self.expired.discard(ref)
            if any(s.key == ref[0] for s in self.services):
                self.reconcile(ref[0])

    def on_expire(self, ref: InstanceRef) -> None:
        with self._lock:
            self.expired.add(ref)
            if any(s.key == ref[0] for s in self.services):
                self.reconcile(ref[0])

    # ---- observation ------------------------------------------------------------------------------------
    def status(self) -> Iterator[dict[str, Any]]:
        for s in self.services:
            total, per = self.target.service_counters(s.key)
            for inst in self._installed(s.key):
                m = self.metrics.get((s.key, inst.instance_id))
                yield {
                    "service": str(s.key),
                    "class": s.cls.value,
                    "instance": inst.instance_id,
                    "site": inst.site_id,
                    "weight": inst.weight,
                    "state": inst.state.name.lower(),
                    "cpu": m.cpu_load if m else None,
                    "gpu": m.gpu_util if m else None,
                    "packets": per[inst.instance_id].packets if inst.instance_id in per else 0,
                    "new_flows": per[inst.instance_id].new_flows if inst.instance_id in per else 0,
                }
