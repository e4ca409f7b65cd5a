"""The metrics collector: a gRPC service agents stream Level 0 reports to.

Every agent is authenticated: over mutual TLS by its certificate's identity (and its token, where the
intent gives it one, as a second factor), or, on a collector started --insecure, by its token alone. The
identity names the instances the agent may report for. Every report is checked (numbers, ranges, a known
instance, an increasing sequence, at most `max_rate` reports per second per agent; the rate is kept per
authenticated identity, the sequence per identity and agent session, so agents sharing an identity never
lock each other out) and refused with a reason that is counted. An instance whose agent falls
silent for `timeout` seconds, or never reports within `timeout` plus a grace (RECONNECT_S: an agent's
channel to a collector that was away reconnects within it) of the start, is expired. An open stream
stays admitted only while its identity does: one whose identity a new intent removes, whose token it
changes, or whose certificate the CRL revokes is closed (at its next report, or at the next expiry round
if it sends none).

The collector is the one owner of what is known of instances: the last sample of each, which expired, and
the pool instances that joined (a silent one is pruned). It tells its listeners (the controllers, one per
ingress node) one thing: "this service changed"; they read the rest from it. A listener that fails is
counted and logged, and the others are still told."""

from __future__ import annotations

import functools
import ipaddress
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field, fields
from typing import Any

import grpc

from .. import proto
from ..creds import Identity, Revocations, listen, peer_identity, peer_serial, same_token
from ..errors import ConfigError, DinetError
from ..model import ServiceKey
from ..policy.predict import Rates, learn
from ..policy.scores import Level0

log = logging.getLogger(__name__)
InstanceRef = tuple[ServiceKey, int]


@functools.lru_cache(maxsize=4096)
def _service(text: str) -> ServiceKey:
    return ServiceKey.parse(text)


LEVEL0_FIELDS = tuple(f.name for f in fields(Level0))
MAX_SESSIONS = 256  # per identity: the sessions whose sequence is remembered (the least recent goes first)
RECONNECT_S = 1.0  # an agent's gRPC channel retries a collector at least this often (its reconnect backoff cap)
# a restarted collector hears an agent again only once its channel has reconnected: an instance it never
# heard from is expired after timeout + this, never before (else every instance of a restarted controller
# would go, though each one's agent is there)
FIRST_REPORT_GRACE_S = 2 * RECONNECT_S
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_S * 1000)),
]


def level0_of(r: Any) -> Level0:
    """A report message's Level 0 (unchecked; see Level0.check)."""
    return Level0(**{name: getattr(r, name) for name in LEVEL0_FIELDS})


def report_of(
    pb: Any, service: str, instance_id: int, seq: int, m: Level0, announce: Announce | None, session: int = 0
) -> Any:
    """The report message carrying `m` (and a pool instance's announcement): level0_of's inverse."""
    where = {"endpoint": announce.endpoint, "site": announce.site, "leaving": announce.leaving} if announce else {}
    values = {n: getattr(m, n) for n in LEVEL0_FIELDS}
    return pb.Report(service=service, instance_id=instance_id, seq=seq, session=session, **where, **values)


@dataclass
class Sample:
    metrics: Level0
    at: float  # monotonic seconds
    rates: Rates = Rates()  # what the reports so far taught of the instance (dinet.policy.predict)


@dataclass(frozen=True)
class Pool:
    """Elastic capacity of a service: instances (ids first..last, at these sites) that join at run time."""

    service: ServiceKey
    first: int
    last: int
    sites: frozenset[int]
    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # where its endpoints may be

    def endpoint_error(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """Why an announced endpoint cannot be an instance of the pool ('' if it can)."""
        if (
            addr.is_unspecified
            or addr.is_loopback
            or addr.is_multicast
            or addr == ipaddress.ip_address("255.255.255.255")
        ):
            return "not a unicast address"
        if addr == self.service.vip:
            return "the service's own VIP"
        if self.prefixes and not any(addr in p for p in self.prefixes):
            return f"outside the pool's prefixes ({', '.join(map(str, self.prefixes))})"
        return ""

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, tuple) and ref[0] == self.service and self.first <= ref[1] <= self.last


