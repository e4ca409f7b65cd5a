"""The controller: intent (services, instances, sites) and live metrics in; weights decided; the data plane
reconciled to them, writing only what differs.

It plans from its own record of what it installed: the data plane is read back at start (what is there is
adopted where it holds the intent's instances, so a restarted controller writes nothing and moves no flow)
and on an explicit `resync()`, never per report. A service's weights are decided from its instances' Level 1
scores and its traffic class (dinet.policy.decide), damped against what is installed.

An instance's state, in order of precedence: the operator's `down` or `draining` in the intent; DOWN once
its agent expired (silent for the collector's timeout, or never heard from within the timeout of the
start); until its first report, the state and weight it had (installed, else the intent's), never the
default "healthy and idle"; then the decision."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UnknownServiceError
from ..model import Instance, InstanceState, ServiceKey, parse_address
from ..policy.decide import Candidate, Policy, Strategy, TrafficClass, damp, target_weights
from ..policy.scores import Level0, ScoreModel
from ..targets.base import SteeringTarget
from .collect import Announce, Collector, InstanceRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceIntent:
    key: ServiceKey
    cls: TrafficClass
    instances: tuple[Instance, ...]
    min_security: int = 0  # an instance whose site's path is below this level takes none of its flows
    tier_order: tuple[str, ...] = ()  # model tiers, preferred first: the best tier with room takes new flows
    tiers: dict[int, str] = field(default_factory=dict)  # instance id -> the tier it serves
    strategy: Strategy | None = None  # how its flows are placed (None: the controller's policy's)
    transfer_kb: float = 0.0  # what a request moves before it is served (a KV cache): its time counts as delay

    def rank(self, instance_id: int) -> int:
        """The instance's place in the tier order (0 best; tiers not in the order come last)."""
        tier = self.tiers.get(instance_id)
        return self.tier_order.index(tier) if tier in self.tier_order else len(self.tier_order)


@dataclass(frozen=True)
class SitePath:
    """Network metrics from this ingress node to a site: the configured or measured delay, and loss."""

    delay_ms: float = 0.0
    loss: float = 0.0
    security: int = 0  # the path's security level (0: the public internet)
    bw_mbit: float = 0.0  # the path's bottleneck rate (0: unknown, no transfer time counted)


def _members(instances: Any) -> set[tuple[int, Any, int]]:
    return {(i.instance_id, i.endpoint, i.site_id) for i in instances}


