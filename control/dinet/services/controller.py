"""The controller: gathers a service's inputs, has dinet.policy.decide plan its instances, and hands the plan
to a target, writing only what differs.

Inputs: the intent (services, instances, sites), the network metrics per site, and what the collector
knows of the instances (last samples, expiry, pool instances that joined: the collector is their one
owner, the controller reads them). It plans from its own record of what it installed: the data plane is
read back at start (what is there is adopted where it holds the intent's instances, so a restarted
controller writes nothing and moves no flow) and on an explicit `resync()`, never per report. Every
decision rule is in dinet.policy.decide."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import DinetError, UnknownServiceError
from ..model import Instance, InstanceState, ServiceIntent, ServiceKey, SitePath, parse_address
from ..policy.decide import Policy, decide
from ..targets.base import Counter, SteeringTarget
from .collect import Collector

log = logging.getLogger(__name__)

__all__ = ["Controller", "ServiceIntent", "SitePath"]


# how long a report's decision waits for the controller held by another thread (a decision takes ~15 us; a
# resync writing a restarted switch back, seconds): longer, and the holder decides it when it lets go
WAIT_S = 0.05


@dataclass
class Controller:
    target: SteeringTarget
    services: list[ServiceIntent]
    sites: dict[int, SitePath] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    collector: Collector = field(default_factory=lambda: Collector({}))  # the samples' owner (attach())
    installed: dict[ServiceKey, tuple[Instance, ...]] = field(default_factory=dict)  # the record, by instance id
    writes: int = 0
    reads: int = 0  # read-backs of the data plane (start and resyncs only)
    decisions: int = 0  # decisions made (reconciliations), and the seconds they took in all
    decision_seconds: float = 0.0
    errors: int = 0  # decisions or writes the data plane refused, or could not take (away, restarting)
    failing: bool = False  # a write failed: no write is tried until retry() has resynced the data plane
    _retry_at: float = 0.0
    _backoff: float = 0.0
    _by_key: dict[ServiceKey, ServiceIntent] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _pending: set[ServiceKey] = field(default_factory=set)  # changed while the lock was held: decided on release
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._by_key = {s.key: s for s in self.services}
        self._rng = random.Random(self.policy.seed)
        if self.changed not in self.collector.listeners:
            self.collector.listeners.append(self.changed)

    def intent(self, svc: ServiceKey) -> ServiceIntent:
        """The service as decided: its intent's instances and the pool instances that joined it."""
        try:
            base = self._by_key[svc]
        except KeyError:
            raise UnknownServiceError(f"no service {svc} in the intent") from None
        pool = self.collector.pool(svc)
        if not pool:
            return base
        ids = {i.instance_id for i in base.instances}
        extra = tuple(
            Instance(
                iid,
                parse_address(a.endpoint),
                1,
                InstanceState.DRAINING if a.leaving else InstanceState.UP,
                a.site,
                f"pool-{iid}",
            )
            for iid, a in sorted(pool.items())
            if iid not in ids
        )
        return replace(base, instances=base.instances + extra)

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> int:
        """Installs every service, adopting what the data plane holds where it matches the intent. Returns
        the number of writes."""
        return self.resync()

    def resync(self) -> int:
        """Reads the data plane back (the record is replaced by what it holds) and writes what differs from
        the decisions. At start, and when a target was re-programmed or is suspected to differ."""
        with self.held():
            before = self.writes
            self._remove_gone()
            for s in self.services:
                self._read_back(s.key)
                self.reconcile(s.key)
            return self.writes - before

    def _remove_gone(self) -> None:
        """Services installed that the intent no longer has are removed (the record keeps one until then)."""
        for key in sorted(set(self.installed) - set(self._by_key)):
            self.target.remove_service(key)
            self.installed.pop(key, None)
            self.writes += 1
            log.info("%s: removed (no longer in the intent)", key)

    def _read_back(self, svc: ServiceKey) -> None:
        """The service as the data plane holds it (installed first if it is not there) becomes the record."""
        intent = self._by_key.get(svc)
        self.target.add_service(
            svc, session=bool(intent and intent.session), two_choices=bool(intent and intent.two_choices)
        )
        self.reads += 1
        have = self.target.service(svc).instances.values()
        self.installed[svc] = tuple(sorted(have, key=lambda i: i.instance_id))
        ids = {i.instance_id for i in self._by_key[svc].instances} if svc in self._by_key else set()
        for inst in self.installed[svc]:  # pool instances that joined before a restart stay until silent
            if inst.instance_id not in ids:
                self.collector.adopt((svc, inst.instance_id), str(inst.endpoint), inst.site_id)

    def set_intent(self, services: list[ServiceIntent]) -> int:
        """A new intent (the file changed): services added, removed or with other instances; instances that
        stay keep their slots and flows. Returns the writes."""
        with self.held():
            before = self.writes
            old = {k: i.placement for k, i in self._by_key.items()}
            self.services, self._by_key = list(services), {s.key: s for s in services}
            if self.failing:  # retry() applies it all once the data plane answers
                return 0
            self._remove_gone()
            for s in self.services:
                if s.key not in self.installed:
                    self._read_back(s.key)
                elif old.get(s.key, s.placement) != s.placement:  # placement changed: flows placed stay
                    self.target.add_service(s.key, session=s.session, two_choices=s.two_choices)
                    self.writes += 1
                self.reconcile(s.key)
            return self.writes - before

    def attach(self, collector: Collector) -> None:
        """Takes its samples from `collector` and is told when a service changes there."""
        if self.changed in self.collector.listeners:
            self.collector.listeners.remove(self.changed)
        self.collector = collector
        if self.changed not in collector.listeners:
            collector.listeners.append(self.changed)

    def _write(self, svc: ServiceKey, instances: list[Instance]) -> None:
        self.target.set_instances(svc, instances)
        self.installed[svc] = tuple(instances)
        self.writes += 1
        log.info("%s: installed %s", svc, {i.instance_id: (i.weight, i.state.name.lower()) for i in instances})

    # ---- decisions ------------------------------------------------------------------------------------
    def desired(self, svc: ServiceKey) -> list[Instance]:
        """The service's instances as they should be installed (dinet.policy.decide on the gathered inputs):
        no read of the data plane."""
        return decide(
            self.intent(svc),
            self.collector.samples(svc),
            self.collector.expired(svc),
            self.sites,
            self.installed.get(svc, ()),
            self.policy,
            self._rng,
            self.collector.rates(svc),
        )

    def reconcile(self, svc: ServiceKey) -> bool:
        """Writes the service's desired instances if they differ from the record; True if it wrote."""
        with self.held():
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
        with self.held():
            before = self.writes
            self.sites.update(sites)
            if self.failing:  # retry() decides them all once the data plane answers
                return 0
            for s in self.services:
                self.reconcile(s.key)
            return self.writes - before

    def changed(self, svc: ServiceKey) -> None:
        """The collector's event: something known of the service's instances changed (a report, an expiry,
        a pool instance that joined or left). Decided again if the service is in the intent; while the data
        plane is failing nothing is written (retry() resyncs it all once it answers). Waits at most WAIT_S
        for the controller: while another thread holds it longer (a resync writing a restarted switch back),
        the service is left for that thread to decide when it lets go, and the agent's report is taken at
        once (a report kept waiting behind a resync would expire its instance, though its agent never fell
        silent). Not waiting at all made decisions slower under load (the report handlers compete with the
        decision for the interpreter)."""
        self._pending.add(svc)
        if not self._lock.acquire(timeout=WAIT_S):
            return  # the holder decides it when it lets go (held)
        try:
            self._pending.discard(svc)
            self._decide(svc)
        finally:
            self._lock.release()
        self._catch_up()

    def _decide(self, svc: ServiceKey) -> None:
        """A changed service decided again (the lock held); a failed write is counted and raised."""
        if svc in self._by_key and not self.failing:
            try:
                self.reconcile(svc)
            except DinetError as e:
                self.failed(f"{svc}: decision", e)
                raise

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The controller's lock; on letting go, the services that changed meanwhile are decided."""
        try:
            with self._lock:
                yield
        finally:
            self._catch_up()

    def _catch_up(self) -> None:
        """Decides the services whose change came while the lock was held (unless another thread holds it
        now: it decides them when it lets go)."""
        while self._pending:
            if not self._lock.acquire(blocking=False):
                return
            try:
                while self._pending:
                    with contextlib.suppress(DinetError):  # counted by _decide; retry() resyncs
                        self._decide(self._pending.pop())
            finally:
                self._lock.release()

    # ---- faults -------------------------------------------------------------------------------------------
    def failed(self, what: str, e: DinetError, now: float | None = None) -> None:
        """A write to the data plane failed: counted, and retried by retry() with a backoff (0.25 s doubling
        to 5 s). The data plane keeps forwarding on what it holds meanwhile."""
        with self.held():
            self.errors += 1
            if not self.failing:
                log.error("%s failed: %s (resync once the data plane answers)", what, e)
            self.failing = True
            self._backoff = min(5.0, max(0.25, self._backoff * 2))
            self._retry_at = (time.monotonic() if now is None else now) + self._backoff

    def retry(self, now: float | None = None) -> bool:
        """Resyncs the data plane after a failure once the backoff has passed. True when it is well."""
        with self.held():
            if not self.failing:
                return True
            if (time.monotonic() if now is None else now) < self._retry_at:
                return False
            self.failing = False  # resync writes for real
            try:
                self.resync()
            except DinetError as e:
                self.failed("resync", e, now)
                return False
            self._backoff = 0.0
            log.warning("the data plane answers again: resynced (%d errors so far)", self.errors)
            return True

    # ---- observation ------------------------------------------------------------------------------------
    def status(self) -> Iterator[dict[str, Any]]:
        """Each installed instance as decided, with the data plane's counters (None while it is away: a
        switch restarting or unreachable; the rest of the row is this process's own)."""
        for s in self.services:
            try:
                per: dict[int, Counter] | None = self.target.service_counters(s.key)[1]
            except DinetError:  # its decisions and weights are still known; retry() deals with the data plane
                per = None
            for inst in self.installed.get(s.key, ()):
                m = self.collector.sample((s.key, inst.instance_id))
                path = self.sites.get(inst.site_id) or SitePath()
                # the data plane's counters (none yet: zero; the data plane away: None)
                c = None if per is None else per.get(inst.instance_id) or Counter()
                yield {
                    "service": str(s.key),
                    "class": s.cls.value,
                    "instance": inst.instance_id,
                    "site": inst.site_id,
                    "weight": inst.weight,
                    "state": inst.state.name.lower(),
                    "healthy": m.healthy if m else None,
                    "cpu": m.cpu_load if m else None,
                    "gpu": m.gpu_util if m else None,
                    "compute": self.policy.scores.level1(m).compute if m else None,  # Level 1, as decided on
                    "delay_ms": path.delay_ms,
                    "packets": c.packets if c else None,
                    "new_flows": c.new_flows if c else None,
                    "session_flows": c.session_flows if c else None,
                    "sessions": c.sessions if c else None,
                    "sessions_replaced": c.sessions_replaced if c else None,
                }