@dataclass(frozen=True)
class AgentAuth:
    """What the intent says of one reporting agent: the instances it reports for, and its token ('' none);
    pools: the ranges of instances it may announce (elastic capacity)."""

    refs: frozenset[InstanceRef]
    token: str = ""
    pools: tuple[Pool, ...] = ()

    def __contains__(self, ref: object) -> bool:
        return ref in self.refs or any(ref in p for p in self.pools)

    def pool(self, ref: InstanceRef) -> Pool | None:
        return next((p for p in self.pools if ref in p), None)


@dataclass(frozen=True)
class Announce:
    """A pool instance's announcement: where it is, and whether it is leaving."""

    endpoint: str
    site: int
    leaving: bool = False


@dataclass
class Collector:
    """agents: identity -> AgentAuth."""

    agents: dict[str, AgentAuth]
    timeout: float = 3.0
    max_rate: float = 1000.0
    max_streams: int = 4  # open report streams per identity (of 16 workers): one agent cannot take them all
    # told "this service changed" (a report taken, an instance expired, a pool instance joined or left)
    listeners: list[Callable[[ServiceKey], None]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    revocations: Revocations | None = None  # the CRL of the agents' CA (None: nothing is revoked)
    latest: dict[InstanceRef, Sample] = field(default_factory=dict)
    members: dict[ServiceKey, dict[int, Announce]] = field(default_factory=dict)  # pool instances that joined
    rejected: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    _seq: dict[str, dict[int, int]] = field(default_factory=dict)  # identity -> session -> last sequence
    _window: dict[str, tuple[float, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _expired: set[InstanceRef] = field(default_factory=set)
    _since: dict[InstanceRef, float] = field(default_factory=dict)  # when an expected instance became expected
    _by_svc: dict[ServiceKey, dict[int, Sample]] = field(default_factory=dict)  # `latest` by service
    _streams: Counter[str] = field(default_factory=Counter)  # open report streams per identity
    _open: dict[int, tuple[str, int | None, str, Any]] = field(default_factory=dict)  # (agent, serial, token, ctx)

    def __post_init__(self) -> None:
        self.set_agents(self.agents)

    @classmethod
    def with_tokens(cls, tokens: dict[str, tuple[str, set[InstanceRef]]], **kw: Any) -> Collector:
        """A collector whose agents are known by token: token -> (agent name, its instances)."""
        return cls({name: AgentAuth(frozenset(refs), token) for token, (name, refs) in tokens.items()}, **kw)

    def set_agents(self, agents: dict[str, AgentAuth]) -> None:
        """The agents and the instances each reports for (a new intent). An instance that has an agent is
        expected to report: one never heard from within `timeout` + FIRST_REPORT_GRACE_S of now (or of the
        start) expires."""
        now = self.clock()
        with self._lock:
            self.agents = agents
            expected = {ref for a in agents.values() for ref in a.refs}
            expected |= {(svc, iid) for svc, m in self.members.items() for iid in m}  # adopted pool members too
            self._since = {ref: self._since.get(ref, now) for ref in expected}
        self.sweep()

    def authenticate(self, identity: str | None, token: str, serial: int | None = None) -> tuple[str, Any]:
        """(agent, its instances), or ('', the refusal reason), counted: 'identity' (a certificate the
        intent gives no instance), 'token' (a wrong or missing token), 'revoked' (a certificate the CRL
        names; serial: the peer certificate's)."""
        if self.revocations is not None and self.revocations.revoked(serial):
            self.rejected["revoked"] += 1
            return "", "revoked"
        if identity is not None:  # mutual TLS: the certificate names the agent
            auth = self.agents.get(identity)
            if auth is None:
                self.rejected["identity"] += 1
                return "", "identity"
            if auth.token and not same_token(token, auth.token):
                self.rejected["token"] += 1
                return "", "token"
            return identity, auth
        for name, auth in self.agents.items():  # an --insecure collector: the token alone names the agent
            if auth.token and same_token(token, auth.token):
                return name, auth
        self.rejected["token"] += 1
        return "", "token"

    # ---- what the controllers read -------------------------------------------------------------------
    def samples(self, svc: ServiceKey) -> dict[int, Level0]:
        """The service's instances' last reports, by instance id (expired ones left out)."""
        with self._lock:
            d = self._by_svc.get(svc, {})
            if not self._expired:
                return {iid: s.metrics for iid, s in d.items()}
            return {iid: s.metrics for iid, s in d.items() if (svc, iid) not in self._expired}

    def expired(self, svc: ServiceKey) -> set[int]:
        with self._lock:
            return {iid for s, iid in self._expired if s == svc} if self._expired else set()

    def rates(self, svc: ServiceKey) -> dict[int, Rates]:
        """The service's instances' learned rates, by instance id (kept while an instance is expired)."""
        with self._lock:
            return {iid: s.rates for iid, s in self._by_svc.get(svc, {}).items()}

    def pool(self, svc: ServiceKey) -> dict[int, Announce]:
        """The pool instances that joined the service and have not gone silent, by instance id."""
        with self._lock:
            return dict(self.members.get(svc, {}))

    def sample(self, ref: InstanceRef) -> Level0 | None:
        s = self.latest.get(ref)
        return s.metrics if s is not None and ref not in self._expired else None

    def _changed(self, svc: ServiceKey) -> None:
        for listener in list(self.listeners):
            try:
                listener(svc)
            except DinetError as e:  # what was taken stays taken; its decision could not be installed
                self.rejected["decision"] += 1
                log.error("%s changed, but a decision on it failed: %s", svc, e)

    def observe(self, ref: InstanceRef, m: Level0, announce: Announce | None = None) -> None:
        """Takes one sample from inside the process (a test, an in-process agent): stored as an accepted
        report is, without authentication or sequence, and the listeners are told."""
        m.check()
        with self._lock:
            self._store(ref, m, announce, self.clock())
        self._changed(ref[0])

    def _store(self, ref: InstanceRef, m: Level0, announce: Announce | None, now: float) -> None:
        prev = self.latest.get(ref)
        self.latest[ref] = self._by_svc.setdefault(ref[0], {})[ref[1]] = Sample(
            m, now, learn(prev.rates if prev else Rates(), m)
        )
        self._expired.discard(ref)
        if announce is not None:
            self.members.setdefault(ref[0], {})[ref[1]] = announce

    def admitted(self, agent: str, serial: int | None, token: str) -> tuple[AgentAuth | None, str]:
        """(the agent's instances as the intent now says, '') while an open stream may go on; (None, why)
        once its identity was removed, its token changed or its certificate revoked."""
        auth = self.agents.get(agent)
        if auth is None:
            return None, f"the identity {agent} was removed from the intent"
        if auth.token and not same_token(token, auth.token):
            return None, f"the token of {agent} changed"
        if self.revocations is not None and self.revocations.revoked(serial):
            return None, f"the certificate of {agent} (serial {serial:x}) is revoked"
        return auth, ""

    def open_stream(self, agent: str, serial: int | None = None, token: str = "", context: Any = None) -> bool:
        """Takes one of the identity's stream places (False, counted, when it holds `max_streams` already);
        `context` (the call's) is cancelled by sweep() once the stream is no longer admitted."""
        with self._lock:
            if self._streams[agent] >= self.max_streams:
                self.rejected["streams"] += 1
                return False
            self._streams[agent] += 1
            if context is not None:
                self._open[id(context)] = (agent, serial, token, context)
            return True

    def close_stream(self, agent: str, context: Any = None) -> None:
        with self._lock:
            self._streams[agent] -= 1
            self._open.pop(id(context), None)

    def sweep(self) -> int:
        """Closes the open streams that are no longer admitted (an identity removed, a token changed, a
        certificate revoked), counted as 'closed'; how many."""
        with self._lock:
            streams = list(self._open.items())
        n = 0
        for key, (agent, serial, token, ctx) in streams:
            _, why = self.admitted(agent, serial, token)
            if why:
                log.warning("closing a report stream: %s", why)
                with self._lock:
                    self._open.pop(key, None)
                ctx.cancel()
                self.rejected["closed"] += 1
                n += 1
        return n

    def _reject(self, reason: str, detail: str) -> str:
        self.rejected[reason] += 1
        return f"{reason}: {detail}"

    def accept(self, agent: str, allowed: Any, r: Any) -> str | None:
        """Checks and stores one report; returns the refusal reason, or None when accepted."""
        now = self.clock()
        with self._lock:
            start, n = self._window.get(agent, (now, 0))
            if now - start >= 1.0:
                start, n = now, 0
            if n >= self.max_rate:
                return self._reject("rate", f"agent {agent} sent more than {self.max_rate:g} reports in a second")
            self._window[agent] = (start, n + 1)
            try:
                svc = _service(r.service)
            except ConfigError as e:
                return self._reject("unknown_instance", str(e))
            ref = (svc, int(r.instance_id))
            if ref not in allowed:
                return self._reject(
                    "unknown_instance", f"agent {agent} does not report for {svc} instance {r.instance_id}"
                )
            announce = None
            pool = allowed.pool(ref) if isinstance(allowed, AgentAuth) and ref not in allowed.refs else None
            if pool is not None:  # a pool instance says where it is in every report
                if r.site not in pool.sites:
                    return self._reject("invalid", f"{svc} instance {r.instance_id}: site {r.site} is not the pool's")
                try:
                    addr = ipaddress.ip_address(r.endpoint)
                except ValueError:
                    return self._reject("invalid", f"{svc} instance {r.instance_id}: endpoint {r.endpoint!r}")
                why = pool.endpoint_error(addr)
                if why:
                    return self._reject("invalid", f"{svc} instance {r.instance_id}: endpoint {addr} is {why}")
                known = self.members.get(svc, {}).get(ref[1])
                if known is not None and known.endpoint != str(addr):  # its flows must not follow a new address
                    return self._reject(
                        "invalid",
                        f"{svc} instance {r.instance_id} is at {known.endpoint}, not {addr}: a new endpoint is a "
                        "new instance (another id, or this one once it has left)",
                    )
                announce = Announce(str(addr), int(r.site), bool(r.leaving))
            sessions = self._seq.setdefault(agent, {})
            last = sessions.get(r.session, 0)
            if r.seq <= last:
                return self._reject("sequence", f"seq {r.seq} is not after {last} (session {r.session:x})")
            m = level0_of(r)
            try:
                m.check()
            except ConfigError as e:
                return self._reject("invalid", str(e))
            sessions.pop(r.session, None)  # most recent last: the oldest session is the first to go
            sessions[r.session] = r.seq
            if len(sessions) > MAX_SESSIONS:
                del sessions[next(iter(sessions))]
            self._store(ref, m, announce, now)
            self.accepted += 1
        self._changed(svc)
        return None

    def expire(self) -> list[InstanceRef]:
        """Instances silent for longer than `timeout`, each reported once until it speaks again. A pool
        instance that went silent has left: it is pruned (its sample and its membership)."""
        now = self.clock()
        with self._lock:
            gone = [ref for ref, s in self.latest.items() if now - s.at > self.timeout and ref not in self._expired]
            first = self.timeout + FIRST_REPORT_GRACE_S
            gone += [
                ref
                for ref, since in self._since.items()
                if ref not in self.latest and now - since > first and ref not in self._expired
            ]
            for ref in gone:
                self._drop(ref)
        for ref in gone:
            log.warning("instance %s/%d: no report for %.1f s: expired", ref[0], ref[1], self.timeout)
        for svc in sorted({ref[0] for ref in gone}):
            self._changed(svc)
        self.sweep()
        return gone

    def adopt(self, ref: InstanceRef, endpoint: str, site: int) -> bool:
        """A pool instance the data plane holds but this collector has not heard of (it restarted): taken as a
        member as it is, expected to report within `timeout` like any instance, and pruned if it does not.
        False when no agent's pool holds it (or it is known already)."""
        with self._lock:
            if ref[1] in self.members.get(ref[0], {}) or not any(a.pool(ref) is not None for a in self.agents.values()):
                return False
            self.members.setdefault(ref[0], {})[ref[1]] = Announce(endpoint, site)
            self._since.setdefault(ref, self.clock())
            return True

    def expire_now(self, ref: InstanceRef) -> None:
        """Expires one instance at once, as if its agent had gone silent (an operator's or a test's word)."""
        with self._lock:
            self._drop(ref)
        self._changed(ref[0])

    def _drop(self, ref: InstanceRef) -> None:
        pool = self.members.get(ref[0], {})
        if ref[1] in pool:  # a pool instance that went silent has left
            del pool[ref[1]]
            self.latest.pop(ref, None)
            self._by_svc.get(ref[0], {}).pop(ref[1], None)
            if not any(ref in a.refs for a in self.agents.values()):
                self._since.pop(ref, None)
            log.info("%s: pool instance %d left (silent)", ref[0], ref[1])
        else:
            self._expired.add(ref)

    def is_expired(self, ref: InstanceRef) -> bool:
        return ref in self._expired


def _servicer(c: Collector) -> Any:
    pb, pb_grpc = proto.metrics()

    class Servicer(pb_grpc.CollectorServicer):  # type: ignore[misc,name-defined]
        def _open(self, context: grpc.ServicerContext) -> tuple[str, int | None, str]:
            """Authenticates the call and takes a stream place: (agent, its certificate's serial, token)."""
            token = dict(context.invocation_metadata()).get("authorization", "").removeprefix("Bearer ").strip()
            serial = peer_serial(context)
            agent, why = c.authenticate(peer_identity(context), token, serial)
            if not agent:
                if why == "identity":
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, "this identity reports for no instance")
                if why == "revoked":
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, "this certificate is revoked")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or missing agent token")
            if not c.open_stream(agent, serial, token, context):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this identity has {c.max_streams} report streams open already",
                )
            return agent, serial, token

        def _take(self, who: tuple[str, int | None, str], reports: Any, ack: Any, context: Any) -> None:
            for r in reports:
                allowed, why = c.admitted(*who)  # a stream lives only as long as its identity does
                if allowed is None:
                    c.rejected["closed"] += 1
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
                err = c.accept(who[0], allowed, r)
                if err is None:
                    ack.accepted += 1
                else:
                    ack.rejected += 1
                    ack.last_error = err

        def Stream(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC name
            who = self._open(context)
            try:
                ack = pb.Ack()
                self._take(who, request_iterator, ack, context)
                return ack
            finally:
                c.close_stream(who[0], context)

        def StreamBatches(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            who = self._open(context)
            try:
                ack = pb.Ack()
                for batch in request_iterator:
                    self._take(who, batch.reports, ack, context)
                return ack
            finally:
                c.close_stream(who[0], context)

    return Servicer()


class CollectorServer:
    """The collector on a gRPC port (0: any free one; see .port), over mutual TLS with `identity`'s
    credentials; without credentials only when `insecure` (a warning). Use as a context manager."""

    def __init__(
        self,
        collector: Collector,
        address: str = "127.0.0.1:0",
        workers: int = 16,
        identity: Identity | None = None,
        insecure: bool = False,
    ):
        _, pb_grpc = proto.metrics()
        if identity is None and not insecure:
            raise ConfigError("the collector has no credentials: give it a certificate (dinet certs), or --insecure")
        self.collector = collector
        self.insecure = identity is None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        pb_grpc.add_CollectorServicer_to_server(_servicer(collector), self.server)
        self.port, self.address = listen(self.server, address, identity, "collector")

    def __enter__(self) -> CollectorServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=1).wait()


class Agent:
    """The reporting side: one authenticated stream of reports (what runs beside an instance)."""

    def __init__(self, address: str, token: str = "", identity: Identity | None = None, server: str = "collector"):
        """identity: this agent's credentials (mutual TLS to a collector whose certificate names `server`);
        None: a plain channel (a collector started --insecure)."""
        pb, pb_grpc = proto.metrics()
        self.pb = pb
        self.channel = (
            identity.channel(address, server, CHANNEL_OPTIONS)
            if identity
            else grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        )
        self.stub = pb_grpc.CollectorStub(self.channel)
        self.token = token
        # the sequence starts at the clock (microseconds): a restarted agent carries on above what it sent
        # before (the collector refuses a sequence that is not after the last), a replay stays below
        self.seq = time.time_ns() // 1000
        self.session = secrets.randbits(64)  # this process's session: its sequence is checked on its own

    def report(self, service: str, instance_id: int, m: Level0, announce: Announce | None = None) -> Any:
        """One report; a pool instance's carries its announcement (endpoint, site, leaving)."""
        self.seq += 1
        return report_of(self.pb, service, instance_id, self.seq, m, announce, self.session)

    def send(self, reports: list[Any], timeout: float = 10.0) -> Any:
        """Streams the reports on one call; returns the collector's Ack."""
        return self.stub.Stream(iter(reports), metadata=self._md(), timeout=timeout)

    def send_batches(self, batches: list[list[Any]], timeout: float = 10.0) -> Any:
        """Streams the reports in batches (one message each); returns the collector's Ack."""
        msgs = (self.pb.ReportBatch(reports=b) for b in batches)
        return self.stub.StreamBatches(msgs, metadata=self._md(), timeout=timeout)

    def _md(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def close(self) -> None:
        self.channel.close()


class Fanout:
    """One agent's reports to several collectors at once (mode distributed: every ingress node's decider takes
    the reports itself). A collector that does not answer is logged once and tried again at the next report;
    the reports go on to the others. Raises only when no collector took them."""

    def __init__(self, agents: list[Agent]):
        if not agents:
            raise ValueError("a fan-out needs at least one collector")
        self.agents = agents
        self.failing: set[int] = set()

    def report(self, service: str, instance_id: int, m: Level0, announce: Announce | None = None) -> Any:
        msgs = [a.report(service, instance_id, m, announce) for a in self.agents]
        return msgs[0]  # the same report for all (each agent counts its own sequence in step)

    def send(self, reports: list[Any], timeout: float = 10.0) -> Any:
        calls = [a.stub.Stream.future(iter(reports), metadata=a._md(), timeout=timeout) for a in self.agents]
        acks, last = [], None
        for k, call in enumerate(calls):
            try:
                acks.append(call.result())
            except grpc.RpcError as e:
                last = e
                if k not in self.failing:
                    log.warning("collector %d of %d does not take reports: %s", k + 1, len(calls), e.code().name)
                self.failing.add(k)
                continue
            if k in self.failing:
                log.warning("collector %d of %d takes reports again", k + 1, len(calls))
                self.failing.discard(k)
        if not acks:
            assert last is not None
            raise last
        return min(acks, key=lambda a: a.accepted)  # what every collector that answered took

    def close(self) -> None:
        for a in self.agents:
            a.close()