@dataclass
class Controller:
    target: SteeringTarget
    services: list[ServiceIntent]
    sites: dict[int, SitePath] = field(default_factory=dict)
    model: ScoreModel = field(default_factory=ScoreModel)
    policy: Policy = field(default_factory=Policy)
    metrics: dict[InstanceRef, Level0] = field(default_factory=dict)
    expired: set[InstanceRef] = field(default_factory=set)
    installed: dict[ServiceKey, tuple[Instance, ...]] = field(default_factory=dict)  # the record, by instance id
    writes: int = 0
    reads: int = 0  # read-backs of the data plane (start and resyncs only)
    decisions: int = 0  # decisions made (reconciliations), and the seconds they took in all
    decision_seconds: float = 0.0
    joined: dict[ServiceKey, dict[int, Instance]] = field(default_factory=dict)  # pool instances, by id
    _by_key: dict[ServiceKey, ServiceIntent] = field(default_factory=dict)  # the intent with what joined
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._by_key = {s.key: s for s in self.services}
        self._rng = random.Random(self.policy.seed)

    def _merge(self, svc: ServiceKey) -> None:
        """The service as decided: its intent's instances and the pool instances that joined it."""
        base = next(s for s in self.services if s.key == svc)
        ids = {i.instance_id for i in base.instances}
        extra = tuple(i for iid, i in sorted(self.joined.get(svc, {}).items()) if iid not in ids)
        self._by_key[svc] = replace(base, instances=base.instances + extra)

    def intent(self, svc: ServiceKey) -> ServiceIntent:
        try:
            return self._by_key[svc]
        except KeyError:
            raise UnknownServiceError(f"no service {svc} in the intent") from None

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> int:
        """Installs every service, adopting what the data plane holds where it matches the intent. Returns
        the number of writes."""
        return self.resync()

    def resync(self) -> int:
        """Reads the data plane back (the record is replaced by what it holds) and writes what differs from
        the decisions. At start, and when a target was re-programmed or is suspected to differ."""
        with self._lock:
            before = self.writes
            for s in self.services:
                self._read_back(s.key)
                self.reconcile(s.key)
            return self.writes - before

    def _read_back(self, svc: ServiceKey) -> None:
        """The service as the data plane holds it (installed first if it is not there) becomes the record."""
        self.target.add_service(svc)
        self.reads += 1
        have = self.target.service(svc).instances.values()
        self.installed[svc] = tuple(sorted(have, key=lambda i: i.instance_id))

    def set_intent(self, services: list[ServiceIntent]) -> int:
        """A new intent (the file changed): services added, removed or with other instances; instances that
        stay keep their slots and flows. Returns the writes."""
        with self._lock:
            before = self.writes
            gone = set(self._by_key) - {s.key for s in services}
            self.services, self._by_key = list(services), {s.key: s for s in services}
            for key in gone:
                self.joined.pop(key, None)
            for key in self.joined:
                self._merge(key)
            for key in sorted(gone):
                self.target.remove_service(key)
                self.installed.pop(key, None)
                self.writes += 1
                log.info("%s: removed (no longer in the intent)", key)
            for s in self.services:
                if s.key not in self.installed:
                    self._read_back(s.key)
                self.reconcile(s.key)
            return self.writes - before

    def attach(self, collector: Collector) -> None:
        collector.on_report = self.on_report
        collector.on_expire = self.on_expire
        collector.on_announce = self.on_announce

    def _write(self, svc: ServiceKey, instances: list[Instance]) -> None:
        self.target.set_instances(svc, instances)
        self.installed[svc] = tuple(instances)
        self.writes += 1
        log.info("%s: installed %s", svc, {i.instance_id: (i.weight, i.state.name.lower()) for i in instances})

    # ---- decisions ------------------------------------------------------------------------------------
    def desired(self, svc: ServiceKey) -> list[Instance]:
        """The service's instances as they should be installed, from the record, the intent and the metrics:
        no read of the data plane."""
        s = self.intent(svc)
        installed = self.installed.get(svc, ())
        have = {i.instance_id: i for i in installed}
        adopt: bool | None = None  # does the record hold the intent's instances? (asked only when needed)

        def kept(inst: Instance) -> Instance | None:
            nonlocal adopt
            if adopt is None:
                adopt = _members(installed) == _members(s.instances)
            return have.get(inst.instance_id) if adopt else None

        decided: dict[int, Instance] = {}
        cands = []
        for inst in s.instances:
            ref = (svc, inst.instance_id)
            m = self.metrics.get(ref)
            path = self.sites.get(inst.site_id) or SitePath()
            if inst.state != InstanceState.UP:  # the operator's word wins over reports
                old = kept(inst)
                decided[inst.instance_id] = replace(inst, weight=old.weight if old else inst.weight)
            elif path.security < s.min_security:  # its path may not carry this service: never a flow
                decided[inst.instance_id] = replace(inst, weight=0, state=InstanceState.DOWN)
            elif ref in self.expired:
                decided[inst.instance_id] = replace(inst, weight=0, state=InstanceState.DOWN)
            elif m is None:  # not heard from yet: as it was, never "idle and healthy"
                decided[inst.instance_id] = kept(inst) or inst
            else:
                delay = path.delay_ms + (s.transfer_kb * 8 / path.bw_mbit if s.transfer_kb and path.bw_mbit else 0.0)
                l1 = self.model.level1(m, delay, path.loss)
                rank = s.rank(inst.instance_id)
                cands.append(Candidate(inst.instance_id, inst.site_id, l1, m.healthy, rank, delay))
        if cands:
            policy = replace(self.policy, strategy=s.strategy) if s.strategy else self.policy
            target = target_weights(cands, s.cls, policy, self._rng)
            current = {
                c.instance_id: have[c.instance_id].weight
                for c in cands
                if c.instance_id in have and have[c.instance_id].state != InstanceState.DOWN
            }
            # a baseline (anycast, round-robin, ...) is compared as it is: only dinet's decision is damped
            weights = damp(current, target, self.policy) if policy.strategy is Strategy.DINET else target
            by_id = {i.instance_id: i for i in s.instances}
            for c in cands:
                state = InstanceState.UP if c.up else InstanceState.DOWN
                old, inst = have.get(c.instance_id), by_id[c.instance_id]
                if (
                    old is not None
                    and (old.weight, old.state, old.site_id) == (weights[c.instance_id], state, inst.site_id)
                    and old.endpoint == inst.endpoint
                ):
                    decided[c.instance_id] = old  # unchanged: no new object
                else:
                    decided[c.instance_id] = replace(inst, weight=weights[c.instance_id], state=state)
        out = [decided[i.instance_id] for i in s.instances]
        if all(not i.usable for i in out):
            live = [i for i in out if i.state == InstanceState.UP]
            if live:  # a data plane refuses all-zero weights: keep a trickle on the least loaded live one
                best = min(
                    live, key=lambda i: (self.metrics.get((svc, i.instance_id), Level0()).cpu_load, i.instance_id)
                )
                out = [replace(i, weight=1) if i is best else i for i in out]
        out.sort(key=lambda i: i.instance_id)
        return out

    def reconcile(self, svc: ServiceKey) -> bool:
        """Writes the service's desired instances if they differ from the record; True if it wrote."""
        with self._lock:
            t0 = time.perf_counter()
            want = self.desired(svc)
            wrote = tuple(want) != self.installed.get(svc)
            if wrote:
                self._write(svc, want)
            self.decisions += 1
            self.decision_seconds += time.perf_counter() - t0
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
            if ref[0] in self._by_key:
                self.reconcile(ref[0])

    def on_expire(self, ref: InstanceRef) -> None:
        with self._lock:
            svc, iid = ref
            if iid in self.joined.get(svc, {}):  # a pool instance that went silent has left: it is removed
                del self.joined[svc][iid]
                self.metrics.pop(ref, None)
                self._merge(svc)
                log.info("%s: pool instance %d left (silent)", svc, iid)
            else:
                self.expired.add(ref)
            if svc in self._by_key:
                self.reconcile(svc)

    def on_announce(self, ref: InstanceRef, a: Announce) -> None:
        """A pool instance joins (installed at once, taking new flows by its metrics), moves, or leaves
        (draining: no new flow; its established flows stay until it goes silent and is removed)."""
        with self._lock:
            svc, iid = ref
            if svc not in self._by_key:
                return
            state = InstanceState.DRAINING if a.leaving else InstanceState.UP
            inst = Instance(iid, parse_address(a.endpoint), 1, state, a.site, f"pool-{iid}")
            have = self.joined.setdefault(svc, {}).get(iid)
            if have == inst:
                return
            self.joined[svc][iid] = inst
            self.expired.discard(ref)
            self._merge(svc)
            log.info(
                "%s: pool instance %d %s at site %d (%s)",
                svc,
                iid,
                "leaving" if a.leaving else "joined",
                a.site,
                a.endpoint,
            )
            self.reconcile(svc)

    # ---- observation ------------------------------------------------------------------------------------
    def status(self) -> Iterator[dict[str, Any]]:
        for s in self.services:
            total, per = self.target.service_counters(s.key)
            for inst in self.installed.get(s.key, ()):
                m = self.metrics.get((s.key, inst.instance_id))
                path = self.sites.get(inst.site_id) or SitePath()
                yield {
                    "service": str(s.key),
                    "class": s.cls.value,
                    "instance": inst.instance_id,
                    "site": inst.site_id,
                    "weight": inst.weight,
                    "state": inst.state.name.lower(),
                    "cpu": m.cpu_load if m else None,
                    "gpu": m.gpu_util if m else None,
                    "compute": self.model.level1(m).compute if m else None,  # Level 1, as decided on
                    "delay_ms": path.delay_ms,
                    "packets": per[inst.instance_id].packets if inst.instance_id in per else 0,
                    "new_flows": per[inst.instance_id].new_flows if inst.instance_id in per else 0,
                }
